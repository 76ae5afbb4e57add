// Linear layers on the GPU through cuBLASLt: y[M, N] = act(x[M, K] W[N, K]^T + b), fp32, row-major
// (PyTorch's [out, in] weights, as on the CPU). One plan per shape: the matmul descriptor, the three
// layouts and the algorithm cuBLASLt's heuristic picks, made on first use and cached; running a
// planned shape only sets pointers. The bias is a cuBLASLt epilogue (with tanh-GELU fused when that
// is the activation); the other activations run as kernels/cuda's activation kernel afterwards.
// TF32 only when asked. NEVER RUN ON A GPU YET.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <map>
#include <tuple>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch_check.h"

namespace bert::kernels::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

bool lt_ok(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return true;
  record(cudaErrorUnknown, (std::string(what) + " failed with cublasStatus " + std::to_string(int(s))).c_str());
  return false;
}

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool fused_gelu = false;
};

}  // namespace

struct CudaGemm::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  bool tf32 = false;
  // (M, N, K, ldx, ldy, act, has bias)
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int, bool>, Plan> plans;

  ~Impl() {
    for (auto& [key, p] : plans) {
      cublasLtMatrixLayoutDestroy(p.a), cublasLtMatrixLayoutDestroy(p.b), cublasLtMatrixLayoutDestroy(p.c);
      cublasLtMatmulDescDestroy(p.desc);
    }
    device_free(workspace);
    if (handle) cublasLtDestroy(handle);
  }

  // Row-major y = x W^T is, in cuBLASLt's column-major terms, y^T [N, M] = op(A) B where A is W seen
  // as column-major [K, N] (transposed by op), B is x seen as [K, M] and C is y seen as [N, M].
  const Plan* plan(const LinearArgs& l, int64_t ldx, int64_t ldy) {
    auto key = std::make_tuple(l.M, l.N, l.K, ldx, ldy, static_cast<int>(l.act), l.bias != nullptr);
    if (auto it = plans.find(key); it != plans.end()) return &it->second;
    Plan p;
    const cublasComputeType_t compute = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    if (!lt_ok(cublasLtMatmulDescCreate(&p.desc, compute, CUDA_R_32F), "cublasLtMatmulDescCreate")) return nullptr;
    const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof transa);
    cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof transb);
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    p.fused_gelu = l.act == Activation::kGeluTanh;
    if (l.bias) epilogue = p.fused_gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    else if (p.fused_gelu) epilogue = CUBLASLT_EPILOGUE_GELU;
    cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue);
    if (!lt_ok(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_32F, l.K, l.N, l.K), "layout A") ||
        !lt_ok(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_32F, l.K, l.M, ldx), "layout B") ||
        !lt_ok(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, l.N, l.M, ldy), "layout C"))
      return nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    cublasLtMatmulPreferenceCreate(&pref);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &kWorkspaceBytes,
                                         sizeof kWorkspaceBytes);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const bool ok = lt_ok(cublasLtMatmulAlgoGetHeuristic(handle, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found),
                          "cublasLtMatmulAlgoGetHeuristic") &&
                    found > 0;
    cublasLtMatmulPreferenceDestroy(pref);
    if (!ok) return nullptr;
    p.algo = result.algo;
    return &plans.emplace(key, p).first->second;
  }
};

CudaGemm::CudaGemm(bool allow_tf32) : impl_(new Impl) {
  impl_->tf32 = allow_tf32;
  if (device_count() == 0) return;
  if (!lt_ok(cublasLtCreate(&impl_->handle), "cublasLtCreate")) return;
  impl_->workspace = device_alloc(kWorkspaceBytes);
}

CudaGemm::~CudaGemm() = default;

size_t CudaGemm::plan_count() const { return impl_->plans.size(); }

bool CudaGemm::linear(const LinearArgs& l, void* stream) {
  if (!impl_->handle || !impl_->workspace) {
    record(cudaErrorNoDevice, "CudaGemm: no cuBLASLt handle (no GPU?)");
    return false;
  }
  if (l.groups != 1) {
    record(cudaErrorNotSupported, "CudaGemm: grouped linears are not implemented on CUDA yet");
    return false;
  }
  const int64_t ldx = l.ldx ? l.ldx : l.K, ldy = l.ldy ? l.ldy : l.N;
  const Plan* p = impl_->plan(l, ldx, ldy);
  if (!p) return false;
  if (l.bias)
    cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &l.bias, sizeof l.bias);
  const float one = 1.f, zero = 0.f;
  if (!lt_ok(cublasLtMatmul(impl_->handle, p->desc, &one, l.w, p->a, l.x, p->b, &zero, l.y, p->c, l.y, p->c, &p->algo,
                            impl_->workspace, kWorkspaceBytes, static_cast<cudaStream_t>(stream)),
             "cublasLtMatmul"))
    return false;
  if (!check_launch("cublasLtMatmul")) return false;
  if (l.act != Activation::kIdentity && !p->fused_gelu) {  // the activation as its own kernel, row by row
    for (int64_t m = 0; m < l.M; ++m)
      if (!activation_f32({l.y + m * ldy, l.N, l.act}, stream)) return false;
  }
  return true;
}

}  // namespace bert::kernels::cuda
