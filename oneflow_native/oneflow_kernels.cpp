// CPU kernels for the ops of OneFlow 0.9.0 that LeNet runs: its convolutions on oneDNN, its max-pooling and its
// bias gradients in plain C++. oneflow_setup.py loads the library once the CPU is chosen, after `import oneflow`
// and before the first graph is built, as oneflow.utils.load_library would (a dlopen): its kernels register
// themselves with OneFlow's kernel registry as it loads.
//
// OneFlow 0.9's own CPU convolution (oneflow/user/kernels/conv_kernels.cpp) copies each image into a column buffer
// element by element (im2col) and runs one sgemm per image; its data gradient scatters back the same way (col2im).
// oneDNN's direct convolutions (the ones PyTorch runs) do neither. Each kernel here registers for an op OneFlow
// already has, at kKernelPriorityOptimized (10, above the built-in kernels' 0), and only where its conditions hold:
// the CPU, float32, 2-D, channels first, groups == 1, and a primitive oneDNN can make for the shapes. Everything
// else (double, groups, 1-D and 3-D, channels last, the GPU) keeps OneFlow's own kernels, chosen by the registry,
// and so does an op with an _add_to_output input: no pass of OneFlow 0.9.0 gives a convolution one
// (job_rewriter/fuse_add_to_output_pass.cpp lists none), so there is nothing to test it on.
//
// The ops and their tensors (oneflow/ir/include/OneFlow/OneFlowUserOps.td):
//   conv2d            in (N, C, H, W), weight (O, C, KH, KW), bias (O) optional -> out
//   conv_data_grad    dy, filter, x_like -> dx
//   conv_filter_grad  dy, x -> filter_diff
//   reduce_sum        input_tensor (N, C, ...) summed over every axis but 1 -> output_tensor (C): a bias's gradient
//   max_pool_2d       x (N, C, H, W) -> y, indice (the offset in its H * W plane of each maximum)
//   max_pool_2d_grad  dy, indice -> dx
// The pooling kernels are OneFlow's own arithmetic (max_pool_kernel_util.h: the same window, the same maximum
// and index, NaN included) without its division of every output's offset into (n * c, h, w).
#include <oneapi/dnnl/dnnl.hpp>

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "oneflow/core/framework/framework.h"

namespace oneflow {
namespace {

using dims = dnnl::memory::dims;
using tag = dnnl::memory::format_tag;
constexpr auto f32 = dnnl::memory::data_type::f32;

// Runs of each kernel since the start, for the tests and oneflow_setup.kernel_runs(): which kernels ran.
std::atomic<long> forward_runs, data_grad_runs, filter_grad_runs, channel_sum_runs, pool_runs, pool_grad_runs;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// [[noreturn]] where oneDNN fails on a primitive it said it could make: a bug, not bad input.
[[noreturn]] void Fail(const char* what, const dnnl::error& e) {
  std::fprintf(stderr, "oneflow_kernels: %s failed in oneDNN: %s (status %d)\n", what, e.what(),
               static_cast<int>(e.status));
  std::abort();
}

dims DimsOf(const Shape& shape) {
  dims d;
  for (int64_t i = 0; i < shape.NumAxes(); ++i) { d.push_back(shape.At(i)); }
  return d;
}

// A convolution's geometry in oneDNN's terms: dilation counts from 0, and the right padding is what makes OneFlow's
// output size (OneFlow pads padding_before on both sides and drops what the last stride does not reach, which can
// make it negative).
struct Geometry {
  dims x, w, y, strides, dilates, pad_l, pad_r;
  bool bias = false;
  bool operator<(const Geometry& o) const {
    return std::tie(x, w, y, strides, dilates, pad_l, pad_r, bias)
           < std::tie(o.x, o.w, o.y, o.strides, o.dilates, o.pad_l, o.pad_r, o.bias);
  }
};

// Ctx: a KernelRegContext (the registry's conditions) or a KernelComputeContext (a run): both give shapes and attrs.
template<typename Ctx>
Geometry GeometryOf(const Ctx& ctx, const char* x, const char* w, const char* y) {
  Geometry g;
  g.x = DimsOf(ctx.TensorDesc4ArgNameAndIndex(x, 0)->shape());
  g.w = DimsOf(ctx.TensorDesc4ArgNameAndIndex(w, 0)->shape());
  g.y = DimsOf(ctx.TensorDesc4ArgNameAndIndex(y, 0)->shape());
  const auto& strides = ctx.template Attr<std::vector<int32_t>>("strides");
  const auto& dilation = ctx.template Attr<std::vector<int32_t>>("dilation_rate");
  const auto& padding = ctx.template Attr<std::vector<int32_t>>("padding_before");
  for (size_t i = 0; i < 2; ++i) {
    g.strides.push_back(strides.at(i));
    g.dilates.push_back(dilation.at(i) - 1);
    g.pad_l.push_back(padding.at(i));
    g.pad_r.push_back((g.y[i + 2] - 1) * strides[i] + (g.w[i + 2] - 1) * dilation[i] + 1 - g.x[i + 2]
                      - padding[i]);
  }
  return g;
}

dnnl::memory::desc Plain(const dims& d, tag t) { return dnnl::memory::desc(d, f32, t); }
dnnl::memory::desc Any(const dims& d) { return dnnl::memory::desc(d, f32, tag::any); }

// Layouts left to oneDNN (tag::any): it picks its blocked ones (8 or 16 channels together, by the CPU), whose
// direct convolutions are the fast ones; Plan reorders OneFlow's plain tensors into and out of them.
dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g) {
  if (g.bias) {
    return {Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, Any(g.x), Any(g.w),
            Plain({g.w[0]}, tag::x), Any(g.y), g.strides, g.dilates, g.pad_l, g.pad_r};
  }
  return {Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, Any(g.x), Any(g.w),
          Any(g.y), g.strides, g.dilates, g.pad_l, g.pad_r};
}

dnnl::convolution_backward_data::primitive_desc DataGradDesc(const Geometry& g) {
  return {Engine(), dnnl::algorithm::convolution_direct, Any(g.x), Any(g.w), Any(g.y), g.strides, g.dilates,
          g.pad_l, g.pad_r, ForwardDesc(g)};
}

dnnl::convolution_backward_weights::primitive_desc FilterGradDesc(const Geometry& g) {
  // An input of fewer channels than a block (8 with AVX2, 16 with AVX-512), LeNet's first layer's 1, is padded to
  // one in oneDNN's blocked layouts; plain ones take its im2col and sgemm instead, 2.4 ms against 9.1 ms for
  // conv1 on 50 images (AVX2).
  if (g.x[1] < 8) {
    return {Engine(), dnnl::algorithm::convolution_direct, Plain(g.x, tag::nchw), Plain(g.w, tag::oihw),
            Plain(g.y, tag::nchw), g.strides, g.dilates, g.pad_l, g.pad_r, ForwardDesc(g)};
  }
  return {Engine(), dnnl::algorithm::convolution_direct, Any(g.x), Any(g.w), Any(g.y), g.strides, g.dilates,
          g.pad_l, g.pad_r, ForwardDesc(g)};
}

// One argument of a primitive: its oneDNN argument id, OneFlow's plain layout of it, and whether it is written
// (summed into what is there already, where `accumulates`: a filter gradient over several runs).
struct Arg {
  int id;
  dnnl::memory::desc plain;
  bool written;
  bool accumulates = false;
};

// Bytes for the blocked copies of a run's arguments, one buffer for each thread, shared by every plan: a run needs
// its copies only while it runs, and a thread runs one plan at a time.
char* ThreadBuffer(size_t bytes) {
  thread_local std::unique_ptr<char, decltype(&std::free)> buffer(nullptr, &std::free);
  thread_local size_t size = 0;
  if (bytes > size) {
    buffer.reset(static_cast<char*>(std::aligned_alloc(64, bytes)));
    if (!buffer) { throw std::bad_alloc(); }
    size = bytes;
  }
  return buffer.get();
}

size_t Aligned(size_t bytes) { return (bytes + 63) / 64 * 64; }

// A primitive with what it needs to run on OneFlow's plain tensors: for each argument whose layout oneDNN chose
// differently, a place in the thread's buffer and a reorder into it (inputs) or out of it (outputs).
class Plan {
 public:
  template<typename Desc>
  Plan(const Desc& desc, std::vector<Arg> args) : primitive_(desc), args_(std::move(args)) {
    for (const Arg& arg : args_) {
      Blocked blocked{desc.query_md(dnnl::query::exec_arg_md, arg.id), bytes_, {}, {}};
      if (blocked.desc != arg.plain || arg.accumulates) {
        blocked.reorder = arg.written ? dnnl::reorder({Engine(), blocked.desc, Engine(), arg.plain})
                                      : dnnl::reorder({Engine(), arg.plain, Engine(), blocked.desc});
        bytes_ += Aligned(blocked.desc.get_size());
      }
      if (arg.accumulates) {
        dnnl::post_ops sum;
        sum.append_sum(1.0f);
        dnnl::primitive_attr attr;
        attr.set_post_ops(sum);
        blocked.reorder_sum = dnnl::reorder({Engine(), blocked.desc, Engine(), arg.plain, attr});
      }
      blocked_.push_back(blocked);
    }
  }

  // Runs the primitive on data[i], the pointer of args[i], on the calling thread; with `sum`, what it writes to an
  // argument that accumulates is added to the tensor's values rather than put in their place.
  void Run(const std::vector<const void*>& data, bool sum = false) const {
    char* buffer = ThreadBuffer(bytes_);
    dnnl::stream stream(Engine());
    std::unordered_map<int, dnnl::memory> execute_args;
    struct Output {
      dnnl::memory copy, plain;
      const dnnl::reorder& reorder;
    };
    std::vector<Output> outputs;  // reordered into OneFlow's tensors once the primitive has run
    for (size_t i = 0; i < args_.size(); ++i) {
      dnnl::memory plain(args_[i].plain, Engine(), const_cast<void*>(data[i]));
      const Blocked& blocked = blocked_[i];
      if (!blocked.reorder) {
        execute_args.emplace(args_[i].id, plain);
        continue;
      }
      dnnl::memory copy(blocked.desc, Engine(), buffer + blocked.offset);
      execute_args.emplace(args_[i].id, copy);
      if (args_[i].written) {
        outputs.push_back({copy, plain, sum && args_[i].accumulates ? blocked.reorder_sum : blocked.reorder});
      } else {
        blocked.reorder.execute(stream, plain, copy);
      }
    }
    primitive_.execute(stream, execute_args);
    for (Output& out : outputs) { out.reorder.execute(stream, out.copy, out.plain); }
    stream.wait();
  }

 private:
  struct Blocked {
    dnnl::memory::desc desc;  // oneDNN's layout of the argument
    size_t offset;            // its place in the thread's buffer
    dnnl::reorder reorder;    // empty where the layout is OneFlow's own and nothing accumulates
    dnnl::reorder reorder_sum;  // out of the copy and added to the tensor, for an argument that accumulates
  };
  dnnl::primitive primitive_;
  std::vector<Arg> args_;
  std::vector<Blocked> blocked_;  // one per argument
  size_t bytes_ = 0;
};

// The plans a kernel has made, one per geometry (a graph has one; eager calls may bring others).
class Plans {
 public:
  template<typename Make>
  Plan& For(const Geometry& g, Make make) const {
    // One thread of oneDNN's for each of OneFlow's, before oneDNN makes or runs a primitive, which read it: OneFlow
    // already runs independent ops on a thread per core (lenet_train.py's two halves keep two busy), and OpenMP
    // threads of oneDNN's beside them only crowd the cores (0.73 of the training images/s with 2 on 2 cores).
    thread_local bool one_thread = (omp_set_num_threads(1), true);  // an OpenMP setting is the calling thread's
    (void)one_thread;
    std::lock_guard<std::mutex> hold(lock_);
    auto found = made_.find(g);
    if (found == made_.end()) { found = made_.emplace(g, make(g)).first; }
    return *found->second;
  }

 private:
  mutable std::mutex lock_;
  mutable std::map<Geometry, std::unique_ptr<Plan>> made_;
};

// Images a run takes at a time: as many as keep its blocked copies of x and y within kRunBytes (at least one),
// so that a copy is still in the core's cache when the primitive reads it and a thread's buffer stays small.
constexpr int64_t kRunBytes = 512 << 10;

int64_t ImagesPerRun(const Geometry& g) {
  auto blocked = [](int64_t channels) { return (channels + 15) / 16 * 16; };  // 8 or 16 channels a block
  const int64_t bytes = 4 * (blocked(g.x[1]) * g.x[2] * g.x[3] + blocked(g.y[1]) * g.y[2] * g.y[3]);
  return std::max<int64_t>(1, std::min<int64_t>(g.x[0], kRunBytes / bytes));
}

// Kernels of a backward pass alive in this process: while there are none, it only infers (lenet_eval.py,
// lenet_test.py, the page), and a convolution's runs share the cores; otherwise each of OneFlow's threads keeps one.
std::atomic<int> training_kernels{0};

struct TrainingKernel {
  TrainingKernel() { ++training_kernels; }
  ~TrainingKernel() { --training_kernels; }
};

// Runs of a kernel whose parts (images, planes) shared the cores, for the tests.
std::atomic<long> shared_runs;

// Calls body(i) for each i in [0, n): where `independent` and the process only infers, on every core (OpenMP);
// otherwise one after the other on the calling thread, with no OpenMP team (which costs even with one thread).
template<typename Body>
void ForEach(int64_t n, bool independent, const Body& body) {
  const int threads = independent && training_kernels == 0 ? omp_get_num_procs() : 1;
  if (threads > 1 && n > 1) {
    ++shared_runs;
#pragma omp parallel for num_threads(threads) schedule(dynamic)
    for (int64_t i = 0; i < n; ++i) { body(i); }
  } else {
    for (int64_t i = 0; i < n; ++i) { body(i); }
  }
}

// A tensor for a kernel's runs: its data, and the floats of one image in it (0 for a filter, read whole by each).
struct Data {
  const void* ptr;
  int64_t image;
};

// Runs a kernel's plan for g over its batch, ImagesPerRun images at a time, each run on its images' part of each
// tensor; with `accumulate` (a filter gradient, a sum over the images) the runs after the first add to what the
// first wrote, one after the other, and otherwise the runs share the cores where no training kernel is alive.
template<typename Make>
void RunByImages(const Plans& plans, Geometry g, Make make, const std::vector<Data>& data, bool accumulate) {
  const int64_t images = g.x[0], step = ImagesPerRun(g), runs = (images + step - 1) / step;
  auto run = [&](int64_t i) {
    const int64_t first = i * step;
    Geometry part = g;
    part.x[0] = part.y[0] = std::min(step, images - first);
    std::vector<const void*> parts;
    for (const Data& d : data) { parts.push_back(static_cast<const float*>(d.ptr) + first * d.image); }
    plans.For(part, make).Run(parts, accumulate && i > 0);
  };
  ForEach(runs, !accumulate, run);
}

int64_t ImageFloats(const dims& d) { return d[1] * d[2] * d[3]; }

// The registry's condition: oneDNN can make the primitive for these shapes and attributes.
template<typename Desc, Desc (*MakeDesc)(const Geometry&)>
bool Makes(const user_op::KernelRegContext& ctx, const char* x, const char* w, const char* y) {
  if (ctx.TensorDesc4ArgNameAndIndex(y, 0)->shape().NumAxes() != 4) { return false; }
  try {
    MakeDesc(GeometryOf(ctx, x, w, y));
    return true;
  } catch (const dnnl::error&) { return false; }
}

class ConvKernel final : public user_op::OpKernel {
 private:
  void Compute(user_op::KernelComputeContext* ctx) const override {
    Geometry g = GeometryOf(*ctx, "in", "weight", "out");
    g.bias = ctx->has_input("bias", 0);
    std::vector<Data> data{{ctx->Tensor4ArgNameAndIndex("in", 0)->dptr(), ImageFloats(g.x)},
                           {ctx->Tensor4ArgNameAndIndex("weight", 0)->dptr(), 0},
                           {ctx->Tensor4ArgNameAndIndex("out", 0)->dptr(), ImageFloats(g.y)}};
    if (g.bias) { data.push_back({ctx->Tensor4ArgNameAndIndex("bias", 0)->dptr(), 0}); }
    try {
      RunByImages(plans_, g, [](const Geometry& g) {
        std::vector<Arg> args{{DNNL_ARG_SRC, Plain(g.x, tag::nchw), false},
                              {DNNL_ARG_WEIGHTS, Plain(g.w, tag::oihw), false},
                              {DNNL_ARG_DST, Plain(g.y, tag::nchw), true}};
        if (g.bias) { args.push_back({DNNL_ARG_BIAS, Plain({g.w[0]}, tag::x), false}); }
        return std::make_unique<Plan>(ForwardDesc(g), args);
      }, data, false);
    } catch (const dnnl::error& e) { Fail("conv2d", e); }
    ++forward_runs;
  }
  bool AlwaysComputeWhenAllOutputsEmpty() const override { return false; }
  Plans plans_;
};

class ConvDataGradKernel final : public user_op::OpKernel, TrainingKernel {
 private:
  void Compute(user_op::KernelComputeContext* ctx) const override {
    const Geometry g = GeometryOf(*ctx, "x_like", "filter", "dy");
    try {
      RunByImages(plans_, g, [](const Geometry& g) {
        return std::make_unique<Plan>(DataGradDesc(g), std::vector<Arg>{
                                          {DNNL_ARG_DIFF_DST, Plain(g.y, tag::nchw), false},
                                          {DNNL_ARG_WEIGHTS, Plain(g.w, tag::oihw), false},
                                          {DNNL_ARG_DIFF_SRC, Plain(g.x, tag::nchw), true}});
      }, {{ctx->Tensor4ArgNameAndIndex("dy", 0)->dptr(), ImageFloats(g.y)},
          {ctx->Tensor4ArgNameAndIndex("filter", 0)->dptr(), 0},
          {ctx->Tensor4ArgNameAndIndex("dx", 0)->dptr(), ImageFloats(g.x)}}, false);
    } catch (const dnnl::error& e) { Fail("conv_data_grad", e); }
    ++data_grad_runs;
  }
  bool AlwaysComputeWhenAllOutputsEmpty() const override { return false; }
  Plans plans_;
};

class ConvFilterGradKernel final : public user_op::OpKernel, TrainingKernel {
 private:
  void Compute(user_op::KernelComputeContext* ctx) const override {
    const Geometry g = GeometryOf(*ctx, "x", "filter_diff", "dy");
    try {
      RunByImages(plans_, g, [](const Geometry& g) {
        return std::make_unique<Plan>(FilterGradDesc(g), std::vector<Arg>{
                                          {DNNL_ARG_DIFF_DST, Plain(g.y, tag::nchw), false},
                                          {DNNL_ARG_SRC, Plain(g.x, tag::nchw), false},
                                          {DNNL_ARG_DIFF_WEIGHTS, Plain(g.w, tag::oihw), true, true}});
      }, {{ctx->Tensor4ArgNameAndIndex("dy", 0)->dptr(), ImageFloats(g.y)},
          {ctx->Tensor4ArgNameAndIndex("x", 0)->dptr(), ImageFloats(g.x)},
          {ctx->Tensor4ArgNameAndIndex("filter_diff", 0)->dptr(), 0}}, true);
    } catch (const dnnl::error& e) { Fail("conv_filter_grad", e); }
    ++filter_grad_runs;
  }
  bool AlwaysComputeWhenAllOutputsEmpty() const override { return false; }
  Plans plans_;
};

// A bias's gradient, the sum of dy over every axis but the channels' (axis 1): OneFlow 0.9's autograd makes it a
// reduce_sum (gradient_funcs/conv.cpp, and bias_add's), never a conv_bias_grad, and its CPU kernel copies the whole
// input into a buffer first. Here: contiguous runs of H * W (or 1) floats a channel, added in the order they lie.
class ChannelSumKernel final : public user_op::OpKernel {
 private:
  void Compute(user_op::KernelComputeContext* ctx) const override {
    const user_op::Tensor* dy = ctx->Tensor4ArgNameAndIndex("input_tensor", 0);
    float* sums = ctx->Tensor4ArgNameAndIndex("output_tensor", 0)->mut_dptr<float>();
    const int64_t n = dy->shape_view().At(0), c = dy->shape_view().At(1);
    const int64_t inner = dy->shape_view().Count(2);
    const float* p = dy->dptr<float>();
    std::fill(sums, sums + c, 0.0f);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < c; ++j, p += inner) {
        float sum = 0;
        for (int64_t k = 0; k < inner; ++k) { sum += p[k]; }
        sums[j] += sum;
      }
    }
    ++channel_sum_runs;
  }
  bool AlwaysComputeWhenAllOutputsEmpty() const override { return false; }
};

// reduce_sum's axis attribute is every axis but 1, in order: a bias's gradient.
bool AllAxesButChannels(const user_op::KernelRegContext& ctx) {
  const int64_t axes = ctx.TensorDesc4ArgNameAndIndex("input_tensor", 0)->shape().NumAxes();
  std::vector<int32_t> expected{0};
  for (int32_t i = 2; i < axes; ++i) { expected.push_back(i); }
  return axes >= 2 && ctx.Attr<std::vector<int32_t>>("axis") == expected;
}

// One axis of a pooling window: where the window of output o starts and ends in the input, OneFlow's way (the start
// moved past the padding by whole dilations, the end cut at the input's edge).
struct Window {
  int64_t start, end;
};

Window WindowOf(int64_t o, int32_t stride, int32_t padding, int32_t kernel, int32_t dilation, int64_t size) {
  int64_t start = o * stride - padding;
  const int64_t end = std::min<int64_t>(start + (kernel - 1) * dilation + 1, size);
  while (start < 0) { start += dilation; }
  return {start, end};
}

class MaxPoolKernel final : public user_op::OpKernel {
 private:
  void Compute(user_op::KernelComputeContext* ctx) const override {
    const user_op::Tensor* x = ctx->Tensor4ArgNameAndIndex("x", 0);
    user_op::Tensor* y = ctx->Tensor4ArgNameAndIndex("y", 0);
    const auto& padding = ctx->Attr<std::vector<int32_t>>("padding");
    const auto& kernel = ctx->Attr<std::vector<int32_t>>("kernel_size");
    const auto& stride = ctx->Attr<std::vector<int32_t>>("stride");
    const auto& dilation = ctx->Attr<std::vector<int32_t>>("dilation");
    const int64_t planes = x->shape_view().At(0) * x->shape_view().At(1);
    const int64_t h = x->shape_view().At(2), w = x->shape_view().At(3);
    const int64_t oh = y->shape_view().At(2), ow = y->shape_view().At(3);
    std::vector<Window> rows, columns;  // the same for every plane
    for (int64_t i = 0; i < oh; ++i) {
      rows.push_back(WindowOf(i, stride[0], padding[0], kernel[0], dilation[0], h));
    }
    for (int64_t j = 0; j < ow; ++j) {
      columns.push_back(WindowOf(j, stride[1], padding[1], kernel[1], dilation[1], w));
    }
    const bool lenet_shape = kernel == std::vector<int32_t>{2, 2} && stride == kernel
                             && padding == std::vector<int32_t>{0, 0} && dilation == std::vector<int32_t>{1, 1}
                             && 2 * oh <= h && 2 * ow <= w;
    const float* x_data = x->dptr<float>();
    float* y_data = y->mut_dptr<float>();
    int64_t* indices = ctx->Tensor4ArgNameAndIndex("indice", 0)->mut_dptr<int64_t>();
    ForEach(planes, true, [&](int64_t plane) {
      const float* src = x_data + plane * h * w;
      float* dst = y_data + plane * oh * ow;
      int64_t* index = indices + plane * oh * ow;
      if (lenet_shape) {  // LeNet's: 2x2 windows side by side, all within the plane
        for (int64_t i = 0; i < oh; ++i) {
          const int64_t top = 2 * i * w;
          for (int64_t j = 0, at = top; j < ow; ++j, at += 2) {
            float max = src[at];
            int64_t where = at;
            for (const int64_t k : {at + 1, at + w, at + w + 1}) {
              if (src[k] > max || std::isnan(src[k])) {
                max = src[k];
                where = k;
              }
            }
            *dst++ = max;
            *index++ = where;
          }
        }
        return;
      }
      for (const Window& row : rows) {
        for (const Window& column : columns) {
          float max = -std::numeric_limits<float>::infinity();
          int64_t at = row.start * w + column.start;
          for (int64_t r = row.start; r < row.end; r += dilation[0]) {
            for (int64_t c = column.start; c < column.end; c += dilation[1]) {
              const float value = src[r * w + c];
              if (value > max || std::isnan(value)) {
                max = value;
                at = r * w + c;
              }
            }
          }
          *dst++ = max;
          *index++ = at;
        }
      }
    });
    ++pool_runs;
  }
  bool AlwaysComputeWhenAllOutputsEmpty() const override { return false; }
};

class MaxPoolGradKernel final : public user_op::OpKernel, TrainingKernel {
 private:
  void Compute(user_op::KernelComputeContext* ctx) const override {
    const user_op::Tensor* dy = ctx->Tensor4ArgNameAndIndex("dy", 0);
    user_op::Tensor* dx = ctx->Tensor4ArgNameAndIndex("dx", 0);
    const int64_t planes = dy->shape_view().At(0) * dy->shape_view().At(1);
    const int64_t outputs = dy->shape_view().Count(2), inputs = dx->shape_view().Count(2);
    const float* grad = dy->dptr<float>();
    const int64_t* index = ctx->Tensor4ArgNameAndIndex("indice", 0)->dptr<int64_t>();
    float* dst = dx->mut_dptr<float>();
    std::fill(dst, dst + planes * inputs, 0.0f);
    for (int64_t plane = 0; plane < planes; ++plane, dst += inputs) {
      for (int64_t k = 0; k < outputs; ++k, ++grad, ++index) { dst[*index] += *grad; }
    }
    ++pool_grad_runs;
  }
  bool AlwaysComputeWhenAllOutputsEmpty() const override { return false; }
};

auto Cpu2dFloat(const char* tensor) {
  return (user_op::HobDeviceType() == DeviceType::kCPU)
         && (user_op::HobDataType(tensor, 0) == DataType::kFloat)
         && (user_op::HobAttr<std::string>("data_format") == std::string("channels_first"));
}

REGISTER_USER_KERNEL("conv2d")
    .SetCreateFn<ConvKernel>()
    .SetIsMatchedHob(Cpu2dFloat("in") && (user_op::HobAttr<int32_t>("groups") == 1)
                     && (user_op::HobInputSize("_add_to_output") == 0)
                     && hob::make_custom("OneDnnMakesConvForward", [](const user_op::KernelRegContext& ctx) {
                          return Makes<dnnl::convolution_forward::primitive_desc, ForwardDesc>(ctx, "in", "weight",
                                                                                               "out");
                        }))
    .SetPriority(user_op::kKernelPriorityOptimized);

REGISTER_USER_KERNEL("conv_data_grad")
    .SetCreateFn<ConvDataGradKernel>()
    .SetIsMatchedHob(Cpu2dFloat("dy") && (user_op::HobAttr<int32_t>("groups") == 1)
                     && (user_op::HobInputSize("_add_to_output") == 0)
                     && hob::make_custom("OneDnnMakesConvDataGrad", [](const user_op::KernelRegContext& ctx) {
                          return Makes<dnnl::convolution_backward_data::primitive_desc, DataGradDesc>(
                              ctx, "x_like", "filter", "dy");
                        }))
    .SetPriority(user_op::kKernelPriorityOptimized);

REGISTER_USER_KERNEL("conv_filter_grad")
    .SetCreateFn<ConvFilterGradKernel>()
    .SetIsMatchedHob(Cpu2dFloat("dy") && (user_op::HobAttr<int32_t>("groups") == 1)
                     && hob::make_custom("OneDnnMakesConvFilterGrad", [](const user_op::KernelRegContext& ctx) {
                          return Makes<dnnl::convolution_backward_weights::primitive_desc, FilterGradDesc>(
                              ctx, "x", "filter_diff", "dy");
                        }))
    .SetPriority(user_op::kKernelPriorityOptimized);

REGISTER_USER_KERNEL("reduce_sum")
    .SetCreateFn<ChannelSumKernel>()
    .SetIsMatchedHob((user_op::HobDeviceType() == DeviceType::kCPU)
                     && (user_op::HobDataType("input_tensor", 0) == DataType::kFloat)
                     && hob::make_custom("AllAxesButChannels", AllAxesButChannels))
    .SetPriority(user_op::kKernelPriorityOptimized);

REGISTER_USER_KERNEL("max_pool_2d")
    .SetCreateFn<MaxPoolKernel>()
    .SetIsMatchedHob(Cpu2dFloat("x"))
    .SetPriority(user_op::kKernelPriorityOptimized);

REGISTER_USER_KERNEL("max_pool_2d_grad")
    .SetCreateFn<MaxPoolGradKernel>()
    .SetIsMatchedHob(Cpu2dFloat("dy"))
    .SetPriority(user_op::kKernelPriorityOptimized);

}  // namespace
}  // namespace oneflow

extern "C" void oneflow_kernels_counts(long* forward, long* data_grad, long* filter_grad, long* channel_sum,
                                       long* pool, long* pool_grad) {
  *forward = oneflow::forward_runs;
  *data_grad = oneflow::data_grad_runs;
  *filter_grad = oneflow::filter_grad_runs;
  *channel_sum = oneflow::channel_sum_runs;
  *pool = oneflow::pool_runs;
  *pool_grad = oneflow::pool_grad_runs;
}

extern "C" long oneflow_kernels_shared_runs() { return oneflow::shared_runs; }
