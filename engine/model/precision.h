// The precision policy: the one place that says, per op site of the network, what dtype its tensors
// are stored in, what its math computes in, and where int8 scales would come from, for a device and
// the precision a user asked for (LoadOptions.precision / TrainerOptions.precision). Sessions, trainers
// and model loading ask it; a combination no backend implements is refused here, by name.
//
// On CUDA every site stores fp32; what varies is how GEMMs compute (exact fp32, or on tensor cores with
// TF32 / fp16 / bf16 operands and fp32 accumulation). On the CPU the encoder's linear layers may store
// bf16 or int8 weights (kernels/gemm.h: WeightType), everything else stays fp32. LayerNorm, softmax,
// losses and optimizer state are fp32 in every precision.
#pragma once

#include <string>

#include "bert/dtype.h"
#include "bert/engine.h"
#include "bert/train.h"
#include "kernels/gemm.h"

namespace bert::model {

enum class Site { kEmbedding, kEncoderGemm, kAttention, kNorm, kHead, kLoss, kOptimizer, kCount };
const char* site_name(Site s);

// int8 activation scales: one per GEMM call, measured (dynamic) or recorded by Session::Calibrate.
enum class ScaleSource { kNone, kDynamicOrCalibrated };

struct SitePrecision {
  DType storage = DType::kF32;
  DType compute = DType::kF32;  // of the math (accumulation is fp32 wherever compute is lower)
  kernels::GemmCompute gemm = kernels::GemmCompute::kExact;  // GEMM sites: how fp32 operands compute
  ScaleSource scales = ScaleSource::kNone;
};

class PrecisionPolicy {
 public:
  static Result<PrecisionPolicy> ForInference(Device device, Precision precision, bool allow_tf32);
  static Result<PrecisionPolicy> ForTraining(Device device, TrainPrecision precision, bool allow_tf32);

  const SitePrecision& at(Site s) const { return sites_[static_cast<int>(s)]; }
  // How the backend's GEMMs compute (one mode for every GEMM site today).
  kernels::GemmCompute gemm_compute() const { return at(Site::kEncoderGemm).gemm; }
  // The element type the encoder's linear layers are packed in (CPU; fp32 elsewhere).
  kernels::WeightType encoder_weights() const;
  // "embedding f32/f32, encoder_gemm f32/f32 (tf32 GEMMs), ..." for logs and errors.
  std::string describe() const;

 private:
  static PrecisionPolicy all_f32(kernels::GemmCompute gemm);  // every site fp32, GEMMs computing as asked
  SitePrecision sites_[static_cast<int>(Site::kCount)];
};

}  // namespace bert::model
