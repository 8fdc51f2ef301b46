// Run-time choice of the loops' instruction-set level (wiou_math_api.h).
//
// Built with the target's baseline flags: this file runs on every CPU and only
// calls a level's loops after the CPU (and its OS, which must save the wider
// registers) reported that level. The check is GCC/Clang's
// __builtin_cpu_supports on the x86-64 micro-architecture levels, the same
// names the level's compile unit is built for (-march=x86-64-v3 / -v4).
#include <atomic>
#include <initializer_list>
#include <cstdlib>
#include <cstring>

#include "wiou_math_api.h"

#if defined(__x86_64__)
#define WIOU_X86_LEVELS 1
#else
#define WIOU_X86_LEVELS 0
#endif

namespace wiou {

namespace isa_baseline {
#include "wiou_math_entry_points.h"
}  // namespace isa_baseline
#if WIOU_X86_LEVELS
namespace isa_avx2 {
#include "wiou_math_entry_points.h"
}  // namespace isa_avx2
namespace isa_avx512 {
#include "wiou_math_entry_points.h"
}  // namespace isa_avx512
#endif

namespace {

Isa detect_cpu_isa() {
#if WIOU_X86_LEVELS
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return Isa::kAvx512;
  if (__builtin_cpu_supports("x86-64-v3")) return Isa::kAvx2;
#endif
  return Isa::kBaseline;
}

// cpu, or the lower level WIOU_OPS_ISA names. The Python side rejects an
// unknown name with a clear error before the library loads; here it is ignored.
Isa isa_from_environment(Isa cpu) {
  const char* asked = std::getenv(kIsaEnvironmentVariable);
  if (asked == nullptr) return cpu;
  for (Isa level : {Isa::kBaseline, Isa::kAvx2, Isa::kAvx512}) {
    if (std::strcmp(asked, isa_name(level)) == 0) return level < cpu ? level : cpu;
  }
  return cpu;
}

constexpr int kUnset = -1;
std::atomic<int> active_level{kUnset};

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "baseline";
  }
}

Isa cpu_isa() {
  static const Isa isa = detect_cpu_isa();
  return isa;
}

Isa active_isa() {
  int level = active_level.load(std::memory_order_relaxed);
  if (level == kUnset) {
    int unset = kUnset;
    active_level.compare_exchange_strong(unset, static_cast<int>(isa_from_environment(cpu_isa())));
    level = active_level.load();
  }
  return static_cast<Isa>(level);
}

void set_active_isa(Isa isa) {
  active_level.store(static_cast<int>(isa < cpu_isa() ? isa : cpu_isa()));
}

// return isa_<active level>::CALL
#if WIOU_X86_LEVELS
#define WIOU_DISPATCH(...)                 \
  switch (active_isa()) {                  \
    case Isa::kAvx512:                     \
      return isa_avx512::__VA_ARGS__;      \
    case Isa::kAvx2:                       \
      return isa_avx2::__VA_ARGS__;        \
    default:                               \
      return isa_baseline::__VA_ARGS__;    \
  }
#else
#define WIOU_DISPATCH(...) return isa_baseline::__VA_ARGS__
#endif

template <typename TTrue, typename TPred>
void iou_sums_blocks(const TTrue* y, const TPred* p, const float* weights, int64_t group_size,
                     const Params& params, int64_t first, int64_t last, float* partials,
                     uint32_t* masks, uint8_t* soft_blocks) {
  WIOU_DISPATCH(iou_sums_blocks<TTrue, TPred>(y, p, weights, group_size, params, first, last,
                                              partials, masks, soft_blocks));
}

void combine_partials(const float* partials, int64_t groups, int64_t blocks_per_group,
                      int terms, float* sums) {
  WIOU_DISPATCH(combine_partials(partials, groups, blocks_per_group, terms, sums));
}

template <typename TTrue, typename TPred>
void iou_gradient(const TTrue* y, const TPred* p, const float* weights, int64_t group_size,
                  const float* coef, const Params& params, int64_t begin, int64_t end,
                  TPred* grad) {
  WIOU_DISPATCH(iou_gradient<TTrue, TPred>(y, p, weights, group_size, coef, params, begin, end,
                                           grad));
}

template <typename TPred>
void iou_gradient_from_masks(const uint32_t* masks, int64_t group_size, const float* coef,
                             const Params& params, int64_t begin, int64_t end, TPred* grad) {
  WIOU_DISPATCH(iou_gradient_from_masks<TPred>(masks, group_size, coef, params, begin, end,
                                               grad));
}

template <typename TLabel, typename TPred>
void multiclass_sums_blocks(const TLabel* labels, const TPred* x, const float* weights,
                            int64_t group_pixels, const MultiClassParams& params,
                            int64_t first, int64_t last, float* partials) {
  WIOU_DISPATCH(multiclass_sums_blocks<TLabel, TPred>(labels, x, weights, group_pixels, params,
                                                      first, last, partials));
}

void combine_multiclass_partials(const float* partials, int64_t groups,
                                 int64_t blocks_per_group, int64_t classes, float* sums) {
  WIOU_DISPATCH(combine_multiclass_partials(partials, groups, blocks_per_group, classes, sums));
}

template <typename TLabel, typename TPred>
void multiclass_gradient(const TLabel* labels, const TPred* x, const float* weights,
                         int64_t group_pixels, const float* coef,
                         const MultiClassParams& params, int64_t first, int64_t last,
                         TPred* grad) {
  WIOU_DISPATCH(multiclass_gradient<TLabel, TPred>(labels, x, weights, group_pixels, coef,
                                                   params, first, last, grad));
}

float stream_read_sum(const float* x, int64_t begin, int64_t end) {
  WIOU_DISPATCH(stream_read_sum(x, begin, end));
}

void multiclass_sums_blocks_without_iou(const uint8_t* labels, const float* x,
                                        int64_t group_pixels, const MultiClassParams& params,
                                        int64_t first, int64_t last, float* partials) {
  WIOU_DISPATCH(multiclass_sums_blocks_without_iou(labels, x, group_pixels, params, first, last,
                                                   partials));
}

void multiclass_gradient_without_iou(const uint8_t* labels, const float* x,
                                     int64_t group_pixels, const MultiClassParams& params,
                                     int64_t first, int64_t last, float* out) {
  WIOU_DISPATCH(multiclass_gradient_without_iou(labels, x, group_pixels, params, first, last,
                                                out));
}

void mul_add_floats(const float* a, const float* b, const float* c, int64_t n, float* out) {
  WIOU_DISPATCH(mul_add_floats(a, b, c, n, out));
}

WIOU_INSTANTIATE_ENTRY_POINTS()

}  // namespace wiou
