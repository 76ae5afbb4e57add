// bert_bench's CUDA benchmarks (registered only in CUDA builds, and only when a GPU is visible;
// otherwise BM_Cuda says why it skipped).
//
// BM_CudaGemmPeak  the card's GEMM rate through the engine's own cuBLASLt path on 8192^3 (fp32,
//                  fp32 with TF32, fp16, int8 incl. its dequantize pass): the "% of peak" denominators.
// BM_CudaInference model x batch x seq x precision x lengths, timed with CUDA events around each Run
//                  (uploads, forward, no output copies: copy_outputs = false) as manual time.
//                  lengths: 0 = every sequence full; 1 = lengths varying around 0.6 x seq, padded;
//                  2 = the same batch with padding removal. Counters: seq/s, TFLOP/s of useful work
//                  (FLOPs of the real tokens only, so 1 and 2 are comparable), pct_gemm_peak against
//                  BM_CudaGemmPeak of the same precision measured in this process.
// BM_CudaTrainStep one training step (ForwardBackward + Step, AdamW or LAMB, dropout 0.1) of
//                  bert-base fine-tuning (sequence classification) or BERT-large pre-training (MLM +
//                  NSP) x batch x seq x precision (fp32, tf32, fp16 with loss scaling, bf16) x
//                  memory mode (0 materialised attention probabilities, 1 fused attention, 2 fused
//                  attention + recomputed activations). Wall time of the step (it ends
//                  with a host synchronization) as manual time. Counters: samples/s, TFLOP/s (3 x the
//                  forward FLOPs), MFU against BM_CudaGemmPeak of the GEMMs' precision, and device
//                  memory in use before the trainer exists, after its first step (everything it
//                  allocates is planned up front, so this is its peak) and after it is destroyed.
#include <benchmark/benchmark.h>

#include <chrono>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "bert/engine.h"
#include "bert/train.h"
#include "bert/model_builder.h"  // LoadSynthetic

#ifdef BERT_HAVE_CUDA
#include "kernels/cuda/cuda_gemm.h"
#include "kernels/cuda/cuda_kernels.h"
#endif

void register_cuda_benchmarks();

#ifndef BERT_HAVE_CUDA
void register_cuda_benchmarks() {}
#else

namespace {

namespace kc = bert::kernels::cuda;

const char* const kCudaShapes[] = {"bert-base",           "bert-tiny",  "distilbert-base", "electra-small",
                                   "squeezebert-uncased", "albert-base", "bert-large"};
const bert::Precision kPrecisions[] = {bert::Precision::kF32, bert::Precision::kF16, bert::Precision::kInt8};

// The GEMM peak (TFLOP/s) of a precision (0 fp32, 1 fp16, 2 int8, 3 fp32+TF32) on 8192^3, measured once.
double gemm_peak_tflops(int kind, std::string* error) {
  static std::map<int, double> cache;
  if (auto it = cache.find(kind); it != cache.end()) return it->second;
  const int64_t n = 8192;
  const size_t elem = kind == 2 ? 1 : kind == 1 ? 2 : 4;
  void* x = kc::device_alloc(n * n * elem);
  void* w = kc::device_alloc(n * n * elem);
  void* y = kc::device_alloc(n * n * 4);
  void* scales = kc::device_alloc(n * 4);
  void* start = kc::event_create();
  void* end = kc::event_create();
  void* stream = kc::stream_create();
  double tflops = 0;
  // Random operands (zeros would flatter the card: less switching, higher clocks).
  auto fill = [&](void* dst) {
    std::vector<uint8_t> bytes(n * n * elem);
    std::mt19937 rng(7);
    for (size_t i = 0; i < bytes.size(); ++i)
      bytes[i] = elem == 1 ? uint8_t(rng() % 255 - 127) : (i % elem == elem - 1) ? uint8_t(0x3c + rng() % 2) : uint8_t(rng());
    return kc::copy_to_device(dst, bytes.data(), bytes.size());
  };
  const std::vector<float> unit(n, 1e-4f);
  if (x && w && y && scales && start && end && stream && fill(x) && fill(w) &&
      kc::copy_to_device(scales, unit.data(), n * 4)) {
    kc::CudaGemm gemm(kind == 3);
    const bool reserved = kind != 2 || gemm.reserve_int8(n, n);  // the int8 accumulator, once
    auto run = [&]() {
      if (kind == 2) {
        kc::Int8LinearArgs a;
        a.x = static_cast<int8_t*>(x), a.w = static_cast<int8_t*>(w), a.x_scale = static_cast<float*>(scales);
        a.w_scales = static_cast<float*>(scales), a.y = y, a.M = n, a.N = n, a.K = n, a.y_dtype = bert::DType::kF16;
        return gemm.linear_i8(a, stream);
      }
      kc::DevLinearArgs a;
      a.x = x, a.w = w, a.y = y, a.M = n, a.N = n, a.K = n;
      a.dtype = kind == 1 ? bert::DType::kF16 : bert::DType::kF32;
      return gemm.linear(a, stream);
    };
    bool ok = reserved && run() && run();  // plan + warm-up
    const int reps = 10;
    ok = ok && kc::event_record(start, stream);
    for (int i = 0; ok && i < reps; ++i) ok = run();
    float ms = 0;
    ok = ok && kc::event_record(end, stream) && kc::event_elapsed_ms(start, end, &ms);
    if (ok && ms > 0) tflops = 2.0 * n * n * n * reps / (ms * 1e-3) / 1e12;
  }
  if (tflops == 0) *error = "GEMM peak: " + kc::cuda_last_error();
  kc::device_free(x), kc::device_free(w), kc::device_free(y), kc::device_free(scales);
  kc::event_destroy(start), kc::event_destroy(end), kc::stream_destroy(stream);
  return cache[kind] = tflops;
}

void BM_CudaGemmPeak(benchmark::State& state) {
  const int kind = static_cast<int>(state.range(0));
  const char* names[] = {"fp32", "fp16", "int8", "tf32"};
  std::string error;
  double tflops = 0;
  for (auto _ : state) {
    tflops = gemm_peak_tflops(kind, &error);
    if (tflops == 0) return state.SkipWithError(error.c_str());
    state.SetIterationTime(2.0 * 8192.0 * 8192.0 * 8192.0 / (tflops * 1e12));
  }
  state.SetLabel(std::string(names[kind]) + " 8192^3 on " + kc::device_name());
  state.counters["TFLOP/s"] = tflops;
}

std::shared_ptr<const bert::Model> cuda_model(int shape, bert::Precision p, std::string* error) {
  static std::map<std::pair<int, int>, std::shared_ptr<const bert::Model>> cache;
  auto key = std::make_pair(shape, static_cast<int>(p));
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  cache.clear();  // one model on the GPU at a time
  bert::LoadOptions load;
  load.device = bert::Device::kCuda;
  load.precision = p;
  auto m = bert::LoadSynthetic({.preset = kCudaShapes[shape], .seed = 1234}, load);
  if (!m.ok()) return *error = m.status().to_string(), nullptr;
  return cache[key] = *m;
}

void BM_CudaInference(benchmark::State& state) {
  const int shape = static_cast<int>(state.range(0));
  const int batch = static_cast<int>(state.range(1)), seq = static_cast<int>(state.range(2));
  const bert::Precision precision = kPrecisions[state.range(3)];
  const int lengths = static_cast<int>(state.range(4));
  std::string error;
  auto model = cuda_model(shape, precision, &error);
  if (!model) return state.SkipWithError(error.c_str());
  if (seq > model->info().max_seq) return state.SkipWithError("seq beyond the position table");
  bert::SessionOptions opts;
  opts.max_batch = batch, opts.max_seq = seq;
  opts.copy_outputs = false;
  opts.remove_padding = lengths == 2;
  auto session = bert::Session::Create(model, opts);
  if (!session.ok()) return state.SkipWithError(session.status().to_string().c_str());

  // Random tokens; with varying lengths, uniform in [0.2, 1.0] x seq (mean 0.6 x seq), CLS first.
  std::mt19937 rng(42);
  const int32_t vocab = static_cast<int32_t>(model->info().vocab_size);
  std::uniform_int_distribution<int32_t> id(std::min(1000, vocab - 1), vocab - 1);
  std::uniform_real_distribution<double> fraction(0.2, 1.0);
  std::vector<int32_t> ids(size_t(batch) * seq), mask(ids.size(), 0);
  double useful_flops = 0;
  int64_t real_tokens = 0;
  for (int b = 0; b < batch; ++b) {
    const int len = lengths == 0 ? seq : std::max(1, static_cast<int>(fraction(rng) * seq));
    for (int s = 0; s < seq; ++s) {
      ids[size_t(b) * seq + s] = s < len ? id(rng) : 0;
      mask[size_t(b) * seq + s] = s < len;
    }
    useful_flops += model->forward_flops(1, len);
    real_tokens += len;
  }
  bert::BatchInput in{batch, seq, ids.data(), mask.data(), nullptr};
  if (precision == bert::Precision::kInt8)
    if (auto st = (*session)->Calibrate(in); !st.ok()) return state.SkipWithError(st.to_string().c_str());
  if (auto st = (*session)->Run(in); !st.ok()) return state.SkipWithError(st.to_string().c_str());  // plans
  for (auto _ : state) {
    if (auto st = (*session)->Run(in); !st.ok()) return state.SkipWithError(st.to_string().c_str());
    state.SetIterationTime((*session)->LastRunDeviceSeconds());
  }
  state.SetLabel(std::string(kCudaShapes[shape]) + " " + bert::precision_name(precision) +
                 (lengths == 0 ? " full" : lengths == 1 ? " varied-padded" : " varied-packed"));
  state.counters["seq/s"] = benchmark::Counter(double(batch), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["real_tokens"] = double(real_tokens);
  state.counters["TFLOP/s"] = benchmark::Counter(useful_flops / 1e12, benchmark::Counter::kIsIterationInvariantRate);
  // pct_gemm_peak: TFLOP/s / peak * 100, with the rate from the mean manual time.
  const int peak_kind = precision == bert::Precision::kF32 ? 0 : precision == bert::Precision::kF16 ? 1 : 2;
  if (double peak = gemm_peak_tflops(peak_kind, &error); peak > 0)
    state.counters["pct_gemm_peak"] = benchmark::Counter(useful_flops / 1e12 / peak * 100,
                                                         benchmark::Counter::kIsIterationInvariantRate);
  state.counters["workspace_MiB"] = double((*session)->workspace_bytes()) / (1 << 20);
}

void cuda_inference_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"model", "batch", "seq", "precision", "lengths"});
  for (int batch : {1, 8, 32, 128})
    for (int seq : {128, 384, 512})
      for (int p = 0; p < 3; ++p)
        for (int lengths : {0, 1, 2}) b->Args({0, batch, seq, p, lengths});
  for (int m = 1; m < 7; ++m)  // the zoo and bert-large at two shapes, full lengths
    for (int batch : {1, 32})
      for (int p = 0; p < 3; ++p) b->Args({m, batch, 128, p, 0});
  b->UseManualTime()->Unit(benchmark::kMillisecond);
}

// Device memory in use (MiB): total - free, as cudaMemGetInfo sees it (other processes included).
double device_used_mib() {
  size_t free_bytes = 0, total_bytes = 0;
  if (!kc::device_memory(&free_bytes, &total_bytes)) return -1;
  return double(total_bytes - free_bytes) / (1 << 20);
}

// 0: bert-base fine-tuning (sequence classification, AdamW); 1: BERT-large pre-training (MLM + NSP, LAMB).
const char* const kTrainShapes[] = {"bert-base", "bert-large"};
const char* const kTrainArchitectures[] = {"BertForSequenceClassification", "BertForPreTraining"};
const bert::TrainPrecision kTrainPrecisions[] = {bert::TrainPrecision::kF32, bert::TrainPrecision::kTF32,
                                                 bert::TrainPrecision::kF16, bert::TrainPrecision::kBF16};

void BM_CudaTrainStep(benchmark::State& state) {
  const int which = static_cast<int>(state.range(0));
  const int batch = static_cast<int>(state.range(1)), seq = static_cast<int>(state.range(2));
  const bert::TrainPrecision precision = kTrainPrecisions[state.range(3)];
  const int memory_mode = static_cast<int>(state.range(4));
  const double mem_pre = device_used_mib();
  bert::LoadOptions load;
  load.device = bert::Device::kCuda;
  auto model = bert::LoadSynthetic(
      {.preset = kTrainShapes[which], .architecture = kTrainArchitectures[which], .seed = 1234}, load);
  if (!model.ok()) return state.SkipWithError(model.status().to_string().c_str());
  bert::TrainerOptions o;
  o.max_batch = batch, o.max_seq = seq, o.dropout = 0.1f, o.seed = 1;
  o.precision = precision, o.fused_attention = memory_mode >= 1, o.recompute_activations = memory_mode == 2;
  if (which == 1) o.optimizer.kind = bert::OptimizerKind::kLamb, o.optimizer.eps = 1e-6f;
  auto trainer = bert::Trainer::Create(*model, o);
  if (!trainer.ok()) return state.SkipWithError(trainer.status().to_string().c_str());

  // Full-length random sequences; MLM labels on 15% of the tokens; NSP / class labels at random.
  std::mt19937 rng(42);
  const int32_t vocab = static_cast<int32_t>((*model)->info().vocab_size);
  std::vector<int32_t> ids(size_t(batch) * seq), mask(ids.size(), 1), types(ids.size(), 0), mlm(ids.size(), -100);
  std::vector<int32_t> labels(batch);
  for (size_t i = 0; i < ids.size(); ++i) {
    ids[i] = i % seq == 0 ? 101 : 1000 + int32_t(rng() % uint32_t(vocab - 1000));
    types[i] = int32_t(i % seq) >= seq / 2;
    if (rng() % 100 < 15) mlm[i] = int32_t(rng() % uint32_t(vocab));
  }
  for (int32_t& l : labels) l = int32_t(rng() % 2);
  bert::BatchInput in{batch, seq, ids.data(), mask.data(), types.data()};
  bert::TrainLabels y;
  if (which == 0) y.labels = labels.data();
  else y.labels = mlm.data(), y.sentence_labels = labels.data();

  auto step = [&]() -> bert::Status {
    auto loss = (*trainer)->ForwardBackward(in, y);
    if (!loss.ok()) return loss.status();
    auto norm = (*trainer)->Step(1e-5f);
    return norm.ok() ? bert::Status() : norm.status();
  };
  if (auto st = step(); !st.ok()) return state.SkipWithError(st.to_string().c_str());  // plans, warm-up
  const double mem_max = device_used_mib();
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    if (auto st = step(); !st.ok()) return state.SkipWithError(st.to_string().c_str());
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  const double flops = 3.0 * (*model)->forward_flops(batch, seq);
  state.SetLabel(std::string(kTrainShapes[which]) + (which == 0 ? " fine-tune " : " pre-train ") +
                 bert::train_precision_name(precision) +
                 (memory_mode == 0 ? "" : memory_mode == 1 ? " fused-attention" : " fused-attention+recompute"));
  state.counters["samples/s"] = benchmark::Counter(double(batch), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["TFLOP/s"] = benchmark::Counter(flops / 1e12, benchmark::Counter::kIsIterationInvariantRate);
  const int peak_kind = precision == bert::TrainPrecision::kF32    ? 0
                        : precision == bert::TrainPrecision::kTF32 ? 3
                                                                   : 1;  // fp16 / bf16 tensor cores
  std::string error;
  if (double peak = gemm_peak_tflops(peak_kind, &error); peak > 0)
    state.counters["mfu_pct"] =
        benchmark::Counter(flops / 1e12 / peak * 100, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["loss_scale"] = (*trainer)->loss_scale();
  trainer->reset();
  model->reset();
  state.counters["mem_pre_MiB"] = mem_pre;
  state.counters["mem_max_MiB"] = mem_max;
  state.counters["mem_post_MiB"] = device_used_mib();
}

void cuda_train_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"model", "batch", "seq", "precision", "memory"});
  for (int p = 0; p < 4; ++p)
    for (int memory : {0, 1, 2}) {
      b->Args({0, 32, 128, p, memory});  // bert-base fine-tuning, seed 001's shapes
      b->Args({0, 16, 512, p, memory});
      b->Args({1, 64, 128, p, memory});  // BERT-large pre-training phase 1 and 2 (per-GPU batches)
      b->Args({1, 16, 512, p, memory});
    }
  b->UseManualTime()->Unit(benchmark::kMillisecond)->MinWarmUpTime(0)->Iterations(10);
}

void BM_Cuda(benchmark::State& state) {
  for (auto _ : state) {
  }
  state.SkipWithError("no CUDA device visible: the CUDA benchmarks were not run");
}

}  // namespace

void register_cuda_benchmarks() {
  if (kc::device_count() == 0) {
    benchmark::RegisterBenchmark("BM_Cuda", BM_Cuda)->Iterations(1);
    return;
  }
  benchmark::RegisterBenchmark("BM_CudaGemmPeak", BM_CudaGemmPeak)
      ->ArgNames({"kind"})
      ->DenseRange(0, 3)
      ->Iterations(1)
      ->UseManualTime();
  benchmark::RegisterBenchmark("BM_CudaInference", BM_CudaInference)->Apply(cuda_inference_args);
  benchmark::RegisterBenchmark("BM_CudaTrainStep", BM_CudaTrainStep)->Apply(cuda_train_args);
  benchmark::AddCustomContext("gpu", kc::device_name());
}

#endif
