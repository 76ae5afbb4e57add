// Linear layers on the GPU through cuBLASLt: y[M, N] = act(x[M, K] W[N, K]^T + b), row-major (PyTorch's
// [out, in] weights, as on the CPU), in fp32, fp16 (fp32 accumulation) and int8 (int32 accumulation,
// dequantized with per-output-channel weight scales by precision.h's dequantize_i32).
// One plan per (element type, shape, strides, epilogue, pointer alignment): the matmul descriptor, the
// three layouts and the algorithm cuBLASLt's heuristic picks, made on first use and cached; running a
// planned shape only sets pointers. The bias is a cuBLASLt epilogue (with tanh-GELU fused when that is
// the activation); the other activations run as ONE bias_activation pass over [M, N] afterwards.
// Strided batched fp32 matmuls (the trainer's gradients, attention) run as column-major C = op(A) op(B) or,
// for a row-major C, C^T = op(B^T) op(A^T), with cuBLASLt's strided batch plus a host loop for what it cannot take.
// fp32 operands compute exactly unless the CudaGemm was made with a tensor-core GemmCompute (TF32, fp16,
// bf16 rounding inside cuBLASLt).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <utility>

#include "kernels/cuda/cuda_gemm.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch_check.h"
#include "kernels/cuda/precision.h"

namespace bert::kernels::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;
// cuBLASLt's default alignment assumption (and the most its alignment preferences distinguish).
constexpr int kMaxAlignment = 256;
// The bias epilogue is used only for biases at least this aligned (the plan promises the heuristic this much).
constexpr int kBiasAlignment = 16;
// How many candidates to ask the heuristic for (best first); the first usable one is taken.
constexpr int kHeuristicCandidates = 4;


const char* kind_name(DType k) { return k == DType::kF32 ? "fp32" : k == DType::kF16 ? "fp16" : "int8"; }

bool lt_ok(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return true;
  record(cudaErrorUnknown, (std::string(what) + " failed with cublasStatus " + std::to_string(int(s))).c_str());
  return false;
}

bool invalid(const std::string& what) { return record(cudaErrorInvalidValue, what.c_str()); }

// The largest power of two (at most kMaxAlignment) dividing the address; null counts as fully aligned.
int alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int align = 1;
  while (align < kMaxAlignment && a % uintptr_t(2 * align) == 0) align *= 2;
  return align;
}

// What the epilogue does: the bias (added in the accumulator's precision) and/or tanh-GELU.
struct Epilogue {
  bool bias = false;
  bool gelu = false;
  cublasLtEpilogue_t value() const {
    if (gelu) return bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
    return bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  }
};

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  Epilogue epilogue;  // what this plan's epilogue actually does (may be less than asked: see make_plan)
};

void destroy(Plan& p) {
  if (p.a) cublasLtMatrixLayoutDestroy(p.a);
  if (p.b) cublasLtMatrixLayoutDestroy(p.b);
  if (p.c) cublasLtMatrixLayoutDestroy(p.c);
  if (p.desc) cublasLtMatmulDescDestroy(p.desc);
  p = Plan{};
}

// (kind, M, N, K, ldx, ldy, asked epilogue, min alignment of x / w / y in bytes)
using PlanKey = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int, int>;

// The alignment class (as alignment_of) of a byte offset: what adding it to an aligned pointer keeps.
int alignment_of_offset(int64_t bytes) { return alignment_of(reinterpret_cast<const void*>(uintptr_t(bytes))); }

// One operand of a batched matmul: element (r, c) of batch (i0, i1) at p + i0*s[0] + i1*s[1] + r*s[2] + c*s[3].
struct StridedMatrix {
  const float* p = nullptr;
  int64_t rows = 0, cols = 0;
  int64_t s[4] = {0, 0, 0, 0};

  StridedMatrix(const float* ptr, int64_t r, int64_t c, const int64_t strides[4]) : p(ptr), rows(r), cols(c) {
    std::copy(strides, strides + 4, s);
  }
  // The same elements read as the transposed matrix (batch strides unchanged).
  StridedMatrix transposed() const {
    StridedMatrix t = *this;
    std::swap(t.rows, t.cols);
    std::swap(t.s[2], t.s[3]);
    return t;
  }
};

// Whether m is a plain cuBLASLt column-major matrix: unit row stride (any for a single row) and a column stride of
// at least its row count (any for a single column). Sets *ld, the leading dimension to give cuBLASLt.
bool column_major(const StridedMatrix& m, int64_t* ld) {
  if (m.rows != 1 && m.s[2] != 1) return false;
  *ld = m.cols == 1 ? m.rows : m.s[3];
  return *ld >= m.rows;
}

// An operand as cuBLASLt takes it: a column-major (rows, cols, ld) layout and the op that turns it into the matrix.
struct LtOperand {
  int64_t rows = 0, cols = 0, ld = 0;
  cublasOperation_t op = CUBLAS_OP_N;
};

// A column-major matrix is its own layout (op N); a row-major one is the column-major layout of its transpose,
// transposed back by the matmul (op T). false when neither view is a plain column-major matrix. Succeeds for m
// exactly when it does for m.transposed().
bool lt_operand(const StridedMatrix& m, LtOperand* o) {
  if (column_major(m, &o->ld)) {
    o->rows = m.rows, o->cols = m.cols, o->op = CUBLAS_OP_N;
    return true;
  }
  const StridedMatrix t = m.transposed();
  if (column_major(t, &o->ld)) {
    o->rows = t.rows, o->cols = t.cols, o->op = CUBLAS_OP_T;
    return true;
  }
  return false;
}

// One batch dimension: its extent and the element strides of the (possibly swapped) A, B and C along it.
struct BatchDim {
  int64_t count = 1, a = 0, b = 0, c = 0;
};

// Calls f(offset of A, of B, of C) for every index of up to two batch dimensions in order (the first outermost),
// stopping at the first false.
template <typename F>
bool for_each_batch(const BatchDim* dims, int n, F&& f) {
  const BatchDim outer = n > 1 ? dims[0] : BatchDim{}, inner = n > 0 ? dims[n - 1] : BatchDim{};
  for (int64_t i = 0; i < outer.count; ++i)
    for (int64_t j = 0; j < inner.count; ++j)
      if (!f(i * outer.a + j * inner.a, i * outer.b + j * inner.b, i * outer.c + j * inner.c)) return false;
  return true;
}

// Sizes and strides of a batched matmul, for messages.
std::string batched_shape(const BatchedMatmulArgs& g) {
  auto strides = [](const int64_t* s) {
    return "{" + std::to_string(s[0]) + ", " + std::to_string(s[1]) + ", " + std::to_string(s[2]) + ", " +
           std::to_string(s[3]) + "}";
  };
  return " (batch " + std::to_string(g.batch0) + "x" + std::to_string(g.batch1) + " M=" + std::to_string(g.M) +
         " N=" + std::to_string(g.N) + " K=" + std::to_string(g.K) + ", strides a " + strides(g.a_strides) + " b " +
         strides(g.b_strides) + " c " + strides(g.c_strides) + ")";
}

// (m, n, k, op A, op B, lda, ldb, ldc, cuBLASLt batch count, its batch strides of A / B / C, min alignment in bytes).
// beta (accumulate or not) is a run-time argument of cublasLtMatmul, not part of a plan.
using BatchedPlanKey = std::array<int64_t, 13>;

}  // namespace

struct CudaGemm::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  GemmCompute f32 = GemmCompute::kExact;
  std::map<PlanKey, Plan> plans;
  std::map<BatchedPlanKey, Plan> batched_plans;
  int32_t* accumulator = nullptr;  // the int8 path's int32 [M, N], allocated once by reserve_int8
  size_t accumulator_elems = 0;

  ~Impl() {
    for (auto& [key, p] : plans) destroy(p);
    for (auto& [key, p] : batched_plans) destroy(p);
    device_free(accumulator);
    device_free(workspace);
    if (handle) cublasLtDestroy(handle);
  }

  // Row-major y = x W^T is, in cuBLASLt's column-major terms, y^T [N, M] = op(A) B where A is W seen
  // as column-major [K, N] (transposed by op: TRANSA = T), B is x seen as column-major [K, M] and C / D
  // is y seen as column-major [N, M] (leading dimension ldy). This "TN" form is also the one cuBLASLt's
  // IMMA (int8) kernels take in plain column-major order. cuBLASLt's (m, n, k) are our (N, M, K).
  //
  // Tries the asked epilogue first; if the heuristic has no algorithm for it, a plain GEMM (the caller then
  // applies bias and activation in its bias_activation pass, see Plan::epilogue). nullptr (with a message
  // naming the shape) if there is no algorithm at all.
  const Plan* plan(DType kind, int64_t M, int64_t N, int64_t K, int64_t ldx, int64_t ldy, Epilogue asked,
                   int align) {
    const PlanKey key{static_cast<int>(kind), M, N, K, ldx, ldy, static_cast<int>(asked.value()), align};
    if (auto it = plans.find(key); it != plans.end()) return &it->second;

    Epilogue candidates[3] = {asked, asked, Epilogue{}};
    int n_candidates = 1;
    if (asked.gelu && asked.bias) candidates[n_candidates++] = Epilogue{true, false};  // bias fused, GELU after
    if (asked.bias || asked.gelu) candidates[n_candidates++] = Epilogue{};
    for (int i = 0; i < n_candidates; ++i) {
      Plan p;
      bool found = false;
      if (!make_plan(kind, M, N, K, ldx, ldy, candidates[i], align, &p, &found)) {
        destroy(p);
        return nullptr;
      }
      if (found) return &plans.emplace(key, p).first->second;
      destroy(p);
    }
    const std::string what = std::string("CudaGemm: cuBLASLt has no algorithm for ") + kind_name(kind) +
                             " M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                             " ldx=" + std::to_string(ldx) + " ldy=" + std::to_string(ldy) +
                             " pointer alignment=" + std::to_string(align) + " bytes";
    record(cudaErrorNotSupported, what.c_str());
    return nullptr;
  }

  // Fills *p (the caller destroys it on failure); *found says whether the heuristic returned an algorithm.
  // false only when a cuBLASLt call itself failed.
  bool make_plan(DType kind, int64_t M, int64_t N, int64_t K, int64_t ldx, int64_t ldy, Epilogue epilogue,
                 int align, Plan* p, bool* found) {
    *found = false;
    p->epilogue = epilogue;
    const cudaDataType_t in_type = kind == DType::kF32   ? CUDA_R_32F
                                   : kind == DType::kF16 ? CUDA_R_16F
                                                            : CUDA_R_8I;
    const cudaDataType_t out_type = kind == DType::kI8 ? CUDA_R_32I : in_type;
    const cudaDataType_t scale_type = kind == DType::kI8 ? CUDA_R_32I : CUDA_R_32F;
    const cublasComputeType_t compute = kind == DType::kI8    ? CUBLAS_COMPUTE_32I
                                        : kind == DType::kF32 ? f32_compute_type()
                                                                 : CUBLAS_COMPUTE_32F;
    if (!lt_ok(cublasLtMatmulDescCreate(&p->desc, compute, scale_type), "cublasLtMatmulDescCreate")) return false;
    const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
    const cublasLtEpilogue_t epilogue_value = epilogue.value();
    if (!lt_ok(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof transa),
               "cublasLtMatmulDescSetAttribute(TRANSA)") ||
        !lt_ok(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof transb),
               "cublasLtMatmulDescSetAttribute(TRANSB)") ||
        !lt_ok(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue_value,
                                              sizeof epilogue_value),
               "cublasLtMatmulDescSetAttribute(EPILOGUE)"))
      return false;
    if (epilogue.bias) {
      // The bias has the output's element type. The heuristic reads the bias pointer's VALUE to infer its
      // alignment: promise exactly kBiasAlignment (an address inside our workspace, never dereferenced by
      // the heuristic), and the run uses the epilogue only for biases at least that aligned.
      const int32_t bias_type = out_type;
      const void* representative_bias = static_cast<const char*>(workspace) + kBiasAlignment;
      if (!lt_ok(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                                sizeof bias_type),
                 "cublasLtMatmulDescSetAttribute(BIAS_DATA_TYPE)") ||
          !lt_ok(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &representative_bias,
                                                sizeof representative_bias),
                 "cublasLtMatmulDescSetAttribute(BIAS_POINTER)"))
        return false;
    }
    if (!lt_ok(cublasLtMatrixLayoutCreate(&p->a, in_type, K, N, K), "cublasLtMatrixLayoutCreate(A = W)") ||
        !lt_ok(cublasLtMatrixLayoutCreate(&p->b, in_type, K, M, ldx), "cublasLtMatrixLayoutCreate(B = x)") ||
        !lt_ok(cublasLtMatrixLayoutCreate(&p->c, out_type, N, M, ldy), "cublasLtMatrixLayoutCreate(C = D = y)"))
      return false;
    return choose_algo(p, align, found);
  }

  // Asks the heuristic for an algorithm for p's descriptor and layouts (D = C's layout), promising pointers
  // `align` bytes aligned and at most kWorkspaceBytes of workspace; *found says whether one was usable.
  // false only when a cuBLASLt call itself failed.
  bool choose_algo(Plan* p, int align, bool* found) {
    *found = false;
    cublasLtMatmulPreference_t pref = nullptr;
    if (!lt_ok(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate")) return false;
    const uint64_t workspace_bytes = kWorkspaceBytes;
    const uint32_t alignment = static_cast<uint32_t>(align);
    bool ok = lt_ok(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                         &workspace_bytes, sizeof workspace_bytes),
                    "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)");
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      ok = ok && lt_ok(cublasLtMatmulPreferenceSetAttribute(pref, attr, &alignment, sizeof alignment),
                       "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT)");
    cublasLtMatmulHeuristicResult_t results[kHeuristicCandidates] = {};
    int returned = 0;
    // No algorithm shows as CUBLAS_STATUS_NOT_SUPPORTED (or zero results): *found stays false, not an error.
    const cublasStatus_t s =
        ok ? cublasLtMatmulAlgoGetHeuristic(handle, p->desc, p->a, p->b, p->c, p->c, pref, kHeuristicCandidates,
                                            results, &returned)
           : CUBLAS_STATUS_NOT_SUPPORTED;
    cublasLtMatmulPreferenceDestroy(pref);
    if (!ok) return false;
    if (s != CUBLAS_STATUS_SUCCESS)
      return s == CUBLAS_STATUS_NOT_SUPPORTED || lt_ok(s, "cublasLtMatmulAlgoGetHeuristic");
    for (int i = 0; i < returned; ++i)
      if (results[i].state == CUBLAS_STATUS_SUCCESS && results[i].workspaceSize <= kWorkspaceBytes) {
        p->algo = results[i].algo;
        *found = true;
        break;
      }
    return true;
  }

  // The plan for D = C (column-major m x n, leading dimension ldc) = op(A) op(B) in fp32 over a strided batch of
  // batch.count matrices (1: no batch attributes), made on first use and cached. nullptr with a message if
  // cuBLASLt has no algorithm for it or a cuBLASLt call failed.
  const Plan* batched_plan(const LtOperand& a, const LtOperand& b, int64_t m, int64_t n, int64_t k, int64_t ldc,
                           const BatchDim& batch, int align) {
    const BatchedPlanKey key{m,    n,    k,   static_cast<int64_t>(a.op), static_cast<int64_t>(b.op),
                             a.ld, b.ld, ldc, batch.count, batch.a, batch.b, batch.c, align};
    if (auto it = batched_plans.find(key); it != batched_plans.end()) return &it->second;
    Plan p;
    bool found = false;
    const bool ok = make_batched_plan(a, b, m, n, ldc, batch, align, &p, &found);
    if (ok && found) return &batched_plans.emplace(key, p).first->second;
    destroy(p);
    if (ok) {
      const std::string what = "CudaGemm::batched_matmul: cuBLASLt has no algorithm for m=" + std::to_string(m) +
                               " n=" + std::to_string(n) + " k=" + std::to_string(k) + " lda=" + std::to_string(a.ld) +
                               " ldb=" + std::to_string(b.ld) + " ldc=" + std::to_string(ldc) +
                               " batch=" + std::to_string(batch.count) + " pointer alignment=" +
                               std::to_string(align) + " bytes";
      record(cudaErrorNotSupported, what.c_str());
    }
    return nullptr;
  }

  // The compute type of GEMMs on fp32 operands.
  cublasComputeType_t f32_compute_type() const {
    switch (f32) {
      case GemmCompute::kExact: return CUBLAS_COMPUTE_32F;
      case GemmCompute::kTF32: return CUBLAS_COMPUTE_32F_FAST_TF32;
      case GemmCompute::kF16: return CUBLAS_COMPUTE_32F_FAST_16F;
      case GemmCompute::kBF16: return CUBLAS_COMPUTE_32F_FAST_16BF;
    }
    return CUBLAS_COMPUTE_32F;
  }

  // Fills *p for batched_plan (the caller destroys it on failure): fp32 in and out, CUBLAS_COMPUTE_32F (or its
  // TF32 variant when allowed), the operands' ops and layouts (k is their inner extent), D sharing C's layout.
  // false only when a cuBLASLt call failed; *found says whether the heuristic had an algorithm.
  bool make_batched_plan(const LtOperand& a, const LtOperand& b, int64_t m, int64_t n, int64_t ldc,
                         const BatchDim& batch, int align, Plan* p, bool* found) {
    *found = false;
    const cublasComputeType_t compute = f32_compute_type();
    if (!lt_ok(cublasLtMatmulDescCreate(&p->desc, compute, CUDA_R_32F), "cublasLtMatmulDescCreate")) return false;
    if (!lt_ok(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &a.op, sizeof a.op),
               "cublasLtMatmulDescSetAttribute(TRANSA)") ||
        !lt_ok(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &b.op, sizeof b.op),
               "cublasLtMatmulDescSetAttribute(TRANSB)"))
      return false;
    if (!lt_ok(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_32F, a.rows, a.cols, a.ld), "cublasLtMatrixLayoutCreate(A)") ||
        !lt_ok(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_32F, b.rows, b.cols, b.ld), "cublasLtMatrixLayoutCreate(B)") ||
        !lt_ok(cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, m, n, ldc), "cublasLtMatrixLayoutCreate(C = D)"))
      return false;
    if (batch.count > 1) {
      const int32_t count = static_cast<int32_t>(batch.count);
      const std::pair<cublasLtMatrixLayout_t, int64_t> batched[3] = {{p->a, batch.a}, {p->b, batch.b}, {p->c, batch.c}};
      for (const auto& [layout, stride] : batched)
        if (!lt_ok(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count),
                   "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)") ||
            !lt_ok(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                    sizeof stride),
                   "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)"))
          return false;
    }
    return choose_algo(p, align, found);
  }

  // Allocates the int8 accumulator once. It is never freed or moved before the CudaGemm dies: CUDA graphs
  // captured with it hold its address.
  bool reserve_accumulator(size_t elems) {
    if (elems <= accumulator_elems) return true;
    if (accumulator)
      return invalid("CudaGemm::reserve_int8: the int8 accumulator is already reserved for " +
                     std::to_string(accumulator_elems) + " elements; " + std::to_string(elems) +
                     " asked (it is never reallocated: captured CUDA graphs hold its address)");
    accumulator = static_cast<int32_t*>(device_alloc(elems * sizeof(int32_t)));
    if (!accumulator) return false;
    accumulator_elems = elems;
    return true;
  }

  bool ready() const {
    if (handle && workspace) return true;
    return record(cudaErrorNoDevice, "CudaGemm: no cuBLASLt handle or workspace (no GPU?)");
  }
};


CudaGemm::CudaGemm(bool allow_tf32) : CudaGemm(allow_tf32 ? GemmCompute::kTF32 : GemmCompute::kExact) {}

CudaGemm::CudaGemm(GemmCompute f32_compute) : impl_(new Impl) {
  impl_->f32 = f32_compute;
  if (device_count() == 0) return;
  if (!lt_ok(cublasLtCreate(&impl_->handle), "cublasLtCreate")) return;
  impl_->workspace = device_alloc(kWorkspaceBytes);
}

CudaGemm::~CudaGemm() = default;

size_t CudaGemm::plan_count() const { return impl_->plans.size() + impl_->batched_plans.size(); }

bool CudaGemm::linear(const LinearArgs& l, void* stream) {
  if (l.groups != 1) {
    record(cudaErrorNotSupported, "CudaGemm: grouped linears are not implemented on CUDA yet");
    return false;
  }
  DevLinearArgs d;
  d.x = l.x, d.w = l.w, d.bias = l.bias, d.y = l.y;
  d.M = l.M, d.N = l.N, d.K = l.K, d.ldx = l.ldx, d.ldy = l.ldy;
  d.act = l.act;
  d.dtype = DType::kF32;
  return linear(d, stream);
}

bool CudaGemm::linear(const DevLinearArgs& l, void* stream) {
  if (!impl_->ready()) return false;
  if (l.dtype != DType::kF32 && l.dtype != DType::kF16) return invalid("CudaGemm::linear: dtype must be fp32 or fp16");
  const int64_t ldx = l.ldx ? l.ldx : l.K, ldy = l.ldy ? l.ldy : l.N;
  if (l.M < 0 || l.N < 0 || l.K < 1 || ldx < l.K || ldy < l.N)
    return invalid("CudaGemm::linear: bad shape M=" + std::to_string(l.M) + " N=" + std::to_string(l.N) +
                   " K=" + std::to_string(l.K) + " ldx=" + std::to_string(ldx) + " ldy=" + std::to_string(ldy));
  if (l.M == 0 || l.N == 0) return true;
  if (!l.x || !l.w || !l.y) return invalid("CudaGemm::linear: x, w and y must be device pointers (null given)");
  const DType kind = l.dtype == DType::kF16 ? DType::kF16 : DType::kF32;

  // Bias in the epilogue when it is aligned enough, tanh-GELU with it (only when the bias, if any, is there too).
  Epilogue asked;
  asked.bias = l.bias && alignment_of(l.bias) >= kBiasAlignment;
  asked.gelu = l.act == Activation::kGeluTanh && (!l.bias || asked.bias);
  const int align = std::min({alignment_of(l.x), alignment_of(l.w), alignment_of(l.y)});
  const Plan* p = impl_->plan(kind, l.M, l.N, l.K, ldx, ldy, asked, align);
  if (!p) return false;
  if (p->epilogue.bias &&
      !lt_ok(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &l.bias, sizeof l.bias),
             "cublasLtMatmulDescSetAttribute(BIAS_POINTER)"))
    return false;
  const float one = 1.f, zero = 0.f;  // beta = 0: y is not read
  if (!lt_ok(cublasLtMatmul(impl_->handle, p->desc, &one, l.w, p->a, l.x, p->b, &zero, l.y, p->c, l.y, p->c, &p->algo,
                            impl_->workspace, kWorkspaceBytes, static_cast<cudaStream_t>(stream)),
             "cublasLtMatmul"))
    return false;
  if (!check_launch("cublasLtMatmul")) return false;
  // Whatever the epilogue did not do, as one pass over the [M, N] block.
  const void* rest_bias = p->epilogue.bias ? nullptr : l.bias;
  const Activation rest_act = p->epilogue.gelu ? Activation::kIdentity : l.act;
  if (!rest_bias && rest_act == Activation::kIdentity) return true;
  return bias_activation(l.y, rest_bias, l.M, l.N, ldy, rest_act, l.dtype, stream);
}

bool CudaGemm::linear_i8(const Int8LinearArgs& l, void* stream) {
  if (!impl_->ready()) return false;
  if (l.y_dtype != DType::kF32 && l.y_dtype != DType::kF16)
    return invalid("CudaGemm::linear_i8: y_dtype must be fp32 or fp16");
  const int64_t ldy = l.ldy ? l.ldy : l.N;
  const std::string shape = " (M=" + std::to_string(l.M) + " N=" + std::to_string(l.N) + " K=" + std::to_string(l.K) +
                            " ldy=" + std::to_string(ldy) + ")";
  if (l.M < 0 || l.N < 0 || l.K < 1 || ldy < l.N) return invalid("CudaGemm::linear_i8: bad shape" + shape);
  if (l.M == 0 || l.N == 0) return true;
  // cuBLASLt's IMMA kernels in plain column-major order: "TN" form, m (= N) and k (= K) and every leading
  // dimension (K for W and x, N for the accumulator) multiples of 4, pointers 4-byte aligned (16 is faster).
  if (l.K % 4 != 0) return invalid("CudaGemm::linear_i8: K must be a multiple of 4 for int8 tensor cores" + shape);
  if (l.N % 4 != 0) return invalid("CudaGemm::linear_i8: N must be a multiple of 4 for int8 tensor cores" + shape);
  if (!l.x || !l.w || !l.x_scale || !l.w_scales || !l.y)
    return invalid("CudaGemm::linear_i8: x, w, x_scale, w_scales and y must be device pointers (null given)");
  const int align = std::min(alignment_of(l.x), alignment_of(l.w));
  if (align < 4) return invalid("CudaGemm::linear_i8: x and w must be 4-byte aligned for int8 tensor cores" + shape);

  if (size_t(l.M) * size_t(l.N) > impl_->accumulator_elems)
    return invalid("CudaGemm::linear_i8: M x N = " + std::to_string(size_t(l.M) * size_t(l.N)) +
                   " exceeds the int8 accumulator reserved by reserve_int8 (" +
                   std::to_string(impl_->accumulator_elems) + " elements)" + shape);
  const Plan* p = impl_->plan(DType::kI8, l.M, l.N, l.K, l.K, l.N, Epilogue{}, align);
  if (!p) return false;
  const int32_t one = 1, zero = 0;  // scale type int32 with CUBLAS_COMPUTE_32I
  int32_t* acc = impl_->accumulator;
  if (!lt_ok(cublasLtMatmul(impl_->handle, p->desc, &one, l.w, p->a, l.x, p->b, &zero, acc, p->c, acc, p->c, &p->algo,
                            impl_->workspace, kWorkspaceBytes, static_cast<cudaStream_t>(stream)),
             "cublasLtMatmul(int8)"))
    return false;
  if (!check_launch("cublasLtMatmul(int8)")) return false;
  return dequantize_i32(acc, l.M, l.N, l.x_scale, l.w_scales, l.bias, l.act, l.y, ldy, l.y_dtype, stream);
}

bool CudaGemm::reserve_int8(int64_t max_m, int64_t max_n) {
  if (!impl_->ready()) return false;
  if (max_m < 0 || max_n < 0)
    return invalid("CudaGemm::reserve_int8: bad size max_m=" + std::to_string(max_m) + " max_n=" + std::to_string(max_n));
  return impl_->reserve_accumulator(size_t(max_m) * size_t(max_n));
}

// Validates, picks the layouts (C column-major as given, or the transposed problem C^T = B^T A^T for a row-major C),
// splits the batch between cuBLASLt's strided batch and a host loop, then runs the cached plan once per host index.
bool CudaGemm::batched_matmul(const BatchedMatmulArgs& g, void* stream) {
  if (!impl_->ready()) return false;
  const std::string shape = batched_shape(g);
  if (g.batch0 < 0 || g.batch1 < 0 || g.M < 0 || g.N < 0 || g.K < 0)
    return invalid("CudaGemm::batched_matmul: negative size" + shape);
  if (g.batch0 == 0 || g.batch1 == 0 || g.M == 0 || g.N == 0 || (g.K == 0 && g.accumulate)) return true;
  if (!g.c || (g.K > 0 && (!g.a || !g.b)))
    return invalid("CudaGemm::batched_matmul: a, b and c must be device pointers (null given)" + shape);
  for (int d = 0; d < 2; ++d)  // (the stride of a batch dimension of extent 1 is never used)
    if ((d == 0 ? g.batch0 : g.batch1) > 1 && (g.a_strides[d] < 0 || g.b_strides[d] < 0 || g.c_strides[d] < 0))
      return invalid("CudaGemm::batched_matmul: batch strides must be >= 0" + shape);

  StridedMatrix A(g.a, g.M, g.K, g.a_strides), B(g.b, g.K, g.N, g.b_strides), C(g.c, g.M, g.N, g.c_strides);
  LtOperand oa, ob;
  if (g.K > 0 && !lt_operand(A, &oa))
    return invalid("CudaGemm::batched_matmul: a (M x K) needs a unit row or column stride, the other stride at least "
                   "K or M respectively" + shape);
  if (g.K > 0 && !lt_operand(B, &ob))
    return invalid("CudaGemm::batched_matmul: b (K x N) needs a unit row or column stride, the other stride at least "
                   "N or K respectively" + shape);
  int64_t ldc = 0;
  if (!column_major(C, &ldc)) {
    // Row-major C: cuBLASLt cannot transpose its output, so compute C^T = B^T A^T, whose output is column-major.
    const StridedMatrix a = A;
    A = B.transposed(), B = a.transposed(), C = C.transposed();
    if (!column_major(C, &ldc))
      return invalid("CudaGemm::batched_matmul: c (M x N) needs a unit row or column stride, the other stride at "
                     "least N or M respectively" + shape);
  }

  // The batch dimensions of extent > 1 (outer first), the two folded into one when both are one uniform stride.
  BatchDim dims[2];
  int n_dims = 0;
  for (int d = 0; d < 2; ++d) {
    const int64_t count = d == 0 ? g.batch0 : g.batch1;
    if (count > 1) dims[n_dims++] = BatchDim{count, A.s[d], B.s[d], C.s[d]};
  }
  if (n_dims == 2 && dims[0].a == dims[1].count * dims[1].a && dims[0].b == dims[1].count * dims[1].b &&
      dims[0].c == dims[1].count * dims[1].c) {
    dims[0] = BatchDim{dims[0].count * dims[1].count, dims[1].a, dims[1].b, dims[1].c};
    n_dims = 1;
  }

  if (g.K == 0) {  // C = (empty sum) = 0: clear each [rows, cols] column-major block
    return for_each_batch(dims, n_dims, [&](int64_t, int64_t, int64_t oc) {
      return record(cudaMemset2DAsync(g.c + oc, size_t(ldc) * sizeof(float), 0, size_t(C.rows) * sizeof(float),
                                      size_t(C.cols), static_cast<cudaStream_t>(stream)),
                    "CudaGemm::batched_matmul: cudaMemset2DAsync");
    });
  }
  // The views of the operands as they now stand (transposing keeps them valid: checked above).
  lt_operand(A, &oa);
  lt_operand(B, &ob);

  // cuBLASLt's batch: the innermost dimension along which C moves (distinct batches of one call must not share
  // C). A dimension with C stride 0 (a sum over it with accumulate) runs as sequential GEMMs on the stream.
  BatchDim lt, loops[2];
  int n_loops = 0;
  int lt_dim = -1;
  for (int d = n_dims - 1; d >= 0 && lt_dim < 0; --d)
    if (dims[d].c != 0) lt_dim = d;
  for (int d = 0; d < n_dims; ++d) {
    if (d == lt_dim) lt = dims[d];
    else loops[n_loops++] = dims[d];
  }
  if (lt.count > INT32_MAX) return invalid("CudaGemm::batched_matmul: batch count over INT32_MAX" + shape);

  // One alignment class for every matrix of every batch: the pointers' and what each batch stride keeps of it.
  int align = std::min({alignment_of(g.a), alignment_of(g.b), alignment_of(g.c)});
  for (int d = 0; d < n_dims; ++d)
    for (int64_t stride : {dims[d].a, dims[d].b, dims[d].c})
      align = std::min(align, alignment_of_offset(stride * int64_t(sizeof(float))));

  const Plan* p = impl_->batched_plan(oa, ob, C.rows, C.cols, g.K, ldc, lt, align);
  if (!p) return false;
  const float one = 1.f, beta = g.accumulate ? 1.f : 0.f;  // beta = 0: C is not read
  return for_each_batch(loops, n_loops, [&](int64_t offset_a, int64_t offset_b, int64_t offset_c) {
    float* c = g.c + offset_c;
    return lt_ok(cublasLtMatmul(impl_->handle, p->desc, &one, A.p + offset_a, p->a, B.p + offset_b, p->b, &beta, c,
                                p->c, c, p->c, &p->algo, impl_->workspace, kWorkspaceBytes,
                                static_cast<cudaStream_t>(stream)),
                 "cublasLtMatmul(batched)") &&
           check_launch("cublasLtMatmul(batched)");
  });
}

}  // namespace bert::kernels::cuda
