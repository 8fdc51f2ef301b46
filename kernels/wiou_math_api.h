// Public face of the seed-mode math in wiou_math.h: storage types, constants
// and the per-dtype entry points. The TensorFlow adapter includes only this
// file, so TensorFlow's headers keep TensorFlow's compiler flags while the
// loops (wiou_math_instances.cc) are built for the host CPU.
#ifndef WIOU_OPS_KERNELS_WIOU_MATH_API_H_
#define WIOU_OPS_KERNELS_WIOU_MATH_API_H_

#include <cstdint>

namespace wiou {

constexpr int64_t kBlock = 4096;  // elements per partial sum
constexpr int kLanes = 16;        // accumulators per block (one AVX-512 register)

// 16-bit storage types, bit-compatible with Eigen::bfloat16 / Eigen::half.
struct bfloat16 {
  uint16_t bits;
};
struct float16 {
  uint16_t bits;
};

// The clip bounds and ε exactly as float32 constants, like the seed's
// tf.clip_by_value(p, eps, 1 - eps) on a float32 tensor.
struct Bounds {
  float lo, hi, eps;
  explicit Bounds(double epsilon)
      : lo(static_cast<float>(epsilon)),
        hi(static_cast<float>(1.0 - epsilon)),
        eps(static_cast<float>(epsilon)) {}
};

inline int64_t num_blocks(int64_t n) { return (n + kBlock - 1) / kBlock; }

// Partial sums {I, U, Sy} of blocks [first, last) into partials[3·block ...].
template <typename TTrue, typename TPred>
void seed_sums_blocks(const TTrue* y, const TPred* p, int64_t n, const Bounds& b,
                      int64_t first, int64_t last, float* partials);

// {I, U, Sy} from all block partials, combined pairwise in a fixed order.
void combine_partials(const float* partials, int64_t blocks, float sums[3]);

// upstream · ∂L/∂p for elements [begin, end), written in p's dtype.
template <typename TTrue, typename TPred>
void seed_gradient(const TTrue* y, const TPred* p, int64_t begin, int64_t end,
                   const float sums[3], float upstream, const Bounds& b, TPred* grad);

// Benchmark instrument: sum of x[begin, end) with kLanes accumulators, the
// fastest plain streaming read this CPU does (wiou-bench's byte floor).
float stream_read_sum(const float* x, int64_t begin, int64_t end);

// The (y_true, y_pred) pairs compiled in wiou_math_instances.cc.
#define WIOU_FOR_EACH_LABEL(X, TPRED) \
  X(float, TPRED)                      \
  X(::wiou::float16, TPRED)            \
  X(::wiou::bfloat16, TPRED)           \
  X(uint8_t, TPRED)                    \
  X(int32_t, TPRED)                    \
  X(bool, TPRED)
#define WIOU_FOR_EACH_DTYPE_PAIR(X)          \
  WIOU_FOR_EACH_LABEL(X, float)              \
  WIOU_FOR_EACH_LABEL(X, ::wiou::float16)    \
  WIOU_FOR_EACH_LABEL(X, ::wiou::bfloat16)

}  // namespace wiou

#endif  // WIOU_OPS_KERNELS_WIOU_MATH_API_H_
