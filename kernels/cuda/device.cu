// CUDA device plumbing: device count and name, memory, copies, and the launch check every kernel
// file uses (BERT_CUDA_SYNC=1 synchronizes after each launch).
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch_check.h"

namespace bert::kernels::cuda {

namespace {
thread_local std::string g_last_error;
}

bool record(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  g_last_error = std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
  return false;
}

bool launches_synchronize() {
  static const bool sync = [] {
    const char* v = std::getenv("BERT_CUDA_SYNC");
    return v && std::strcmp(v, "0") != 0;
  }();
  return sync;
}

bool check_launch(const char* kernel) {
  if (!record(cudaGetLastError(), kernel)) return false;
  return !launches_synchronize() || record(cudaDeviceSynchronize(), kernel);
}

bool graph_capture_begin(void* stream) {
  return record(cudaStreamBeginCapture(static_cast<cudaStream_t>(stream), cudaStreamCaptureModeThreadLocal),
                "cudaStreamBeginCapture");
}

void* graph_capture_end(void* stream) {
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(static_cast<cudaStream_t>(stream), &graph);
  cudaGraphExec_t exec = nullptr;
  const bool ok = record(ended, "cudaStreamEndCapture") && graph &&
                  record(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
  if (graph) cudaGraphDestroy(graph);
  if (!ok) {
    cudaGetLastError();  // a failed capture leaves an error behind: the stream runs eagerly next
    return nullptr;
  }
  return exec;
}

bool graph_launch(void* graph, void* stream) {
  return record(cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph), static_cast<cudaStream_t>(stream)),
                "cudaGraphLaunch");
}

void graph_destroy(void* graph) {
  if (graph) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph));
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device / no driver" error
    return 0;
  }
  return n;
}

std::string device_name() {
  cudaDeviceProp p;
  if (device_count() == 0 || cudaGetDeviceProperties(&p, 0) != cudaSuccess) return "";
  return p.name;
}

std::string cuda_last_error() { return g_last_error; }

void* device_alloc(size_t bytes) {
  void* p = nullptr;
  return record(cudaMalloc(&p, bytes), "cudaMalloc") ? p : nullptr;
}

void device_free(void* p) {
  if (p) cudaFree(p);
}

bool copy_to_device(void* dst, const void* src, size_t bytes) {
  return record(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
}

bool copy_to_host(void* dst, const void* src, size_t bytes) {
  return record(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
}

bool synchronize() { return record(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

void* stream_create() {
  cudaStream_t s = nullptr;
  return record(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate") ? s : nullptr;
}

void stream_destroy(void* stream) {
  if (stream) cudaStreamDestroy(static_cast<cudaStream_t>(stream));
}

bool stream_synchronize(void* stream) {
  return record(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "cudaStreamSynchronize");
}

void* host_alloc_pinned(size_t bytes) {
  void* p = nullptr;
  return record(cudaMallocHost(&p, bytes), "cudaMallocHost") ? p : nullptr;
}

void host_free_pinned(void* p) {
  if (p) cudaFreeHost(p);
}

bool copy_to_device_async(void* dst, const void* src, size_t bytes, void* stream) {
  return record(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream)),
                "cudaMemcpyAsync H2D");
}

bool copy_to_host_async(void* dst, const void* src, size_t bytes, void* stream) {
  return record(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(stream)),
                "cudaMemcpyAsync D2H");
}

bool memset_async(void* p, int value, size_t bytes, void* stream) {
  return record(cudaMemsetAsync(p, value, bytes, static_cast<cudaStream_t>(stream)), "cudaMemsetAsync");
}

bool copy_async(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return true;
  return record(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(stream)),
                "cudaMemcpyAsync D2D");
}

bool copy_2d_async(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width_bytes, size_t rows,
                   void* stream) {
  if (rows == 0 || width_bytes == 0) return true;
  return record(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width_bytes, rows, cudaMemcpyDeviceToDevice,
                                  static_cast<cudaStream_t>(stream)),
                "cudaMemcpy2DAsync D2D");
}

void* event_create() {
  cudaEvent_t e = nullptr;
  return record(cudaEventCreate(&e), "cudaEventCreate") ? e : nullptr;
}

void event_destroy(void* event) {
  if (event) cudaEventDestroy(static_cast<cudaEvent_t>(event));
}

bool event_record(void* event, void* stream) {
  return record(cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)), "cudaEventRecord");
}

bool event_elapsed_ms(void* start, void* end, float* ms) {
  return record(cudaEventSynchronize(static_cast<cudaEvent_t>(end)), "cudaEventSynchronize") &&
         record(cudaEventElapsedTime(ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end)),
                "cudaEventElapsedTime");
}

bool device_memory(size_t* free_bytes, size_t* total_bytes) {
  return record(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
}

}  // namespace bert::kernels::cuda
