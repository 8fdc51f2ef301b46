// The seed-mode math compiled once per (y_true, y_pred) dtype pair, for the
// host CPU (-O3 -march=native): no TensorFlow header in this file.
#include "wiou_math.h"

namespace wiou {

void combine_partials(const float* partials, int64_t blocks, float sums[3]) {
  for (int c = 0; c < 3; ++c) sums[c] = pairwise_column_sum(partials, blocks, c);
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

#define WIOU_INSTANTIATE(TTRUE, TPRED)                                                        \
  template void seed_sums_blocks<TTRUE, TPRED>(const TTRUE*, const TPRED*, int64_t,           \
                                               const Bounds&, int64_t, int64_t, float*);      \
  template void seed_gradient<TTRUE, TPRED>(const TTRUE*, const TPRED*, int64_t, int64_t,     \
                                            const float[3], float, const Bounds&, TPRED*);

WIOU_FOR_EACH_DTYPE_PAIR(WIOU_INSTANTIATE)

}  // namespace wiou
