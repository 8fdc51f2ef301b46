// TensorFlow adapter for kernels/wiou_math.h: op registration and thin
// OpKernels, one template registered per (y_pred, y_true) dtype pair.
//
//   WiouIouSums(y_true, y_pred, weights; attrs, write_masks)
//       -> sums float32[groups, terms], label_masks uint32, masks_complete bool
//   WiouIouSumsGrad(y_true, y_pred, weights, coef, label_masks, masks_complete; attrs)
//       -> grad (y_pred's dtype)
//   WiouMultiClassSums(labels, y_pred, weights; attrs) -> sums float32[groups, C, 3]
//   WiouMultiClassSumsGrad(labels, y_pred, weights, coef; attrs) -> grad (y_pred's dtype)
//   WiouKernelIsa() -> the loops' instruction-set level in use, and the CPU's widest
//   WiouStreamRead(x) -> sum of x (benchmark instrument: the byte floor)
// label_masks: the 2 bits per element of wiou_math_api.h when write_masks is set
// and there is no weight map or logits, else empty; masks_complete: every label
// was 0 or 1 where it mattered, so the gradient can come from the masks alone.
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/platform/mutex.h"
#include "wiou_math_api.h"

// The TensorFlow version this library was compiled against and the hash of its
// sources and build recipe, readable from the file's bytes without loading it
// (wiou_ops/_kernels/native_library.py refuses a mismatch: loading an op library
// built for another TensorFlow can crash the process).
#if !defined(WIOU_BUILT_FOR_TENSORFLOW) || !defined(WIOU_SOURCE_HASH)
#error "build with -DWIOU_BUILT_FOR_TENSORFLOW=... -DWIOU_SOURCE_HASH=... (native_build.py does)"
#endif
extern "C" __attribute__((used, visibility("default"))) const char wiou_built_for_tensorflow[] =
    "WIOU_BUILT_FOR_TENSORFLOW=" WIOU_BUILT_FOR_TENSORFLOW "\n";
extern "C" __attribute__((used, visibility("default"))) const char wiou_source_hash[] =
    "WIOU_SOURCE_HASH=" WIOU_SOURCE_HASH "\n";

namespace tensorflow {
namespace {

// The dtypes both ops accept: keep in step with WIOU_REGISTER_ALL_LABELS below.
constexpr char kPredAttr[] = "Tpred: {float, half, bfloat16}";
constexpr char kTrueAttr[] = "Ttrue: {float, half, bfloat16, uint8, int32, bool}";

// The "weighting" attribute (one of the values the ops declare) as the math's enum.
wiou::Weighting ParseWeighting(const std::string& weighting) {
  return weighting == "seed"    ? wiou::Weighting::kSeed
         : weighting == "pixel" ? wiou::Weighting::kPixel
                                : wiou::Weighting::kClass;
}

// Attributes shared by both ops: what is summed (wiou_math_api.h).
#define WIOU_SUMS_ATTRS                            \
  Attr("weighting: {'seed', 'pixel', 'class'}")    \
      .Attr("from_logits: bool")                   \
      .Attr("per_image: bool")                     \
      .Attr("epsilon: float")                      \
      .Attr("weight_background: float")            \
      .Attr("weight_foreground: float")            \
      .Attr(kPredAttr)                             \
      .Attr(kTrueAttr)

REGISTER_OP("WiouIouSums")
    .Input("y_true: Ttrue")
    .Input("y_pred: Tpred")
    .Input("weights: float")
    .Output("sums: float")
    .Output("label_masks: uint32")
    .Output("masks_complete: bool")
    .WIOU_SUMS_ATTRS
    .Attr("write_masks: bool = false")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      std::string weighting;
      bool per_image, write_masks;
      TF_RETURN_IF_ERROR(c->GetAttr("weighting", &weighting));
      TF_RETURN_IF_ERROR(c->GetAttr("per_image", &per_image));
      TF_RETURN_IF_ERROR(c->GetAttr("write_masks", &write_masks));
      // Masks only without a weight map (an empty input) and logits: known at run time.
      c->set_output(1, write_masks ? c->Vector(c->UnknownDim()) : c->Vector(0));
      c->set_output(2, c->Scalar());
      const int terms = wiou::num_terms(ParseWeighting(weighting));
      shape_inference::DimensionHandle groups = c->MakeDim(1);
      if (per_image && c->RankKnown(c->input(1)) && c->Rank(c->input(1)) > 0) {
        groups = c->Dim(c->input(1), 0);
      } else if (per_image) {
        groups = c->UnknownDim();
      }
      c->set_output(0, c->Matrix(groups, terms));
      return absl::OkStatus();
    })
    .Doc("Fused IoU sums, one row per group (wiou_ops/_iou.py); weights: a map of y's "
         "shape, or empty for none; label_masks: 2 bits per element for the gradient.");

REGISTER_OP("WiouIouSumsGrad")
    .Input("y_true: Ttrue")
    .Input("y_pred: Tpred")
    .Input("weights: float")
    .Input("coef: float")
    .Input("label_masks: uint32")
    .Input("masks_complete: bool")
    .Output("grad: Tpred")
    .WIOU_SUMS_ATTRS
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      return absl::OkStatus();
    })
    .Doc("m*(a*y + b*(1-y))*dp^ with (a, b) = coef[group]: the VJP of WiouIouSums, from "
         "the label masks when masks_complete, else from y and p.");

// Multi-class (wiou_math_api.h, wiou_ops/_multiclass.py).
constexpr char kLabelAttr[] = "Tlabel: {float, half, bfloat16, uint8, int32}";
#define WIOU_MULTICLASS_ATTRS                          \
  Attr("activation: {'clip', 'softmax', 'sigmoid'}")   \
      .Attr("sparse: bool")                            \
      .Attr("ignore_class: int")                       \
      .Attr("per_image: bool")                         \
      .Attr("epsilon: float")                          \
      .Attr(kPredAttr)                                 \
      .Attr(kLabelAttr)

REGISTER_OP("WiouMultiClassSums")
    .Input("labels: Tlabel")
    .Input("y_pred: Tpred")
    .Input("weights: float")
    .Output("sums: float")
    .WIOU_MULTICLASS_ATTRS
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      bool per_image;
      TF_RETURN_IF_ERROR(c->GetAttr("per_image", &per_image));
      shape_inference::DimensionHandle groups = c->MakeDim(1);
      shape_inference::DimensionHandle classes = c->UnknownDim();
      if (c->RankKnown(c->input(1)) && c->Rank(c->input(1)) > 0) {
        classes = c->Dim(c->input(1), -1);
        if (per_image) groups = c->Dim(c->input(1), 0);
      } else if (per_image) {
        groups = c->UnknownDim();
      }
      c->set_output(0, c->MakeShape({groups, classes, c->MakeDim(wiou::kClassSums)}));
      return absl::OkStatus();
    })
    .Doc("Multi-class IoU sums {I, P, Y} per group and class (wiou_ops/_multiclass.py); "
         "labels: ids (pixels) when sparse, else y_pred's shape; weights: a map of the "
         "pixels, or empty for none.");

REGISTER_OP("WiouMultiClassSumsGrad")
    .Input("labels: Tlabel")
    .Input("y_pred: Tpred")
    .Input("weights: float")
    .Input("coef: float")
    .Output("grad: Tpred")
    .WIOU_MULTICLASS_ATTRS
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      return absl::OkStatus();
    })
    .Doc("The VJP of WiouMultiClassSums with coef[g, c] = (dI, dP), one pass over y_pred.");

REGISTER_OP("WiouKernelIsa")
    .Output("active: string")
    .Output("cpu: string")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->Scalar());
      c->set_output(1, c->Scalar());
      return absl::OkStatus();
    })
    .Doc("The instruction-set level the loops run at (WIOU_OPS_ISA may lower it) and the "
         "widest one this CPU supports: baseline, avx2 or avx512.");

REGISTER_OP("WiouStreamRead")
    .Input("x: float")
    .Output("total: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->Scalar());
      return absl::OkStatus();
    })
    .Doc("Benchmark instrument: sum of x read at streaming bandwidth on all intra-op threads.");

REGISTER_OP("WiouMultiClassWithoutIou")
    .Input("labels: uint8")
    .Input("logits: float")
    .Output("probabilities: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      return absl::OkStatus();
    })
    .Doc("Benchmark instrument: the multi-class softmax loss's two passes (sums, then "
         "gradient) over sparse ids and logits with the IoU terms left out, each pass on "
         "all intra-op threads; returns softmax(logits), the backward pass's output.");

// TensorFlow element type -> the math header's storage type (same bits).
template <typename T>
struct Storage {
  using type = T;
};
template <>
struct Storage<Eigen::bfloat16> {
  using type = wiou::bfloat16;
};
template <>
struct Storage<Eigen::half> {
  using type = wiou::float16;
};

template <typename T>
const typename Storage<T>::type* storage(const Tensor& t) {
  static_assert(sizeof(T) == sizeof(typename Storage<T>::type), "storage size");
  return reinterpret_cast<const typename Storage<T>::type*>(t.flat<T>().data());
}

// Work per block for the thread pool's cost model (cycles, roughly).
constexpr int64_t kBlockCost = wiou::kBlock * 4;

// work(first, last) over blocks [0, blocks), on TensorFlow's intra-op threads when
// there is more than one block.
template <typename Work>
void ForEachBlock(OpKernelContext* ctx, int64_t blocks, const Work& work) {
  if (blocks > 1) {
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(blocks, kBlockCost,
                                                                          work);
  } else {
    work(0, blocks);
  }
}

// The gradient is as large as y_pred (16 MB at 16x512x512 float32); a fresh
// allocation each step is page-faulted in again, which costs milliseconds. The
// previous step's buffer is reused once nobody else holds it. Buffers over
// kMaxCachedBytes are not kept: one huge call must not pin gigabytes for the
// process's lifetime, and there the page faults are a small part of the pass.
template <typename T>
class GradientBufferCache {
 public:
  Tensor Get(OpKernelContext* ctx, const TensorShape& shape) {
    const bool cacheable = shape.num_elements() * int64_t{sizeof(T)} <= kMaxCachedBytes;
    if (cacheable) {
      mutex_lock lock(mu_);
      if (cached_.shape() == shape && cached_.RefCountIsOne()) {
        return cached_;  // the copy takes a reference: concurrent calls see it as busy
      }
    }
    Tensor fresh;
    Status s = ctx->allocate_temp(DataTypeToEnum<T>::value, shape, &fresh);
    if (!s.ok()) {
      ctx->SetStatus(s);
      return fresh;
    }
    if (cacheable) {
      mutex_lock lock(mu_);
      cached_ = fresh;  // the old one is busy or of another shape
    }
    return fresh;
  }

 private:
  static constexpr int64_t kMaxCachedBytes = int64_t{1} << 30;
  mutex mu_;
  Tensor cached_ TF_GUARDED_BY(mu_);
};

// The attributes as the math's parameters, and the inputs' layout.
class SumsOpBase : public OpKernel {
 public:
  explicit SumsOpBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string weighting;
    bool from_logits = false;
    float epsilon = 0, weight_background = 0, weight_foreground = 0;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("weighting", &weighting));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("from_logits", &from_logits));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("per_image", &per_image_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("weight_background", &weight_background));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("weight_foreground", &weight_foreground));
    params_ = wiou::Params(ParseWeighting(weighting), from_logits, epsilon, weight_background,
                           weight_foreground);
  }

 protected:
  // Inputs 0-2 of both ops, checked, with the layout of the groups.
  struct SumsInputs {
    const Tensor* y_true = nullptr;
    const Tensor* y_pred = nullptr;
    const float* weights = nullptr;  // the weight map, or nullptr for s = 1 (empty input)
    int64_t groups = 0, group_size = 0;  // group_size: elements per group
  };

  Status ReadInputs(OpKernelContext* ctx, SumsInputs* in) const {
    const Tensor& y_true = ctx->input(0);
    const Tensor& y_pred = ctx->input(1);
    const Tensor& weights = ctx->input(2);
    if (y_true.shape() != y_pred.shape()) {
      return errors::InvalidArgument("y_true and y_pred must have the same shape, got y_true ",
                                     y_true.shape().DebugString(), " and y_pred ",
                                     y_pred.shape().DebugString());
    }
    if (weights.NumElements() != 0 && weights.shape() != y_pred.shape()) {
      return errors::InvalidArgument("the weight map must have y_pred's shape ",
                                     y_pred.shape().DebugString(), ", got ",
                                     weights.shape().DebugString());
    }
    if (per_image_ && y_pred.dims() < 1) {
      return errors::InvalidArgument("per_image needs a batch axis, got a scalar y_pred");
    }
    in->y_true = &y_true;
    in->y_pred = &y_pred;
    in->weights = weights.NumElements() == 0 ? nullptr : weights.flat<float>().data();
    in->groups = per_image_ ? y_pred.dim_size(0) : 1;
    in->group_size = in->groups > 0 ? y_pred.NumElements() / in->groups : 0;
    return absl::OkStatus();
  }

  wiou::Params params_;
  bool per_image_ = false;
};

template <typename TPred, typename TTrue>
class IouSumsOp : public SumsOpBase {
 public:
  explicit IouSumsOp(OpKernelConstruction* ctx) : SumsOpBase(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("write_masks", &write_masks_));
  }

  void Compute(OpKernelContext* ctx) override {
    SumsInputs in;
    OP_REQUIRES_OK(ctx, ReadInputs(ctx, &in));
    const int64_t groups = in.groups, group_size = in.group_size;
    const int terms = wiou::num_terms(params_.weighting);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({groups, terms}), &out));
    // With a weight map or logits the gradient varies per element: no masks.
    const bool masks_apply = write_masks_ && in.weights == nullptr && !params_.from_logits;
    Tensor* masks = nullptr;
    Tensor* complete = nullptr;
    const int64_t words = masks_apply ? groups * wiou::mask_words(group_size) : 0;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({words}), &masks));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({}), &complete));
    const int64_t per_group = wiou::num_blocks(group_size);
    const int64_t blocks = groups * per_group;
    std::vector<float> partials(wiou::kMaxTerms * (blocks > 0 ? blocks : 1), 0.0f);
    std::vector<uint8_t> soft_blocks(masks_apply ? blocks : 0, 0);
    uint32_t* mask_data = masks_apply ? masks->flat<uint32>().data() : nullptr;
    const auto* y = storage<TTrue>(*in.y_true);
    const auto* p = storage<TPred>(*in.y_pred);
    ForEachBlock(ctx, blocks, [&](int64_t first, int64_t last) {
      wiou::iou_sums_blocks(y, p, in.weights, group_size, params_, first, last,
                            partials.data(), mask_data, soft_blocks.data());
    });
    wiou::combine_partials(partials.data(), groups, per_group, terms, out->flat<float>().data());
    bool any_soft = false;
    for (uint8_t soft : soft_blocks) any_soft |= soft != 0;
    complete->scalar<bool>()() = masks_apply && !any_soft;
  }

 private:
  bool write_masks_ = false;
};

template <typename TPred, typename TTrue>
class IouSumsGradOp : public SumsOpBase {
 public:
  using SumsOpBase::SumsOpBase;

  void Compute(OpKernelContext* ctx) override {
    SumsInputs in;
    OP_REQUIRES_OK(ctx, ReadInputs(ctx, &in));
    const Tensor& coef = ctx->input(3);
    OP_REQUIRES(ctx, coef.NumElements() == 2 * in.groups,
                errors::InvalidArgument("coef must hold 2 values per group (", in.groups,
                                        " groups), got ", coef.shape().DebugString()));
    const Tensor& y_pred = *in.y_pred;
    const int64_t n = y_pred.NumElements();
    const Tensor& masks = ctx->input(4);
    const Tensor& complete = ctx->input(5);
    OP_REQUIRES(ctx, TensorShapeUtils::IsScalar(complete.shape()),
                errors::InvalidArgument("masks_complete must be a scalar, got ",
                                        complete.shape().DebugString()));
    const bool from_masks = complete.scalar<bool>()();
    const int64_t words = in.groups * wiou::mask_words(in.group_size);
    OP_REQUIRES(ctx, !from_masks || (masks.NumElements() == words && in.weights == nullptr &&
                                     !params_.from_logits),
                errors::InvalidArgument("masks_complete is set, but the label masks (",
                                        masks.shape().DebugString(), ") do not fit y_pred ",
                                        y_pred.shape().DebugString(),
                                        " or the op has a weight map or logits"));
    Tensor grad = buffers_.Get(ctx, y_pred.shape());
    if (!ctx->status().ok()) return;
    const auto* y = storage<TTrue>(*in.y_true);
    const auto* p = storage<TPred>(y_pred);
    const uint32_t* mask_data = from_masks ? masks.flat<uint32>().data() : nullptr;
    const float* c = coef.flat<float>().data();
    auto* g = const_cast<typename Storage<TPred>::type*>(storage<TPred>(grad));
    ForEachBlock(ctx, wiou::num_blocks(n), [&](int64_t first, int64_t last) {
      const int64_t begin = first * wiou::kBlock;
      const int64_t end = last * wiou::kBlock < n ? last * wiou::kBlock : n;
      if (from_masks) {  // 2 bits per element instead of y and p
        wiou::iou_gradient_from_masks(mask_data, in.group_size, c, params_, begin, end, g);
      } else {
        wiou::iou_gradient(y, p, in.weights, in.group_size, c, params_, begin, end, g);
      }
    });
    ctx->set_output(0, grad);
  }

 private:
  GradientBufferCache<TPred> buffers_;
};

class StreamReadOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const float* data = x.flat<float>().data();
    const int64_t n = x.NumElements();
    const int64_t blocks = wiou::num_blocks(n);
    std::vector<float> partials(blocks > 0 ? blocks : 1, 0.0f);
    ForEachBlock(ctx, blocks, [&](int64_t first, int64_t last) {
      for (int64_t k = first; k < last; ++k) {
        const int64_t end = (k + 1) * wiou::kBlock < n ? (k + 1) * wiou::kBlock : n;
        partials[k] = wiou::stream_read_sum(data, k * wiou::kBlock, end);
      }
    });
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
    float total = 0.0f;
    for (float v : partials) total += v;
    out->scalar<float>()() = total;
  }
};
REGISTER_KERNEL_BUILDER(Name("WiouStreamRead").Device(DEVICE_CPU), StreamReadOp);

// Work per multi-class pixel block for the thread pool's cost model (cycles, roughly).
int64_t MultiClassBlockCost(int64_t classes) { return wiou::kPixelBlock * classes * 8; }

// The multi-class attributes as the math's parameters, and the inputs' layout.
class MultiClassOpBase : public OpKernel {
 public:
  explicit MultiClassOpBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string activation;
    int64_t ignore_class = -1;
    float epsilon = 0;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("activation", &activation));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sparse", &params_.sparse));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("ignore_class", &ignore_class));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("per_image", &per_image_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon));
    params_.activation = activation == "softmax"   ? wiou::Activation::kSoftmax
                         : activation == "sigmoid" ? wiou::Activation::kSigmoid
                                                   : wiou::Activation::kClip;
    params_.ignore_class = ignore_class;
    params_.lo = epsilon;
    params_.hi = static_cast<float>(1.0 - static_cast<double>(epsilon));
  }

 protected:
  struct Layout {
    const float* weights = nullptr;  // nullptr for s = 1
    int64_t groups = 0, group_pixels = 0;
    wiou::MultiClassParams params;
  };

  Status ReadInputs(OpKernelContext* ctx, Layout* out) const {
    const Tensor& labels = ctx->input(0);
    const Tensor& y_pred = ctx->input(1);
    const Tensor& weights = ctx->input(2);
    if (y_pred.dims() < 1 + (per_image_ ? 1 : 0) || y_pred.dim_size(y_pred.dims() - 1) < 1) {
      return errors::InvalidArgument("y_pred must be (B, ..., C) with C >= 1, got ",
                                     y_pred.shape().DebugString());
    }
    const int64_t classes = y_pred.dim_size(y_pred.dims() - 1);
    const int64_t pixels = y_pred.NumElements() / classes;
    if (params_.sparse ? labels.NumElements() != pixels : labels.shape() != y_pred.shape()) {
      return errors::InvalidArgument("labels ", labels.shape().DebugString(),
                                     params_.sparse ? " must hold one id per pixel of y_pred "
                                                    : " must have y_pred's shape ",
                                     y_pred.shape().DebugString());
    }
    if (weights.NumElements() != 0 && weights.NumElements() != pixels) {
      return errors::InvalidArgument("the weight map must hold one weight per pixel (",
                                     pixels, "), got ", weights.shape().DebugString());
    }
    out->params = params_;
    out->params.classes = classes;
    out->weights = weights.NumElements() == 0 ? nullptr : weights.flat<float>().data();
    out->groups = per_image_ ? y_pred.dim_size(0) : 1;
    out->group_pixels = out->groups > 0 ? pixels / out->groups : 0;
    return absl::OkStatus();
  }

  wiou::MultiClassParams params_;
  bool per_image_ = false;
};

template <typename TPred, typename TLabel>
class MultiClassSumsOp : public MultiClassOpBase {
 public:
  using MultiClassOpBase::MultiClassOpBase;

  void Compute(OpKernelContext* ctx) override {
    Layout in;
    OP_REQUIRES_OK(ctx, ReadInputs(ctx, &in));
    const int64_t classes = in.params.classes;
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, TensorShape({in.groups, classes, wiou::kClassSums}), &out));
    const int64_t per_group = wiou::num_pixel_blocks(in.group_pixels);
    const int64_t blocks = in.groups * per_group;
    std::vector<float> partials(wiou::kClassSums * classes * (blocks > 0 ? blocks : 1), 0.0f);
    const auto* labels = storage<TLabel>(ctx->input(0));
    const auto* x = storage<TPred>(ctx->input(1));
    auto work = [&](int64_t first, int64_t last) {
      wiou::multiclass_sums_blocks(labels, x, in.weights, in.group_pixels, in.params, first,
                                   last, partials.data());
    };
    if (blocks > 1) {
      ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
          blocks, MultiClassBlockCost(classes), work);
    } else {
      work(0, blocks);
    }
    wiou::combine_multiclass_partials(partials.data(), in.groups, per_group, classes,
                                      out->flat<float>().data());
  }
};

template <typename TPred, typename TLabel>
class MultiClassSumsGradOp : public MultiClassOpBase {
 public:
  using MultiClassOpBase::MultiClassOpBase;

  void Compute(OpKernelContext* ctx) override {
    Layout in;
    OP_REQUIRES_OK(ctx, ReadInputs(ctx, &in));
    const int64_t classes = in.params.classes;
    const Tensor& coef = ctx->input(3);
    OP_REQUIRES(ctx, coef.NumElements() == in.groups * classes * 2,
                errors::InvalidArgument("coef must hold 2 values per group and class (",
                                        in.groups, " x ", classes, "), got ",
                                        coef.shape().DebugString()));
    const Tensor& y_pred = ctx->input(1);
    Tensor grad = buffers_.Get(ctx, y_pred.shape());
    if (!ctx->status().ok()) return;
    const auto* labels = storage<TLabel>(ctx->input(0));
    const auto* x = storage<TPred>(y_pred);
    auto* g = const_cast<typename Storage<TPred>::type*>(storage<TPred>(grad));
    const int64_t blocks = in.groups * wiou::num_pixel_blocks(in.group_pixels);
    auto work = [&](int64_t first, int64_t last) {
      wiou::multiclass_gradient(labels, x, in.weights, in.group_pixels,
                                coef.flat<float>().data(), in.params, first, last, g);
    };
    if (blocks > 1) {
      ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
          blocks, MultiClassBlockCost(classes), work);
    } else {
      work(0, blocks);
    }
    ctx->set_output(0, grad);
  }

 private:
  GradientBufferCache<TPred> buffers_;
};

class MultiClassWithoutIouOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& labels = ctx->input(0);
    const Tensor& logits = ctx->input(1);
    OP_REQUIRES(ctx, logits.dims() >= 1 && logits.dim_size(logits.dims() - 1) >= 1 &&
                         labels.NumElements() * logits.dim_size(logits.dims() - 1) ==
                             logits.NumElements(),
                errors::InvalidArgument("logits must be (..., C) with one label per pixel"));
    wiou::MultiClassParams params;
    params.classes = logits.dim_size(logits.dims() - 1);
    params.activation = wiou::Activation::kSoftmax;
    params.sparse = true;
    const int64_t pixels = labels.NumElements();
    const int64_t blocks = wiou::num_pixel_blocks(pixels);
    const uint8_t* ids = labels.flat<uint8_t>().data();
    const float* x = logits.flat<float>().data();
    std::vector<float> partials(wiou::kClassSums * params.classes * (blocks > 0 ? blocks : 1));
    Tensor out = buffers_.Get(ctx, logits.shape());
    if (!ctx->status().ok()) return;
    float* p = out.flat<float>().data();
    auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    const int64_t cost = MultiClassBlockCost(params.classes);
    workers->ParallelFor(blocks, cost, [&](int64_t first, int64_t last) {
      wiou::multiclass_sums_blocks_without_iou(ids, x, pixels, params, first, last,
                                               partials.data());
    });
    workers->ParallelFor(blocks, cost, [&](int64_t first, int64_t last) {
      wiou::multiclass_gradient_without_iou(ids, x, pixels, params, first, last, p);
    });
    ctx->set_output(0, out);
  }

 private:
  GradientBufferCache<float> buffers_;
};
REGISTER_KERNEL_BUILDER(Name("WiouMultiClassWithoutIou").Device(DEVICE_CPU),
                        MultiClassWithoutIouOp);

class KernelIsaOp : public OpKernel {
 public:
  explicit KernelIsaOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const wiou::Isa levels[] = {wiou::active_isa(), wiou::cpu_isa()};
    for (int i = 0; i < 2; ++i) {
      Tensor* out = nullptr;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(i, TensorShape({}), &out));
      out->scalar<tstring>()() = wiou::isa_name(levels[i]);
    }
  }
};
REGISTER_KERNEL_BUILDER(Name("WiouKernelIsa").Device(DEVICE_CPU), KernelIsaOp);

#define WIOU_REGISTER(TPRED, TTRUE)                                                        \
  REGISTER_KERNEL_BUILDER(Name("WiouIouSums")                                             \
                              .Device(DEVICE_CPU)                                          \
                              .TypeConstraint<TPRED>("Tpred")                              \
                              .TypeConstraint<TTRUE>("Ttrue"),                             \
                          IouSumsOp<TPRED, TTRUE>);                                       \
  REGISTER_KERNEL_BUILDER(Name("WiouIouSumsGrad")                                             \
                              .Device(DEVICE_CPU)                                          \
                              .TypeConstraint<TPRED>("Tpred")                              \
                              .TypeConstraint<TTRUE>("Ttrue"),                             \
                          IouSumsGradOp<TPRED, TTRUE>);

#define WIOU_REGISTER_ALL_LABELS(TPRED) \
  WIOU_REGISTER(TPRED, float)           \
  WIOU_REGISTER(TPRED, Eigen::half)     \
  WIOU_REGISTER(TPRED, Eigen::bfloat16) \
  WIOU_REGISTER(TPRED, uint8)           \
  WIOU_REGISTER(TPRED, int32)           \
  WIOU_REGISTER(TPRED, bool)

WIOU_REGISTER_ALL_LABELS(float)
WIOU_REGISTER_ALL_LABELS(Eigen::half)
WIOU_REGISTER_ALL_LABELS(Eigen::bfloat16)

#define WIOU_REGISTER_MULTICLASS(TPRED, TLABEL)                                            \
  REGISTER_KERNEL_BUILDER(Name("WiouMultiClassSums")                                      \
                              .Device(DEVICE_CPU)                                          \
                              .TypeConstraint<TPRED>("Tpred")                              \
                              .TypeConstraint<TLABEL>("Tlabel"),                           \
                          MultiClassSumsOp<TPRED, TLABEL>);                               \
  REGISTER_KERNEL_BUILDER(Name("WiouMultiClassSumsGrad")                                  \
                              .Device(DEVICE_CPU)                                          \
                              .TypeConstraint<TPRED>("Tpred")                              \
                              .TypeConstraint<TLABEL>("Tlabel"),                           \
                          MultiClassSumsGradOp<TPRED, TLABEL>);

// Keep in step with kLabelAttr and WIOU_FOR_EACH_MULTICLASS_LABEL.
#define WIOU_REGISTER_MULTICLASS_LABELS(TPRED)      \
  WIOU_REGISTER_MULTICLASS(TPRED, float)            \
  WIOU_REGISTER_MULTICLASS(TPRED, Eigen::half)      \
  WIOU_REGISTER_MULTICLASS(TPRED, Eigen::bfloat16)  \
  WIOU_REGISTER_MULTICLASS(TPRED, uint8)            \
  WIOU_REGISTER_MULTICLASS(TPRED, int32)

WIOU_REGISTER_MULTICLASS_LABELS(float)
WIOU_REGISTER_MULTICLASS_LABELS(Eigen::half)
WIOU_REGISTER_MULTICLASS_LABELS(Eigen::bfloat16)

}  // namespace
}  // namespace tensorflow
