// CPU emulation of the CUDA device's mixed-precision, int8 and padding-removal ops (kernels/cuda/precision.h) on
// host memory: fp16 tensors are converted to fp32 rows, computed with the CPU kernels (kernels/cpu/dispatch.h) and
// rounded back; int8 quantization and dequantization call the CPU references (kernels/quantize.h), so they are
// bit-exact with them. Rows are split over OpenMP threads; nothing is asynchronous.
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/dispatch.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/precision.h"
#include "kernels/cuda_emu/emu_internal.h"
#include "kernels/quantize.h"

namespace bert::kernels::cuda {

namespace {

using emu::fail;

bool valid_elem(Elem e) { return e == Elem::kF32 || e == Elem::kF16; }

const char* at(const void* p, int64_t elems, Elem e) {
  return static_cast<const char*>(p) + elems * elem_size(e);
}
char* at(void* p, int64_t elems, Elem e) { return static_cast<char*>(p) + elems * elem_size(e); }

// A vector of `n` fp32 values of a small device tensor (gamma, beta, bias), or empty for null.
std::vector<float> f32_copy(const void* p, Elem e, int64_t n) {
  std::vector<float> v;
  if (!p) return v;
  v.resize(size_t(n));
  emu::to_f32(p, e, v.data(), n);
  return v;
}

const float* data_or_null(const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); }

}  // namespace

bool convert(const void* x, Elem from, void* y, Elem to, int64_t n, void*) {
  if (!valid_elem(from) || !valid_elem(to) || n < 0) return fail("cuda::convert: bad element type or count");
  if (n == 0) return true;
  if (!x || !y) return fail("cuda::convert: null pointer");
  if (from == to) {
    if (x != y) std::memmove(y, x, size_t(n) * size_t(elem_size(from)));
    return true;
  }
  if (from == Elem::kF32)
    cpu_kernels().convert_f32_to_f16(static_cast<const float*>(x), static_cast<uint16_t*>(y), n);
  else
    cpu_kernels().convert_f16_to_f32(static_cast<const uint16_t*>(x), static_cast<float*>(y), n);
  return true;
}

bool layernorm(const LayerNormDev& a, void* stream) {
  if (!valid_elem(a.dtype) || a.rows < 0 || a.cols < 0) return fail("cuda::layernorm: bad element type or shape");
  if (a.rows == 0 || a.cols == 0) return true;
  if (!a.x || !a.gamma || !a.beta || !a.y) return fail("cuda::layernorm: null x, gamma, beta or y");
  if (a.dtype == Elem::kF32) {
    LayerNormArgs l;
    l.x = static_cast<const float*>(a.x), l.residual = static_cast<const float*>(a.residual);
    l.gamma = static_cast<const float*>(a.gamma), l.beta = static_cast<const float*>(a.beta);
    l.y = static_cast<float*>(a.y), l.rows = a.rows, l.cols = a.cols, l.eps = a.eps;
    return layernorm_f32(l, stream);
  }
  const std::vector<float> gamma = f32_copy(a.gamma, a.dtype, a.cols), beta = f32_copy(a.beta, a.dtype, a.cols);
  const auto ln = cpu_kernels().layernorm;
  emu::parallel_chunks(a.rows, a.rows * a.cols, [&](int64_t b, int64_t e) {
    const int64_t n = (e - b) * a.cols;
    std::vector<float> x(static_cast<size_t>(n)), res(a.residual ? static_cast<size_t>(n) : 0);
    emu::to_f32(at(a.x, b * a.cols, a.dtype), a.dtype, x.data(), n);
    if (a.residual) emu::to_f32(at(a.residual, b * a.cols, a.dtype), a.dtype, res.data(), n);
    LayerNormArgs l;
    l.x = x.data(), l.residual = data_or_null(res), l.gamma = gamma.data(), l.beta = beta.data(), l.y = x.data();
    l.rows = e - b, l.cols = a.cols, l.eps = a.eps;
    ln(l);
    emu::from_f32(x.data(), at(a.y, b * a.cols, a.dtype), a.dtype, n);
  });
  return true;
}

bool embed(const EmbedDev& a, void* stream) {
  if (!valid_elem(a.dtype) || a.tokens < 0 || a.width < 0) return fail("cuda::embed: bad element type or shape");
  if (a.tokens == 0 || a.width == 0) return true;
  if (!a.input_ids || !a.word_table || !a.out) return fail("cuda::embed: null input_ids, word_table or out");
  if (a.gamma && !a.beta) return fail("cuda::embed: gamma without beta");
  if (a.dtype == Elem::kF32) {
    EmbedArgs e;
    e.input_ids = a.input_ids, e.positions = a.positions, e.token_types = a.token_types;
    e.word_table = static_cast<const float*>(a.word_table);
    e.position_table = static_cast<const float*>(a.position_table);
    e.type_table = static_cast<const float*>(a.type_table);
    e.gamma = static_cast<const float*>(a.gamma), e.beta = static_cast<const float*>(a.beta);
    e.out = static_cast<float*>(a.out), e.tokens = a.tokens, e.width = a.width, e.eps = a.eps;
    return embed_f32(e, stream);
  }
  // fp16 tables: the rows a token names, converted and summed in fp32, then the LayerNorm in fp32.
  const int64_t w = a.width;
  const std::vector<float> gamma = f32_copy(a.gamma, a.dtype, w), beta = f32_copy(a.beta, a.dtype, w);
  const auto ln = cpu_kernels().layernorm;
  emu::parallel_chunks(a.tokens, a.tokens * w, [&](int64_t b, int64_t e) {
    std::vector<float> sum(static_cast<size_t>((e - b) * w)), row(static_cast<size_t>(w));
    for (int64_t t = b; t < e; ++t) {
      float* s = sum.data() + (t - b) * w;
      emu::to_f32(at(a.word_table, int64_t(a.input_ids[t]) * w, a.dtype), a.dtype, s, w);
      if (a.positions && a.position_table) {
        emu::to_f32(at(a.position_table, int64_t(a.positions[t]) * w, a.dtype), a.dtype, row.data(), w);
        for (int64_t c = 0; c < w; ++c) s[c] += row[c];
      }
      if (a.type_table) {
        emu::to_f32(at(a.type_table, int64_t(a.token_types ? a.token_types[t] : 0) * w, a.dtype), a.dtype, row.data(),
                    w);
        for (int64_t c = 0; c < w; ++c) s[c] += row[c];
      }
    }
    if (!gamma.empty()) {
      LayerNormArgs l;
      l.x = sum.data(), l.residual = nullptr, l.gamma = gamma.data(), l.beta = beta.data(), l.y = sum.data();
      l.rows = e - b, l.cols = w, l.eps = a.eps;
      ln(l);
    }
    emu::from_f32(sum.data(), at(a.out, b * w, a.dtype), a.dtype, (e - b) * w);
  });
  return true;
}

bool bias_activation(void* y, const void* bias, int64_t rows, int64_t cols, int64_t ld, Activation act, Elem dtype,
                     void*) {
  if (!valid_elem(dtype) || rows < 0 || cols < 0 || ld < cols)
    return fail("cuda::bias_activation: bad element type, shape or stride");
  if (rows == 0 || cols == 0) return true;
  if (!y) return fail("cuda::bias_activation: null y");
  const std::vector<float> b32 = f32_copy(bias, dtype, cols);
  const auto activation = cpu_kernels().activation;
  emu::parallel_chunks(rows, rows * cols * 4, [&](int64_t b, int64_t e) {
    std::vector<float> row(dtype == Elem::kF32 ? 0 : size_t(cols));
    for (int64_t r = b; r < e; ++r) {
      char* p = at(y, r * ld, dtype);
      float* v = dtype == Elem::kF32 ? reinterpret_cast<float*>(p) : row.data();
      if (dtype != Elem::kF32) emu::to_f32(p, dtype, v, cols);
      if (!b32.empty())
        for (int64_t c = 0; c < cols; ++c) v[c] += b32[size_t(c)];
      if (act != Activation::kIdentity) activation({v, cols, act});
      if (dtype != Elem::kF32) emu::from_f32(v, p, dtype, cols);
    }
  });
  return true;
}

namespace {

bool move_rows(const void* src, int64_t src_ld, void* dst, int64_t dst_ld, const int32_t* index, int64_t rows,
               int64_t width, Elem dtype, bool scatter) {
  const char* name = scatter ? "cuda::scatter_rows: bad arguments" : "cuda::gather_rows: bad arguments";
  if (!valid_elem(dtype) || rows < 0 || width < 0 || src_ld < width || dst_ld < width) return fail(name);
  if (rows == 0 || width == 0) return true;
  if (!src || !dst || !index) return fail(name);
  const size_t bytes = size_t(width * elem_size(dtype));
  emu::parallel_chunks(rows, rows * width, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t named = index[r];
      std::memcpy(at(dst, (scatter ? named : r) * dst_ld, dtype), at(src, (scatter ? r : named) * src_ld, dtype),
                  bytes);
    }
  });
  return true;
}

}  // namespace

bool gather_rows(const void* src, int64_t src_ld, void* dst, int64_t dst_ld, const int32_t* index, int64_t rows,
                 int64_t width, Elem dtype, void*) {
  return move_rows(src, src_ld, dst, dst_ld, index, rows, width, dtype, /*scatter=*/false);
}

bool scatter_rows(const void* src, int64_t src_ld, void* dst, int64_t dst_ld, const int32_t* index, int64_t rows,
                  int64_t width, Elem dtype, void*) {
  return move_rows(src, src_ld, dst, dst_ld, index, rows, width, dtype, /*scatter=*/true);
}

bool absmax_update(const void* x, int64_t rows, int64_t cols, int64_t ld, Elem dtype, float* running_absmax, void*) {
  if (!valid_elem(dtype) || rows < 0 || cols < 0 || ld < cols)
    return fail("cuda::absmax_update: bad element type, shape or stride");
  if (rows == 0 || cols == 0) return true;
  if (!x || !running_absmax) return fail("cuda::absmax_update: null x or running_absmax");
  float m = 0.f;
#pragma omp parallel if (rows * cols >= emu::kParallelMinWork)
  {
    std::vector<float> row(dtype == Elem::kF32 ? 0 : size_t(cols));
    float local = 0.f;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* v = static_cast<const float*>(static_cast<const void*>(at(x, r * ld, dtype)));
      if (dtype != Elem::kF32) {
        emu::to_f32(at(x, r * ld, dtype), dtype, row.data(), cols);
        v = row.data();
      }
      for (int64_t c = 0; c < cols; ++c) {
        const float a = std::fabs(v[c]);
        if (a > local) local = a;  // NaN compares false: ignored
      }
    }
#pragma omp critical(bert_emu_absmax)
    if (local > m) m = local;
  }
  // The GPU's atomicMax on the float bits as signed ints.
  int32_t have, mine;
  std::memcpy(&have, running_absmax, 4);
  std::memcpy(&mine, &m, 4);
  if (mine > have) *running_absmax = m;
  return true;
}

bool quantize_i8(const void* x, int64_t rows, int64_t cols, int64_t ldx, Elem dtype, const float* scale, int8_t* q,
                 void*) {
  if (!valid_elem(dtype) || rows < 0 || cols < 0 || ldx < cols)
    return fail("cuda::quantize_i8: bad element type, shape or stride");
  if (rows == 0 || cols == 0) return true;
  if (!x || !scale || !q) return fail("cuda::quantize_i8: null x, scale or q");
  const float s = *scale;
  emu::parallel_chunks(rows, rows * cols * 4, [&](int64_t b, int64_t e) {
    if (dtype == Elem::kF32) {
      quantize_i8_ref(static_cast<const float*>(x) + b * ldx, e - b, cols, ldx, s, q + b * cols);
      return;
    }
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = b; r < e; ++r) {
      emu::to_f32(at(x, r * ldx, dtype), dtype, row.data(), cols);
      quantize_i8_ref(row.data(), 1, cols, cols, s, q + r * cols);
    }
  });
  return true;
}

bool dequantize_i32(const int32_t* acc, int64_t rows, int64_t cols, const float* x_scale, const float* w_scales,
                    const float* bias, Activation act, void* y, int64_t ldy, Elem dtype, void*) {
  if (!valid_elem(dtype) || rows < 0 || cols < 0 || ldy < cols)
    return fail("cuda::dequantize_i32: bad element type, shape or stride");
  if (rows == 0 || cols == 0) return true;
  if (!acc || !x_scale || !w_scales || !y) return fail("cuda::dequantize_i32: null acc, x_scale, w_scales or y");
  const float xs = *x_scale;
  emu::parallel_chunks(rows, rows * cols * 4, [&](int64_t b, int64_t e) {
    if (dtype == Elem::kF32) {
      dequantize_i32_ref(acc + b * cols, e - b, cols, xs, w_scales, bias, act, static_cast<float*>(y) + b * ldy, ldy);
      return;
    }
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = b; r < e; ++r) {
      dequantize_i32_ref(acc + r * cols, 1, cols, xs, w_scales, bias, act, row.data(), cols);
      emu::from_f32(row.data(), at(y, r * ldy, dtype), dtype, cols);
    }
  });
  return true;
}

}  // namespace bert::kernels::cuda
