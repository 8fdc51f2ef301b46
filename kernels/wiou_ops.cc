// TensorFlow adapter for kernels/wiou_math.h: op registration and thin
// OpKernels, one template registered per (y_pred, y_true) dtype pair.
//
//   WiouSeedSums(y_true, y_pred; epsilon) -> sums float32[3] = {I, U, Sy}
//   WiouSeedGrad(y_true, y_pred, sums, upstream; epsilon) -> grad (y_pred's dtype)
#include <cstring>
#include <type_traits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/platform/mutex.h"
#include "wiou_math_api.h"

// The TensorFlow version this library was compiled against, readable from the
// file's bytes without loading it (wiou_ops/_native.py refuses a mismatch:
// loading an op library built for another TensorFlow can crash the process).
#ifndef WIOU_BUILT_FOR_TENSORFLOW
#error "build with -DWIOU_BUILT_FOR_TENSORFLOW=\"<tf.__version__>\" (setup.py does)"
#endif
extern "C" __attribute__((used, visibility("default"))) const char wiou_built_for_tensorflow[] =
    "WIOU_BUILT_FOR_TENSORFLOW=" WIOU_BUILT_FOR_TENSORFLOW "\n";

namespace tensorflow {
namespace {

// The dtypes both ops accept: keep in step with WIOU_REGISTER_ALL_LABELS below.
constexpr char kPredAttr[] = "Tpred: {float, half, bfloat16}";
constexpr char kTrueAttr[] = "Ttrue: {float, half, bfloat16, uint8, int32, bool}";

REGISTER_OP("WiouSeedSums")
    .Input("y_true: Ttrue")
    .Input("y_pred: Tpred")
    .Output("sums: float")
    .Attr("epsilon: float")
    .Attr(kPredAttr)
    .Attr(kTrueAttr)
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->Vector(3));
      return absl::OkStatus();
    })
    .Doc("Fused seed-mode IoU sums {sum(y*p^), sum(y+p^-y*p^), sum(y)}, p^=clip(p,eps,1-eps).");

REGISTER_OP("WiouSeedGrad")
    .Input("y_true: Ttrue")
    .Input("y_pred: Tpred")
    .Input("sums: float")
    .Input("upstream: float")
    .Output("grad: Tpred")
    .Attr("epsilon: float")
    .Attr(kPredAttr)
    .Attr(kTrueAttr)
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      return absl::OkStatus();
    })
    .Doc("upstream * d(-log IoU)/d y_pred from the sums of WiouSeedSums.");

REGISTER_OP("WiouStreamRead")
    .Input("x: float")
    .Output("total: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->Scalar());
      return absl::OkStatus();
    })
    .Doc("Benchmark instrument: sum of x read at streaming bandwidth on all intra-op threads.");

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

Status CheckSameShape(const Tensor& y_true, const Tensor& y_pred) {
  if (y_true.shape() != y_pred.shape()) {
    return errors::InvalidArgument("y_true and y_pred must have the same shape, got y_true ",
                                   y_true.shape().DebugString(), " and y_pred ",
                                   y_pred.shape().DebugString());
  }
  return absl::OkStatus();
}

// Work per block for the thread pool's cost model (cycles, roughly).
constexpr int64_t kBlockCost = wiou::kBlock * 4;

template <typename TPred, typename TTrue>
class SeedSumsOp : public OpKernel {
 public:
  explicit SeedSumsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& y_true = ctx->input(0);
    const Tensor& y_pred = ctx->input(1);
    OP_REQUIRES_OK(ctx, CheckSameShape(y_true, y_pred));
    const int64_t n = y_pred.NumElements();
    const wiou::Bounds bounds(epsilon_);
    const auto* y = storage<TTrue>(y_true);
    const auto* p = storage<TPred>(y_pred);
    const int64_t blocks = wiou::num_blocks(n);
    std::vector<float> partials(3 * (blocks > 0 ? blocks : 1), 0.0f);
    auto work = [&](int64_t first, int64_t last) {
      wiou::seed_sums_blocks(y, p, n, bounds, first, last, partials.data());
    };
    if (blocks > 1) {
      ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(blocks, kBlockCost,
                                                                            work);
    } else {
      work(0, blocks);
    }
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({3}), &out));
    wiou::combine_partials(partials.data(), blocks, out->flat<float>().data());
  }

 private:
  float epsilon_;
};

template <typename TPred, typename TTrue>
class SeedGradOp : public OpKernel {
 public:
  explicit SeedGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& y_true = ctx->input(0);
    const Tensor& y_pred = ctx->input(1);
    const Tensor& sums_t = ctx->input(2);
    const Tensor& upstream_t = ctx->input(3);
    OP_REQUIRES_OK(ctx, CheckSameShape(y_true, y_pred));
    OP_REQUIRES(ctx, sums_t.NumElements() == 3,
                errors::InvalidArgument("sums must hold 3 values, got ",
                                        sums_t.shape().DebugString()));
    OP_REQUIRES(ctx, upstream_t.NumElements() == 1,
                errors::InvalidArgument("upstream must be a scalar, got ",
                                        upstream_t.shape().DebugString()));
    float sums[3];
    std::memcpy(sums, sums_t.flat<float>().data(), sizeof(sums));
    const float upstream = upstream_t.flat<float>()(0);

    Tensor grad = GradientBuffer(ctx, y_pred.shape());
    if (!ctx->status().ok()) return;
    const int64_t n = y_pred.NumElements();
    const wiou::Bounds bounds(epsilon_);
    const auto* y = storage<TTrue>(y_true);
    const auto* p = storage<TPred>(y_pred);
    auto* g = const_cast<typename Storage<TPred>::type*>(storage<TPred>(grad));
    auto work = [&](int64_t first, int64_t last) {
      const int64_t begin = first * wiou::kBlock;
      const int64_t end = last * wiou::kBlock < n ? last * wiou::kBlock : n;
      wiou::seed_gradient(y, p, begin, end, sums, upstream, bounds, g);
    };
    const int64_t blocks = wiou::num_blocks(n);
    if (blocks > 1) {
      ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(blocks, kBlockCost,
                                                                            work);
    } else {
      work(0, blocks);
    }
    ctx->set_output(0, grad);
  }

 private:
  // The gradient is as large as y_pred (16 MB at 16x512x512 float32); a fresh
  // allocation each step is page-faulted in again, which costs milliseconds.
  // The previous step's buffer is reused once nobody else holds it.
  Tensor GradientBuffer(OpKernelContext* ctx, const TensorShape& shape) {
    {
      mutex_lock lock(mu_);
      if (cached_.shape() == shape && cached_.RefCountIsOne()) {
        return cached_;  // the copy takes a reference: concurrent calls see it as busy
      }
    }
    Tensor fresh;
    Status s = ctx->allocate_temp(DataTypeToEnum<TPred>::value, shape, &fresh);
    if (!s.ok()) {
      ctx->SetStatus(s);
      return fresh;
    }
    mutex_lock lock(mu_);
    cached_ = fresh;  // the old one is busy or of another shape
    return fresh;
  }

  float epsilon_;
  mutex mu_;
  Tensor cached_ TF_GUARDED_BY(mu_);
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
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
        blocks, kBlockCost, [&](int64_t first, int64_t last) {
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

#define WIOU_REGISTER(TPRED, TTRUE)                                                        \
  REGISTER_KERNEL_BUILDER(Name("WiouSeedSums")                                             \
                              .Device(DEVICE_CPU)                                          \
                              .TypeConstraint<TPRED>("Tpred")                              \
                              .TypeConstraint<TTRUE>("Ttrue"),                             \
                          SeedSumsOp<TPRED, TTRUE>);                                       \
  REGISTER_KERNEL_BUILDER(Name("WiouSeedGrad")                                             \
                              .Device(DEVICE_CPU)                                          \
                              .TypeConstraint<TPRED>("Tpred")                              \
                              .TypeConstraint<TTRUE>("Ttrue"),                             \
                          SeedGradOp<TPRED, TTRUE>);

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

}  // namespace
}  // namespace tensorflow
