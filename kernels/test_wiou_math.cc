// Plain C++ test of the fused IoU math (no TensorFlow): `make kernel-test` builds
// it with every instruction-set level's loops and the run-time dispatcher
// (wiou_dispatch.cc) and runs it.
// Every weighting, logits, weight maps and per-image groups against a double
// reference written out from the formulas in wiou_math_api.h, at each level this
// CPU has (forced with set_active_isa); the levels must agree bit for bit.
// The vector helpers (conversions, exp) are tested as compiled for the host.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <type_traits>
#include <vector>

#include "wiou_math.h"

namespace {

namespace host = wiou::isa_host;  // wiou_math.h's helpers, compiled for this host
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
  check(host::to_float(wiou::bfloat16{0x3f80}) == 1.0f, "bf16 1.0");
  check(host::from_float<wiou::bfloat16>(1.0f).bits == 0x3f80, "bf16 store 1.0");
  // 1 + 2^-8 lies halfway between bf16 1.0 and 1.0078125: ties go to even (1.0).
  check(host::from_float<wiou::bfloat16>(1.00390625f).bits == 0x3f80, "bf16 tie to even");
  check(host::from_float<wiou::bfloat16>(1.01171875f).bits == 0x3f82, "bf16 tie up to even");
  check(host::from_float<wiou::bfloat16>(NAN).bits == 0x7fc0, "bf16 NaN");
  // float16
  check(host::to_float(wiou::float16{0x3c00}) == 1.0f, "f16 1.0");
  check(host::to_float(wiou::float16{0x0001}) == std::ldexp(1.0f, -24), "f16 subnormal");
  check(host::from_float<wiou::float16>(65504.0f).bits == 0x7bff, "f16 max");
  check(host::from_float<wiou::float16>(1e6f).bits == 0x7c00, "f16 overflow to inf");
  // Vector and scalar stores agree on 10,000 values.
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  std::vector<float> x(10000);
  for (auto& v : x) v = dist(rng) * std::pow(10.0f, dist(rng));
  std::vector<wiou::bfloat16> vb(x.size());
  std::vector<wiou::float16> vh(x.size());
  int mismatches = 0;
  for (size_t i = 0; i + wiou::kLanes <= x.size(); i += wiou::kLanes) {
    host::vfloat v = host::load_floats(&x[i]);
    host::store_floats(v, &vb[i]);
    host::store_floats(v, &vh[i]);
    for (int l = 0; l < wiou::kLanes; ++l) {
      mismatches += vb[i + l].bits != host::from_float<wiou::bfloat16>(x[i + l]).bits;
      mismatches += vh[i + l].bits != host::from_float<wiou::float16>(x[i + l]).bits;
      mismatches += host::load_floats(&vb[i])[l] != host::to_float(vb[i + l]);
      mismatches += host::load_floats(&vh[i])[l] != host::to_float(vh[i + l]);
    }
  }
  check(mismatches == 0, "vector and scalar conversions agree", mismatches, 0);
  // The integer-code half conversions (levels without F16C) against the host's: every
  // half, and floats around every rounding boundary, subnormals and overflow included.
  int portable = 0;
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const float a = host::half_to_float_portable(uint16_t(h));
    const float b = host::to_float(wiou::float16{uint16_t(h)});
    uint32_t abits, bbits;
    std::memcpy(&abits, &a, 4);
    std::memcpy(&bbits, &b, 4);
    portable += abits != bbits;
  }
  for (uint32_t bits = 0; bits < 0x80000000u; bits += 0x3fffu) {  // every exponent, 2^17 each
    for (uint32_t sign : {0u, 0x80000000u}) {
      for (uint32_t near : {0u, 0xfffu, 0x1000u, 0x1001u}) {  // around a halfway point
        const uint32_t x = sign | ((bits & ~0x1fffu) + near);
        float f;
        std::memcpy(&f, &x, 4);
        portable += host::float_to_half_portable(f) != host::from_float<wiou::float16>(f).bits;
      }
    }
  }
  for (uint32_t bits = 0; bits < 0x80000000u; bits += 0x3fffu) {  // any low bits
    float f;
    std::memcpy(&f, &bits, 4);
    portable += host::float_to_half_portable(f) != host::from_float<wiou::float16>(f).bits;
  }
  for (int k = 0; k < 2048; ++k) {  // halfway between subnormal (and small normal) halves
    const float mid = std::ldexp(float(k) + 0.5f, -24);
    for (float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1.0f), -mid}) {
      portable += host::float_to_half_portable(f) != host::from_float<wiou::float16>(f).bits;
    }
  }
  check(portable == 0, "portable half conversions match the host's, bit for bit", portable, 0);
}

void test_mul_add() {
  // The loops' fused multiply-add is std::fma's single rounding at every level (the
  // baseline computes it without the instruction): random operands over a wide
  // exponent range, sums that cancel to the last bit, sums just off a rounding tie,
  // and the special values.
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  auto any = [&](int low, int high) {
    const float v = std::ldexp(mantissa(rng), low + int(rng() % uint32_t(high - low + 1)));
    return rng() % 2 ? -v : v;
  };
  std::vector<float> a, b, c;
  for (int k = 0; k < 300000; ++k) {
    const float x = any(-20, 20), y = any(-20, 20);
    const float product = x * y;
    float z;
    switch (k % 4) {
      case 0: z = any(-40, 40); break;
      case 1: z = -std::nextafter(product, rng() % 2 ? 0.0f : INFINITY); break;  // cancels
      case 2: z = std::ldexp(product, -int(rng() % 30)); break;
      default: {  // (1 + 2^-12)²·2^k is a float tie; ± a term below double's half ulp
        // puts the exact value just off it (rounding the double sum to nearest
        // instead of to odd lands on the tie and rounds the wrong way).
        const float one_plus = 1.0f + std::ldexp(1.0f, -12);
        const float scaled = std::ldexp(one_plus, int(rng() % 9) - 4);
        a.push_back(scaled);
        b.push_back(one_plus);
        c.push_back((rng() % 2 ? 1.0f : -1.0f) * std::ldexp(scaled, -50 - int(rng() % 30)));
        continue;
      }
    }
    a.push_back(x);
    b.push_back(y);
    c.push_back(z);
  }
  const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-40f, -1e-40f, 3.4e38f, 1.0f};
  for (float x : special) {
    for (float y : special) {
      for (float z : special) {
        a.push_back(x);
        b.push_back(y);
        c.push_back(z);
      }
    }
  }
  std::vector<float> got(a.size());
  wiou::mul_add_floats(a.data(), b.data(), c.data(), int64_t(a.size()), got.data());
  size_t differ = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const float want = std::fma(a[i], b[i], c[i]);
    const bool same = std::memcmp(&want, &got[i], sizeof(float)) == 0 ||
                      (std::isnan(want) && std::isnan(got[i]));
    differ += !same;
  }
  check(differ == 0, "mul_add rounds as std::fma, every operand", double(differ), 0);
}

void test_exp_and_sigmoid() {
  // exp(x) for x <= 0 within 1e-7 relative down to -87 (8.5e-8 at worst over every
  // float there); saturated sigmoids exact.
  double worst = 0;
  for (int k = 0; k < 100000; ++k) {
    const float x = -86.99f * float(k) / 99999.0f;
    const host::vfloat v = host::exp_nonpositive(host::vfloat{} + x);
    worst = std::fmax(worst, rel(v[0], std::exp(double(x))));
  }
  check(worst <= 1e-7, "vector exp within 1e-7", worst, 1e-7);
  check(host::exp_nonpositive(host::vfloat{} - 88.0f)[0] == 0.0f, "exp underflows to 0");
  const Params pr(Weighting::kClass, true, 1e-7, 1, 1);
  host::vfloat p, q;
  host::probabilities<true>(host::vfloat{} + 1e4f, pr, p, q);
  check(p[0] == 1.0f && q[0] == 0.0f, "sigmoid(1e4) = 1, sigmoid(-1e4) = 0");
  host::probabilities<true>(host::vfloat{} - 1e4f, pr, p, q);
  check(q[0] == 1.0f && p[0] == 0.0f, "sigmoid(-1e4) = 0");
  double worst_sigmoid = 0;
  for (int k = 0; k < 4001; ++k) {
    const float x = -20.0f + 0.01f * float(k);
    host::probabilities<true>(host::vfloat{} + x, pr, p, q);
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
    p[i] = host::from_float<TPred>(pf[i]);
  }
  const Params pr(Weighting::kSeed, false, 1e-7, 1.0, 1.0);
  const float coef[2] = {-0.05f, 0.0025f};
  for (int offset : {0, 1, 16}) {
    TPred* out = aligned + offset;
    wiou::iou_gradient(y, p, nullptr, n, coef, pr, 0, n, out);
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float pv = host::to_float(p[i]);
      const float g = (coef[0] * y[i] + coef[1] * (1.0f - y[i])) * (pr.c0 + pr.c1 * y[i]);
      reference[i] = host::from_float<TPred>(pv >= pr.lo && pv <= pr.hi ? g : 0.0f);
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
    p[i] = host::from_float<TPred>(float(rng() % 1000) / 999.0f);
  }
  const float lo = float(1e-7), hi = float(1.0 - 1e-7);
  const float planted[] = {0.0f, 1.0f, lo, hi};
  for (int k = 0; k < 40; ++k) p[(k * 7919) % n] = host::from_float<TPred>(planted[k % 4]);
  p[n - 1] = host::from_float<TPred>(hi);  // the ragged tail of the last group
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
      const float x = host::to_float(p[i]);
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

// bytes of data, zero-padded to whole 32-bit words, at the end of bits.
void append_words(std::vector<uint32_t>& bits, const void* data, size_t bytes) {
  std::vector<uint32_t> words((bytes + 3) / 4, 0u);
  std::memcpy(words.data(), data, bytes);
  bits.insert(bits.end(), words.begin(), words.end());
}

// Every output the entry points write for one dtype pair, as raw bits: sums for
// each weighting x logits x weight map, gradients, label masks and the gradient
// from them. A ragged length that spans several blocks and groups.
template <typename TTrue, typename TPred>
void append_outputs(std::vector<uint32_t>& bits) {
  const int64_t group_size = 3 * wiou::kBlock + 37, groups = 2, n = group_size * groups;
  const int64_t blocks = groups * wiou::num_blocks(group_size);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::normal_distribution<float> logit(0.0f, 4.0f);
  std::unique_ptr<TTrue[]> labels(new TTrue[n]);  // not std::vector: vector<bool> has no data()
  TTrue* y = labels.get();
  std::vector<TPred> probability(n), logits(n), grad(n);
  std::vector<float> s(n);
  for (int64_t i = 0; i < n; ++i) {
    const bool one = unit(rng) < 0.2f;
    if constexpr (std::is_integral_v<TTrue>) {
      y[i] = static_cast<TTrue>(one);
    } else {
      y[i] = host::from_float<TTrue>(one ? 1.0f : 0.0f);
    }
    probability[i] = host::from_float<TPred>(unit(rng));
    logits[i] = host::from_float<TPred>(logit(rng));
    s[i] = 2.0f * unit(rng);
  }
  const float coef[2 * groups] = {-0.75f, 0.25f, -1.5f, 0.125f};
  auto append = [&bits](const void* data, size_t bytes) { append_words(bits, data, bytes); };
  for (Weighting w : kWeightings) {
    for (bool from_logits : {false, true}) {
      const Params pr(w, from_logits, 1e-7, 0.3, 2.0);
      const TPred* x = from_logits ? logits.data() : probability.data();
      for (const float* weights : {static_cast<const float*>(nullptr), static_cast<const float*>(s.data())}) {
        std::vector<float> partials(wiou::kMaxTerms * blocks), sums(groups * wiou::kMaxTerms);
        wiou::iou_sums_blocks(y, x, weights, group_size, pr, 0, blocks, partials.data());
        wiou::combine_partials(partials.data(), groups, blocks / groups, wiou::num_terms(w),
                               sums.data());
        append(sums.data(), sums.size() * sizeof(float));
        wiou::iou_gradient(y, x, weights, group_size, coef, pr, 0, n, grad.data());
        append(grad.data(), grad.size() * sizeof(TPred));
      }
      if (from_logits) continue;
      std::vector<float> partials(wiou::kMaxTerms * blocks);
      std::vector<uint32_t> masks(groups * wiou::mask_words(group_size));
      std::vector<uint8_t> soft(blocks);
      wiou::iou_sums_blocks(y, x, nullptr, group_size, pr, 0, blocks, partials.data(),
                            masks.data(), soft.data());
      append(masks.data(), masks.size() * sizeof(uint32_t));
      wiou::iou_gradient_from_masks(masks.data(), group_size, coef, pr, 0, n, grad.data());
      append(grad.data(), grad.size() * sizeof(TPred));
    }
  }
  std::vector<float> stream(n);
  for (int64_t i = 0; i < n; ++i) stream[i] = unit(rng);
  const float total = wiou::stream_read_sum(stream.data(), 0, n);
  append(&total, sizeof(total));
}

// Multi-class: labels, logits (or probabilities) and weights for 2 groups of a ragged
// pixel count, C classes. Sparse ids include ids outside [0, C) (no class) and 1 (the
// ignore_class when ignoring); dense labels are one-hot floats.
template <typename TLabel, typename TPred>
struct MultiClassCase {
  MultiClassCase(int64_t c, bool sparse_labels, wiou::Activation activation, int seed)
      : classes(c), labels(sparse_labels ? pixels : pixels * c), x(pixels * c), s(pixels) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> logit(0.0f, 3.0f);
    std::uniform_real_distribution<float> unit(0.0f, 1.0f);
    params.classes = c;
    params.activation = activation;
    params.sparse = sparse_labels;
    for (int64_t i = 0; i < pixels; ++i) {
      const int64_t id = int64_t(rng() % (c + 2)) - 1;  // -1 and c: no class
      s[i] = 2.0f * unit(rng);
      if (sparse_labels) {
        labels[i] = label_value(id < 0 ? 255.0f : float(id));
      } else {
        for (int64_t k = 0; k < c; ++k) labels[i * c + k] = label_value(k == id ? 1.0f : 0.0f);
      }
      for (int64_t k = 0; k < c; ++k) {
        x[i * c + k] = host::from_float<TPred>(
            activation == wiou::Activation::kClip ? unit(rng) : logit(rng));
      }
    }
  }
  static TLabel label_value(float v) {
    if constexpr (std::is_integral_v<TLabel>) return static_cast<TLabel>(v);
    else return host::from_float<TLabel>(v);
  }
  std::vector<float> sums(const float* weights) const {
    const int64_t per_group = wiou::num_pixel_blocks(group_pixels), blocks = groups * per_group;
    std::vector<float> partials(blocks * wiou::kClassSums * classes), out(groups * classes * 3);
    wiou::multiclass_sums_blocks(labels.data(), x.data(), weights, group_pixels, params, 0,
                                 blocks, partials.data());
    wiou::combine_multiclass_partials(partials.data(), groups, per_group, classes, out.data());
    return out;
  }
  std::vector<TPred> gradient(const float* weights, const float* coef) const {
    std::vector<TPred> grad(pixels * classes);
    wiou::multiclass_gradient(labels.data(), x.data(), weights, group_pixels, coef, params, 0,
                              groups * wiou::num_pixel_blocks(group_pixels), grad.data());
    return grad;
  }
  // y_c, s and p̂ of pixel i in double, from the stored values.
  void reference_pixel(int64_t i, const float* weights, std::vector<double>& y,
                       std::vector<double>& p, double& weight) const {
    weight = weights ? weights[i] : 1.0;
    double top = -INFINITY, total = 0.0;
    for (int64_t k = 0; k < classes; ++k) {
      y[k] = params.sparse ? double(int64_t(labels[i]) == k) : host::to_float(labels[i * classes + k]);
      p[k] = host::to_float(x[i * classes + k]);
      top = std::fmax(top, p[k]);
    }
    if (params.sparse && int64_t(labels[i]) == params.ignore_class) weight = 0.0;
    for (int64_t k = 0; k < classes; ++k) {
      if (params.activation == wiou::Activation::kSoftmax) {
        p[k] = std::exp(p[k] - top);
        total += p[k];
      } else if (params.activation == wiou::Activation::kSigmoid) {
        p[k] = 1.0 / (1.0 + std::exp(-p[k]));
      } else {
        p[k] = std::fmin(std::fmax(p[k], double(params.lo)), double(params.hi));
      }
    }
    if (total > 0) for (double& v : p) v /= total;
  }
  static constexpr int64_t groups = 2, group_pixels = 2 * wiou::kPixelBlock + 37,
                           pixels = groups * group_pixels;
  int64_t classes;
  wiou::MultiClassParams params;
  std::vector<TLabel> labels;
  std::vector<TPred> x;
  std::vector<float> s;
};

// Sums and gradient (softmax, sigmoid, clip; sparse and one-hot; with and without a
// weight map and ignore_class) against double references from the formulas in
// wiou_math_api.h.
void test_multiclass() {
  for (int64_t classes : {3, 19}) {
    for (bool sparse_labels : {true, false}) {
      for (auto activation : {wiou::Activation::kSoftmax, wiou::Activation::kSigmoid,
                              wiou::Activation::kClip}) {
        MultiClassCase<uint8_t, float> sparse_case(classes, true, activation, 5);
        MultiClassCase<float, float> dense_case(classes, false, activation, 5);
        auto run = [&](auto& mc) {
          mc.params.ignore_class = mc.params.sparse ? 1 : -1;
          std::vector<float> coef(mc.groups * classes * 2);
          for (size_t j = 0; j < coef.size(); ++j) coef[j] = 0.25f * float(j % 7) - 0.8f;
          for (const float* weights : {static_cast<const float*>(nullptr), static_cast<const float*>(mc.s.data())}) {
            const std::vector<float> got = mc.sums(weights);
            std::vector<double> want(got.size(), 0.0), y(classes), p(classes);
            const auto grad = mc.gradient(weights, coef.data());
            double worst_sum = 0, worst_grad = 0, grad_scale = 0;
            std::vector<double> grad_want(mc.pixels * classes);
            for (int64_t i = 0; i < mc.pixels; ++i) {
              double weight;
              mc.reference_pixel(i, weights, y, p, weight);
              const int64_t g = i / mc.group_pixels;
              double dot = 0;
              std::vector<double> up(classes);
              for (int64_t k = 0; k < classes; ++k) {
                double* row = &want[(g * classes + k) * 3];
                row[0] += weight * y[k] * p[k];
                row[1] += weight * p[k];
                row[2] += weight * y[k];
                up[k] = weight * (coef[(g * classes + k) * 2] * y[k] + coef[(g * classes + k) * 2 + 1]);
                dot += up[k] * p[k];
              }
              for (int64_t k = 0; k < classes; ++k) {
                const double xv = host::to_float(mc.x[i * classes + k]);
                double d;
                if (activation == wiou::Activation::kSoftmax) d = p[k] * (up[k] - dot);
                else if (activation == wiou::Activation::kSigmoid) d = up[k] * p[k] * (1.0 - p[k]);
                else d = (xv >= mc.params.lo && xv <= mc.params.hi) ? up[k] : 0.0;
                grad_want[i * classes + k] = d;
                grad_scale = std::fmax(grad_scale, std::fabs(d));
              }
            }
            for (size_t j = 0; j < got.size(); ++j) worst_sum = std::fmax(worst_sum, rel(got[j], want[j]));
            for (size_t j = 0; j < grad.size(); ++j) {
              worst_grad = std::fmax(worst_grad, std::fabs(host::to_float(grad[j]) - grad_want[j]));
            }
            check(worst_sum <= 2e-6, "multi-class sums within 2e-6 of double", worst_sum, 2e-6);
            check(worst_grad <= 1e-6 * grad_scale, "multi-class gradient within 1e-6 (x max)",
                  worst_grad / grad_scale, 1e-6);
          }
        };
        if (sparse_labels) run(sparse_case); else run(dense_case);
      }
    }
  }
}

// The multi-class loops' outputs over label/prediction dtypes, options and C (odd, a
// whole number of vectors, more than one class block), for the comparison across levels.
void append_multiclass_outputs(std::vector<uint32_t>& bits) {
  auto append = [&bits](const void* data, size_t bytes) { append_words(bits, data, bytes); };
  auto outputs = [&](auto& mc) {
    std::vector<float> coef(mc.groups * mc.classes * 2);
    for (size_t j = 0; j < coef.size(); ++j) coef[j] = 0.3f * float(j % 5) - 0.7f;
    for (const float* weights : {static_cast<const float*>(nullptr), static_cast<const float*>(mc.s.data())}) {
      const auto sums = mc.sums(weights);
      const auto grad = mc.gradient(weights, coef.data());
      append(sums.data(), sums.size() * sizeof(float));
      append(grad.data(), grad.size() * sizeof(grad[0]));
    }
  };
  for (int64_t classes : {3, 8, 19}) {
    for (auto activation : {wiou::Activation::kSoftmax, wiou::Activation::kSigmoid,
                            wiou::Activation::kClip}) {
      MultiClassCase<uint8_t, float> a(classes, true, activation, 6);
      MultiClassCase<int32_t, wiou::bfloat16> b(classes, true, activation, 7);
      b.params.ignore_class = 1;
      MultiClassCase<float, wiou::float16> c(classes, false, activation, 8);
      MultiClassCase<wiou::bfloat16, float> d(classes, false, activation, 9);
      d.params.ignore_class = 0;
      outputs(a);
      outputs(b);
      outputs(c);
      outputs(d);
    }
  }
}

std::vector<uint32_t> all_outputs() {
  std::vector<uint32_t> bits;
  append_outputs<float, float>(bits);
  append_outputs<uint8_t, wiou::bfloat16>(bits);
  append_outputs<bool, wiou::float16>(bits);
  append_outputs<wiou::float16, float>(bits);
  append_outputs<int32_t, wiou::bfloat16>(bits);
  append_multiclass_outputs(bits);
  return bits;
}

void run_all_tests() {
  test_label_masks<float, float>();
  test_label_masks<uint8_t, wiou::bfloat16>();
  test_label_masks<bool, wiou::float16>();
  test_label_masks<int32_t, float>();
  test_gradient_stores<float>();
  test_gradient_stores<wiou::bfloat16>();
  test_gradient_stores<wiou::float16>();
  test_conversions();
  test_mul_add();
  test_exp_and_sigmoid();
  test_sums_accuracy_and_determinism();
  test_label_types_agree();
  test_gradient();
  test_multiclass();
}

}  // namespace

int main() {
  // Every level this CPU has, each against the double reference, then against
  // each other: the same lanes and the same order of operations (no FMA
  // contraction under -std=c++17; mul_add rounds once everywhere) give the same bits.
  const wiou::Isa cpu = wiou::cpu_isa();
  std::vector<uint32_t> baseline_bits;
  for (wiou::Isa level : {wiou::Isa::kBaseline, wiou::Isa::kAvx2, wiou::Isa::kAvx512}) {
    if (level > cpu) break;
    wiou::set_active_isa(level);
    check(wiou::active_isa() == level, "set_active_isa takes a level the CPU has");
    const int failed_before = failed;
    run_all_tests();
    const std::vector<uint32_t> bits = all_outputs();
    if (level == wiou::Isa::kBaseline) {
      baseline_bits = bits;
    } else {
      size_t differ = 0;
      for (size_t i = 0; i < bits.size(); ++i) differ += bits[i] != baseline_bits[i];
      check(bits.size() == baseline_bits.size() && differ == 0,
            "every output bit-identical to the baseline level's", double(differ), 0);
    }
    std::printf("  level %s: %d failed\n", wiou::isa_name(level), failed - failed_before);
  }
  wiou::set_active_isa(wiou::Isa::kAvx512);
  check(wiou::active_isa() == cpu, "a level above the CPU's is clamped to the CPU's");
  std::printf("kernels/test_wiou_math (levels up to %s): %d passed, %d failed\n",
              wiou::isa_name(cpu), passed, failed);
  return failed == 0 ? 0 : 1;
}
