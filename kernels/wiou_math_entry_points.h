// The loops' entry points, declared once and included inside a namespace: in
// wiou (the run-time dispatchers, wiou_dispatch.cc) and in each wiou::isa_<level>
// (the loops of wiou_math.h compiled for that level). No include guard on
// purpose; no #include here (this text lands inside a namespace).
// Needs wiou_math_api.h's types first.

// Partial sums of blocks [first, last) into partials[kMaxTerms·block ...].
// weights: a weight map with y's shape, or nullptr for s = 1.
// masks: nullptr, or (without weights and logits) the label masks, written in
// the same pass; then soft_blocks[block] = 1 if the block holds a label other
// than 0 and 1 with p inside [ε, 1-ε] (its gradient needs y and p; the masks of
// such a block mean nothing), else 0.
template <typename TTrue, typename TPred>
void iou_sums_blocks(const TTrue* y, const TPred* p, const float* weights, int64_t group_size,
                     const Params& params, int64_t first, int64_t last, float* partials,
                     uint32_t* masks = nullptr, uint8_t* soft_blocks = nullptr);

// sums[g·K + t] for every group from the block partials, pairwise in a fixed order.
void combine_partials(const float* partials, int64_t groups, int64_t blocks_per_group,
                      int terms, float* sums);

// m·(a_g·y + b_g·(1 - y))·dp̂ for elements [begin, end), written in p's dtype;
// coef[2·g] = a_g, coef[2·g + 1] = b_g (upstream already folded in);
// dp̂ = 1[ε ≤ p ≤ 1-ε] (ties pass, TensorFlow's clip rule), or p̂·q̂ for logits.
template <typename TTrue, typename TPred>
void iou_gradient(const TTrue* y, const TPred* p, const float* weights, int64_t group_size,
                  const float* coef, const Params& params, int64_t begin, int64_t end,
                  TPred* grad);

// The same gradient from label masks of blocks none of which is soft: per group
// a choice of 0 and the two values m·(a·y + b·(1 - y)) at y = 0 and y = 1,
// computed as iou_gradient computes them, so the results are bit-identical.
template <typename TPred>
void iou_gradient_from_masks(const uint32_t* masks, int64_t group_size, const float* coef,
                             const Params& params, int64_t begin, int64_t end, TPred* grad);

// Benchmark instrument: sum of x[begin, end) with kLanes accumulators, the
// fastest plain streaming read this CPU does (wiou-bench's byte floor).
float stream_read_sum(const float* x, int64_t begin, int64_t end);

// Benchmark instrument: the multi-class loops for uint8 ids and float32 logits with
// the IoU terms left out (multiclass_sums_blocks / multiclass_gradient with
// kIouTerms = false: same tiles, same softmax; the gradient is p̂ itself), the
// compute floor the loss's loops are measured against.
void multiclass_sums_blocks_without_iou(const uint8_t* labels, const float* x,
                                        int64_t group_pixels, const MultiClassParams& params,
                                        int64_t first, int64_t last, float* partials);
void multiclass_gradient_without_iou(const uint8_t* labels, const float* x,
                                     int64_t group_pixels, const MultiClassParams& params,
                                     int64_t first, int64_t last, float* out);

// Test instrument: out[i] = a[i]·b[i] + c[i] rounded once, as the loops' mul_add
// computes it (kernel-test checks it against std::fma at every level).
void mul_add_floats(const float* a, const float* b, const float* c, int64_t n, float* out);

// Multi-class (wiou_math_api.h): partial sums of pixel blocks [first, last) into
// partials[(block·kClassSums + sum)·C + c]. labels: ids (pixels) with params.sparse,
// else (pixels, C); weights: a weight map (pixels), or nullptr for s = 1.
template <typename TLabel, typename TPred>
void multiclass_sums_blocks(const TLabel* labels, const TPred* x, const float* weights,
                            int64_t group_pixels, const MultiClassParams& params,
                            int64_t first, int64_t last, float* partials);

// sums[(g·C + c)·kClassSums + sum] for every group from the block partials, pairwise
// in a fixed order.
void combine_multiclass_partials(const float* partials, int64_t groups,
                                 int64_t blocks_per_group, int64_t classes, float* sums);

// The VJP for pixel blocks [first, last), written in x's dtype: with
// g_c = s·(a_c·y_c + b_c), (a_c, b_c) = coef[(g·C + c)·2 + {0, 1}], the gradient is
// g_c·1[ε ≤ x_c ≤ 1-ε] (clip), g_c·p̂_c·(1 - p̂_c) (sigmoid) or
// p̂_c·(g_c - Σ_k g_k·p̂_k) (softmax, p̂ recomputed from x).
template <typename TLabel, typename TPred>
void multiclass_gradient(const TLabel* labels, const TPred* x, const float* weights,
                         int64_t group_pixels, const float* coef,
                         const MultiClassParams& params, int64_t first, int64_t last,
                         TPred* grad);
