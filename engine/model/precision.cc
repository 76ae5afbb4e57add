// The precision policy (engine/model/precision.h): the table from (device, requested precision) to
// each site's storage, compute and scales, and the refusals for what no backend implements.
#include "engine/model/precision.h"

#include "kernels/attention.h"

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
    if (allow_tf32) return unsupported("allow_tf32 on the CPU: TF32 is a CUDA tensor-core mode");
    PrecisionPolicy p = all_f32(GemmCompute::kExact);
    SitePrecision& gemm = p.sites_[static_cast<int>(Site::kEncoderGemm)];
    switch (precision) {
      case Precision::kF32: return p;
      case Precision::kF16:
        return unsupported("precision fp16 on the CPU: the CPU runs fp32, bf16 or int8 (fp16 is a CUDA tensor-core mode)");
      case Precision::kBF16: {
        std::string why;
        if (!kernels::bf16_gemm_supported(&why)) return unsupported("precision bf16 on the CPU: " + why);
        gemm.storage = gemm.compute = DType::kBF16;
        // The fused attention's two products too, where the CPU has AVX512_BF16 (softmax stays fp32).
        if (kernels::attention_bf16_supported())
          p.sites_[static_cast<int>(Site::kAttention)].compute = DType::kBF16;
        return p;
      }
      case Precision::kInt8:
        gemm.storage = gemm.compute = DType::kI8;
        gemm.scales = ScaleSource::kDynamicOrCalibrated;
        return p;
    }
  }
  switch (precision) {
    case Precision::kF32: return all_f32(allow_tf32 ? GemmCompute::kTF32 : GemmCompute::kExact);
    case Precision::kF16: return all_f32(GemmCompute::kF16);    // fp16 tensor cores, fp32 storage
    case Precision::kBF16: return all_f32(GemmCompute::kBF16);  // bf16 tensor cores, fp32 storage
    case Precision::kInt8: break;
  }
  return unsupported("precision int8 on CUDA: the precision policy has int8 for the CPU only");
}

kernels::WeightType PrecisionPolicy::encoder_weights() const {
  switch (at(Site::kEncoderGemm).storage) {
    case DType::kBF16: return kernels::WeightType::kBF16;
    case DType::kI8: return kernels::WeightType::kInt8;
    default: return kernels::WeightType::kF32;
  }
}

Result<PrecisionPolicy> PrecisionPolicy::ForTraining(Device device, TrainPrecision precision, bool allow_tf32) {
  if (device == Device::kCpu) {
    if (precision == TrainPrecision::kF32) return all_f32(GemmCompute::kExact);
    if (precision != TrainPrecision::kBF16)
      return unsupported(std::string("TrainerOptions.precision ") + train_precision_name(precision) +
                         ": the CPU trains in fp32 or bf16 (bf16 GEMMs on fp32 master weights)");
    std::string why;
    if (!kernels::bf16_gemm_supported(&why)) return unsupported("TrainerOptions.precision bf16 on the CPU: " + why);
    return all_f32(GemmCompute::kBF16);  // fp32 storage and master weights, bf16 GEMM operands
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
    if (sp.storage == DType::kI8)
      s += kernels::int8_gemm_has_vnni() ? " (8-bit weights, VNNI)" : " (7-bit weights: no VNNI, vpmaddubsw would saturate)";
  }
  return s;
}

}  // namespace bert::model
