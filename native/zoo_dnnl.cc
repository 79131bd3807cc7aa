// zoo's native kernels: oneDNN convolutions and matrix products, and fused passes for batch norm,
// ReLU and SGD, run directly on tensors that live in the WebAssembly backend's heap.
//
// The heap is a SharedArrayBuffer (the threaded wasm build); a Uint8Array over it is handed to
// setHeap() and its data pointer is kept. A shared memory keeps its base address when it grows, so
// tensors are addressed by their byte offset into the heap, as the wasm backend itself does. Every
// offset is checked against the heap's length before it is used.
//
// Layouts are tfjs's: activations NHWC, convolution filters HWIO ([kh, kw, in, out]). Convolution
// primitives, their reorders and scratch buffers are created once per shape and kept.
//
// Written for oneDNN 2.x (Debian and Ubuntu's libdnnl-dev); the build refuses other major versions.

#include <node_api.h>

#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <stdexcept>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#if DNNL_VERSION_MAJOR != 2
#error "zoo's native kernels are written for oneDNN 2.x"
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ZOO_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ZOO_CLONES
#endif

namespace {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

uint8_t* g_heap = nullptr;
size_t g_heap_len = 0;
// The addon's state (the heap, cached primitives) belongs to the one thread whose wasm backend it
// serves; a second JavaScript thread (a worker with its own tfjs) is refused rather than sharing it.
std::once_flag g_owned;
std::thread::id g_owner;

void check_thread() {
  const auto me = std::this_thread::get_id();
  std::call_once(g_owned, [&] { g_owner = me; });
  if (g_owner != me) {
    throw std::runtime_error("zoo's native kernels serve one JavaScript thread per process; this is another");
  }
}

struct Failure {
  std::string message;
};

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}
dnnl::stream& stream() {
  static dnnl::stream s(engine());
  return s;
}

// ---- N-API helpers ---------------------------------------------------------------------------

napi_value throw_error(napi_env env, const std::string& message) {
  napi_throw_error(env, "ZOO_NATIVE", message.c_str());
  return nullptr;
}

struct Args {
  napi_env env;
  size_t argc = 24;
  napi_value argv[24];
  Args(napi_env e, napi_callback_info info) : env(e) {
    napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
    if (argc > 24) argc = 24;  // napi reports the call's count; only 24 were read
  }
  double num(size_t i) const {
    if (i >= argc) throw Failure{"missing argument " + std::to_string(i)};
    double v;
    if (napi_get_value_double(env, argv[i], &v) != napi_ok) throw Failure{"argument " + std::to_string(i) + " is not a number"};
    return v;
  }
  int64_t integer(size_t i) const {
    double v = num(i);
    return static_cast<int64_t>(v);
  }
  bool flag(size_t i) const { return num(i) != 0; }
};

// A pointer into the heap for `bytes` bytes at byte offset `off`; offset 0 is the null tensor.
template <typename T>
T* at(int64_t off, int64_t count) {
  if (g_heap == nullptr) throw Failure{"the wasm heap was not set"};
  const int64_t bytes = count * static_cast<int64_t>(sizeof(T));
  if (off <= 0 || count < 0 || static_cast<uint64_t>(off) + static_cast<uint64_t>(bytes) > g_heap_len) {
    throw Failure{"tensor at offset " + std::to_string(off) + " (" + std::to_string(bytes) + " bytes) is outside the heap of " +
                  std::to_string(g_heap_len) + " bytes"};
  }
  return reinterpret_cast<T*>(g_heap + off);
}

template <typename F>
napi_value guarded(napi_env env, F&& body) {
  try {
    check_thread();
    return body();
  } catch (const Failure& f) {
    return throw_error(env, f.message);
  } catch (const dnnl::error& e) {
    return throw_error(env, std::string("oneDNN: ") + e.what() + " (status " + std::to_string(static_cast<int>(e.status)) + ")");
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
}

napi_value undefined(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

// ---- heap, info, threads --------------------------------------------------------------------

napi_value SetHeap(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() -> napi_value {
    Args a(env, info);
    if (a.argc < 1) throw Failure{"setHeap needs a typed array over the heap"};
    bool is_typed = false;
    napi_is_typedarray(env, a.argv[0], &is_typed);
    if (!is_typed) throw Failure{"setHeap needs a typed array over the heap"};
    napi_typedarray_type type;
    size_t length = 0, offset = 0;
    void* data = nullptr;
    napi_value buffer;
    if (napi_get_typedarray_info(env, a.argv[0], &type, &length, &data, &buffer, &offset) != napi_ok || data == nullptr) {
      throw Failure{"the heap's typed array has no data pointer"};
    }
    if (type != napi_uint8_array || offset != 0) throw Failure{"setHeap needs a Uint8Array over the whole heap"};
    g_heap = static_cast<uint8_t*>(data);
    g_heap_len = length;
    return undefined(env);
  });
}

const char* isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}

bool isa_has_bf16(dnnl::cpu_isa isa) {
  return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
}

void set_prop(napi_env env, napi_value obj, const char* key, napi_value v) { napi_set_named_property(env, obj, key, v); }
napi_value str(napi_env env, const std::string& s) {
  napi_value v;
  napi_create_string_utf8(env, s.c_str(), s.size(), &v);
  return v;
}
napi_value number(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}
napi_value boolean(napi_env env, bool b) {
  napi_value v;
  napi_get_boolean(env, b, &v);
  return v;
}

napi_value Info(napi_env env, napi_callback_info) {
  return guarded(env, [&]() -> napi_value {
    const dnnl_version_t* v = dnnl_version();
    napi_value obj;
    napi_create_object(env, &obj);
    set_prop(env, obj, "version", str(env, std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch)));
    set_prop(env, obj, "hash", str(env, v->hash ? v->hash : ""));
    const auto isa = dnnl::get_effective_cpu_isa();
    set_prop(env, obj, "isa", str(env, isa_name(isa)));
    set_prop(env, obj, "bf16", boolean(env, isa_has_bf16(isa)));
    set_prop(env, obj, "runtime", str(env, "OpenMP"));
    set_prop(env, obj, "threads", number(env, omp_get_max_threads()));
    set_prop(env, obj, "builtWith", str(env, std::to_string(DNNL_VERSION_MAJOR) + "." + std::to_string(DNNL_VERSION_MINOR) + "." +
                                               std::to_string(DNNL_VERSION_PATCH)));
    return obj;
  });
}

napi_value SetThreads(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() -> napi_value {
    Args a(env, info);
    const int64_t n = a.integer(0);
    if (n < 1) throw Failure{"thread count must be at least 1"};
    omp_set_num_threads(static_cast<int>(n));
    return undefined(env);
  });
}

// ---- convolutions ---------------------------------------------------------------------------

// Geometry, in this order: N H W C OH OW OC KH KW SH SW DH DW PT PB PL PR (dilation as tfjs gives it,
// 1 = dense).
constexpr int kGeo = 17;
enum ConvKind { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

struct ConvPlan {
  dnnl::primitive prim;
  // User-layout memories (their handles point into the heap at each call).
  memory user_a, user_b, user_out;
  // Primitive-layout memories and the reorders between them; empty when the layouts agree.
  memory prim_a, prim_b, prim_out;
  dnnl::reorder to_a, to_b, from_out;
  bool reorder_a = false, reorder_b = false, reorder_out = false;
  std::vector<uint8_t> buf_a, buf_b, buf_out;
  int arg_a, arg_b, arg_out;
  // Forward only: a bias [OC] and a fused ReLU (post-op).
  bool has_bias = false;
  memory bias;
  // Filter taps that only ever meet padding are left out of the primitive: the filter operand starts
  // `w_offset` floats into the HWIO tensor, and a filter gradient is zeroed first (`w_total` floats).
  int64_t w_offset = 0;
  int64_t w_total = 0;
  bool zero_dw = false;
};

std::map<std::array<int, kGeo + 4>, std::unique_ptr<ConvPlan>> g_conv_plans;

memory::dims dims_nchw(int n, int c, int h, int w) { return {n, c, h, w}; }

// Binds a primitive argument: the user's memory in `user_md`, the primitive's in `want`. When they
// differ a buffer in the primitive's layout and a reorder are created.
void bind(const memory::desc& user_md, const memory::desc& want, memory& user, memory& prim, dnnl::reorder& r, bool& needs,
          std::vector<uint8_t>& buf, bool into_primitive) {
  user = memory(user_md, engine(), nullptr);
  if (user_md == want) {
    needs = false;
    prim = user;
    return;
  }
  needs = true;
  buf.resize(want.get_size());
  prim = memory(want, engine(), buf.data());
  r = into_primitive ? dnnl::reorder(user, prim) : dnnl::reorder(prim, user);
}

// The filter taps along one axis that meet the input for some output position: [first, last].
std::pair<int, int> live_taps(int in, int out, int k, int stride, int dil, int pad) {
  int first = -1, last = -1;
  for (int t = 0; t < k; t++) {
    // Input positions o * stride + t * dil - pad for o in [0, out): any in [0, in)?
    const int lo = t * dil - pad, hi = (out - 1) * stride + t * dil - pad;
    bool hit = false;
    if (hi >= 0 && lo < in) {
      // Smallest o with o * stride + lo >= 0, then check it is below `in`.
      const int o = lo >= 0 ? 0 : (-lo + stride - 1) / stride;
      hit = o < out && o * stride + lo < in;
    }
    if (hit) {
      if (first < 0) first = t;
      last = t;
    }
  }
  return {first, last};
}

ConvPlan& conv_plan(int kind, const int* g, bool bf16, bool bias, bool relu) {
  std::array<int, kGeo + 4> key;
  key[0] = kind;
  key[1] = bf16 ? 1 : 0;
  key[2] = bias ? 1 : 0;
  key[3] = relu ? 1 : 0;
  for (int i = 0; i < kGeo; i++) key[i + 4] = g[i];
  auto found = g_conv_plans.find(key);
  if (found != g_conv_plans.end()) return *found->second;

  const int N = g[0], H = g[1], W = g[2], C = g[3], OH = g[4], OW = g[5], OC = g[6], KH = g[7], KW = g[8];
  const int SH = g[9], SW = g[10], DH = g[11], DW = g[12];
  int PT = g[13], PB = g[14], PL = g[15], PR = g[16];
  const dt low = bf16 ? dt::bf16 : dt::f32;
  auto plan = std::make_unique<ConvPlan>();
  plan->w_total = int64_t(KH) * KW * C * OC;

  // The HWIO filter in oneDNN's terms: dims (O, I, H, W), strides of the full tensor.
  const memory::dims w_strides = {1, OC, int64_t(KW) * C * OC, int64_t(C) * OC};
  int kh = KH, kw = KW;
  {
    const auto th = live_taps(H, OH, KH, SH, DH, PT);
    const auto tw = live_taps(W, OW, KW, SW, DW, PL);
    if (th.first >= 0 && tw.first >= 0 && (th.first > 0 || tw.first > 0 || th.second < KH - 1 || tw.second < KW - 1)) {
      const int nkh = th.second - th.first + 1, nkw = tw.second - tw.first + 1;
      const int npt = PT - th.first * DH, npl = PL - tw.first * DW;
      const int npb = (OH - 1) * SH + (nkh - 1) * DH + 1 - H - npt;
      const int npr = (OW - 1) * SW + (nkw - 1) * DW + 1 - W - npl;
      if (npt >= 0 && npl >= 0 && npb >= 0 && npr >= 0) {
        kh = nkh;
        kw = nkw;
        PT = npt;
        PL = npl;
        PB = npb;
        PR = npr;
        plan->w_offset = (int64_t(th.first) * KW + tw.first) * C * OC;
        plan->zero_dw = kind == kBackwardWeights;
      }
    }
  }
  const memory::desc w_user({OC, C, kh, kw}, dt::f32, w_strides);

  if (kh == 1 && kw == 1 && SH == 1 && SW == 1 && PT == 0 && PB == 0 && PL == 0 && PR == 0 && OH == H && OW == W) {
    // A 1x1 convolution is a matrix product over the N*H*W positions: the NHWC activations and the
    // HWIO filter ([C, OC] row-major) are used as they lie, without reorders.
    const int64_t M = int64_t(N) * H * W;
    memory::desc a_user, b_user, c_user;
    if (kind == kForward) {  // y[M, OC] = x[M, C] @ w[C, OC]
      a_user = memory::desc({M, C}, dt::f32, memory::dims{C, 1});
      b_user = memory::desc({C, OC}, dt::f32, memory::dims{OC, 1});
      c_user = memory::desc({M, OC}, dt::f32, memory::dims{OC, 1});
    } else if (kind == kBackwardData) {  // dx[M, C] = dy[M, OC] @ w^T
      a_user = memory::desc({M, OC}, dt::f32, memory::dims{OC, 1});
      b_user = memory::desc({OC, C}, dt::f32, memory::dims{1, OC});
      c_user = memory::desc({M, C}, dt::f32, memory::dims{C, 1});
    } else {  // dw[C, OC] = x^T @ dy
      a_user = memory::desc({C, M}, dt::f32, memory::dims{1, C});
      b_user = memory::desc({M, OC}, dt::f32, memory::dims{OC, 1});
      c_user = memory::desc({C, OC}, dt::f32, memory::dims{OC, 1});
    }
    const memory::desc a_want = bf16 ? memory::desc(a_user.dims(), dt::bf16, memory::format_tag::any) : a_user;
    const memory::desc b_want = bf16 ? memory::desc(b_user.dims(), dt::bf16, memory::format_tag::any) : b_user;
    dnnl::primitive_attr attr;
    if (relu) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      attr.set_post_ops(ops);
    }
    const memory::desc bias_md({1, OC}, dt::f32, memory::dims{OC, 1});
    dnnl::matmul::desc d = bias ? dnnl::matmul::desc(a_want, b_want, bias_md, c_user) : dnnl::matmul::desc(a_want, b_want, c_user);
    dnnl::matmul::primitive_desc pd(d, attr, engine());
    plan->prim = dnnl::matmul(pd);
    bind(a_user, pd.src_desc(), plan->user_a, plan->prim_a, plan->to_a, plan->reorder_a, plan->buf_a, true);
    bind(b_user, pd.weights_desc(), plan->user_b, plan->prim_b, plan->to_b, plan->reorder_b, plan->buf_b, true);
    bind(c_user, pd.dst_desc(), plan->user_out, plan->prim_out, plan->from_out, plan->reorder_out, plan->buf_out, false);
    plan->arg_a = DNNL_ARG_SRC;
    plan->arg_b = DNNL_ARG_WEIGHTS;
    plan->arg_out = DNNL_ARG_DST;
    plan->has_bias = bias;
    if (bias) plan->bias = memory(bias_md, engine(), nullptr);
    auto& ref = *plan;
    g_conv_plans.emplace(key, std::move(plan));
    return ref;
  }

  const memory::dims strides = {SH, SW};
  const memory::dims dilates = {DH - 1, DW - 1};
  const memory::dims pad_l = {PT, PL};
  const memory::dims pad_r = {PB, PR};
  // User layouts (always f32 in the heap).
  const memory::desc x_user(dims_nchw(N, C, H, W), dt::f32, tag::nhwc);
  const memory::desc y_user(dims_nchw(N, OC, OH, OW), dt::f32, tag::nhwc);
  // What the primitives are asked for: activations stay NHWC (bf16 copies under mixed precision),
  // weights in whatever blocked layout oneDNN prefers; outputs and gradients are written in f32.
  const memory::desc x_low(dims_nchw(N, C, H, W), low, tag::nhwc);
  const memory::desc y_low(dims_nchw(N, OC, OH, OW), low, tag::nhwc);
  const memory::desc w_any({OC, C, kh, kw}, low, tag::any);
  const memory::desc w_any_f32({OC, C, kh, kw}, dt::f32, tag::any);

  const memory::desc b_md({OC}, dt::f32, tag::x);
  dnnl::convolution_forward::desc fd =
      bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, x_low, w_any, b_md, y_user,
                                             strides, dilates, pad_l, pad_r)
           : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, x_low, w_any, y_user,
                                             strides, dilates, pad_l, pad_r);
  dnnl::primitive_attr attr;
  if (relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(ops);
  }
  dnnl::convolution_forward::primitive_desc fpd(fd, attr, engine());

  if (kind == kForward) {
    plan->prim = dnnl::convolution_forward(fpd);
    plan->has_bias = bias;
    if (bias) plan->bias = memory(b_md, engine(), nullptr);
    bind(x_user, fpd.src_desc(), plan->user_a, plan->prim_a, plan->to_a, plan->reorder_a, plan->buf_a, true);
    bind(w_user, fpd.weights_desc(), plan->user_b, plan->prim_b, plan->to_b, plan->reorder_b, plan->buf_b, true);
    bind(y_user, fpd.dst_desc(), plan->user_out, plan->prim_out, plan->from_out, plan->reorder_out, plan->buf_out, false);
    plan->arg_a = DNNL_ARG_SRC;
    plan->arg_b = DNNL_ARG_WEIGHTS;
    plan->arg_out = DNNL_ARG_DST;
  } else if (kind == kBackwardData) {
    dnnl::convolution_backward_data::desc bd(dnnl::algorithm::convolution_direct, x_user, w_any, y_low, strides, dilates, pad_l, pad_r);
    dnnl::convolution_backward_data::primitive_desc bpd(bd, engine(), fpd);
    plan->prim = dnnl::convolution_backward_data(bpd);
    bind(y_user, bpd.diff_dst_desc(), plan->user_a, plan->prim_a, plan->to_a, plan->reorder_a, plan->buf_a, true);
    bind(w_user, bpd.weights_desc(), plan->user_b, plan->prim_b, plan->to_b, plan->reorder_b, plan->buf_b, true);
    bind(x_user, bpd.diff_src_desc(), plan->user_out, plan->prim_out, plan->from_out, plan->reorder_out, plan->buf_out, false);
    plan->arg_a = DNNL_ARG_DIFF_DST;
    plan->arg_b = DNNL_ARG_WEIGHTS;
    plan->arg_out = DNNL_ARG_DIFF_SRC;
  } else {
    dnnl::convolution_backward_weights::desc wd(dnnl::algorithm::convolution_direct, x_low, w_any_f32, y_low, strides, dilates, pad_l, pad_r);
    dnnl::convolution_backward_weights::primitive_desc wpd(wd, engine(), fpd);
    plan->prim = dnnl::convolution_backward_weights(wpd);
    bind(x_user, wpd.src_desc(), plan->user_a, plan->prim_a, plan->to_a, plan->reorder_a, plan->buf_a, true);
    bind(y_user, wpd.diff_dst_desc(), plan->user_b, plan->prim_b, plan->to_b, plan->reorder_b, plan->buf_b, true);
    bind(w_user, wpd.diff_weights_desc(), plan->user_out, plan->prim_out, plan->from_out, plan->reorder_out, plan->buf_out, false);
    plan->arg_a = DNNL_ARG_SRC;
    plan->arg_b = DNNL_ARG_DIFF_DST;
    plan->arg_out = DNNL_ARG_DIFF_WEIGHTS;
  }
  auto& ref = *plan;
  g_conv_plans.emplace(key, std::move(plan));
  return ref;
}

// conv(kind, geometry: Int32Array(17), a, b, out, bf16, bias = 0, relu = 0)
//   forward:          a = x,  b = filter, out = y
//   backward data:    a = dy, b = filter, out = dx
//   backward weights: a = x,  b = dy,     out = dfilter
napi_value Conv(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() -> napi_value {
    Args a(env, info);
    const int kind = static_cast<int>(a.integer(0));
    if (kind < 0 || kind > 2) throw Failure{"unknown convolution kind"};
    napi_typedarray_type type;
    size_t length = 0;
    void* data = nullptr;
    if (a.argc < 6 || napi_get_typedarray_info(env, a.argv[1], &type, &length, &data, nullptr, nullptr) != napi_ok ||
        type != napi_int32_array || length != kGeo) {
      throw Failure{"conv needs a geometry Int32Array of 17"};
    }
    const int* g = static_cast<const int*>(data);
    const bool bf16 = a.flag(5);
    const int64_t bias_off = a.argc > 6 ? a.integer(6) : 0;
    const bool relu = a.argc > 7 && a.flag(7);
    if (kind != kForward && (bias_off || relu)) throw Failure{"bias and ReLU apply to the forward convolution only"};
    ConvPlan& p = conv_plan(kind, g, bf16, bias_off != 0, relu);
    const int64_t xs = int64_t(g[0]) * g[1] * g[2] * g[3];
    const int64_t ys = int64_t(g[0]) * g[4] * g[5] * g[6];
    const int64_t ws = int64_t(g[7]) * g[8] * g[3] * g[6];
    const int64_t sizes[3][3] = {{xs, ws, ys}, {ys, ws, xs}, {xs, ys, ws}};
    float* pa = at<float>(a.integer(2), sizes[kind][0]);
    float* pb = at<float>(a.integer(3), sizes[kind][1]);
    float* po = at<float>(a.integer(4), sizes[kind][2]);
    if (kind == kBackwardWeights) {
      if (p.zero_dw) std::memset(po, 0, sizeof(float) * p.w_total);
      po += p.w_offset;
    } else {
      pb += p.w_offset;
    }
    p.user_a.set_data_handle(pa);
    p.user_b.set_data_handle(pb);
    p.user_out.set_data_handle(po);
    auto& s = stream();
    if (p.reorder_a) p.to_a.execute(s, p.user_a, p.prim_a);
    if (p.reorder_b) p.to_b.execute(s, p.user_b, p.prim_b);
    std::unordered_map<int, memory> args = {{p.arg_a, p.prim_a}, {p.arg_b, p.prim_b}, {p.arg_out, p.prim_out}};
    if (p.has_bias) {
      p.bias.set_data_handle(at<float>(bias_off, g[6]));
      args.insert({DNNL_ARG_BIAS, p.bias});
    }
    p.prim.execute(s, args);
    if (p.reorder_out) p.from_out.execute(s, p.prim_out, p.user_out);
    s.wait();
    return undefined(env);
  });
}

// ---- matrix products ------------------------------------------------------------------------

struct MatmulPlan {
  dnnl::matmul prim;
  memory a, b, c;
};
std::map<std::array<int64_t, 7>, std::unique_ptr<MatmulPlan>> g_matmul_plans;

// matmul(a, b, c, batch, M, K, N, transA, transB, batchA, batchB): c[batch, M, N] = op(a) @ op(b), with
// a [batchA, M, K] (or [batchA, K, M] transposed) and b [batchB, K, N] (or [batchB, N, K]); a batch of
// 1 broadcasts.
napi_value Matmul(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() -> napi_value {
    Args a(env, info);
    const int64_t batch = a.integer(3), M = a.integer(4), K = a.integer(5), N = a.integer(6);
    const bool ta = a.flag(7), tb = a.flag(8);
    const int64_t ba = a.integer(9), bb = a.integer(10);
    if (batch < 1 || M < 1 || K < 1 || N < 1 || (ba != 1 && ba != batch) || (bb != 1 && bb != batch)) {
      throw Failure{"matmul: bad dimensions"};
    }
    std::array<int64_t, 7> key = {batch, M, K, N, (ta ? 1 : 0) | (tb ? 2 : 0), ba, bb};
    auto found = g_matmul_plans.find(key);
    MatmulPlan* plan;
    if (found == g_matmul_plans.end()) {
      const memory::desc a_md({ba, M, K}, dt::f32, ta ? memory::dims{M * K, 1, M} : memory::dims{M * K, K, 1});
      const memory::desc b_md({bb, K, N}, dt::f32, tb ? memory::dims{K * N, 1, K} : memory::dims{K * N, N, 1});
      const memory::desc c_md({batch, M, N}, dt::f32, memory::dims{M * N, N, 1});
      dnnl::matmul::desc d(a_md, b_md, c_md);
      dnnl::matmul::primitive_desc pd(d, engine());
      auto p = std::make_unique<MatmulPlan>();
      p->prim = dnnl::matmul(pd);
      p->a = memory(a_md, engine(), nullptr);
      p->b = memory(b_md, engine(), nullptr);
      p->c = memory(c_md, engine(), nullptr);
      plan = p.get();
      g_matmul_plans.emplace(key, std::move(p));
    } else {
      plan = found->second.get();
    }
    plan->a.set_data_handle(at<float>(a.integer(0), ba * M * K));
    plan->b.set_data_handle(at<float>(a.integer(1), bb * K * N));
    plan->c.set_data_handle(at<float>(a.integer(2), batch * M * N));
    plan->prim.execute(stream(), {{DNNL_ARG_SRC, plan->a}, {DNNL_ARG_WEIGHTS, plan->b}, {DNNL_ARG_DST, plan->c}});
    stream().wait();
    return undefined(env);
  });
}

// ---- batch norm (training mode), ReLU gradient, SGD ------------------------------------------
//
// The formulas are those of src/backend/kernels/batchnorm_math.ts; sums are accumulated in double.
// Work is split over positions; each thread adds its partial sums into its own row.

// 1.0f where y > 0, else 0.0f, made from the comparison's bits. Written as dy * float(y > 0.f), GCC
// turns the product into a branch on y (keeping dy * 0's NaN and signed zero) and leaves the loop
// scalar; on a ReLU's outputs that branch is mispredicted half the time, which made these passes
// 5-10x slower than memory allows. The product with this mask has the same bits and vectorizes.
inline float relu_mask(float y) {
  const uint32_t all = 0u - static_cast<uint32_t>(y > 0.f);
  const uint32_t bits = all & 0x3f800000u;  // the bits of 1.0f
  float m;
  std::memcpy(&m, &bits, sizeof m);
  return m;
}

ZOO_CLONES void bn_stats_range(const float* x, int64_t C, int64_t p0, int64_t p1, double* s, double* q) {
  for (int64_t p = p0; p < p1; p++) {
    const float* r = x + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; c++) {
      const double v = r[c];
      s[c] += v;
      q[c] += v * v;
    }
  }
}

ZOO_CLONES void bn_apply_range(const float* x, float* y, const float* res, int64_t C, int64_t p0, int64_t p1, const float* scale,
                               const float* shift, bool relu) {
  for (int64_t p = p0; p < p1; p++) {
    const float* xr = x + p * C;
    float* yr = y + p * C;
    const float* rr = res ? res + p * C : nullptr;
    if (rr && relu) {
#pragma omp simd
      for (int64_t c = 0; c < C; c++) {
        const float v = xr[c] * scale[c] + shift[c] + rr[c];
        yr[c] = v < 0.f ? 0.f : v;  // a NaN stays NaN, as in the wasm kernel
      }
    } else if (rr) {
#pragma omp simd
      for (int64_t c = 0; c < C; c++) yr[c] = xr[c] * scale[c] + shift[c] + rr[c];
    } else if (relu) {
#pragma omp simd
      for (int64_t c = 0; c < C; c++) {
        const float v = xr[c] * scale[c] + shift[c];
        yr[c] = v < 0.f ? 0.f : v;  // a NaN stays NaN, as in the wasm kernel
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; c++) yr[c] = xr[c] * scale[c] + shift[c];
    }
  }
}

// Sums of g and g * (x - mean) over rows [p0, p1): each block of up to 32 rows is summed in float
// (eight lanes), and the blocks in double.
template <bool RELU, bool RES>
ZOO_CLONES void bn_grad_reduce_rows(const float* dy, const float* x, const float* y, float* dres, const float* mean, int64_t C, int64_t p0,
                                    int64_t p1, double* sg, double* sgx) {
  std::vector<float> bs(C), bx(C);
  for (int64_t b0 = p0; b0 < p1; b0 += 32) {
    const int64_t b1 = std::min(p1, b0 + 32);
    std::fill(bs.begin(), bs.end(), 0.f);
    std::fill(bx.begin(), bx.end(), 0.f);
    float* __restrict fs = bs.data();
    float* __restrict fx = bx.data();
    for (int64_t p = b0; p < b1; p++) {
      const int64_t o = p * C;
#pragma omp simd
      for (int64_t c = 0; c < C; c++) {
        const float g = RELU ? dy[o + c] * relu_mask(y[o + c]) : dy[o + c];
        if (RES) dres[o + c] = g;
        fs[c] += g;
        fx[c] += g * (x[o + c] - mean[c]);
      }
    }
    for (int64_t c = 0; c < C; c++) {
      sg[c] += fs[c];
      sgx[c] += fx[c];
    }
  }
}

void bn_grad_reduce_range(const float* dy, const float* x, const float* y, float* dres, const float* mean, int64_t C, int64_t p0, int64_t p1,
                          double* sg, double* sgx) {
  if (y && dres) bn_grad_reduce_rows<true, true>(dy, x, y, dres, mean, C, p0, p1, sg, sgx);
  else if (y) bn_grad_reduce_rows<true, false>(dy, x, y, dres, mean, C, p0, p1, sg, sgx);
  else if (dres) bn_grad_reduce_rows<false, true>(dy, x, y, dres, mean, C, p0, p1, sg, sgx);
  else bn_grad_reduce_rows<false, false>(dy, x, y, dres, mean, C, p0, p1, sg, sgx);
}

ZOO_CLONES void bn_grad_apply_range(const float* dy, const float* x, const float* y, float* dx, const float* mean, const float* ka,
                                    const float* kb, const float* kk, int64_t C, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; p++) {
    const int64_t o = p * C;
    if (y) {
#pragma omp simd
      for (int64_t c = 0; c < C; c++) {
        const float g = dy[o + c] * relu_mask(y[o + c]);
        dx[o + c] = ka[c] * g + kb[c] * (x[o + c] - mean[c]) + kk[c];
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; c++) dx[o + c] = ka[c] * dy[o + c] + kb[c] * (x[o + c] - mean[c]) + kk[c];
    }
  }
}

// Runs body(p0, p1, thread) over [0, P) on the OpenMP pool, in contiguous ranges, one per thread.
template <typename F>
void parallel_ranges(int64_t P, int64_t min_per_thread, F&& body) {
  int threads = omp_get_max_threads();
  if (P < min_per_thread * 2) threads = 1;
  if (threads == 1) {
    body(0, P, 0);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    const int n = omp_get_num_threads();
    const int64_t p0 = P * t / n, p1 = P * (t + 1) / n;
    body(p0, p1, t);
  }
}

// Per-thread sums reduced into one double row per quantity.
struct Partials {
  int threads;
  int64_t C;
  std::vector<double> rows;
  Partials(int64_t c, int quantities) : threads(omp_get_max_threads()), C(c), rows(size_t(threads) * quantities * c, 0.0) {}
  double* row(int t, int q) { return rows.data() + (size_t(t) * 2 + q) * C; }
  void total(int q, double* out) {
    for (int64_t c = 0; c < C; c++) out[c] = 0;
    for (int t = 0; t < threads; t++) {
      const double* r = row(t, q);
      for (int64_t c = 0; c < C; c++) out[c] += r[c];
    }
  }
};

constexpr int64_t kMinElements = 16384;

// bnTrain(x, y, residual | 0, gamma, beta, mean, invstd, P, C, epsilon, relu)
napi_value BnTrain(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() -> napi_value {
    Args a(env, info);
    const int64_t P = a.integer(7), C = a.integer(8);
    const double eps = a.num(9);
    const bool relu = a.flag(10);
    const float* x = at<float>(a.integer(0), P * C);
    float* y = at<float>(a.integer(1), P * C);
    const float* res = a.integer(2) ? at<float>(a.integer(2), P * C) : nullptr;
    const float* gamma = at<float>(a.integer(3), C);
    const float* beta = at<float>(a.integer(4), C);
    float* mean = at<float>(a.integer(5), C);
    float* invstd = at<float>(a.integer(6), C);
    Partials part(C, 2);
    const int64_t min_rows = std::max<int64_t>(1, kMinElements / C);
    parallel_ranges(P, min_rows, [&](int64_t p0, int64_t p1, int t) { bn_stats_range(x, C, p0, p1, part.row(t, 0), part.row(t, 1)); });
    std::vector<double> s(C), q(C);
    part.total(0, s.data());
    part.total(1, q.data());
    std::vector<float> scale(C), shift(C);
    for (int64_t c = 0; c < C; c++) {
      const double m = s[c] / double(P);
      const double v = std::max(q[c] / double(P) - m * m, 0.0);
      mean[c] = float(m);
      invstd[c] = float(1.0 / std::sqrt(v + eps));
      scale[c] = gamma[c] * invstd[c];
      shift[c] = beta[c] - mean[c] * scale[c];
    }
    parallel_ranges(P, min_rows, [&](int64_t p0, int64_t p1, int) { bn_apply_range(x, y, res, C, p0, p1, scale.data(), shift.data(), relu); });
    return undefined(env);
  });
}

// bnTrainGrad(dy, x, y | 0, dresidual | 0, gamma, mean, invstd, dx, dgamma, dbeta, P, C)
napi_value BnTrainGrad(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() -> napi_value {
    Args a(env, info);
    const int64_t P = a.integer(10), C = a.integer(11);
    const float* dy = at<float>(a.integer(0), P * C);
    const float* x = at<float>(a.integer(1), P * C);
    const float* y = a.integer(2) ? at<float>(a.integer(2), P * C) : nullptr;
    float* dres = a.integer(3) ? at<float>(a.integer(3), P * C) : nullptr;
    const float* gamma = at<float>(a.integer(4), C);
    const float* mean = at<float>(a.integer(5), C);
    const float* invstd = at<float>(a.integer(6), C);
    float* dx = at<float>(a.integer(7), P * C);
    float* dgamma = at<float>(a.integer(8), C);
    float* dbeta = at<float>(a.integer(9), C);
    Partials part(C, 2);
    const int64_t min_rows = std::max<int64_t>(1, kMinElements / C);
    parallel_ranges(P, min_rows, [&](int64_t p0, int64_t p1, int t) {
      bn_grad_reduce_range(dy, x, y, dres, mean, C, p0, p1, part.row(t, 0), part.row(t, 1));
    });
    std::vector<double> sg(C), sgx(C);
    part.total(0, sg.data());
    part.total(1, sgx.data());
    std::vector<float> ka(C), kb(C), kk(C);
    for (int64_t c = 0; c < C; c++) {
      const float is = invstd[c];
      const float ac = gamma[c] * is;
      ka[c] = ac;
      kb[c] = float((-double(gamma[c]) * is * is * is * sgx[c]) / double(P));
      kk[c] = float((-double(ac) * sg[c]) / double(P));
      dgamma[c] = float(sgx[c] * is);
      dbeta[c] = float(sg[c]);
    }
    parallel_ranges(P, min_rows, [&](int64_t p0, int64_t p1, int) {
      bn_grad_apply_range(dy, x, y, dx, mean, ka.data(), kb.data(), kk.data(), C, p0, p1);
    });
    return undefined(env);
  });
}

ZOO_CLONES void relu_grad_range(const float* dy, const float* y, float* dx, int64_t i0, int64_t i1) {
#pragma omp simd
  for (int64_t i = i0; i < i1; i++) dx[i] = dy[i] * relu_mask(y[i]);
}

// reluGrad(dy, y, dx, n)
napi_value ReluGrad(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() -> napi_value {
    Args a(env, info);
    const int64_t n = a.integer(3);
    const float* dy = at<float>(a.integer(0), n);
    const float* y = at<float>(a.integer(1), n);
    float* dx = at<float>(a.integer(2), n);
    parallel_ranges(n, kMinElements, [&](int64_t i0, int64_t i1, int) { relu_grad_range(dy, y, dx, i0, i1); });
    return undefined(env);
  });
}

ZOO_CLONES void sgd_range(const float* w, const float* g, const float* v, float* wo, float* vo, int64_t i0, int64_t i1, float lr, float m,
                          float wd, float s, bool nesterov) {
  if (nesterov) {
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) {
      const float d = g[i] * s + wd * w[i];
      const float vn = m * v[i] + d;
      vo[i] = vn;
      wo[i] = w[i] - lr * (d + m * vn);
    }
  } else {
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) {
      const float d = g[i] * s + wd * w[i];
      const float vn = m * v[i] + d;
      vo[i] = vn;
      wo[i] = w[i] - lr * vn;
    }
  }
}

// sgd(w, g, v, wOut, vOut, n, lr, momentum, weightDecay, gradScale, nesterov)
napi_value Sgd(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() -> napi_value {
    Args a(env, info);
    const int64_t n = a.integer(5);
    const float* w = at<float>(a.integer(0), n);
    const float* g = at<float>(a.integer(1), n);
    const float* v = at<float>(a.integer(2), n);
    float* wo = at<float>(a.integer(3), n);
    float* vo = at<float>(a.integer(4), n);
    const float lr = float(a.num(6)), m = float(a.num(7)), wd = float(a.num(8)), s = float(a.num(9));
    const bool nesterov = a.flag(10);
    parallel_ranges(n, kMinElements, [&](int64_t i0, int64_t i1, int) { sgd_range(w, g, v, wo, vo, i0, i1, lr, m, wd, s, nesterov); });
    return undefined(env);
  });
}

// ---- pooling gradients ----------------------------------------------------------------------
//
// As src/backend/kernels/pool.ts defines them: max pooling sends the gradient to the first maximum of
// each window in row-major order; average pooling divides by the number of input positions inside the
// window (the forward pass's divisor). The work is split over (image, channel block) pairs, which
// never write the same element.

struct PoolGeo {
  int64_t N, H, W, C, OH, OW, fh, fw, sh, sw, pt, pl;
};

PoolGeo pool_geo(const Args& a, size_t first) {
  PoolGeo g;
  int64_t* f[] = {&g.N, &g.H, &g.W, &g.C, &g.OH, &g.OW, &g.fh, &g.fw, &g.sh, &g.sw, &g.pt, &g.pl};
  for (size_t i = 0; i < 12; i++) *f[i] = a.integer(first + i);
  if (g.N < 1 || g.H < 1 || g.W < 1 || g.C < 1 || g.OH < 1 || g.OW < 1 || g.fh < 1 || g.fw < 1 || g.sh < 1 || g.sw < 1) {
    throw Failure{"pooling: bad geometry"};
  }
  return g;
}

template <typename F>
void over_image_blocks(const PoolGeo& g, F&& body) {
  const int threads = omp_get_max_threads();
  const int64_t blocks = g.C >= 32 ? std::min<int64_t>(threads, g.C / 16) : 1;
  const int64_t items = g.N * blocks;
#pragma omp parallel for schedule(static) num_threads(threads) if (items > 1 && g.N * g.H * g.W * g.C >= kMinElements)
  for (int64_t it = 0; it < items; it++) {
    const int64_t n = it / blocks, b = it % blocks;
    body(n, g.C * b / blocks, g.C * (b + 1) / blocks);
  }
}

// One image's channels [c0, c1) of the max-pool gradient. Per window, the first tap initializes each
// channel's maximum and later taps replace it only when strictly greater (so the first maximum wins
// ties, and a NaN first tap stays), as selects that vectorize over the channels.
ZOO_CLONES void max_pool_grad_block(const PoolGeo& g, const float* x, const float* dy, float* dx, int64_t n, int64_t c0, int64_t c1) {
  const int64_t nc = c1 - c0;
  std::vector<float> best_v(nc);
  std::vector<int32_t> tap_v(nc);
  std::vector<int64_t> off_v(size_t(g.fh * g.fw));
  float* __restrict best = best_v.data();
  int32_t* __restrict tap = tap_v.data();
  int64_t* off = off_v.data();
  for (int64_t oh = 0; oh < g.OH; oh++)
    for (int64_t ow = 0; ow < g.OW; ow++) {
      const int64_t h0 = oh * g.sh - g.pt, w0 = ow * g.sw - g.pl;
      const int64_t i0 = std::max<int64_t>(0, h0), i1 = std::min(g.H, h0 + g.fh);
      const int64_t j0 = std::max<int64_t>(0, w0), j1 = std::min(g.W, w0 + g.fw);
      if (i0 >= i1 || j0 >= j1) continue;  // a window wholly in the padding passes nothing back
      int32_t k = 0;
      for (int64_t i = i0; i < i1; i++)
        for (int64_t j = j0; j < j1; j++, k++) {
          off[k] = ((n * g.H + i) * g.W + j) * g.C + c0;
          const float* __restrict r = x + off[k];
          if (k == 0) {
            for (int64_t c = 0; c < nc; c++) {
              best[c] = r[c];
              tap[c] = 0;
            }
            continue;
          }
#pragma omp simd
          for (int64_t c = 0; c < nc; c++) {
            const bool take = r[c] > best[c];
            best[c] = take ? r[c] : best[c];
            tap[c] = take ? k : tap[c];
          }
        }
      const float* d = dy + ((n * g.OH + oh) * g.OW + ow) * g.C + c0;
      for (int64_t c = 0; c < nc; c++) dx[off[tap[c]] + c] += d[c];
    }
}

// maxPoolGrad(x, dy, dx, N, H, W, C, OH, OW, fh, fw, sh, sw, pt, pl)
napi_value MaxPoolGrad(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() -> napi_value {
    Args a(env, info);
    const PoolGeo g = pool_geo(a, 3);
    const float* x = at<float>(a.integer(0), g.N * g.H * g.W * g.C);
    const float* dy = at<float>(a.integer(1), g.N * g.OH * g.OW * g.C);
    float* dx = at<float>(a.integer(2), g.N * g.H * g.W * g.C);
    std::memset(dx, 0, sizeof(float) * g.N * g.H * g.W * g.C);
    over_image_blocks(g, [&](int64_t n, int64_t c0, int64_t c1) { max_pool_grad_block(g, x, dy, dx, n, c0, c1); });
    return undefined(env);
  });
}

// avgPoolGrad(dy, dx, N, H, W, C, OH, OW, fh, fw, sh, sw, pt, pl)
napi_value AvgPoolGrad(napi_env env, napi_callback_info info) {
  return guarded(env, [&]() -> napi_value {
    Args a(env, info);
    const PoolGeo g = pool_geo(a, 2);
    const float* dy = at<float>(a.integer(0), g.N * g.OH * g.OW * g.C);
    float* dx = at<float>(a.integer(1), g.N * g.H * g.W * g.C);
    std::memset(dx, 0, sizeof(float) * g.N * g.H * g.W * g.C);
    over_image_blocks(g, [&](int64_t n, int64_t c0, int64_t c1) {
      for (int64_t oh = 0; oh < g.OH; oh++)
        for (int64_t ow = 0; ow < g.OW; ow++) {
          const int64_t h0 = oh * g.sh - g.pt, w0 = ow * g.sw - g.pl;
          const int64_t i0 = std::max<int64_t>(0, h0), i1 = std::min(g.H, h0 + g.fh);
          const int64_t j0 = std::max<int64_t>(0, w0), j1 = std::min(g.W, w0 + g.fw);
          const int64_t count = std::max<int64_t>(i1 - i0, 0) * std::max<int64_t>(j1 - j0, 0);
          if (count == 0) continue;
          const float inv = 1.f / float(count);
          const float* d = dy + ((n * g.OH + oh) * g.OW + ow) * g.C;
          for (int64_t i = i0; i < i1; i++)
            for (int64_t j = j0; j < j1; j++) {
              float* r = dx + ((n * g.H + i) * g.W + j) * g.C;
#pragma omp simd
              for (int64_t c = c0; c < c1; c++) r[c] += d[c] * inv;
            }
        }
    });
    return undefined(env);
  });
}


napi_value Init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"setHeap", nullptr, SetHeap, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"info", nullptr, Info, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setThreads", nullptr, SetThreads, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"conv", nullptr, Conv, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"matmul", nullptr, Matmul, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"bnTrain", nullptr, BnTrain, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"bnTrainGrad", nullptr, BnTrainGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"reluGrad", nullptr, ReluGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"maxPoolGrad", nullptr, MaxPoolGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"avgPoolGrad", nullptr, AvgPoolGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"sgd", nullptr, Sgd, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
