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

// Multi-class (wiou_ops/_multiclass.py, the single statement of the math): per group
// and class c the sums {I_c = Σ s·y_c·p̂_c, P_c = Σ s·p̂_c, Y_c = Σ s·y_c}, with p̂ the
// clip of the probabilities, or softmax / sigmoid of logits; y_c = 1[id = c] for
// sparse ids; s = weight map · 1[id ≠ ignore] (dense labels: · (1 - y_ignore)).
// y_pred is (pixels, C) row-major; each group's pixels are cut into blocks of
// kPixelBlock pixels, numbered group by group, each summed with kLanes pixels per
// accumulator and combined pairwise in a fixed order (deterministic, as above).
enum class Activation : int { kClip = 0, kSoftmax = 1, kSigmoid = 2 };
constexpr int kClassSums = 3;
constexpr int64_t kPixelBlock = 1024;
inline int64_t num_pixel_blocks(int64_t pixels) {
  return (pixels + kPixelBlock - 1) / kPixelBlock;
}

struct MultiClassParams {
  int64_t classes = 2;
  Activation activation = Activation::kClip;
  bool sparse = false;        // labels: one id per pixel, else C values per pixel
  int64_t ignore_class = -1;  // -1: none
  float lo = 1e-7f, hi = 1.0f - 1e-7f;  // the clip bounds as float32 constants
};

// Instruction-set levels of the loops. Each level is its own compile unit
// (wiou_math_instances.cc built with that level's -march, in the namespace
// isa_<level>); the entry points below pick one at run time from the CPU's own
// flags, never from the build machine's (wiou_dispatch.cc). aarch64 and other
// targets compile the baseline loops only.
//   baseline: the target's base ISA (x86-64: SSE2)
//   avx2:     x86-64-v3 (AVX2, FMA, F16C)
//   avx512:   x86-64-v4 (AVX-512 F/BW/CD/DQ/VL)
enum class Isa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };
constexpr const char* kIsaEnvironmentVariable = "WIOU_OPS_ISA";
const char* isa_name(Isa isa);
// The widest level compiled in that this CPU and its OS support.
Isa cpu_isa();
// The level the entry points use: cpu_isa(), or the lower level named by
// WIOU_OPS_ISA (baseline|avx2|avx512; read at the first call; a level above
// cpu_isa() or an unknown name leaves cpu_isa()).
Isa active_isa();
// Forces a level (clamped to cpu_isa()); for tests.
void set_active_isa(Isa isa);

// The entry points (dispatching on active_isa()); every ISA namespace declares
// the same ones.
#include "wiou_math_entry_points.h"

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

// Explicit instantiations of the entry points' templates for every dtype pair,
// in the enclosing namespace (the dispatchers' and each level's loops).
#define WIOU_INSTANTIATE_PAIR(TTRUE, TPRED)                                                  \
  template void iou_sums_blocks<TTRUE, TPRED>(const TTRUE*, const TPRED*, const float*,     \
                                              int64_t, const Params&, int64_t, int64_t,     \
                                              float*, uint32_t*, uint8_t*);                 \
  template void iou_gradient<TTRUE, TPRED>(const TTRUE*, const TPRED*, const float*, int64_t, \
                                           const float*, const Params&, int64_t, int64_t,   \
                                           TPRED*);
#define WIOU_INSTANTIATE_MASKS(TPRED)                                                     \
  template void iou_gradient_from_masks<TPRED>(const uint32_t*, int64_t, const float*,     \
                                               const Params&, int64_t, int64_t, TPRED*);
// Multi-class labels: ids (uint8, int32) or dense labels (any of these).
#define WIOU_FOR_EACH_MULTICLASS_LABEL(X, TPRED) \
  X(float, TPRED)                                 \
  X(::wiou::float16, TPRED)                       \
  X(::wiou::bfloat16, TPRED)                      \
  X(uint8_t, TPRED)                               \
  X(int32_t, TPRED)
#define WIOU_INSTANTIATE_MULTICLASS_PAIR(TLABEL, TPRED)                                  \
  template void multiclass_sums_blocks<TLABEL, TPRED>(const TLABEL*, const TPRED*,        \
                                                      const float*, int64_t,              \
                                                      const MultiClassParams&, int64_t,   \
                                                      int64_t, float*);                   \
  template void multiclass_gradient<TLABEL, TPRED>(const TLABEL*, const TPRED*, const float*, \
                                                   int64_t, const float*,                 \
                                                   const MultiClassParams&, int64_t, int64_t, \
                                                   TPRED*);
#define WIOU_INSTANTIATE_ENTRY_POINTS()                                            \
  WIOU_FOR_EACH_DTYPE_PAIR(WIOU_INSTANTIATE_PAIR)                                 \
  WIOU_INSTANTIATE_MASKS(float)                                                   \
  WIOU_INSTANTIATE_MASKS(::wiou::float16)                                         \
  WIOU_INSTANTIATE_MASKS(::wiou::bfloat16)                                        \
  WIOU_FOR_EACH_MULTICLASS_LABEL(WIOU_INSTANTIATE_MULTICLASS_PAIR, float)          \
  WIOU_FOR_EACH_MULTICLASS_LABEL(WIOU_INSTANTIATE_MULTICLASS_PAIR, ::wiou::float16) \
  WIOU_FOR_EACH_MULTICLASS_LABEL(WIOU_INSTANTIATE_MULTICLASS_PAIR, ::wiou::bfloat16)

}  // namespace wiou

#endif  // WIOU_OPS_KERNELS_WIOU_MATH_API_H_
