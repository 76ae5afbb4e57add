#include <dnnl.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>
#include <unordered_map>
using namespace dnnl;
using dt = memory::data_type;
int main() {
  engine eng(engine::kind::cpu, 0); stream s(eng);
  for (int M : {1, 128}) for (int user : {0, 1}) for (int binary : {0, 1}) {
    const int N = 768, K = 768;
    memory::desc a({M, K}, dt::s8, memory::format_tag::ab), b_any({K, N}, dt::s8, memory::format_tag::any),
        b({K, N}, dt::s8, memory::format_tag::ab), c({M, N}, dt::f32, memory::format_tag::ab), bias({1, N}, dt::f32, memory::format_tag::ab);
    primitive_attr attr;
    attr.set_output_scales(0, {0.01f});
    if (binary) { post_ops po; po.append_binary(algorithm::binary_mul, memory::desc({1, N}, dt::f32, memory::format_tag::ab)); attr.set_post_ops(po); }
    if (user) attr.set_scratchpad_mode(scratchpad_mode::user);
    matmul::primitive_desc pd(matmul::desc(a, b_any, bias, c), attr, eng);
    memory A(a, eng), B(b, eng), Bp(pd.weights_desc(), eng), C(c, eng), Bias(bias, eng), Sc(memory::desc({1, N}, dt::f32, memory::format_tag::ab), eng);
    memory SP(pd.scratchpad_desc(), eng);
    std::memset(A.get_data_handle(), 1, a.get_size()); std::memset(B.get_data_handle(), 1, b.get_size());
    reorder(B, Bp).execute(s, B, Bp);
    matmul mm(pd);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, A}, {DNNL_ARG_WEIGHTS, Bp}, {DNNL_ARG_DST, C}, {DNNL_ARG_BIAS, Bias}};
    if (binary) args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1] = Sc;
    if (user) args[DNNL_ARG_SCRATCHPAD] = SP;
    for (int i = 0; i < 50; ++i) mm.execute(s, args);
    s.wait();
    std::vector<double> ts;
    for (int r = 0; r < 200; ++r) { auto t0 = std::chrono::steady_clock::now(); mm.execute(s, args); s.wait(); ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()); }
    std::sort(ts.begin(), ts.end());
    printf("M=%3d scratchpad %-7s binary %d: %.1f us (scratchpad %zu bytes) %s\n", M, user ? "user" : "library", binary, ts[100] * 1e6, pd.scratchpad_desc().get_size(), pd.impl_info_str());
  }
}
