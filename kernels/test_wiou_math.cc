// Plain C++ test of the fused IoU math (no TensorFlow): `make test` builds and runs it.
//   g++ -std=c++17 -O3 -march=native kernels/test_wiou_math.cc kernels/wiou_math_instances.cc
// Every weighting, logits, weight maps and per-image groups against a double
// reference written out from the formulas in wiou_math_api.h.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "wiou_math.h"

namespace {

using wiou::Params;
using wiou::Weighting;

int passed = 0, failed = 0;

void check(bool ok, const char* what, double got = 0, double want = 0) {
  if (ok) {
    ++passed;
  } else {
    ++failed;
    std::printf("FAIL %s: got %.9g want %.9g\n", what, got, want);
  }
}

double rel(double got, double want) {
  return want == 0 ? std::fabs(got) : std::fabs(got - want) / std::fabs(want);
}

struct Probability {
  double p, q, dp;
};

Probability reference_probability(double x, const Params& pr) {
  if (pr.from_logits) {
    const double p = 1.0 / (1.0 + std::exp(-x)), q = 1.0 / (1.0 + std::exp(x));
    return {p, q, p * q};
  }
  const double p = std::fmin(std::fmax(x, double(pr.lo)), double(pr.hi));
  return {p, 1.0 - p, (x >= pr.lo && x <= pr.hi) ? 1.0 : 0.0};
}

double reference_m(double y, const float* s, int64_t i, const Params& pr) {
  if (pr.weighting == Weighting::kSeed) return 1.0;
  return (s ? s[i] : 1.0) * (double(pr.c0) + double(pr.c1) * y);
}

// sums[g][t] in double, straight from the definitions.
std::vector<double> reference_sums(const std::vector<float>& y, const std::vector<float>& x,
                                   const float* s, int64_t group_size, const Params& pr) {
  const int terms = wiou::num_terms(pr.weighting);
  const int64_t groups = group_size ? int64_t(y.size()) / group_size : 0;
  std::vector<double> out(groups * terms, 0.0);
  for (int64_t i = 0; i < int64_t(y.size()); ++i) {
    const double yv = y[i], m = reference_m(yv, s, i, pr);
    const Probability pp = reference_probability(x[i], pr);
    double* row = &out[(i / group_size) * terms];
    row[0] += m * yv * pp.p;
    row[1] += m * (yv + pp.p - yv * pp.p);
    if (pr.weighting == Weighting::kSeed) row[2] += yv;
    if (pr.weighting == Weighting::kClass) {
      row[2] += m * (1.0 - yv) * pp.q;
      row[3] += m * ((1.0 - yv) + yv * pp.q);
    }
  }
  return out;
}

template <typename TTrue, typename TPred>
std::vector<float> sums(const TTrue* y, const TPred* p, const float* s, int64_t n,
                        int64_t group_size, const Params& pr, int64_t split = -1) {
  const int64_t groups = group_size ? n / group_size : 0;
  const int64_t per_group = wiou::num_blocks(group_size);
  const int64_t blocks = groups * per_group;
  std::vector<float> partials(wiou::kMaxTerms * (blocks > 0 ? blocks : 1), 0.0f);
  if (split < 0) {
    wiou::iou_sums_blocks(y, p, s, group_size, pr, 0, blocks, partials.data());
  } else {  // a different "thread" partition, run back to front
    wiou::iou_sums_blocks(y, p, s, group_size, pr, split, blocks, partials.data());
    wiou::iou_sums_blocks(y, p, s, group_size, pr, 0, split, partials.data());
  }
  const int terms = wiou::num_terms(pr.weighting);
  std::vector<float> out(groups * terms);
  wiou::combine_partials(partials.data(), groups, per_group, terms, out.data());
  return out;
}

const Weighting kWeightings[] = {Weighting::kSeed, Weighting::kPixel, Weighting::kClass};

void test_conversions() {
  // bfloat16: exact values and round-to-nearest-even ties.
  check(wiou::to_float(wiou::bfloat16{0x3f80}) == 1.0f, "bf16 1.0");
  check(wiou::from_float<wiou::bfloat16>(1.0f).bits == 0x3f80, "bf16 store 1.0");
  // 1 + 2^-8 lies halfway between bf16 1.0 and 1.0078125: ties go to even (1.0).
  check(wiou::from_float<wiou::bfloat16>(1.00390625f).bits == 0x3f80, "bf16 tie to even");
  check(wiou::from_float<wiou::bfloat16>(1.01171875f).bits == 0x3f82, "bf16 tie up to even");
  check(wiou::from_float<wiou::bfloat16>(NAN).bits == 0x7fc0, "bf16 NaN");
  // float16
  check(wiou::to_float(wiou::float16{0x3c00}) == 1.0f, "f16 1.0");
  check(wiou::to_float(wiou::float16{0x0001}) == std::ldexp(1.0f, -24), "f16 subnormal");
  check(wiou::from_float<wiou::float16>(65504.0f).bits == 0x7bff, "f16 max");
  check(wiou::from_float<wiou::float16>(1e6f).bits == 0x7c00, "f16 overflow to inf");
  // Vector and scalar stores agree on 10,000 values.
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  std::vector<float> x(10000);
  for (auto& v : x) v = dist(rng) * std::pow(10.0f, dist(rng));
  std::vector<wiou::bfloat16> vb(x.size());
  std::vector<wiou::float16> vh(x.size());
  int mismatches = 0;
  for (size_t i = 0; i + wiou::kLanes <= x.size(); i += wiou::kLanes) {
    wiou::vfloat v = wiou::load_floats(&x[i]);
    wiou::store_floats(v, &vb[i]);
    wiou::store_floats(v, &vh[i]);
    for (int l = 0; l < wiou::kLanes; ++l) {
      mismatches += vb[i + l].bits != wiou::from_float<wiou::bfloat16>(x[i + l]).bits;
      mismatches += vh[i + l].bits != wiou::from_float<wiou::float16>(x[i + l]).bits;
      mismatches += wiou::load_floats(&vb[i])[l] != wiou::to_float(vb[i + l]);
      mismatches += wiou::load_floats(&vh[i])[l] != wiou::to_float(vh[i + l]);
    }
  }
  check(mismatches == 0, "vector and scalar conversions agree", mismatches, 0);
}

void test_exp_and_sigmoid() {
  // exp(x) for x <= 0 within 2e-7 relative down to -87; saturated sigmoids exact.
  double worst = 0;
  for (int k = 0; k < 100000; ++k) {
    const float x = -86.99f * float(k) / 99999.0f;
    const wiou::vfloat v = wiou::exp_nonpositive(wiou::vfloat{} + x);
    worst = std::fmax(worst, rel(v[0], std::exp(double(x))));
  }
  check(worst <= 2e-7, "vector exp within 2e-7", worst, 2e-7);
  check(wiou::exp_nonpositive(wiou::vfloat{} - 88.0f)[0] == 0.0f, "exp underflows to 0");
  const Params pr(Weighting::kClass, true, 1e-7, 1, 1);
  wiou::vfloat p, q;
  wiou::probabilities<true>(wiou::vfloat{} + 1e4f, pr, p, q);
  check(p[0] == 1.0f && q[0] == 0.0f, "sigmoid(1e4) = 1, sigmoid(-1e4) = 0");
  wiou::probabilities<true>(wiou::vfloat{} - 1e4f, pr, p, q);
  check(q[0] == 1.0f && p[0] == 0.0f, "sigmoid(-1e4) = 0");
  double worst_sigmoid = 0;
  for (int k = 0; k < 4001; ++k) {
    const float x = -20.0f + 0.01f * float(k);
    wiou::probabilities<true>(wiou::vfloat{} + x, pr, p, q);
    worst_sigmoid = std::fmax(worst_sigmoid, rel(p[0], 1.0 / (1.0 + std::exp(-double(x)))));
    worst_sigmoid = std::fmax(worst_sigmoid, rel(q[0], 1.0 / (1.0 + std::exp(double(x)))));
  }
  check(worst_sigmoid <= 4e-7, "sigmoid and its complement within 4e-7", worst_sigmoid, 4e-7);
}

// Every weighting x probabilities/logits x weight map x group layout, against
// double; and bit-identical under another block partition.
void test_sums_accuracy_and_determinism() {
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::normal_distribution<float> logit(0.0f, 4.0f);
  struct Layout {
    int64_t groups, group_size;
  };
  const Layout layouts[] = {{1, 1},    {1, 15},   {1, 17},   {1, 4096},   {1, 4097},
                            {3, 1},    {5, 123},  {2, 4097}, {1, 100003}, {4, 300001},
                            {1, 3000000}};
  for (const Layout& layout : layouts) {
    const int64_t n = layout.groups * layout.group_size;
    std::vector<float> y(n), p(n), z(n), s(n);
    for (int64_t i = 0; i < n; ++i) {
      y[i] = unit(rng) < 0.1f ? 1.0f : 0.0f;
      p[i] = unit(rng);
      z[i] = logit(rng);
      s[i] = unit(rng) < 0.1f ? 0.0f : 2.0f * unit(rng);
    }
    if (n > 8) {
      p[1] = 0.0f;
      p[2] = 1.0f;
      p[3] = 1e-7f;
      p[4] = float(1.0 - 1e-7);
      z[5] = 1e4f;
      z[6] = -1e4f;
    }
    for (Weighting w : kWeightings) {
      for (bool logits : {false, true}) {
        for (bool weighted : {false, true}) {
          if (w == Weighting::kSeed && weighted) continue;
          const Params pr(w, logits, 1e-7, 0.3, 2.0);
          const std::vector<float>& x = logits ? z : p;
          const float* sp = weighted ? s.data() : nullptr;
          const std::vector<float> got = sums(y.data(), x.data(), sp, n, layout.group_size, pr);
          const std::vector<double> want = reference_sums(y, x, sp, layout.group_size, pr);
          double worst = 0;
          for (size_t k = 0; k < want.size(); ++k) worst = std::fmax(worst, rel(got[k], want[k]));
          check(worst <= 1e-6, "sums within 1e-6 of double", worst, 1e-6);
          const int64_t blocks = layout.groups * wiou::num_blocks(layout.group_size);
          for (int64_t split : {int64_t(0), blocks / 3, blocks / 2}) {
            const std::vector<float> again =
                sums(y.data(), x.data(), sp, n, layout.group_size, pr, split);
            check(again == got, "bit-identical under another block partition");
          }
        }
      }
    }
  }
}

void test_label_types_agree() {
  const int64_t n = 5000;
  std::vector<float> yf(n), p(n);
  std::vector<uint8_t> yu(n);
  std::vector<int32_t> yi(n);
  std::unique_ptr<bool[]> yb(new bool[n]);
  std::mt19937 rng(3);
  for (int64_t i = 0; i < n; ++i) {
    yu[i] = rng() % 2;
    yf[i] = yu[i];
    yi[i] = yu[i];
    yb[i] = yu[i] != 0;
    p[i] = float(rng() % 1000) / 999.0f;
  }
  for (Weighting w : kWeightings) {
    const Params pr(w, false, 1e-7, 0.5, 1.5);
    const auto f = sums(yf.data(), p.data(), nullptr, n, 1000, pr);
    check(f == sums(yu.data(), p.data(), nullptr, n, 1000, pr) &&
              f == sums(yb.get(), p.data(), nullptr, n, 1000, pr) &&
              f == sums(yi.data(), p.data(), nullptr, n, 1000, pr),
          "label dtypes give identical sums");
  }
}

// The gradient against double for every weighting and both transforms, with
// a weight map, groups of a ragged size, and clip ties.
void test_gradient() {
  const int64_t groups = 3, group_size = 37, n = groups * group_size;
  std::vector<float> y(n), p(n), z(n), s(n), g(n);
  std::mt19937 rng(4);
  for (int64_t i = 0; i < n; ++i) {
    y[i] = (rng() % 3 == 0) ? 1.0f : 0.0f;
    p[i] = float(rng() % 1000) / 999.0f;
    z[i] = float(int(rng() % 4001) - 2000) / 100.0f;
    s[i] = float(rng() % 5) / 2.0f;
  }
  p[0] = 0.0f;   // below the clip: no gradient
  p[1] = 1.0f;   // above: no gradient
  p[2] = 1e-7f;  // ties pass (TensorFlow's clip_by_value rule)
  p[35] = float(1.0 - 1e-7);  // a tie in a ragged tail
  s[2] = s[35] = 1.0f;         // so that the ties' gradients are not zero anyway
  z[3] = 1e4f;
  z[4] = -1e4f;
  const float coef[2 * groups] = {-0.25f, 0.125f, -3.5f, 0.5f, 1.75f, -0.0625f};
  for (Weighting w : kWeightings) {
    for (bool logits : {false, true}) {
      for (bool weighted : {false, true}) {
        const Params pr(w, logits, 1e-7, 0.3, 2.0);
        const std::vector<float>& x = logits ? z : p;
        const float* sp = weighted ? s.data() : nullptr;
        // Two calls split inside a group: spans must pick each group's coefficients.
        wiou::iou_gradient(y.data(), x.data(), sp, group_size, coef, pr, 0, 50, g.data());
        wiou::iou_gradient(y.data(), x.data(), sp, group_size, coef, pr, 50, n, g.data());
        double worst = 0;
        for (int64_t i = 0; i < n; ++i) {
          const double a = coef[2 * (i / group_size)], b = coef[2 * (i / group_size) + 1];
          const double m = (sp ? sp[i] : 1.0) *
                           (w == Weighting::kPixel ? 0.3 * (1.0 - y[i]) + 2.0 * y[i] : 1.0);
          const double want =
              m * (a * y[i] + b * (1.0 - y[i])) * reference_probability(x[i], pr).dp;
          worst = std::fmax(worst, std::fabs(g[i] - want) / (std::fabs(want) + 1e-30));
        }
        check(worst <= 2e-6, "gradient formula", worst, 2e-6);
        if (!logits) {
          check(g[0] == 0.0f && g[1] == 0.0f && g[2] != 0.0f && g[35] != 0.0f,
                "clip gradient rule: outside 0, ties pass");
        } else {
          check(g[3] == 0.0f && g[4] == 0.0f, "saturated logits: zero, finite gradient");
        }
      }
    }
  }
}

// The cache-bypassing stores need aligned outputs: check them against a
// scalar evaluation of the same formula, on aligned and unaligned
// destinations, for every output dtype.
template <typename TPred>
void test_gradient_stores() {
  constexpr int64_t n = 1000;
  alignas(64) static float y[n], pf[n];
  alignas(64) static TPred p[n], aligned[n + 32], reference[n];
  std::mt19937 rng(5);
  for (int64_t i = 0; i < n; ++i) {
    y[i] = (rng() % 4 == 0) ? 1.0f : 0.0f;
    pf[i] = float(rng() % 1000) / 999.0f;
    p[i] = wiou::from_float<TPred>(pf[i]);
  }
  const Params pr(Weighting::kSeed, false, 1e-7, 1.0, 1.0);
  const float coef[2] = {-0.05f, 0.0025f};
  for (int offset : {0, 1, 16}) {
    TPred* out = aligned + offset;
    wiou::iou_gradient(y, p, nullptr, n, coef, pr, 0, n, out);
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float pv = wiou::to_float(p[i]);
      const float g = (coef[0] * y[i] + coef[1] * (1.0f - y[i])) * (pr.c0 + pr.c1 * y[i]);
      reference[i] = wiou::from_float<TPred>(pv >= pr.lo && pv <= pr.hi ? g : 0.0f);
      bad += std::memcmp(&reference[i], &out[i], sizeof(TPred)) != 0;
    }
    check(bad == 0, "vector (streamed) and scalar gradients are bit-identical", bad, 0);
  }
}

// The label masks written with the sums (wiou_math_api.h) against a scalar
// reading of their definition; sums unchanged by writing them; the gradient
// from the masks bit-identical to iou_gradient's, for every output dtype, on
// groups of a ragged size, split at offsets that are not whole words, to
// aligned and unaligned outputs; soft labels flagged per block, except where
// the clip zeroes their gradient anyway.
template <typename TTrue, typename TPred>
void test_label_masks() {
  const int64_t groups = 3, group_size = 2 * wiou::kBlock + 37, n = groups * group_size;
  const int64_t per_group = wiou::num_blocks(group_size), blocks = groups * per_group;
  const int64_t words = groups * wiou::mask_words(group_size);
  std::unique_ptr<TTrue[]> y(new TTrue[n]);  // not a vector: vector<bool> has no data()
  std::vector<TPred> p(n), g_inputs(n + 16), g_masks(n + 16);
  std::vector<float> yf(n);
  std::mt19937 rng(6);
  for (int64_t i = 0; i < n; ++i) {
    yf[i] = (rng() % 5 == 0) ? 1.0f : 0.0f;
    y[i] = static_cast<TTrue>(yf[i]);
    p[i] = wiou::from_float<TPred>(float(rng() % 1000) / 999.0f);
  }
  const float lo = float(1e-7), hi = float(1.0 - 1e-7);
  const float planted[] = {0.0f, 1.0f, lo, hi};
  for (int k = 0; k < 40; ++k) p[(k * 7919) % n] = wiou::from_float<TPred>(planted[k % 4]);
  p[n - 1] = wiou::from_float<TPred>(hi);  // the ragged tail of the last group
  const float coef[2 * groups] = {-0.25f, 0.125f, -3.5f, 0.5f, 1.75f, -0.0625f};
  for (Weighting w : kWeightings) {
    const Params pr(w, false, 1e-7, 0.3, 2.0);
    std::vector<float> plain(wiou::kMaxTerms * blocks), with(wiou::kMaxTerms * blocks);
    std::vector<uint32_t> masks(words, 0xdeadbeefu);
    std::vector<uint8_t> soft(blocks, 0xff);
    wiou::iou_sums_blocks(y.get(), p.data(), nullptr, group_size, pr, 0, blocks, plain.data());
    wiou::iou_sums_blocks(y.get(), p.data(), nullptr, group_size, pr, 0, blocks, with.data(),
                          masks.data(), soft.data());
    check(plain == with, "writing label masks leaves the sums bit-identical");
    int wrong = 0, flagged = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t g = i / group_size, offset = i % group_size;
      const uint32_t word = masks[g * wiou::mask_words(group_size) + offset / wiou::kLanes];
      const int lane = int(offset % wiou::kLanes);
      const float x = wiou::to_float(p[i]);
      wrong += ((word >> lane) & 1u) != uint32_t(x >= pr.lo && x <= pr.hi);
      wrong += ((word >> (wiou::kLanes + lane)) & 1u) != uint32_t(yf[i] == 1.0f);
    }
    const int used = int(group_size % wiou::kLanes);  // lanes of a group's last word
    for (int64_t g = 0; g < groups; ++g) {  // the lanes past a group's end: out of range
      const uint32_t last = masks[(g + 1) * wiou::mask_words(group_size) - 1];
      wrong += ((last & 0xffffu) >> used) != 0;
    }
    for (uint8_t f : soft) flagged += f;
    check(wrong == 0 && flagged == 0, "label masks as defined, no soft block", wrong, 0);
    for (int offset : {0, 3}) {
      wiou::iou_gradient(y.get(), p.data(), nullptr, group_size, coef, pr, 0, n,
                         g_inputs.data() + offset);
      // Split at 5000 (not a whole word into group 0) and at the groups' ragged starts.
      wiou::iou_gradient_from_masks(masks.data(), group_size, coef, pr, 0, 5000,
                                    g_masks.data() + offset);
      wiou::iou_gradient_from_masks(masks.data(), group_size, coef, pr, 5000, n,
                                    g_masks.data() + offset);
      check(std::memcmp(g_inputs.data() + offset, g_masks.data() + offset,
                        n * sizeof(TPred)) == 0,
            "gradient from label masks bit-identical to the gradient from y and p");
    }
  }
  // Soft labels: flagged in their block when their gradient needs y; not when clipped.
  std::vector<float> ys(yf), ps(n, 0.5f);
  ys[wiou::kBlock + 5] = 0.5f;     // block 1 of group 0
  ys[2 * group_size + 3] = 0.25f;  // block 0 of group 2...
  ps[2 * group_size + 3] = 0.0f;   // ...but clipped: zero gradient, no y needed
  const Params pr(Weighting::kSeed, false, 1e-7, 1.0, 1.0);
  std::vector<float> partials(wiou::kMaxTerms * blocks);
  std::vector<uint32_t> masks(words);
  std::vector<uint8_t> soft(blocks);
  wiou::iou_sums_blocks(ys.data(), ps.data(), nullptr, group_size, pr, 0, blocks,
                        partials.data(), masks.data(), soft.data());
  int flagged = 0;
  for (uint8_t f : soft) flagged += f;
  check(soft[1] == 1 && flagged == 1, "soft labels flag their block unless clipped", flagged, 1);
}

}  // namespace

int main() {
  test_label_masks<float, float>();
  test_label_masks<uint8_t, wiou::bfloat16>();
  test_label_masks<bool, wiou::float16>();
  test_label_masks<int32_t, float>();
  test_gradient_stores<float>();
  test_gradient_stores<wiou::bfloat16>();
  test_gradient_stores<wiou::float16>();
  test_conversions();
  test_exp_and_sigmoid();
  test_sums_accuracy_and_determinism();
  test_label_types_agree();
  test_gradient();
  std::printf("kernels/test_wiou_math: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
