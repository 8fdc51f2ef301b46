// Weighted IoU: fused sums and their gradient, plain C++ (no TensorFlow), written
// once for every instruction-set level (GCC/Clang vector extensions, with
// intrinsics where a level has a better instruction).
// What is summed, per weighting, is in wiou_math_api.h (and wiou_ops/_iou.py).
//
// Sums are deterministic whatever the threading: each group is cut into fixed
// blocks of kBlock elements, each block is summed with kLanes independent
// float32 accumulators (vectorizable without reassociation), and the block
// partials are combined pairwise in a fixed order. Callers may compute the
// blocks on any threads, in any order.
#ifndef WIOU_OPS_KERNELS_WIOU_MATH_H_
#define WIOU_OPS_KERNELS_WIOU_MATH_H_

#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "wiou_math_api.h"

// The namespace of this compile unit's loops: isa_baseline, isa_avx2 or
// isa_avx512 (wiou_math_instances.cc, one build per level). Inline functions
// compiled for different levels must not share a name, or the linker could keep
// an AVX-512 copy for the baseline loops.
#ifndef WIOU_ISA_NAMESPACE
#define WIOU_ISA_NAMESPACE isa_host  // a program's own build for its host (the C++ test)
#endif

// The per-vector helpers below must inline into their loops: out of line, their
// vector arguments and results pass through the stack.
#ifndef WIOU_ALWAYS_INLINE
#define WIOU_ALWAYS_INLINE inline __attribute__((always_inline))
#endif

namespace wiou {
namespace WIOU_ISA_NAMESPACE {

#include "wiou_math_entry_points.h"

inline float to_float(float x) { return x; }
inline float to_float(uint8_t x) { return static_cast<float>(x); }
inline float to_float(int32_t x) { return static_cast<float>(x); }
inline float to_float(bool x) { return x ? 1.0f : 0.0f; }
inline float to_float(bfloat16 x) {
  uint32_t bits = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
// IEEE half <-> float in integer code: round to nearest even, quiet NaNs, bit for bit
// what the F16C instructions give (the C++ test compares all of them). Used where the
// level has no F16C, rather than _Float16, whose conversions call libgcc helpers
// (__extendhfsf2, __truncsfhf2) that only GCC 12's runtime exports: the library
// would then need a GCC 12 libgcc_s wherever it runs.
inline float half_to_float_portable(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  uint32_t exp = (half >> 10) & 0x1fu;
  uint32_t mant = half & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13) | (mant != 0 ? 0x400000u : 0u);  // quiet NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalize
    exp = 113;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint16_t float_to_half_portable(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof(x));
  const uint32_t sign = (x >> 16) & 0x8000u, magnitude = x & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu);  // NaN
  if (magnitude >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to infinity
  if (magnitude <= 0x33000000u) return sign;           // <= 2^-25 rounds to zero
  uint32_t value, rest, halfway;
  if (magnitude < 0x38800000u) {  // a half subnormal: units of 2^-24
    const int shift = 126 - static_cast<int>(magnitude >> 23);  // 14..24
    const uint32_t mant = (magnitude & 0x7fffffu) | 0x800000u;
    value = mant >> shift;
    rest = mant & ((1u << shift) - 1u);
    halfway = 1u << (shift - 1);
  } else {  // normal: rebias the exponent (127 -> 15), keep 10 of 23 mantissa bits
    const uint32_t rebiased = magnitude - 0x38000000u;
    value = rebiased >> 13;
    rest = rebiased & 0x1fffu;
    halfway = 0x1000u;
  }
  if (rest > halfway || (rest == halfway && (value & 1u))) ++value;  // a carry is still right
  return static_cast<uint16_t>(sign | value);
}

inline float to_float(float16 x) {
#if defined(__F16C__)
  return _cvtsh_ss(x.bits);
#else
  return half_to_float_portable(x.bits);
#endif
}

inline uint16_t half_bits(float f) {
#if defined(__F16C__)
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
  return float_to_half_portable(f);
#endif
}

template <typename T>
T from_float(float x);
template <>
inline float from_float<float>(float x) {
  return x;
}
template <>
inline bfloat16 from_float<bfloat16>(float x) {
  // Round to nearest even, as Eigen and XLA do; NaN stays a quiet NaN.
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return bfloat16{static_cast<uint16_t>(0x7fc0u)};
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return bfloat16{static_cast<uint16_t>(bits >> 16)};
}
template <>
inline float16 from_float<float16>(float x) {
  return float16{half_bits(x)};
}

// Software prefetch distance in elements (1 KiB of float32 ahead): two input
// streams from DRAM run measurably faster with it (cache-cold 16x512x512).
// Prefetching past the end of a buffer cannot fault on x86.
constexpr int64_t kPrefetch = 256;

// The widest vector register of this level, in bytes.
#if defined(__AVX512F__)
constexpr int kRegisterBytes = 64;
#elif defined(__AVX__)
constexpr int kRegisterBytes = 32;
#else
constexpr int kRegisterBytes = 16;
#endif

// ---- 16-wide vectors (GCC/Clang vector extensions: AVX-512, 2xAVX2 or 4xSSE) ----
typedef float vfloat __attribute__((vector_size(4 * kLanes)));
typedef int32_t vint __attribute__((vector_size(4 * kLanes)));
typedef uint32_t vuint __attribute__((vector_size(4 * kLanes)));
typedef uint16_t vuint16 __attribute__((vector_size(2 * kLanes)));
typedef uint8_t vuint8 __attribute__((vector_size(kLanes)));

// ---- A 16-wide vector as register-wide parts ----
// GCC 12 lowers comparisons and selects (a < b, m ? a : b) on vectors wider than
// the level's registers lane by lane, in scalar code: below AVX-512 a clamp of a
// 16-lane vector became 32 vminss/vmaxss. Code with comparisons or selects runs on
// the register-wide parts instead: same lanes, same operations, same bits.
typedef float rfloat __attribute__((vector_size(kRegisterBytes)));
typedef int32_t rint __attribute__((vector_size(kRegisterBytes)));
typedef uint32_t ruint __attribute__((vector_size(kRegisterBytes)));
constexpr int kRegisterParts = 4 * kLanes / kRegisterBytes;

template <typename V>
struct RegisterOf;
template <>
struct RegisterOf<vfloat> {
  typedef rfloat type;
};
template <>
struct RegisterOf<vint> {
  typedef rint type;
};
template <>
struct RegisterOf<vuint> {
  typedef ruint type;
};

template <typename V>
WIOU_ALWAYS_INLINE typename RegisterOf<V>::type register_part(const V& v, int part) {
  typename RegisterOf<V>::type r;
  std::memcpy(&r, reinterpret_cast<const char*>(&v) + part * kRegisterBytes, sizeof(r));
  return r;
}
template <typename V, typename R>
WIOU_ALWAYS_INLINE void set_register_part(V& v, int part, const R& r) {
  static_assert(sizeof(R) == kRegisterBytes, "one register");
  std::memcpy(reinterpret_cast<char*>(&v) + part * kRegisterBytes, &r, sizeof(r));
}

// The vector of f's results on the operands' register-wide parts.
template <typename Out, typename F, typename... V>
WIOU_ALWAYS_INLINE Out per_register(F f, const V&... v) {
  Out out;
#pragma GCC unroll 4
  for (int part = 0; part < kRegisterParts; ++part) {
    set_register_part(out, part, f(register_part(v, part)...));
  }
  return out;
}

// Lanes of a where mask is set (all ones), else of b.
template <typename V>
WIOU_ALWAYS_INLINE V select(vint mask, V a, V b) {
  return per_register<V>([](rint m, auto x, auto y) { return m ? x : y; }, mask, a, b);
}

// Bit l set where lane l of f's result on the register-wide parts (a comparison)
// is set: the parts' sign bits.
template <typename F, typename... V>
WIOU_ALWAYS_INLINE uint32_t lane_bits(F f, const V&... v) {
  constexpr int kPerPart = kRegisterBytes / 4;
  uint32_t bits = 0;
#pragma GCC unroll 4
  for (int part = 0; part < kRegisterParts; ++part) {
    const rint lanes = f(register_part(v, part)...);
#if defined(__AVX__) && !defined(__AVX512F__)
    const uint32_t part_bits = _mm256_movemask_ps(reinterpret_cast<const __m256&>(lanes));
#elif defined(__SSE2__) && !defined(__AVX512F__)
    const uint32_t part_bits = _mm_movemask_ps(reinterpret_cast<const __m128&>(lanes));
#else
    uint32_t part_bits = 0;
    for (int l = 0; l < kPerPart; ++l) part_bits |= static_cast<uint32_t>(lanes[l] != 0) << l;
#endif
    bits |= part_bits << (part * kPerPart);
  }
  return bits;
}

template <typename V, typename T>
inline V load_raw(const T* ptr) {
  V v;
  std::memcpy(&v, ptr, sizeof(v));
  return v;
}

inline vfloat load_floats(const float* ptr) { return load_raw<vfloat>(ptr); }
// GCC 12 scalarizes a u8 -> float vector conversion (16 extracts): use the
// widening instructions where the target has them.
inline vfloat load_floats(const uint8_t* ptr) {
#if defined(__AVX512F__)
  const __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
      reinterpret_cast<const __m128i*>(ptr))));
  return reinterpret_cast<const vfloat&>(f);
#elif defined(__AVX2__)
  const __m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
      reinterpret_cast<const __m128i*>(ptr))));
  const __m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
      reinterpret_cast<const __m128i*>(ptr + 8))));
  vfloat f;
  std::memcpy(&f, &lo, sizeof(lo));
  std::memcpy(reinterpret_cast<char*>(&f) + sizeof(lo), &hi, sizeof(hi));
  return f;
#else
  return __builtin_convertvector(load_raw<vuint8>(ptr), vfloat);
#endif
}
inline vfloat load_floats(const int32_t* ptr) {
  return __builtin_convertvector(load_raw<vint>(ptr), vfloat);
}
inline vfloat load_floats(const bool* ptr) {  // one byte, 0 or 1
  return load_floats(reinterpret_cast<const uint8_t*>(ptr));
}
inline vfloat load_floats(const bfloat16* ptr) {
  const vuint bits = __builtin_convertvector(load_raw<vuint16>(ptr), vuint) << 16;
  vfloat f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
inline vfloat load_floats(const float16* ptr) {
#if defined(__AVX512F__)
  const __m512 f = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ptr)));
  return reinterpret_cast<const vfloat&>(f);
#elif defined(__F16C__)
  const __m256 lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ptr)));
  const __m256 hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ptr + 8)));
  vfloat f;
  std::memcpy(&f, &lo, sizeof(lo));
  std::memcpy(reinterpret_cast<char*>(&f) + sizeof(lo), &hi, sizeof(hi));
  return f;
#else
  vfloat f;
  for (int l = 0; l < kLanes; ++l) f[l] = to_float(ptr[l]);
  return f;
#endif
}

inline void store_floats(const vfloat& v, float* ptr) { std::memcpy(ptr, &v, sizeof(v)); }
inline void store_floats(const vfloat& v, bfloat16* ptr) {
  // Round to nearest even, as from_float<bfloat16>; NaN becomes a quiet NaN.
  vuint bits;
  std::memcpy(&bits, &v, sizeof(bits));
  bits = per_register<vuint>([](ruint b) {
    const ruint rounded = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
    return (b & 0x7fffffffu) > 0x7f800000u ? ruint{} + 0x7fc0u : rounded;
  }, bits);
  const vuint16 out = __builtin_convertvector(bits, vuint16);
  std::memcpy(ptr, &out, sizeof(out));
}
inline void store_floats(const vfloat& v, float16* ptr) {
#if defined(__AVX512F__)
  const __m256i h = _mm512_cvtps_ph(reinterpret_cast<const __m512&>(v),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(ptr), h);
#elif defined(__F16C__) && defined(__AVX__)
  for (int part = 0; part < kRegisterParts; ++part) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(ptr + 8 * part),
                     _mm256_cvtps_ph(register_part(v, part),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
#else
  for (int l = 0; l < kLanes; ++l) ptr[l] = from_float<float16>(v[l]);
#endif
}

// Gradient stores bypass the cache where the target allows: the gradient is
// written once and read by the next op much later, so a cached store would
// first read every line it overwrites (a third more memory traffic).
inline void stream_floats(const vfloat& v, float* ptr) {
#if defined(__AVX512F__)
  if (reinterpret_cast<uintptr_t>(ptr) % 64 == 0) {
    _mm512_stream_ps(ptr, reinterpret_cast<const __m512&>(v));
    return;
  }
#elif defined(__AVX__)
  if (reinterpret_cast<uintptr_t>(ptr) % 64 == 0) {  // one whole cache line
    for (int part = 0; part < kRegisterParts; ++part) {
      _mm256_stream_ps(ptr + 8 * part, register_part(v, part));
    }
    return;
  }
#endif
  store_floats(v, ptr);
}

template <typename T16>  // bfloat16 or float16: 32 bytes per vector
inline void stream_floats(const vfloat& v, T16* ptr) {
#if defined(__AVX__)
  if (reinterpret_cast<uintptr_t>(ptr) % 32 == 0) {
    alignas(32) T16 packed[kLanes];
    store_floats(v, packed);
    _mm256_stream_si256(reinterpret_cast<__m256i*>(ptr),
                        _mm256_load_si256(reinterpret_cast<const __m256i*>(packed)));
    return;
  }
#endif
  store_floats(v, ptr);
}

inline void stream_fence() {
#if defined(__AVX__)
  _mm_sfence();
#endif
}

// a·b + c rounded once (a fused multiply-add), lane by lane, any float vector type.
// AVX2 and AVX-512 have the instruction. The baseline level (SSE2) has none: there
// it is computed in double, where a·b is exact, and the sum is rounded to odd
// (Boldo and Melquiond: rounding a sum to odd in 53 bits, then to nearest in 24,
// rounds the exact value to nearest), so every level gets the same bits. Slower,
// but only CPUs from before 2013 run that level.
#if defined(__FMA__)
WIOU_ALWAYS_INLINE rfloat register_mul_add(rfloat a, rfloat b, rfloat c) {
#if defined(__AVX512F__)
  const __m512 r = _mm512_fmadd_ps(reinterpret_cast<const __m512&>(a),
                                   reinterpret_cast<const __m512&>(b),
                                   reinterpret_cast<const __m512&>(c));
#else
  const __m256 r = _mm256_fmadd_ps(reinterpret_cast<const __m256&>(a),
                                   reinterpret_cast<const __m256&>(b),
                                   reinterpret_cast<const __m256&>(c));
#endif
  return reinterpret_cast<const rfloat&>(r);
}
#elif defined(__SSE2__)
// a·b + c in double, rounded to odd: two lanes.
WIOU_ALWAYS_INLINE __m128d mul_add_round_to_odd(__m128d a, __m128d b, __m128d c) {
  const __m128d product = _mm_mul_pd(a, b);  // exact: 24 + 24 bits
  const __m128d sum = _mm_add_pd(product, c);
  // Knuth's two-sum: sum + error is product + c exactly.
  const __m128d c_part = _mm_sub_pd(sum, product);
  const __m128d error = _mm_add_pd(_mm_sub_pd(product, _mm_sub_pd(sum, c_part)),
                                   _mm_sub_pd(c, c_part));
  // Inexact (a NaN error, from an infinite or NaN sum, is not: those stay as they are).
  const __m128d magnitude = _mm_andnot_pd(_mm_set1_pd(-0.0), error);
  const __m128i inexact = _mm_castpd_si128(_mm_cmpgt_pd(magnitude, _mm_setzero_pd()));
  const __m128i bits = _mm_castpd_si128(sum);
  const __m128i one = _mm_set1_epi64x(1);
  // An even last bit (the low 32-bit half's test copied to the high half).
  const __m128i even = _mm_shuffle_epi32(
      _mm_cmpeq_epi32(_mm_and_si128(bits, one), _mm_setzero_si128()), _MM_SHUFFLE(2, 2, 0, 0));
  // The odd neighbour lies towards the error: one step up in magnitude where the
  // error has the sum's sign, one step down where it has the other.
  const __m128i opposite = _mm_castpd_si128(_mm_xor_pd(_mm_cmplt_pd(sum, _mm_setzero_pd()),
                                                       _mm_cmplt_pd(error, _mm_setzero_pd())));
  const __m128i step = _mm_sub_epi64(one, _mm_and_si128(opposite, _mm_set1_epi64x(2)));
  const __m128i adjust = _mm_and_si128(_mm_and_si128(inexact, even), step);
  return _mm_castsi128_pd(_mm_add_epi64(bits, adjust));
}
WIOU_ALWAYS_INLINE rfloat register_mul_add(rfloat a, rfloat b, rfloat c) {
  const __m128 fa = reinterpret_cast<const __m128&>(a), fb = reinterpret_cast<const __m128&>(b),
               fc = reinterpret_cast<const __m128&>(c);
  const __m128d low = mul_add_round_to_odd(_mm_cvtps_pd(fa), _mm_cvtps_pd(fb), _mm_cvtps_pd(fc));
  const __m128d high = mul_add_round_to_odd(_mm_cvtps_pd(_mm_movehl_ps(fa, fa)),
                                            _mm_cvtps_pd(_mm_movehl_ps(fb, fb)),
                                            _mm_cvtps_pd(_mm_movehl_ps(fc, fc)));
  const __m128 r = _mm_movelh_ps(_mm_cvtpd_ps(low), _mm_cvtpd_ps(high));
  return reinterpret_cast<const rfloat&>(r);
}
#else
WIOU_ALWAYS_INLINE rfloat register_mul_add(rfloat a, rfloat b, rfloat c) {
  rfloat r;
  for (int l = 0; l < kRegisterBytes / 4; ++l) r[l] = __builtin_fmaf(a[l], b[l], c[l]);
  return r;
}
#endif

template <typename VF>
WIOU_ALWAYS_INLINE VF mul_add(VF a, VF b, VF c) {
  if constexpr (sizeof(VF) == kRegisterBytes) {
    return register_mul_add(a, b, c);
  } else {
    return per_register<VF>([](rfloat x, rfloat y, rfloat z) {
      return register_mul_add(x, y, z);
    }, a, b, c);
  }
}

// exp(x) for x <= 0, any float vector type, within 8.5e-8 relative over every float
// in [-87, 0]: x = n·ln 2 + r with n = round(x / ln 2), |r| <= ln(2)/2,
// exp(r) ~ 1 + r + r²·Q(r) with Q of degree 4 (a relative-error fit on Chebyshev
// nodes, reweighted towards minimax; its own error, 3e-9, is below float rounding),
// times 2^n built in the exponent bits. Below -87 (where exp leaves the normal
// range) it returns 0: saturated logits then give exactly 0 and 1 and a zero
// gradient, as TensorFlow's sigmoid does. Lane by lane the same operations at every
// width (the fused multiply-adds rounded once at every level), so every
// instruction-set level gets the same bits.
template <typename VF>
WIOU_ALWAYS_INLINE VF exp_nonpositive(VF x_in) {
  using VI = decltype(x_in < x_in);
  const VI underflow = x_in < -87.0f;
  const VF x = underflow ? VF{} - 87.0f : x_in;
  // Adding 1.5·2^23 + 127 rounds x / ln 2 to an integer n held in the low mantissa
  // bits as n + 127, the biased exponent of 2^n: shifted into place (the bits
  // above it fall off) it is 2^n, without float<->int conversions.
  const VF magic = VF{} + 12583039.0f;
  const VF biased = mul_add(x, VF{} + 1.44269504088896341f, magic);
  const VF n = biased - magic;
  const VF r = mul_add(n, VF{} + 2.12194440e-4f, mul_add(n, VF{} - 0.693359375f, x));  // ln 2 in two parts
  VF q = VF{} + 1.3814610429e-3f;
  q = mul_add(q, r, VF{} + 8.3687100559e-3f);
  q = mul_add(q, r, VF{} + 4.1668388992e-2f);
  q = mul_add(q, r, VF{} + 1.6666521132e-1f);
  q = mul_add(q, r, VF{} + 4.9999994040e-1f);
  const VF e_r = mul_add(q, r * r, r) + 1.0f;
  VI bits;
  std::memcpy(&bits, &biased, sizeof(bits));
  bits <<= 23;
  VF scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return underflow ? VF{} : e_r * scale;
}

// sigmoid(z) and sigmoid(-z), each side without cancellation, never overflowing.
template <typename VF>
WIOU_ALWAYS_INLINE void sigmoid_pair(VF z, VF& p, VF& q) {
  using VI = decltype(z < z);
  const VI negative = z < 0.0f;
  const VF e = exp_nonpositive(negative ? z : -z);  // exp(-|z|)
  const VF big = 1.0f / (1.0f + e), small = e * big;
  p = negative ? small : big;
  q = negative ? big : small;
}

// p̂ and q̂ = 1 - p̂ (see wiou_math_api.h): clip, or a sigmoid that never
// overflows and computes each side without cancellation.
template <bool kLogits>
WIOU_ALWAYS_INLINE void probabilities(vfloat x, const Params& params, vfloat& p, vfloat& q) {
  if (kLogits) {
#pragma GCC unroll 4
    for (int part = 0; part < kRegisterParts; ++part) {
      rfloat p_part, q_part;
      sigmoid_pair(register_part(x, part), p_part, q_part);
      set_register_part(p, part, p_part);
      set_register_part(q, part, q_part);
    }
  } else {
    const float lo = params.lo, hi = params.hi;
    p = per_register<vfloat>([lo, hi](rfloat v) {
      v = v < lo ? rfloat{} + lo : v;
      return v > hi ? rfloat{} + hi : v;
    }, x);
    q = 1.0f - p;
  }
}

// The input streams kPrefetch elements ahead of element i.
template <bool kWeighted, typename TTrue, typename TPred>
inline void prefetch_inputs(const TTrue* y, const TPred* p, const float* s, int64_t i) {
  __builtin_prefetch(y + i + kPrefetch);
  __builtin_prefetch(p + i + kPrefetch);
  if (kWeighted) __builtin_prefetch(s + i + kPrefetch);
}

// Up to kLanes elements of one operand, zero-padded (the ragged end of a block).
template <typename T>
inline vfloat load_partial(const T* ptr, int count) {
  T padded[kLanes] = {};
  std::memcpy(padded, ptr, sizeof(T) * count);
  return load_floats(padded);
}

// The label-mask word of one vector (wiou_math_api.h): in-range lanes in the low
// half, y = 1 lanes in the high half. Padded lanes load x = 0: out of range. Lanes
// whose label is neither 0 nor 1 inside the range are set in `soft` (the word
// cannot describe them; the flag sends the gradient back to y and p). In range
// means the clip kept x (ε ≤ x ≤ 1-ε, ties included, NaN not); the clip is
// probabilities' own, which the compiler shares with the sums.
WIOU_ALWAYS_INLINE uint32_t label_mask_word(vfloat y, vfloat x, const Params& params,
                                            uint32_t& soft) {
  vfloat p, q;
  probabilities<false>(x, params, p, q);
#if defined(__AVX512F__)  // compare straight into bit masks
  const __m512 yv = reinterpret_cast<const __m512&>(y);
  const uint32_t in_range = _mm512_cmp_ps_mask(reinterpret_cast<const __m512&>(p),
                                               reinterpret_cast<const __m512&>(x), _CMP_EQ_OQ);
  const uint32_t hard = _mm512_cmp_ps_mask(_mm512_mul_ps(yv, yv), yv, _CMP_EQ_OQ);
  const uint32_t one = _mm512_cmp_ps_mask(yv, _mm512_set1_ps(1.0f), _CMP_EQ_OQ);
#else
  const uint32_t in_range = lane_bits([](rfloat a, rfloat b) { return a == b; }, p, x);
  const uint32_t hard = lane_bits([](rfloat a) { return a * a == a; }, y);
  const uint32_t one = lane_bits([](rfloat a) { return a == 1.0f; }, y);
#endif
  soft |= in_range & ~hard;
  return in_range | one << kLanes;
}

// Adds one vector's terms into acc[0..K). `valid` masks the padded lanes.
template <Weighting W, bool kLogits, bool kWeighted>
WIOU_ALWAYS_INLINE void accumulate_terms(vfloat y, vfloat x, vfloat s, vint valid,
                                         const Params& params, vfloat acc[kMaxTerms]) {
  vfloat p, q;
  probabilities<kLogits>(x, params, p, q);
  const vfloat yp = y * p;
  if (W == Weighting::kSeed) {
    acc[0] += select(valid, yp, vfloat{});
    acc[1] += select(valid, y + p - yp, vfloat{});
    acc[2] += select(valid, y, vfloat{});
    return;
  }
  vfloat m = kWeighted ? s : vfloat{} + 1.0f;
  if (W == Weighting::kPixel) m *= params.c0 + params.c1 * y;
  m = select(valid, m, vfloat{});
  acc[0] += m * yp;
  acc[1] += m * (y + p - yp);
  if (W == Weighting::kClass) {
    const vfloat not_y = 1.0f - y;
    acc[2] += m * (not_y * q);
    acc[3] += m * (not_y + y * q);
  }
}

// The terms' sums over elements [begin, end), with kLanes accumulators each,
// folded pairwise 16 -> 8 -> 4 -> 2 -> 1 into out[0..K). With kMasks, also the
// label-mask words of the block's vectors (masks[0], masks[1], ...); returns
// whether a soft label needs y and p.
template <Weighting W, bool kLogits, bool kWeighted, bool kMasks, typename TTrue,
          typename TPred>
bool block_sums(const TTrue* y, const TPred* p, const float* s, int64_t begin, int64_t end,
                const Params& params, float out[kMaxTerms], uint32_t* masks) {
  static_assert(!kMasks || (!kLogits && !kWeighted), "label masks need plain probabilities");
  vfloat acc[kMaxTerms] = {};
  uint32_t soft = 0;
  const vint all = vint{} - 1;
  const vfloat one = vfloat{} + 1.0f;
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    prefetch_inputs<kWeighted>(y, p, s, i);
    const vfloat yv = load_floats(y + i), xv = load_floats(p + i);
    accumulate_terms<W, kLogits, kWeighted>(yv, xv, kWeighted ? load_floats(s + i) : one, all,
                                            params, acc);
    if (kMasks) *masks++ = label_mask_word(yv, xv, params, soft);
  }
  if (i < end) {
    const int count = static_cast<int>(end - i);
    vint valid;
    for (int l = 0; l < kLanes; ++l) valid[l] = l < count ? -1 : 0;
    const vfloat yv = load_partial(y + i, count), xv = load_partial(p + i, count);
    accumulate_terms<W, kLogits, kWeighted>(yv, xv,
                                            kWeighted ? load_partial(s + i, count) : one,
                                            valid, params, acc);
    if (kMasks) *masks = label_mask_word(yv, xv, params, soft);
  }
  for (int t = 0; t < kMaxTerms; ++t) {
    for (int width = kLanes / 2; width >= 1; width /= 2) {
      for (int l = 0; l < width; ++l) acc[t][l] += acc[t][l + width];
    }
    out[t] = acc[t][0];
  }
  return soft != 0;
}

template <Weighting W, bool kLogits, bool kWeighted, bool kMasks, typename TTrue,
          typename TPred>
void sums_blocks_variant(const TTrue* y, const TPred* p, const float* s, int64_t group_size,
                         const Params& params, int64_t first, int64_t last, float* partials,
                         uint32_t* masks, uint8_t* soft_blocks) {
  const int64_t per_group = num_blocks(group_size);
  for (int64_t k = first; k < last; ++k) {
    const int64_t group = k / per_group;
    const int64_t offset = (k % per_group) * kBlock;  // in the group, a multiple of kLanes
    const int64_t begin = group * group_size + offset;
    const int64_t group_end = (group + 1) * group_size;
    const int64_t end = begin + kBlock < group_end ? begin + kBlock : group_end;
    uint32_t* block_masks =
        kMasks ? masks + group * mask_words(group_size) + offset / kLanes : nullptr;
    const bool soft = block_sums<W, kLogits, kWeighted, kMasks>(
        y, p, s, begin, end, params, partials + kMaxTerms * k, block_masks);
    if (kMasks) soft_blocks[k] = soft ? 1 : 0;
  }
}

// One compiled loop per (weighting, logits, weight map) variant; the runtime
// choice happens once per call, never per element.
template <typename TTrue, typename TPred>
void iou_sums_blocks(const TTrue* y, const TPred* p, const float* weights, int64_t group_size,
                     const Params& params, int64_t first, int64_t last, float* partials,
                     uint32_t* masks, uint8_t* soft_blocks) {
#define WIOU_SUMS_VARIANT(W, LOGITS, WEIGHTED, MASKS)                                   \
  return sums_blocks_variant<W, LOGITS, WEIGHTED, MASKS>(y, p, weights, group_size, params, \
                                                         first, last, partials, masks,      \
                                                         soft_blocks)
  const bool logits = params.from_logits, weighted = weights != nullptr;
  const bool with_masks = masks != nullptr && !logits && !weighted;
  switch (params.weighting) {
    case Weighting::kSeed:  // the seed's weights act in the reduction, never in the sums
      if (logits) WIOU_SUMS_VARIANT(Weighting::kSeed, true, false, false);
      if (with_masks) WIOU_SUMS_VARIANT(Weighting::kSeed, false, false, true);
      WIOU_SUMS_VARIANT(Weighting::kSeed, false, false, false);
    case Weighting::kPixel:
      if (logits && weighted) WIOU_SUMS_VARIANT(Weighting::kPixel, true, true, false);
      if (logits) WIOU_SUMS_VARIANT(Weighting::kPixel, true, false, false);
      if (weighted) WIOU_SUMS_VARIANT(Weighting::kPixel, false, true, false);
      if (with_masks) WIOU_SUMS_VARIANT(Weighting::kPixel, false, false, true);
      WIOU_SUMS_VARIANT(Weighting::kPixel, false, false, false);
    case Weighting::kClass:
      if (logits && weighted) WIOU_SUMS_VARIANT(Weighting::kClass, true, true, false);
      if (logits) WIOU_SUMS_VARIANT(Weighting::kClass, true, false, false);
      if (weighted) WIOU_SUMS_VARIANT(Weighting::kClass, false, true, false);
      if (with_masks) WIOU_SUMS_VARIANT(Weighting::kClass, false, false, true);
      WIOU_SUMS_VARIANT(Weighting::kClass, false, false, false);
  }
#undef WIOU_SUMS_VARIANT
}

// Pairwise sum of column `c` of a row-major [count, kMaxTerms] array: fixed order.
inline float pairwise_column_sum(const float* partials, int64_t count, int c) {
  if (count <= 8) {
    float s = 0.0f;
    for (int64_t k = 0; k < count; ++k) s += partials[kMaxTerms * k + c];
    return s;
  }
  const int64_t half = count / 2;
  return pairwise_column_sum(partials, half, c) +
         pairwise_column_sum(partials + kMaxTerms * half, count - half, c);
}

// m·(a·y + b·(1 - y))·dp̂ for one vector; m's class weight is 1 outside pixel mode.
template <bool kLogits, bool kWeighted>
WIOU_ALWAYS_INLINE vfloat gradient_terms(vfloat y, vfloat x, vfloat s, float a, float b,
                                          const Params& params) {
  vfloat g = (a * y + b * (1.0f - y)) * (params.c0 + params.c1 * y);
  if (kWeighted) g *= s;
  if (kLogits) {
    vfloat p, q;
    probabilities<true>(x, params, p, q);
    return g * (p * q);
  }
  const float lo = params.lo, hi = params.hi;
  return per_register<vfloat>([lo, hi](rfloat v, rfloat gv) {
    const rint in_range = (v >= lo) & (v <= hi);
    return in_range ? gv : rfloat{};
  }, x, g);
}

// Elements [begin, end) of one group (constant a, b).
template <bool kLogits, bool kWeighted, typename TTrue, typename TPred>
void gradient_span(const TTrue* y, const TPred* p, const float* s, float a, float b,
                   const Params& params, int64_t begin, int64_t end, TPred* grad) {
  const vfloat one = vfloat{} + 1.0f;
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    prefetch_inputs<kWeighted>(y, p, s, i);
    const vfloat g = gradient_terms<kLogits, kWeighted>(
        load_floats(y + i), load_floats(p + i), kWeighted ? load_floats(s + i) : one, a, b,
        params);
    stream_floats(g, grad + i);
  }
  stream_fence();
  if (i < end) {
    const int count = static_cast<int>(end - i);
    const vfloat g = gradient_terms<kLogits, kWeighted>(
        load_partial(y + i, count), load_partial(p + i, count),
        kWeighted ? load_partial(s + i, count) : one, a, b, params);
    TPred out[kLanes];
    store_floats(g, out);
    std::memcpy(grad + i, out, sizeof(TPred) * count);
  }
}

template <bool kLogits, bool kWeighted, typename TTrue, typename TPred>
void gradient_variant(const TTrue* y, const TPred* p, const float* s, int64_t group_size,
                      const float* coef, const Params& params, int64_t begin, int64_t end,
                      TPred* grad) {
  while (begin < end) {  // one span per group that [begin, end) touches
    const int64_t group = begin / group_size;
    const int64_t group_end = (group + 1) * group_size;
    const int64_t span_end = end < group_end ? end : group_end;
    gradient_span<kLogits, kWeighted>(y, p, s, coef[2 * group], coef[2 * group + 1], params,
                                      begin, span_end, grad);
    begin = span_end;
  }
}

template <typename TTrue, typename TPred>
void iou_gradient(const TTrue* y, const TPred* p, const float* weights, int64_t group_size,
                  const float* coef, const Params& params, int64_t begin, int64_t end,
                  TPred* grad) {
  if (begin >= end) return;
  const bool weighted = weights != nullptr;
  if (params.from_logits) {
    if (weighted) return gradient_variant<true, true>(y, p, weights, group_size, coef, params,
                                                      begin, end, grad);
    return gradient_variant<true, false>(y, p, weights, group_size, coef, params, begin, end,
                                         grad);
  }
  if (weighted) return gradient_variant<false, true>(y, p, weights, group_size, coef, params,
                                                     begin, end, grad);
  return gradient_variant<false, false>(y, p, weights, group_size, coef, params, begin, end,
                                        grad);
}

// The gradient of one element from its two mask bits.
inline float masked_value(uint32_t word, int lane, float v0, float v1) {
  if (((word >> lane) & 1u) == 0) return 0.0f;
  return ((word >> (kLanes + lane)) & 1u) ? v1 : v0;
}

// Elements [offset_begin, offset_end) of one group from its mask words: 0 out of
// range, v0 where y = 0, v1 where y = 1. Offsets count from the group's start.
template <typename TPred>
void gradient_from_masks_span(const uint32_t* words, float v0, float v1, int64_t offset_begin,
                              int64_t offset_end, TPred* grad) {
  int64_t i = offset_begin;
  for (; i < offset_end && i % kLanes != 0; ++i) {  // up to the next whole word
    grad[i] = from_float<TPred>(masked_value(words[i / kLanes], int(i % kLanes), v0, v1));
  }
  vint lane_bit;
  for (int l = 0; l < kLanes; ++l) lane_bit[l] = 1 << l;
  const vfloat background = vfloat{} + v0, foreground = vfloat{} + v1;
  for (; i + kLanes <= offset_end; i += kLanes) {
    const uint32_t word = words[i / kLanes];
    const int32_t in_range = static_cast<int32_t>(word & 0xffffu);
    const int32_t is_one = static_cast<int32_t>(word >> kLanes);
    const vfloat g = per_register<vfloat>([in_range, is_one](rint bit, rfloat v0, rfloat v1) {
      const rint one = (bit & is_one) != 0;
      return (bit & in_range) != 0 ? (one ? v1 : v0) : rfloat{};
    }, lane_bit, background, foreground);
    stream_floats(g, grad + i);
  }
  stream_fence();
  for (; i < offset_end; ++i) {
    grad[i] = from_float<TPred>(masked_value(words[i / kLanes], int(i % kLanes), v0, v1));
  }
}

template <typename TPred>
void iou_gradient_from_masks(const uint32_t* masks, int64_t group_size, const float* coef,
                             const Params& params, int64_t begin, int64_t end, TPred* grad) {
  while (begin < end) {  // one span per group that [begin, end) touches
    const int64_t group = begin / group_size;
    const int64_t group_start = group * group_size;
    const int64_t span_end = end < group_start + group_size ? end : group_start + group_size;
    const float a = coef[2 * group], b = coef[2 * group + 1];
    // The two values exactly as iou_gradient's vector code computes them (any
    // prediction inside the clip range, here 1/2).
    const vfloat half = vfloat{} + 0.5f, unused = vfloat{} + 1.0f;
    const float v0 = gradient_terms<false, false>(vfloat{}, half, unused, a, b, params)[0];
    const float v1 = gradient_terms<false, false>(vfloat{} + 1.0f, half, unused, a, b,
                                                  params)[0];
    gradient_from_masks_span(masks + group * mask_words(group_size), v0, v1,
                             begin - group_start, span_end - group_start, grad + group_start);
    begin = span_end;
  }
}

}  // namespace WIOU_ISA_NAMESPACE
}  // namespace wiou

#endif  // WIOU_OPS_KERNELS_WIOU_MATH_H_
