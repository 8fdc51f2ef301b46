// Multi-class IoU: the (C, 3) sums per group and their VJP (wiou_math_api.h states
// them; wiou_ops/_multiclass.py is the single statement of the math). Compiled per
// instruction-set level like wiou_math.h, whose vector helpers it uses.
//
// Pixels are handled kLanes at a time as a tile transposed to [class][pixel]: every
// step (softmax's max, exp and normalisation, the sums, the gradient) is then one
// kLanes-wide vector operation per class, whatever C is, and each class's
// accumulators add kLanes pixels in parallel (kPixelBlock / kLanes terms each
// before the pairwise fold), as the binary loops do.
#ifndef WIOU_OPS_KERNELS_WIOU_MULTICLASS_H_
#define WIOU_OPS_KERNELS_WIOU_MULTICLASS_H_

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "wiou_math.h"

namespace wiou {
namespace WIOU_ISA_NAMESPACE {

// The tile's vectors are one register wide (wiou_math.h's rfloat: wider ones get
// scalar comparisons and selects from GCC 12); a tile is still kLanes pixels, so
// each accumulator lane sums the same pixels at every level and the results are
// bit-identical across levels.
constexpr int kTileWidth = kRegisterBytes / 4;
constexpr int kTileParts = kLanes / kTileWidth;
typedef rfloat tfloat;
typedef rint tint;

template <typename V>
inline V load_part(const void* ptr) {
  V v;
  std::memcpy(&v, ptr, sizeof(v));
  return v;
}
template <typename V>
inline void store_part(const V& v, void* ptr) {
  std::memcpy(ptr, &v, sizeof(v));
}

// One tile: up to kLanes pixels [i, i + count) with every class, transposed to
// [class][pixel] (row c: kLanes floats), so every step is a vector op per class.
// p and y have rows up to a whole number of kTileWidth classes, for transpose_in.
struct ClassTile {
  explicit ClassTile(int64_t classes)
      : p(padded_classes(classes) * kLanes), y(padded_classes(classes) * kLanes),
        g(classes * kLanes) {}
  static int64_t padded_classes(int64_t classes) {
    return (classes + kTileWidth - 1) / kTileWidth * kTileWidth;
  }
  std::vector<float> p;  // x on load, then p̂
  std::vector<float> y;  // dense labels (sparse: unused)
  std::vector<float> g;  // the gradient (backward only)
  alignas(64) int32_t ids[kLanes];  // sparse labels (-1 for no class)
  alignas(64) float s[kLanes];      // pixel weight, 0 for padded and ignored pixels
};

// A sparse label as an id; float labels (whole numbers) outside [0, 2^31) or NaN: -1,
// which matches no class (nor an ignore_class, never negative).
inline int32_t label_id(uint8_t v) { return v; }
inline int32_t label_id(int32_t v) { return v; }
template <typename T>
inline int32_t label_id(T v) {
  const float f = to_float(v);
  return f >= 0.0f && f < 2147483648.0f ? static_cast<int32_t>(f) : -1;
}

// Two-source shuffle with a constant index list (GCC's and Clang's builtins differ).
template <int... K>
inline tfloat shuffle(tfloat a, tfloat b) {
#if defined(__clang__)
  return __builtin_shufflevector(a, b, K...);
#else
  return __builtin_shuffle(a, b, tint{K...});
#endif
}

// One butterfly stage of a kTileWidth x kTileWidth transpose: rows j and j + B (bit B
// of j clear) exchange bit B of the row and the lane index, i.e. swap the off-diagonal
// B x B blocks of every 2B x 2B block. All log2(kTileWidth) stages, in any order,
// exchange row and lane: the transpose, in kTileWidth·log2(kTileWidth) shuffles.
template <int B, int... K>
inline void butterfly(tfloat* v, std::integer_sequence<int, K...>) {
#pragma GCC unroll 16
  for (int j = 0; j < kTileWidth; ++j) {
    if (j & B) continue;
    const tfloat lo = v[j], hi = v[j + B];
    v[j] = shuffle<((K & B) ? kTileWidth + K - B : K)...>(lo, hi);
    v[j + B] = shuffle<((K & B) ? kTileWidth + K : K + B)...>(lo, hi);
  }
}

template <int B>
inline void butterfly_stages(tfloat* v) {
  if constexpr (B >= 1) {
    butterfly<B>(v, std::make_integer_sequence<int, kTileWidth>());
    butterfly_stages<B / 2>(v);
  }
}

inline void transpose_square(tfloat* v) { butterfly_stages<kTileWidth / 2>(v); }

// kTileWidth consecutive values as floats.
template <typename T>
inline tfloat load_converted(const T* ptr) {
  float lanes[kTileWidth];
  for (int k = 0; k < kTileWidth; ++k) lanes[k] = to_float(ptr[k]);
  return load_part<tfloat>(lanes);
}
inline tfloat load_converted(const float* ptr) { return load_part<tfloat>(ptr); }
inline tfloat load_converted(const bfloat16* ptr) {  // the high half of a float's bits
  typedef uint16_t tuint16 __attribute__((vector_size(2 * kTileWidth)));
  const ruint bits = __builtin_convertvector(load_part<tuint16>(ptr), ruint) << 16;
  return load_part<tfloat>(&bits);
}
#if defined(__AVX512F__)
inline tfloat load_converted(const float16* ptr) {
  const __m512 f = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ptr)));
  return load_part<tfloat>(&f);
}
#elif defined(__F16C__) && defined(__AVX__)
inline tfloat load_converted(const float16* ptr) {
  const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ptr)));
  return load_part<tfloat>(&f);
}
#endif

// Whether a whole tile at pixel i may use the register transpose below: its row
// segments of kTileWidth values read past the tile's last row by up to
// kTileWidth - 1 values, which must still lie in the block [.., end).
inline bool register_transposable(int64_t i, int count, int64_t end, int64_t classes) {
  return count == kLanes && (i + kLanes) * classes + kTileWidth <= end * classes;
}

// rows (count pixels x C, row-major) as floats, transposed into out[c·kLanes + l];
// lanes past count are 0. A register transpose of kTileWidth x kTileWidth squares
// where allowed (whole class blocks read past each row into the next one; they land
// in out's padding rows, past class C - 1), else element by element.
template <typename T>
inline void transpose_in(const T* rows, int64_t classes, int count, bool in_registers,
                         float* out) {
  if (in_registers) {
    for (int part = 0; part < kTileParts; ++part) {
      const T* part_rows = rows + part * kTileWidth * classes;
      for (int64_t first = 0; first < classes; first += kTileWidth) {
        tfloat v[kTileWidth];
#pragma GCC unroll 16
        for (int r = 0; r < kTileWidth; ++r) {
          v[r] = load_converted(part_rows + r * classes + first);
        }
        transpose_square(v);
#pragma GCC unroll 16
        for (int k = 0; k < kTileWidth; ++k) {
          store_part(v[k], out + (first + k) * kLanes + part * kTileWidth);
        }
      }
    }
    return;
  }
  if (count == kLanes) {
    for (int64_t c = 0; c < classes; ++c) {
      const T* column = rows + c;
      float* dst = out + c * kLanes;
      for (int l = 0; l < kLanes; ++l) dst[l] = to_float(column[l * classes]);
    }
    return;
  }
  std::memset(out, 0, sizeof(float) * kLanes * classes);
  for (int l = 0; l < count; ++l) {
    for (int64_t c = 0; c < classes; ++c) out[c * kLanes + l] = to_float(rows[l * classes + c]);
  }
}

// The inverse for the gradient: in[c·kLanes + l] -> rows (count x C) in T, element
// by element (a register transpose's row segments, unaligned and overlapping, store
// slower here). A 16-bit T is rounded in vector code first, into `converted`
// (C·kLanes values), so that only the 2-byte moves are scalar.
template <typename T>
inline void transpose_out(const float* in, int64_t classes, int count, T* converted,
                          T* rows) {
  if constexpr (!std::is_same<T, float>::value) {
    for (int64_t c = 0; c < classes; ++c) {
      store_floats(load_floats(in + c * kLanes), converted + c * kLanes);
    }
  }
  const auto value = [&](int64_t c, int l) {
    if constexpr (std::is_same<T, float>::value) {
      return in[c * kLanes + l];
    } else {
      return converted[c * kLanes + l];
    }
  };
  if (count == kLanes) {
    for (int64_t c = 0; c < classes; ++c) {
      T* column = rows + c;
      for (int l = 0; l < kLanes; ++l) column[l * classes] = value(c, l);
    }
    return;
  }
  for (int l = 0; l < count; ++l) {
    for (int64_t c = 0; c < classes; ++c) rows[l * classes + c] = value(c, l);
  }
}

// Loads pixels [i, i + count) of a block ending at pixel `end`: x, labels, and the
// pixel weight s (0 past count). The per-pixel loops have no branch on count in a
// whole tile, so they vectorize.
template <typename TLabel, typename TPred>
inline void load_tile(const TLabel* labels, const TPred* x, const float* weights,
                      const MultiClassParams& params, int64_t i, int count, int64_t end,
                      ClassTile& t) {
  const int64_t classes = params.classes;
  const bool in_registers = register_transposable(i, count, end, classes);
  transpose_in(x + i * classes, classes, count, in_registers, t.p.data());
  if (weights != nullptr) {
    std::memcpy(t.s, weights + i, sizeof(float) * count);
  } else {
    std::fill(t.s, t.s + count, 1.0f);
  }
  std::fill(t.s + count, t.s + kLanes, 0.0f);
  if (params.sparse) {
    TLabel padded[kLanes];
    const TLabel* ids = labels + i;
    if (count < kLanes) {
      std::memcpy(padded, ids, sizeof(TLabel) * count);
      std::memset(padded + count, 0, sizeof(TLabel) * (kLanes - count));  // s = 0 there
      ids = padded;
    }
    for (int l = 0; l < kLanes; ++l) t.ids[l] = label_id(ids[l]);
    // Only a non-negative id can be ignored: -1 (and any negative int32 label) is no class.
    const int64_t ignored = params.ignore_class;
    if (ignored >= 0 && ignored <= INT32_MAX) {
      for (int l = 0; l < kLanes; ++l) {
        t.s[l] = t.ids[l] == static_cast<int32_t>(ignored) ? 0.0f : t.s[l];
      }
    }
    // Ids outside [0, C) match no class (as TensorFlow's one_hot and the XLA path).
    const uint32_t limit = classes < INT32_MAX ? static_cast<uint32_t>(classes) : INT32_MAX;
    for (int l = 0; l < kLanes; ++l) {
      t.ids[l] = static_cast<uint32_t>(t.ids[l]) < limit ? t.ids[l] : -1;
    }
  } else {
    float* yt = t.y.data();
    transpose_in(labels + i * classes, classes, count, in_registers, yt);
    if (params.ignore_class >= 0 && params.ignore_class < classes) {
      const float* ignored = yt + params.ignore_class * kLanes;
      for (int l = 0; l < kLanes; ++l) t.s[l] *= 1.0f - ignored[l];
    }
  }
}

// s·y_c of one tile part as a vector (sparse: s where the id is c, else 0).
inline tfloat part_weighted_label(const MultiClassParams& params, const ClassTile& t,
                                  tfloat s, int64_t c, int part) {
  if (!params.sparse) return s * load_part<tfloat>(&t.y[c * kLanes + part * kTileWidth]);
  const tint is_c = load_part<tint>(&t.ids[part * kTileWidth]) == static_cast<int32_t>(c);
  return is_c ? s : tfloat{};
}

// max_c x_c of one part, per pixel.
inline tfloat part_max(const MultiClassParams& params, const ClassTile& t, int part) {
  const float* column = t.p.data() + part * kTileWidth;
  tfloat top = load_part<tfloat>(column);
  for (int64_t c = 1; c < params.classes; ++c) {
    const tfloat v = load_part<tfloat>(column + c * kLanes);
    top = v > top ? v : top;
  }
  return top;
}

// Softmax without its division, for one part: e_c = exp(x_c - max_k x_k) in place of x
// (max-subtracted: any finite logits); returns 1 / Σ_c e_c.
inline tfloat part_softmax_numerators(const MultiClassParams& params, ClassTile& t, int part) {
  const int64_t classes = params.classes;
  float* column = t.p.data() + part * kTileWidth;
  const tfloat top = part_max(params, t, part);
  tfloat total = {};
  for (int64_t c = 0; c < classes; ++c) {
    const tfloat e = exp_nonpositive(load_part<tfloat>(column + c * kLanes) - top);
    store_part(e, column + c * kLanes);
    total += e;
  }
  return 1.0f / total;
}

// g_c = s·(a_c·y_c + b_c), the VJP w.r.t. p̂_c, with (a_c, b_c) = ab[2c], ab[2c + 1].
inline tfloat part_upstream(const MultiClassParams& params, const ClassTile& t, tfloat s,
                            const float* ab, int64_t c, int part) {
  return ab[2 * c] * part_weighted_label(params, t, s, c, part) + ab[2 * c + 1] * s;
}

// p̂ in place of x for one part: softmax over the classes (max-subtracted: any finite
// logits), sigmoid, or the clip.
inline void part_probabilities(const MultiClassParams& params, ClassTile& t, int part) {
  const int64_t classes = params.classes;
  float* column = t.p.data() + part * kTileWidth;
  if (params.activation == Activation::kSoftmax) {
    const tfloat inverse = part_softmax_numerators(params, t, part);
    for (int64_t c = 0; c < classes; ++c) {
      store_part(load_part<tfloat>(column + c * kLanes) * inverse, column + c * kLanes);
    }
  } else if (params.activation == Activation::kSigmoid) {
    for (int64_t c = 0; c < classes; ++c) {
      tfloat p, q;
      sigmoid_pair(load_part<tfloat>(column + c * kLanes), p, q);
      store_part(p, column + c * kLanes);
    }
  } else {
    for (int64_t c = 0; c < classes; ++c) {
      tfloat v = load_part<tfloat>(column + c * kLanes);
      v = v < params.lo ? tfloat{} + params.lo : v;
      store_part(v > params.hi ? tfloat{} + params.hi : v, column + c * kLanes);
    }
  }
}

// Pixel block k: its group and its pixels [begin, end) (blocks are numbered group by group).
struct PixelBlock {
  PixelBlock(int64_t k, int64_t group_pixels, int64_t per_group)
      : group(k / per_group), begin(group * group_pixels + (k % per_group) * kPixelBlock) {
    const int64_t group_end = (group + 1) * group_pixels;
    end = begin + kPixelBlock < group_end ? begin + kPixelBlock : group_end;
  }
  int64_t group, begin, end;
};

// kIouTerms = false is a benchmark instrument, the same loop without the loss math:
// the same tiles and softmax, and one running sum of s·p̂ over the classes (into the
// block's first partial) in place of the (C, 3) sums.
template <bool kIouTerms, typename TLabel, typename TPred>
void multiclass_sums_pass(const TLabel* labels, const TPred* x, const float* weights,
                          int64_t group_pixels, const MultiClassParams& params, int64_t first,
                          int64_t last, float* partials) {
  const int64_t classes = params.classes;
  const int64_t per_group = num_pixel_blocks(group_pixels);
  ClassTile t(classes);
  // acc[(sum·C + c)·kLanes + lane]: I, P, Y per class, one accumulator per tile lane.
  std::vector<float> acc(kClassSums * classes * kLanes);
  for (int64_t k = first; k < last; ++k) {
    const PixelBlock block(k, group_pixels, per_group);
    const int64_t begin = block.begin, end = block.end;
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t i = begin; i < end; i += kLanes) {
      const int count = static_cast<int>(end - i < kLanes ? end - i : kLanes);
      load_tile(labels, x, weights, params, i, count, end, t);
      for (int part = 0; part < kTileParts; ++part) {
        const int offset = part * kTileWidth;
        const tfloat s = load_part<tfloat>(&t.s[offset]);
        // s·p̂_c = weight·v_c: the softmax's division folds into the pixel weight.
        tfloat weight = s;
        if (params.activation == Activation::kSoftmax) {
          weight *= part_softmax_numerators(params, t, part);
        } else {
          part_probabilities(params, t, part);
        }
        if constexpr (!kIouTerms) {
          tfloat total = load_part<tfloat>(&acc[offset]);
          for (int64_t c = 0; c < classes; ++c) {
            total += weight * load_part<tfloat>(&t.p[c * kLanes + offset]);
          }
          store_part(total, &acc[offset]);
          continue;
        }
        for (int64_t c = 0; c < classes; ++c) {
          const tfloat sp = weight * load_part<tfloat>(&t.p[c * kLanes + offset]);
          tfloat si, sy;  // s·y_c·p̂_c and s·y_c
          if (params.sparse) {
            const tint is_c = load_part<tint>(&t.ids[offset]) == static_cast<int32_t>(c);
            si = is_c ? sp : tfloat{};
            sy = is_c ? s : tfloat{};
          } else {
            const tfloat y = load_part<tfloat>(&t.y[c * kLanes + offset]);
            si = sp * y;
            sy = s * y;
          }
          float* a = &acc[c * kLanes + offset];
          store_part(load_part<tfloat>(a) + si, a);
          a += classes * kLanes;
          store_part(load_part<tfloat>(a) + sp, a);
          a += classes * kLanes;
          store_part(load_part<tfloat>(a) + sy, a);
        }
      }
    }
    float* out = partials + k * kClassSums * classes;
    for (int64_t j = 0; j < kClassSums * classes; ++j) {
      float lanes[kLanes];
      std::memcpy(lanes, &acc[j * kLanes], sizeof(lanes));
      for (int width = kLanes / 2; width >= 1; width /= 2) {
        for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
      }
      out[j] = lanes[0];
    }
  }
}

// Pairwise sum of entry j of `count` rows of `stride` floats: fixed order.
inline float pairwise_strided_sum(const float* rows, int64_t count, int64_t stride,
                                  int64_t j) {
  if (count <= 8) {
    float s = 0.0f;
    for (int64_t k = 0; k < count; ++k) s += rows[k * stride + j];
    return s;
  }
  const int64_t half = count / 2;
  return pairwise_strided_sum(rows, half, stride, j) +
         pairwise_strided_sum(rows + half * stride, count - half, stride, j);
}

template <typename TLabel, typename TPred>
void multiclass_sums_blocks(const TLabel* labels, const TPred* x, const float* weights,
                            int64_t group_pixels, const MultiClassParams& params,
                            int64_t first, int64_t last, float* partials) {
  multiclass_sums_pass<true>(labels, x, weights, group_pixels, params, first, last, partials);
}

// kIouTerms = false: the benchmark instrument's backward, p̂ itself as the gradient.
template <bool kIouTerms, typename TLabel, typename TPred>
void multiclass_gradient_pass(const TLabel* labels, const TPred* x, const float* weights,
                              int64_t group_pixels, const float* coef,
                              const MultiClassParams& params, int64_t first, int64_t last,
                              TPred* grad) {
  const int64_t classes = params.classes;
  const int64_t per_group = num_pixel_blocks(group_pixels);
  ClassTile t(classes);
  std::vector<TPred> converted(std::is_same<TPred, float>::value ? 0 : classes * kLanes);
  for (int64_t k = first; k < last; ++k) {
    const PixelBlock block(k, group_pixels, per_group);
    const int64_t group = block.group, begin = block.begin, end = block.end;
    const float* ab = coef + group * classes * 2;
    for (int64_t i = begin; i < end; i += kLanes) {
      const int count = static_cast<int>(end - i < kLanes ? end - i : kLanes);
      load_tile(labels, x, weights, params, i, count, end, t);
      for (int part = 0; part < kTileParts; ++part) {
        const int offset = part * kTileWidth;
        const tfloat s = load_part<tfloat>(&t.s[offset]);
        if (params.activation == Activation::kClip) {
          for (int64_t c = 0; c < classes; ++c) {  // the clip's rule reads x itself
            const tfloat v = load_part<tfloat>(&t.p[c * kLanes + offset]);
            const tint in_range = (v >= params.lo) & (v <= params.hi);
            const tfloat g = part_upstream(params, t, s, ab, c, part);
            store_part(in_range ? g : tfloat{}, &t.g[c * kLanes + offset]);
          }
        } else if (params.activation == Activation::kSigmoid) {
          for (int64_t c = 0; c < classes; ++c) {
            tfloat p, q;  // both sides without cancellation, as the binary loops
            sigmoid_pair(load_part<tfloat>(&t.p[c * kLanes + offset]), p, q);
            const tfloat g = part_upstream(params, t, s, ab, c, part);
            store_part(g * (p * q), &t.g[c * kLanes + offset]);
          }
        } else {  // softmax: p̂_c = e_c / Σ e, the division applied where p̂ is used
          float* column = t.p.data() + offset;
          const tfloat top = part_max(params, t, part);
          tfloat total = {}, dot = {};
          for (int64_t c = 0; c < classes; ++c) {
            const tfloat e = exp_nonpositive(load_part<tfloat>(column + c * kLanes) - top);
            store_part(e, column + c * kLanes);
            total += e;
            if constexpr (kIouTerms) {
              const tfloat g = part_upstream(params, t, s, ab, c, part);
              store_part(g, &t.g[c * kLanes + offset]);
              dot += g * e;
            }
          }
          const tfloat inverse = 1.0f / total;
          dot *= inverse;  // Σ_k g_k·p̂_k
          for (int64_t c = 0; c < classes; ++c) {
            const tfloat p = load_part<tfloat>(&t.p[c * kLanes + offset]) * inverse;
            if constexpr (kIouTerms) {
              const tfloat g = load_part<tfloat>(&t.g[c * kLanes + offset]);
              store_part(p * (g - dot), &t.g[c * kLanes + offset]);
            } else {
              store_part(p, &t.g[c * kLanes + offset]);
            }
          }
        }
      }
      transpose_out(t.g.data(), classes, count, converted.data(), grad + i * classes);
    }
  }
}

template <typename TLabel, typename TPred>
void multiclass_gradient(const TLabel* labels, const TPred* x, const float* weights,
                         int64_t group_pixels, const float* coef,
                         const MultiClassParams& params, int64_t first, int64_t last,
                         TPred* grad) {
  multiclass_gradient_pass<true>(labels, x, weights, group_pixels, coef, params, first, last,
                                 grad);
}

}  // namespace WIOU_ISA_NAMESPACE
}  // namespace wiou

#endif  // WIOU_OPS_KERNELS_WIOU_MULTICLASS_H_
