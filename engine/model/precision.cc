// The precision policy (engine/model/precision.h): the table from (device, requested precision) to
// each site's storage, compute and scales, and the refusals for what no backend implements.
#include "engine/model/precision.h"

namespace bert::model {

using kernels::GemmCompute;

const char* site_name(Site s) {
  switch (s) {
    case Site::kEmbedding: return "embedding";
    case Site::kEncoderGemm: return "encoder_gemm";
    case Site::kAttention: return "attention";
    case Site::kNorm: return "layernorm";
    case Site::kHead: return "head";
    case Site::kLoss: return "loss";
    case Site::kOptimizer: return "optimizer";
    case Site::kCount: break;
  }
  return "?";
}

PrecisionPolicy PrecisionPolicy::all_f32(GemmCompute gemm) {
  PrecisionPolicy p;
  for (Site s : {Site::kEncoderGemm, Site::kHead}) {
    SitePrecision& sp = p.sites_[static_cast<int>(s)];
    sp.gemm = gemm;
    sp.compute = gemm == GemmCompute::kF16 ? DType::kF16 : gemm == GemmCompute::kBF16 ? DType::kBF16 : DType::kF32;
  }
  return p;
}

Result<PrecisionPolicy> PrecisionPolicy::ForInference(Device device, Precision precision, bool allow_tf32) {
  if (device == Device::kCpu) {
    if (precision != Precision::kF32)
      return unsupported(std::string("precision ") + precision_name(precision) +
                         " on the CPU: the CPU engine computes in fp32");
    if (allow_tf32) return unsupported("allow_tf32 on the CPU: TF32 is a CUDA tensor-core mode");
    return all_f32(GemmCompute::kExact);
  }
  switch (precision) {
    case Precision::kF32: return all_f32(allow_tf32 ? GemmCompute::kTF32 : GemmCompute::kExact);
    case Precision::kF16: return all_f32(GemmCompute::kF16);  // fp16 tensor cores, fp32 storage
    case Precision::kInt8: break;
  }
  return unsupported("precision int8: the precision policy has no int8 entry yet (int8 storage with "
                     "per-channel weight scales and calibrated or per-token activation scales)");
}

Result<PrecisionPolicy> PrecisionPolicy::ForTraining(Device device, TrainPrecision precision, bool allow_tf32) {
  if (device == Device::kCpu) {
    if (precision != TrainPrecision::kF32)
      return unsupported(std::string("TrainerOptions.precision ") + train_precision_name(precision) +
                         ": the CPU backend computes GEMMs in fp32 only");
    return all_f32(GemmCompute::kExact);
  }
  switch (precision) {
    case TrainPrecision::kF32: return all_f32(allow_tf32 ? GemmCompute::kTF32 : GemmCompute::kExact);
    case TrainPrecision::kTF32: return all_f32(GemmCompute::kTF32);
    case TrainPrecision::kF16: return all_f32(GemmCompute::kF16);
    case TrainPrecision::kBF16: return all_f32(GemmCompute::kBF16);
  }
  return all_f32(GemmCompute::kExact);
}

std::string PrecisionPolicy::describe() const {
  std::string s;
  for (int i = 0; i < static_cast<int>(Site::kCount); ++i) {
    const SitePrecision& sp = sites_[i];
    if (!s.empty()) s += ", ";
    s += std::string(site_name(static_cast<Site>(i))) + " " + std::string(dtype_name(sp.storage)) + "/" +
         std::string(dtype_name(sp.compute));
    if (sp.gemm != GemmCompute::kExact) s += std::string(" (") + kernels::gemm_compute_name(sp.gemm) + " GEMMs)";
  }
  return s;
}

}  // namespace bert::model
