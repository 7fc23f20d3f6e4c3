/* The elementwise passes of the RBM's CD-k step on a CPU, fused (Hinton 2002; Bernoulli draws from the SplitMix64
 * counter hash of Steele, Lea & Flood 2014): each function is one pass over a (rows, n) float32 buffer that eager
 * PyTorch would make three to eight kernel calls of. genlib/kernels/cd.py compiles this file on first use and calls it
 * through ctypes; the matrix products stay with PyTorch's BLAS.
 *
 * Random bits: draw i of a call with key K and counter C compares the top 24 bits of mix64(K + (C + i) * GAMMA), the
 * SplitMix64 output at position C + i of the stream K, with p * 2^24, so P(draw = 1) = ceil(p 2^24) / 2^24, within
 * 6e-8 of p. Counters never repeat within a model's run (the caller advances C past every call), so no two draws
 * share a word. Every function is pure C99 with no threads: results do not depend on the thread count.
 *
 * The products with a binary operand (genlib_binary_mm, genlib_binary_tmm) are sums of the rows of the other operand
 * at the ones: MNIST's binarised pixels are ~13% ones, and the chain's samples ~19%, so a row-sum does a sixth to a
 * fifth of a dense product's multiply-adds and, with one thread on the EPYC this was measured on, takes 0.26-0.38 ms
 * against BLAS's 0.73 ms for 100 x 784 x 500. Denser operands are left to BLAS (the caller's fallback).
 */
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#define GAMMA 0x9E3779B97F4A7C15ULL
#define TWO24 16777216.0f

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* exp(x) for x in [-87, 88] (clamped), to 2 ulp: 2^n e^r with n = round(x / ln 2), |r| <= ln(2) / 2 and e^r from
 * Cephes' expf polynomial. Plain arithmetic and bit shifts, so the compiler vectorises it (libm's expf it cannot
 * without -ffast-math's vector library, which not every platform has). */
static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;  /* ln 2 split in two for an exact product */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;  /* 2^n as a float's bits */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

/* log(1 + t) for t in [0, 1], to 2 ulp: 1 + t = 2^e (1 + f) with f in [sqrt(1/2) - 1, sqrt(2) - 1] taken from t
 * without forming 1 + t (which would drop a small t's bits), then Cephes' logf polynomial for log(1 + f). */
static inline float log1p_unit(float t) {
    int big = t > 0.41421356237f;
    float f = big ? (t - 1.0f) * 0.5f : t;  /* (1 + t) / 2 - 1 */
    float e = big ? 1.0f : 0.0f;
    float z = f * f;
    float y = 7.0376836292e-2f;
    y = y * f - 1.1514610310e-1f;
    y = y * f + 1.1676998740e-1f;
    y = y * f - 1.2420140846e-1f;
    y = y * f + 1.4249322787e-1f;
    y = y * f - 1.6668057665e-1f;
    y = y * f + 2.0000714765e-1f;
    y = y * f - 2.4999993993e-1f;
    y = y * f + 3.3333331174e-1f;
    y = y * f * z - 2.12194440e-4f * e - 0.5f * z;
    return f + y + 0.693359375f * e;
}

/* logistic sigmoid 1 / (1 + e^-a) */
static inline float sigmoid(float a) {
    return 1.0f / (1.0f + exp_approx(-a));
}

/* log(1 + e^a) without overflow: max(a, 0) + log1p(e^-|a|) */
static inline float softplus(float a) {
    return (a > 0.0f ? a : 0.0f) + log1p_unit(exp_approx(-fabsf(a)));
}

/* non-finite (inf or NaN), read from the bits: exponent all ones */
static inline int nonfinite(float a) {
    uint32_t u;
    memcpy(&u, &a, sizeof u);
    return (u & 0x7F800000u) == 0x7F800000u;
}

/* Two draws per random word: with h = n / 2, word j (stream position counter + j) decides element j by its top 24
 * bits and element j + h by its low 24 bits; an odd n's last element takes word h's top bits. The caller advances
 * its counter by (n + 1) / 2. */
#define HI24(w) ((float)(uint32_t)((w) >> 40))
#define LO24(w) ((float)(uint32_t)((w) & 0xFFFFFFu))
#define WORD(j) mix64(key + (counter + (uint64_t)(j)) * GAMMA)

/* s = u < p, n elements: Bernoulli(p) in {0, 1} */
void genlib_bernoulli(const float *p, float *s, int64_t n, uint64_t key, uint64_t counter) {
    int64_t h = n / 2;
    for (int64_t j = 0; j < h; j++) {
        uint64_t w = WORD(j);
        s[j] = HI24(w) < p[j] * TWO24 ? 1.0f : 0.0f;
        s[j + h] = LO24(w) < p[j + h] * TWO24 ? 1.0f : 0.0f;
    }
    if (n & 1)
        s[n - 1] = HI24(WORD(h)) < p[n - 1] * TWO24 ? 1.0f : 0.0f;
}

/* s = u < x / 255 for bytes x, n elements: binarising uint8 images without a float copy (2^24 / 255 rounds to a
 * float within 6e-8 relatively; x = 255 always fires, since every u < 2^24) */
void genlib_bernoulli_u8(const uint8_t *x, float *s, int64_t n, uint64_t key, uint64_t counter) {
    const float scale = TWO24 / 255.0f;
    int64_t h = n / 2;
    for (int64_t j = 0; j < h; j++) {
        uint64_t w = WORD(j);
        s[j] = HI24(w) < (float)x[j] * scale ? 1.0f : 0.0f;
        s[j + h] = LO24(w) < (float)x[j + h] * scale ? 1.0f : 0.0f;
    }
    if (n & 1)
        s[n - 1] = HI24(WORD(h)) < (float)x[n - 1] * scale ? 1.0f : 0.0f;
}

/* p = sigmoid(a) (p may be a itself), n elements */
void genlib_sigmoid(const float *a, float *p, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        p[i] = sigmoid(a[i]);
}

/* The visible layer's statistics of a CD step over rows = B examples of n_v units:
 *   dv[j] = sum_r v0[r, j] - vk[r, j] (n_v), v0_sum[j] = sum_r v0[r, j] (n_v),
 *   out[0] = sum (recon - v0)^2 over the first recon_rows rows (the reconstruction error times recon_rows n_v),
 *   out[1] = dv . b.
 * out[0] is NaN when recon holds a non-finite value (a diverged model must show in the metrics). */
void genlib_visible_stats(const float *recon, int64_t recon_rows, const float *v0, const float *vk, const float *b,
                          int64_t rows, int64_t n_v, float *dv, float *v0_sum, double *out) {
    int bad = 0;
    double sq = 0.0;
    for (int64_t j = 0; j < n_v; j++) {
        dv[j] = 0.0f;
        v0_sum[j] = 0.0f;
    }
    for (int64_t r = 0; r < rows; r++) {
        const float *x = recon + r * n_v, *a = v0 + r * n_v, *z = vk + r * n_v;
        for (int64_t j = 0; j < n_v; j++) {
            v0_sum[j] += a[j];
            dv[j] += a[j] - z[j];  /* sums of at most 2^24 values in {-1, 0, 1}: exact in float32 */
        }
        if (r >= recon_rows)
            continue;
        float row_sq = 0.0f;
        int row_bad = 0;
        for (int64_t j = 0; j < n_v; j++) {
            float d = x[j] - a[j];
            row_sq += d * d;
            row_bad |= nonfinite(x[j]);
        }
        sq += row_sq;
        bad |= row_bad;
    }
    double dvb = 0.0;
    for (int64_t j = 0; j < n_v; j++)
        dvb += (double)dv[j] * b[j];
    out[0] = bad ? NAN : sq;
    out[1] = dvb;
}

/* The hidden layer's statistics over logits a = [W v0 + c; W vk + c] and p = [p(h|v0); p(h|vk)], both (2B, n_h):
 *   dh[j] = sum_r p0[r, j] - pk[r, j], p0_sum[j] = sum_r p0[r, j] (n_h),
 *   out[2] = sum softplus(a0) - sum softplus(ak) (NaN when a holds a non-finite value);
 * and p's second half is negated in place, [p(h|v0); -p(h|vk)], ready for the gradient's one matmul. */
void genlib_hidden_stats(const float *a, float *p, int64_t rows, int64_t n_h, float *dh, float *p0_sum,
                         double *out) {
    int bad = 0;
    double sp = 0.0;
    for (int64_t j = 0; j < n_h; j++) {
        dh[j] = 0.0f;
        p0_sum[j] = 0.0f;
    }
    for (int64_t r = 0; r < 2 * rows; r++) {
        const float *x = a + r * n_h;
        float *q = p + r * n_h;
        float row_sp = 0.0f;
        int row_bad = 0;
        for (int64_t j = 0; j < n_h; j++) {
            row_sp += softplus(x[j]);
            row_bad |= nonfinite(x[j]);
        }
        if (r < rows) {
            for (int64_t j = 0; j < n_h; j++) {
                p0_sum[j] += q[j];
                dh[j] += q[j];
            }
            sp += row_sp;
        } else {
            for (int64_t j = 0; j < n_h; j++) {
                dh[j] -= q[j];
                q[j] = -q[j];
            }
            sp -= row_sp;
        }
        bad |= row_bad;
    }
    out[2] = bad ? NAN : sp;
}

/* The ones of a binary (n, k) matrix as lists: by row (starts (n + 1), columns) or by column (starts (k + 1), rows),
 * by a counting sort; NULL where they number more than max_ones (left to BLAS), where v holds a value other than 0
 * and 1 (not binary: left to BLAS, which takes any values), or where memory is short. */
typedef struct { int64_t *starts; int32_t *index; } Ones;

static Ones ones_of(const float *v, int64_t n, int64_t k, int64_t max_ones, int by_column) {
    Ones o = {NULL, NULL};
    int64_t lists = by_column ? k : n;
    int64_t *starts = calloc((size_t)lists + 2, sizeof *starts);
    if (!starts)
        return o;
    int other = 0;  /* a value neither 0 nor 1: not a binary matrix, refused */
    int64_t seen = 0;
    for (int64_t b = 0; b < n; b++) {  /* counts, shifted by two: after the prefix sums, starts[l + 1] is list l's */
        for (int64_t i = 0; i < k; i++) {
            float x = v[b * k + i];
            starts[(by_column ? i : b) + 2] += x != 0.0f;
            seen += x != 0.0f;
            other |= x != 0.0f && x != 1.0f;
        }
        if (seen > max_ones || other) {  /* refused: stop counting (a dense batch costs a part of one pass) */
            free(starts);
            return o;
        }
    }
    for (int64_t l = 0; l < lists; l++)
        starts[l + 2] += starts[l + 1];
    int64_t total = starts[lists + 1];
    int32_t *index = total <= max_ones && !other ? malloc(((size_t)total + 1) * sizeof *index) : NULL;
    if (!index) {
        free(starts);
        return o;
    }
    for (int64_t b = 0; b < n; b++)  /* fill: starts[l + 1] runs from list l's start to its end */
        for (int64_t i = 0; i < k; i++)
            if (v[b * k + i] != 0.0f)
                index[starts[(by_column ? i : b) + 1]++] = (int32_t)(by_column ? b : i);
    o.starts = starts;  /* now starts[l] .. starts[l + 1] is list l */
    o.index = index;
    return o;
}

/* out[0 .. m) = init + the rows src[idx[t] * m ..] for t in [lo, hi): four rows a pass over out */
static void sum_rows(float *out, const float *init, const float *src, const int32_t *idx, int64_t lo, int64_t hi,
                     int64_t m) {
    if (init)
        memcpy(out, init, (size_t)m * sizeof *out);
    else
        memset(out, 0, (size_t)m * sizeof *out);
    int64_t t = lo;
    for (; t + 4 <= hi; t += 4) {
        const float *r0 = src + idx[t] * m, *r1 = src + idx[t + 1] * m, *r2 = src + idx[t + 2] * m,
                    *r3 = src + idx[t + 3] * m;
        for (int64_t j = 0; j < m; j++)
            out[j] += (r0[j] + r1[j]) + (r2[j] + r3[j]);
    }
    for (; t < hi; t++) {
        const float *r = src + idx[t] * m;
        for (int64_t j = 0; j < m; j++)
            out[j] += r[j];
    }
}

/* Each list l of v's ones (by row or by column): out row l = init (or zeros) + the rows of src it names; 1 where
 * ones_of refuses v, out untouched */
static int64_t sums_over_ones(const float *v, int64_t n, int64_t k, int64_t max_ones, int by_column, const float *src,
                              const float *init, float *out, int64_t m) {
    Ones o = ones_of(v, n, k, max_ones, by_column);
    if (!o.starts)
        return 1;
    for (int64_t l = 0; l < (by_column ? k : n); l++)
        sum_rows(out + l * m, init, src, o.index, o.starts[l], o.starts[l + 1], m);
    free(o.starts);
    free(o.index);
    return 0;
}

/* out (n, m) = bias (m) + v (n, k) @ wt (k, m) for v in {0, 1}: each row the sum of wt's rows at its ones.
 * Returns 0, or 1 without writing out when v has more than max_ones ones or is not binary. */
int64_t genlib_binary_mm(const float *v, const float *wt, const float *bias, float *out, int64_t n, int64_t k,
                         int64_t m, int64_t max_ones) {
    return sums_over_ones(v, n, k, max_ones, 0, wt, bias, out, m);
}

/* out (k, m) = v^T (k, n) @ p (n, m) for v in {0, 1}: row i the sum of p's rows where column i of v is one.
 * Returns 0, or 1 without writing out when v has more than max_ones ones or is not binary. */
int64_t genlib_binary_tmm(const float *v, const float *p, float *out, int64_t n, int64_t k, int64_t m,
                          int64_t max_ones) {
    return sums_over_ones(v, n, k, max_ones, 1, p, NULL, out, m);
}
