// The fused IoU math compiled once per (y_true, y_pred) dtype pair. Built once
// per instruction-set level, each with its own -march and
// -DWIOU_ISA_NAMESPACE=isa_<level> (wiou_ops/_kernels/native_build.py); no
// TensorFlow header in this file.
#include "wiou_math.h"
#include "wiou_multiclass.h"

namespace wiou {
namespace WIOU_ISA_NAMESPACE {

void combine_partials(const float* partials, int64_t groups, int64_t blocks_per_group,
                      int terms, float* sums) {
  for (int64_t g = 0; g < groups; ++g) {
    const float* first = partials + kMaxTerms * g * blocks_per_group;
    for (int t = 0; t < terms; ++t) {
      sums[terms * g + t] = pairwise_column_sum(first, blocks_per_group, t);
    }
  }
}

void combine_multiclass_partials(const float* partials, int64_t groups,
                                 int64_t blocks_per_group, int64_t classes, float* sums) {
  const int64_t stride = kClassSums * classes;
  for (int64_t g = 0; g < groups; ++g) {
    const float* first = partials + g * blocks_per_group * stride;
    for (int64_t c = 0; c < classes; ++c) {
      for (int sum = 0; sum < kClassSums; ++sum) {
        sums[(g * classes + c) * kClassSums + sum] =
            pairwise_strided_sum(first, blocks_per_group, stride, sum * classes + c);
      }
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

void multiclass_sums_blocks_without_iou(const uint8_t* labels, const float* x,
                                        int64_t group_pixels, const MultiClassParams& params,
                                        int64_t first, int64_t last, float* partials) {
  multiclass_sums_pass<false>(labels, x, static_cast<const float*>(nullptr), group_pixels,
                              params, first, last, partials);
}

void multiclass_gradient_without_iou(const uint8_t* labels, const float* x,
                                     int64_t group_pixels, const MultiClassParams& params,
                                     int64_t first, int64_t last, float* out) {
  multiclass_gradient_pass<false>(labels, x, static_cast<const float*>(nullptr), group_pixels,
                                  nullptr, params, first, last, out);
}

void mul_add_floats(const float* a, const float* b, const float* c, int64_t n, float* out) {
  for (int64_t i = 0; i < n; i += kLanes) {
    const int count = n - i < kLanes ? static_cast<int>(n - i) : kLanes;
    const vfloat r =
        mul_add(load_partial(a + i, count), load_partial(b + i, count), load_partial(c + i, count));
    std::memcpy(out + i, &r, sizeof(float) * count);
  }
}

WIOU_INSTANTIATE_ENTRY_POINTS()

}  // namespace WIOU_ISA_NAMESPACE
}  // namespace wiou
