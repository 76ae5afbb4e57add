// CPU emulation of the CUDA device's plumbing (kernels/cuda/cuda_kernels.h): "device" memory is aligned host
// memory (new allocations filled with 0xFF bytes, a NaN pattern, so reads of uninitialised memory show), copies
// are memcpy, every stream executes synchronously at the call, events record steady_clock time, and the
// forward ops run the CPU kernels (kernels/cpu/dispatch.h) split over OpenMP threads. Also the helpers the
// other kernels/cuda_emu files share (kernels/cuda_emu/emu_internal.h).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "kernels/cpu/dispatch.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda_emu/emu_internal.h"

namespace bert::kernels::cuda {

namespace {

thread_local std::string g_last_error;

constexpr size_t kAlign = 256;  // cudaMalloc's alignment
constexpr size_t kTotalBytes = size_t(80) << 30;  // the emulated device's memory
std::atomic<size_t> g_allocated{0};

struct Stream {
  int id = 0;
};

struct Event {
  std::chrono::steady_clock::time_point t{};
  bool recorded = false;
};

}  // namespace

namespace emu {

bool fail(const std::string& what) {
  g_last_error = what;
  return false;
}

void to_f32(const void* src, Elem e, float* dst, int64_t n) {
  if (n <= 0) return;
  if (e == Elem::kF32) {
    if (dst != src) std::memmove(dst, src, size_t(n) * sizeof(float));
  } else {
    cpu_kernels().convert_f16_to_f32(static_cast<const uint16_t*>(src), dst, n);
  }
}

void from_f32(const float* src, void* dst, Elem e, int64_t n) {
  if (n <= 0) return;
  if (e == Elem::kF32) {
    if (dst != src) std::memmove(dst, src, size_t(n) * sizeof(float));
  } else {
    cpu_kernels().convert_f32_to_f16(src, static_cast<uint16_t*>(dst), n);
  }
}

}  // namespace emu

using emu::fail;

int device_count() { return 1; }

// CUDA graphs are not emulated: capture never starts, so the engine runs everything eagerly.
bool graph_capture_begin(void*) { return fail("CUDA graphs are not emulated"); }
void* graph_capture_end(void*) { return nullptr; }
bool graph_launch(void*, void*) { return fail("CUDA graphs are not emulated"); }
void graph_destroy(void*) {}
bool launches_synchronize() { return false; }

std::string device_name() { return "CPU emulation of the CUDA device"; }

std::string cuda_last_error() { return g_last_error; }

// Each allocation carries its size in a kAlign-byte header in front of the pointer handed out.
void* device_alloc(size_t bytes) {
  const size_t payload = (bytes + kAlign - 1) / kAlign * kAlign;
  if (payload < bytes || payload > kTotalBytes || g_allocated.load() + payload > kTotalBytes) {
    fail("cudaMalloc: cudaErrorMemoryAllocation (out of memory: " + std::to_string(bytes) +
         " bytes asked, the emulated device has 80 GiB)");
    return nullptr;
  }
  char* base = static_cast<char*>(std::aligned_alloc(kAlign, payload + kAlign));
  if (!base) {
    fail("cudaMalloc: cudaErrorMemoryAllocation (host allocation of " + std::to_string(bytes) + " bytes failed)");
    return nullptr;
  }
  *reinterpret_cast<size_t*>(base) = payload;
  g_allocated += payload;
  char* p = base + kAlign;
  std::memset(p, 0xFF, payload);  // a NaN pattern: reading memory nobody wrote shows
  return p;
}

void device_free(void* p) {
  if (!p) return;
  char* base = static_cast<char*>(p) - kAlign;
  g_allocated -= *reinterpret_cast<size_t*>(base);
  std::free(base);
}

bool copy_to_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return true;
  if (!dst || !src) return fail("cudaMemcpy H2D: cudaErrorInvalidValue (null pointer)");
  std::memcpy(dst, src, bytes);
  return true;
}

bool copy_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return true;
  if (!dst || !src) return fail("cudaMemcpy D2H: cudaErrorInvalidValue (null pointer)");
  std::memcpy(dst, src, bytes);
  return true;
}

bool synchronize() { return true; }

void* stream_create() { return new (std::nothrow) Stream; }

void stream_destroy(void* stream) { delete static_cast<Stream*>(stream); }

bool stream_synchronize(void*) { return true; }

void* host_alloc_pinned(size_t bytes) {
  void* p = std::malloc(bytes ? bytes : 1);
  if (!p) fail("cudaMallocHost: cudaErrorMemoryAllocation (host allocation failed)");
  return p;
}

void host_free_pinned(void* p) { std::free(p); }

bool copy_to_device_async(void* dst, const void* src, size_t bytes, void*) {
  if (bytes == 0) return true;
  if (!dst || !src) return fail("cudaMemcpyAsync H2D: cudaErrorInvalidValue (null pointer)");
  std::memcpy(dst, src, bytes);
  return true;
}

bool copy_to_host_async(void* dst, const void* src, size_t bytes, void*) {
  if (bytes == 0) return true;
  if (!dst || !src) return fail("cudaMemcpyAsync D2H: cudaErrorInvalidValue (null pointer)");
  std::memcpy(dst, src, bytes);
  return true;
}

bool memset_async(void* p, int value, size_t bytes, void*) {
  if (bytes == 0) return true;
  if (!p) return fail("cudaMemsetAsync: cudaErrorInvalidValue (null pointer)");
  std::memset(p, value, bytes);
  return true;
}

bool copy_2d_async(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width_bytes, size_t rows,
                   void*) {
  if (rows == 0 || width_bytes == 0) return true;
  if (!dst || !src) return fail("cudaMemcpy2DAsync D2D: cudaErrorInvalidValue (null pointer)");
  if ((rows > 1 && (dst_pitch < width_bytes || src_pitch < width_bytes)))
    return fail("cudaMemcpy2DAsync D2D: cudaErrorInvalidPitchValue (pitch below the width)");
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  for (size_t r = 0; r < rows; ++r) std::memmove(d + r * dst_pitch, s + r * src_pitch, width_bytes);
  return true;
}

void* event_create() { return new (std::nothrow) Event; }

void event_destroy(void* event) { delete static_cast<Event*>(event); }

bool event_record(void* event, void*) {
  if (!event) return fail("cudaEventRecord: cudaErrorInvalidResourceHandle (null event)");
  auto* e = static_cast<Event*>(event);
  e->t = std::chrono::steady_clock::now();
  e->recorded = true;
  return true;
}

bool event_elapsed_ms(void* start, void* end, float* ms) {
  if (!start || !end || !ms) return fail("cudaEventElapsedTime: cudaErrorInvalidValue (null argument)");
  const auto* s = static_cast<const Event*>(start);
  const auto* e = static_cast<const Event*>(end);
  if (!s->recorded || !e->recorded)
    return fail("cudaEventElapsedTime: cudaErrorInvalidResourceHandle (an event was never recorded)");
  *ms = std::chrono::duration<float, std::milli>(e->t - s->t).count();
  return true;
}

bool device_memory(size_t* free_bytes, size_t* total_bytes) {
  const size_t used = g_allocated.load();
  if (free_bytes) *free_bytes = used < kTotalBytes ? kTotalBytes - used : 0;
  if (total_bytes) *total_bytes = kTotalBytes;
  return true;
}

// ---- forward ops: the CPU kernels over chunks of rows ---------------------------------------------------------

bool layernorm_f32(const LayerNormArgs& a, void*) {
  if (a.rows <= 0 || a.cols <= 0) return true;
  if (!a.x || !a.gamma || !a.beta || !a.y) return fail("layernorm_f32: null x, gamma, beta or y");
  const auto ln = cpu_kernels().layernorm;
  emu::parallel_chunks(a.rows, a.rows * a.cols, [&](int64_t b, int64_t e) {
    LayerNormArgs c = a;
    c.x = a.x + b * a.cols;
    c.residual = a.residual ? a.residual + b * a.cols : nullptr;
    c.y = a.y + b * a.cols;
    c.rows = e - b;
    ln(c);
  });
  return true;
}

bool softmax_masked_f32(const SoftmaxMaskedArgs& a, void*) {
  const int64_t mats = a.batch * a.heads;
  if (mats <= 0 || a.q_len <= 0 || a.k_len <= 0) return true;
  if (!a.scores) return fail("softmax_masked_f32: null scores");
  const auto sm = cpu_kernels().softmax_masked;
  const int64_t block = a.q_len * a.k_len;
  emu::parallel_chunks(mats, mats * block, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {  // one (batch, head) matrix, with its batch's mask row
      SoftmaxMaskedArgs c = a;
      c.scores = a.scores + m * block;
      c.key_mask = a.key_mask ? a.key_mask + (m / a.heads) * a.k_len : nullptr;
      c.batch = 1, c.heads = 1;
      sm(c);
    }
  });
  return true;
}

bool activation_f32(const ActivationArgs& a, void*) {
  if (a.n <= 0) return true;
  if (!a.x) return fail("activation_f32: null x");
  const auto act = cpu_kernels().activation;
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (a.n + kChunk - 1) / kChunk;
  emu::parallel_chunks(chunks, a.n * 8, [&](int64_t b, int64_t e) {
    const int64_t lo = b * kChunk, hi = std::min(a.n, e * kChunk);
    act({a.x + lo, hi - lo, a.kind});
  });
  return true;
}

bool embed_f32(const EmbedArgs& a, void*) {
  if (a.tokens <= 0 || a.width <= 0) return true;
  if (!a.input_ids || !a.word_table || !a.out) return fail("embed_f32: null input_ids, word_table or out");
  const auto embed = cpu_kernels().embed;
  emu::parallel_chunks(a.tokens, a.tokens * a.width, [&](int64_t b, int64_t e) {
    EmbedArgs c = a;
    c.input_ids = a.input_ids + b;
    c.positions = a.positions ? a.positions + b : nullptr;
    c.token_types = a.token_types ? a.token_types + b : nullptr;
    c.out = a.out + b * a.width;
    c.tokens = e - b;
    embed(c);
  });
  return true;
}

}  // namespace bert::kernels::cuda
