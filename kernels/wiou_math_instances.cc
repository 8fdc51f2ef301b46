// The fused IoU math compiled once per (y_true, y_pred) dtype pair, for the
// host CPU (-O3 -march=native): no TensorFlow header in this file.
#include "wiou_math.h"

namespace wiou {

void combine_partials(const float* partials, int64_t groups, int64_t blocks_per_group,
                      int terms, float* sums) {
  for (int64_t g = 0; g < groups; ++g) {
    const float* first = partials + kMaxTerms * g * blocks_per_group;
    for (int t = 0; t < terms; ++t) {
      sums[terms * g + t] = pairwise_column_sum(first, blocks_per_group, t);
    }
  }
}

float stream_read_sum(const float* x, int64_t begin, int64_t end) {
  vfloat acc = {};
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) acc += load_floats(x + i);
  float total = 0.0f;
  for (int l = 0; l < kLanes; ++l) total += acc[l];
  for (; i < end; ++i) total += x[i];
  return total;
}

#define WIOU_INSTANTIATE(TTRUE, TPRED)                                                      \
  template void iou_sums_blocks<TTRUE, TPRED>(const TTRUE*, const TPRED*, const float*,     \
                                              int64_t, const Params&, int64_t, int64_t,     \
                                              float*, uint32_t*, uint8_t*);                 \
  template void iou_gradient<TTRUE, TPRED>(const TTRUE*, const TPRED*, const float*, int64_t, \
                                           const float*, const Params&, int64_t, int64_t,   \
                                           TPRED*);

WIOU_FOR_EACH_DTYPE_PAIR(WIOU_INSTANTIATE)

#define WIOU_INSTANTIATE_MASKS(TPRED)                                                     \
  template void iou_gradient_from_masks<TPRED>(const uint32_t*, int64_t, const float*,     \
                                               const Params&, int64_t, int64_t, TPRED*);
WIOU_INSTANTIATE_MASKS(float)
WIOU_INSTANTIATE_MASKS(float16)
WIOU_INSTANTIATE_MASKS(bfloat16)

}  // namespace wiou
