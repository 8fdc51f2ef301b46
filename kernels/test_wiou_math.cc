// Plain C++ test of the seed-mode math (no TensorFlow): `make test` builds and runs it.
//   g++ -std=c++17 -O3 -march=native kernels/test_wiou_math.cc kernels/wiou_math_instances.cc
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

#include "wiou_math.h"

namespace {

int passed = 0, failed = 0;

void check(bool ok, const char* what, double got = 0, double want = 0) {
  if (ok) {
    ++passed;
  } else {
    ++failed;
    std::printf("FAIL %s: got %.9g want %.9g\n", what, got, want);
  }
}

struct Exact {
  double inter = 0, uni = 0, sum_y = 0;
};

Exact exact_sums(const std::vector<float>& y, const std::vector<float>& p, const wiou::Bounds& b) {
  Exact e;
  for (size_t i = 0; i < y.size(); ++i) {
    const double pv = std::fmin(std::fmax(double(p[i]), double(b.lo)), double(b.hi));
    e.inter += y[i] * pv;
    e.uni += y[i] + pv - y[i] * pv;
    e.sum_y += y[i];
  }
  return e;
}

template <typename TTrue, typename TPred>
void sums(const TTrue* y, const TPred* p, int64_t n, const wiou::Bounds& b, float out[3],
          int64_t split = -1) {
  const int64_t blocks = wiou::num_blocks(n);
  std::vector<float> partials(3 * (blocks > 0 ? blocks : 1), 0.0f);
  if (split < 0) {
    wiou::seed_sums_blocks(y, p, n, b, 0, blocks, partials.data());
  } else {  // a different "thread" partition, run back to front
    wiou::seed_sums_blocks(y, p, n, b, split, blocks, partials.data());
    wiou::seed_sums_blocks(y, p, n, b, 0, split, partials.data());
  }
  wiou::combine_partials(partials.data(), blocks, out);
}

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

void test_sums_accuracy_and_determinism() {
  const wiou::Bounds b(1e-7);
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  for (int64_t n : {1, 15, 16, 17, 4095, 4096, 4097, 100003, 3000000}) {
    std::vector<float> y(n), p(n);
    for (int64_t i = 0; i < n; ++i) {
      y[i] = unit(rng) < 0.1f ? 1.0f : 0.0f;
      p[i] = unit(rng);
    }
    if (n > 8) {
      p[1] = 0.0f;
      p[2] = 1.0f;
      p[3] = b.lo;
      p[4] = b.hi;
    }
    float got[3];
    sums(y.data(), p.data(), n, b, got);
    const Exact e = exact_sums(y, p, b);
    const double want[3] = {e.inter, e.uni, e.sum_y};
    for (int c = 0; c < 3; ++c) {
      const double err = want[c] == 0 ? std::fabs(got[c]) : std::fabs(got[c] - want[c]) / want[c];
      check(err <= 1e-6, "sum within 1e-6 of double", got[c], want[c]);
    }
    const int64_t blocks = wiou::num_blocks(n);
    for (int64_t split : {int64_t(0), blocks / 3, blocks / 2}) {
      float again[3];
      sums(y.data(), p.data(), n, b, again, split);
      check(again[0] == got[0] && again[1] == got[1] && again[2] == got[2],
            "bit-identical under another block partition");
    }
  }
}

void test_label_types_agree() {
  const wiou::Bounds b(1e-7);
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
  float f[3], u[3], bo[3], i32[3];
  sums(yf.data(), p.data(), n, b, f);
  sums(yu.data(), p.data(), n, b, u);
  sums(yb.get(), p.data(), n, b, bo);
  sums(yi.data(), p.data(), n, b, i32);
  for (int c = 0; c < 3; ++c) {
    check(f[c] == u[c] && f[c] == bo[c] && f[c] == i32[c], "label dtypes give identical sums");
  }
}

void test_gradient() {
  const wiou::Bounds b(1e-7);
  const int64_t n = 37;  // two vectors and a tail
  std::vector<float> y(n), p(n), g(n);
  std::mt19937 rng(4);
  for (int64_t i = 0; i < n; ++i) {
    y[i] = (rng() % 3 == 0) ? 1.0f : 0.0f;
    p[i] = float(rng() % 1000) / 999.0f;
  }
  p[0] = 0.0f;   // below the clip: no gradient
  p[1] = 1.0f;   // above: no gradient
  p[2] = b.lo;   // ties pass (TensorFlow's clip_by_value rule)
  p[35] = b.hi;  // a tie in the scalar tail
  const float s[3] = {3.5f, 20.25f, 12.0f};
  const float up = 1.75f;
  wiou::seed_gradient(y.data(), p.data(), 0, n, s, up, b, g.data());
  for (int64_t i = 0; i < n; ++i) {
    const bool in_range = p[i] >= b.lo && p[i] <= b.hi;
    const double want =
        in_range ? up * ((1.0 - y[i]) / (s[1] + double(b.eps)) - y[i] / (s[0] + double(b.eps)))
                 : 0.0;
    check(std::fabs(g[i] - want) <= 1e-6 * std::fabs(want) + 1e-30, "gradient formula", g[i],
          want);
  }
  check(g[0] == 0.0f && g[1] == 0.0f && g[2] != 0.0f && g[35] != 0.0f, "clip gradient rule");
}

// The cache-bypassing stores need aligned outputs: check them against the
// scalar path on aligned and unaligned destinations, for every output dtype.
template <typename TPred>
void test_gradient_stores() {
  const wiou::Bounds b(1e-7);
  constexpr int64_t n = 1000;
  alignas(64) static float y[n], pf[n];
  alignas(64) static TPred p[n], aligned[n + 32], reference[n];
  std::mt19937 rng(5);
  for (int64_t i = 0; i < n; ++i) {
    y[i] = (rng() % 4 == 0) ? 1.0f : 0.0f;
    pf[i] = float(rng() % 1000) / 999.0f;
    p[i] = wiou::from_float<TPred>(pf[i]);
  }
  const float s[3] = {40.0f, 600.0f, 250.0f};
  for (int offset : {0, 1, 16}) {
    TPred* out = aligned + offset;
    wiou::seed_gradient(y, p, 0, n, s, 2.0f, b, out);
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float pv = wiou::to_float(p[i]);
      const float g = (1.0f - y[i]) * (2.0f / (s[1] + b.eps)) - y[i] * (2.0f / (s[0] + b.eps));
      reference[i] = wiou::from_float<TPred>(pv >= b.lo && pv <= b.hi ? g : 0.0f);
      bad += std::memcmp(&reference[i], &out[i], sizeof(TPred)) != 0;
    }
    check(bad == 0, "vector (streamed) and scalar gradients are bit-identical", bad, 0);
  }
}

}  // namespace

int main() {
  test_gradient_stores<float>();
  test_gradient_stores<wiou::bfloat16>();
  test_gradient_stores<wiou::float16>();
  test_conversions();
  test_sums_accuracy_and_determinism();
  test_label_types_agree();
  test_gradient();
  std::printf("kernels/test_wiou_math: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
