// The CUDA device's first kernels, callable from plain C++ (no CUDA types here): device memory,
// and the forward ops of kernels/*.h on device pointers, taking the CPU variants' argument structs.
// Every launcher returns false if the launch failed (cuda_last_error() says why); with
// BERT_CUDA_SYNC=1 in the environment each launch is followed by a synchronize and a check.
// Built only when CMake finds nvcc (BERT_HAVE_CUDA).
#pragma once

#include <cstddef>
#include <string>

#include "kernels/activation.h"
#include "kernels/embed.h"
#include "kernels/gemm.h"
#include "kernels/layernorm.h"
#include "kernels/softmax_masked.h"

namespace bert::kernels::cuda {

// Number of usable CUDA devices (0 without a GPU or driver), and the first one's name.
int device_count();
std::string device_name();
std::string cuda_last_error();

// Device memory (nullptr on failure) and copies; `stream` is a cudaStream_t or nullptr (default).
void* device_alloc(size_t bytes);
void device_free(void* p);
bool copy_to_device(void* dst, const void* src, size_t bytes);
bool copy_to_host(void* dst, const void* src, size_t bytes);
bool synchronize();

// Streams, pinned host memory, asynchronous copies and events (opaque handles; nullptr on failure).
void* stream_create();
void stream_destroy(void* stream);
bool stream_synchronize(void* stream);
void* host_alloc_pinned(size_t bytes);
void host_free_pinned(void* p);
bool copy_to_device_async(void* dst, const void* src, size_t bytes, void* stream);
bool copy_to_host_async(void* dst, const void* src, size_t bytes, void* stream);
bool memset_async(void* p, int value, size_t bytes, void* stream);
// Device-to-device copy of `bytes` contiguous bytes (no pitch limit, unlike copy_2d_async).
bool copy_async(void* dst, const void* src, size_t bytes, void* stream);
// Device-to-device copy of `rows` rows of width_bytes each between pitched layouts (strided row gathers,
// one column of interleaved pairs: pitches need not be multiples of anything).
bool copy_2d_async(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width_bytes, size_t rows,
                   void* stream);
void* event_create();
void event_destroy(void* event);
bool event_record(void* event, void* stream);
// Milliseconds between two recorded events (waits for `end`).
bool event_elapsed_ms(void* start, void* end, float* ms);
// CUDA graphs: capture what `stream` is given between begin and end (nothing runs), then replay it.
// graph_capture_end returns the instantiated graph, or nullptr when the capture or instantiation
// failed (the stream is usable again). launches_synchronize: BERT_CUDA_SYNC=1 is set, so launches
// synchronize, which capture does not allow.
bool graph_capture_begin(void* stream);
void* graph_capture_end(void* stream);
bool graph_launch(void* graph, void* stream);
void graph_destroy(void* graph);
bool launches_synchronize();
// Free and total memory of the current device.
bool device_memory(size_t* free_bytes, size_t* total_bytes);

// The forward ops; every pointer in the args is a device pointer.
bool layernorm_f32(const LayerNormArgs& a, void* stream = nullptr);
bool softmax_masked_f32(const SoftmaxMaskedArgs& a, void* stream = nullptr);
bool activation_f32(const ActivationArgs& a, void* stream = nullptr);
bool embed_f32(const EmbedArgs& a, void* stream = nullptr);

}  // namespace bert::kernels::cuda
