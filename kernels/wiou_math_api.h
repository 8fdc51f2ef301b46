// Public face of the fused IoU math in wiou_math.h: storage types, constants
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

// Which sums (see wiou_ops/_iou.py, the single statement of the math):
//   seed:  {Σ y·p̂, Σ (y + p̂ - y·p̂), Σ y}
//   pixel: {Σ m·y·p̂, Σ m·(y + p̂ - y·p̂)},            m = s·(w_b·(1 - y) + w_f·y)
//   class: pixel's two with m = s, then {Σ m·(1 - y)·q̂, Σ m·((1 - y) + y·q̂)}
// with p̂ = clip(p, ε, 1-ε), q̂ = 1 - p̂, or p̂ = sigmoid(z), q̂ = sigmoid(-z) for logits.
enum class Weighting : int { kSeed = 0, kPixel = 1, kClass = 2 };
constexpr int kMaxTerms = 4;
inline int num_terms(Weighting w) {
  return w == Weighting::kSeed ? 3 : (w == Weighting::kPixel ? 2 : 4);
}

struct Params {
  Weighting weighting;
  bool from_logits;
  // The clip bounds and ε exactly as float32 constants, like the seed's
  // tf.clip_by_value(p, eps, 1 - eps) on a float32 tensor.
  float lo, hi, eps;
  // Per-pixel class weight c0 + c1·y: (w_b, w_f - w_b) in pixel mode, else (1, 0).
  float c0, c1;
  Params() : Params(Weighting::kSeed, false, 1e-7, 1.0, 1.0) {}
  Params(Weighting w, bool logits, double epsilon, double weight_background,
         double weight_foreground)
      : weighting(w),
        from_logits(logits),
        lo(static_cast<float>(epsilon)),
        hi(static_cast<float>(1.0 - epsilon)),
        eps(static_cast<float>(epsilon)),
        c0(w == Weighting::kPixel ? static_cast<float>(weight_background) : 1.0f),
        c1(w == Weighting::kPixel ? static_cast<float>(weight_foreground - weight_background)
                                  : 0.0f) {}
};

// The input is `groups` contiguous groups of `group_size` elements (one image
// each with per_image, else one group); each group is cut into blocks of
// kBlock elements. Blocks are numbered group by group.
inline int64_t num_blocks(int64_t n) { return (n + kBlock - 1) / kBlock; }

// Label masks (see iou_sums_blocks): with hard labels (0/1) and no weight map or
// logits, two bits per element hold all the gradient needs: whether ε ≤ p ≤ 1-ε,
// and whether y = 1. One uint32 word per kLanes elements of a group: bit l of
// the low half for lane l in range, bit l of the high half for lane l with y = 1.
// Each group's words start afresh (group g: words [g·mask_words, (g+1)·mask_words)).
inline int64_t mask_words(int64_t group_size) { return (group_size + kLanes - 1) / kLanes; }

// Partial sums of blocks [first, last) into partials[kMaxTerms·block ...].
// weights: a weight map with y's shape, or nullptr for s = 1.
// masks: nullptr, or (without weights and logits) the label masks, written in
// the same pass; then soft_blocks[block] = 1 if the block holds a label other
// than 0 and 1 with p inside [ε, 1-ε] (its gradient needs y and p; the masks of
// such a block mean nothing), else 0.
template <typename TTrue, typename TPred>
void iou_sums_blocks(const TTrue* y, const TPred* p, const float* weights, int64_t group_size,
                     const Params& params, int64_t first, int64_t last, float* partials,
                     uint32_t* masks = nullptr, uint8_t* soft_blocks = nullptr);

// sums[g·K + t] for every group from the block partials, pairwise in a fixed order.
void combine_partials(const float* partials, int64_t groups, int64_t blocks_per_group,
                      int terms, float* sums);

// m·(a_g·y + b_g·(1 - y))·dp̂ for elements [begin, end), written in p's dtype;
// coef[2·g] = a_g, coef[2·g + 1] = b_g (upstream already folded in);
// dp̂ = 1[ε ≤ p ≤ 1-ε] (ties pass, TensorFlow's clip rule), or p̂·q̂ for logits.
template <typename TTrue, typename TPred>
void iou_gradient(const TTrue* y, const TPred* p, const float* weights, int64_t group_size,
                  const float* coef, const Params& params, int64_t begin, int64_t end,
                  TPred* grad);

// The same gradient from label masks of blocks none of which is soft: per group
// a choice of 0 and the two values m·(a·y + b·(1 - y)) at y = 0 and y = 1,
// computed as iou_gradient computes them, so the results are bit-identical.
template <typename TPred>
void iou_gradient_from_masks(const uint32_t* masks, int64_t group_size, const float* coef,
                             const Params& params, int64_t begin, int64_t end, TPred* grad);

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
