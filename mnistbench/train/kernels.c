/* The engine's C kernels for the CPU (issue #27), compiled on first use by mnistbench/train/native.py and called
   through ctypes. Each computes exactly what the PyTorch operations it replaces compute, bit for bit, and the engine
   takes it only where a probe on this machine showed that (native.py, fastpool.py).

   - pool2x2_fwd / pool2x2_bwd: a 2x2, stride-2 max-pool of contiguous planes with the window's choice as 0..3, and
     its backward, optionally with the ReLU that LeNet-5 runs before the pool folded in after it (fastpool.py).

   Compiled with -ffp-contract=off, so the compiler fuses no multiply and add (the pool has none to fuse). */
#include <stdint.h>
#include <string.h>
#include <immintrin.h>
/* The pool works on units of four windows (eight floats of each of the windows' two rows) and takes two units per
   vector, wherever they lie: LeNet-5's pooled rows are 12 and 4 windows wide. PyTorch's max_pool2d keeps a window's
   first maximum in row-major order and lets a NaN win (the last one); as pairs: the top row's choice (b if b > a or
   b is NaN, else a), the bottom row's (d over c alike), then the bottom's over the top's by the same rule. */
static inline void deint(__m256 lo, __m256 hi, __m256* ev, __m256* od) {
  __m256 e = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0)), o = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
  *ev = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
  *od = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
}
static inline void inter(__m256 e, __m256 o, __m256* lo, __m256* hi) {
  __m256 a = _mm256_unpacklo_ps(e, o), b = _mm256_unpackhi_ps(e, o);
  *lo = _mm256_permute2f128_ps(a, b, 0x20); *hi = _mm256_permute2f128_ps(a, b, 0x31);
}
static inline __m256 wins(__m256 v, __m256 m) { return _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q)); }
static inline int wins1(float v, float m) { return (v > m) | (v != v); }

typedef struct { const float* r0; float* o; uint8_t* f; } unit;

static inline void fwd8(unit A, unit B, int64_t W, int relu) {
  __m256 a, b, c, d;
  deint(_mm256_loadu_ps(A.r0), _mm256_loadu_ps(B.r0), &a, &b);
  deint(_mm256_loadu_ps(A.r0 + W), _mm256_loadu_ps(B.r0 + W), &c, &d);
  const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f), zero = _mm256_setzero_ps();
  __m256 tb = wins(b, a), top = _mm256_blendv_ps(a, b, tb);
  __m256 bd = wins(d, c), bot = _mm256_blendv_ps(c, d, bd);
  __m256 ub = wins(bot, top), m = _mm256_blendv_ps(top, bot, ub);
  __m256 k = _mm256_blendv_ps(_mm256_and_ps(tb, one), _mm256_add_ps(two, _mm256_and_ps(bd, one)), ub);
  if (relu) m = _mm256_blendv_ps(m, zero, _mm256_cmp_ps(m, zero, _CMP_LT_OQ));
  __m256i ki = _mm256_cvtps_epi32(k);
  __m128i p8 = _mm_packus_epi16(_mm_packs_epi32(_mm256_castsi256_si128(ki), _mm256_extracti128_si256(ki, 1)), _mm_setzero_si128());
  _mm_storeu_ps(A.o, _mm256_castps256_ps128(m)); _mm_storeu_ps(B.o, _mm256_extractf128_ps(m, 1));
  uint32_t lo = (uint32_t)_mm_cvtsi128_si32(p8), hi = (uint32_t)_mm_extract_epi32(p8, 1);
  memcpy(A.f, &lo, 4); memcpy(B.f, &hi, 4);
}
static inline void fwd1(const float* r0, int64_t W, float* o, uint8_t* f, int relu) {
  float a = r0[0], b = r0[1], c = r0[W], d = r0[W + 1];
  int tb = wins1(b, a); float top = tb ? b : a;
  int bd = wins1(d, c); float bot = bd ? d : c;
  int ub = wins1(bot, top); float m = ub ? bot : top;
  if (relu && m < 0.0f) m = 0.0f;
  *o = m; *f = (uint8_t)(ub ? 2 + bd : tb);
}
void pool2x2_fwd(const float* x, float* out, uint8_t* off, int64_t planes, int64_t H, int64_t W, int relu) {
  const int64_t w = W / 2, rows = planes * (H / 2);
  unit pend; int have = 0;
  for (int64_t r = 0; r < rows; r++) {
    const float* r0 = x + 2 * r * W; float* o = out + r * w; uint8_t* f = off + r * w;
    int64_t j = 0;
    for (; j + 4 <= w; j += 4) {
      unit u = {r0 + 2 * j, o + j, f + j};
      if (have) { fwd8(pend, u, W, relu); have = 0; } else { pend = u; have = 1; }
    }
    for (; j < w; j++) fwd1(r0 + 2 * j, W, o + j, f + j, relu);
  }
  if (have) fwd8(pend, pend, W, relu);
}

typedef struct { float* r0; const float* g; const float* o; const uint8_t* f; } bunit;
static inline void bwd8(bunit A, bunit B, int64_t W, int relu) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 gv = _mm256_set_m128(_mm_loadu_ps(B.g), _mm_loadu_ps(A.g));
  uint32_t fa, fb; memcpy(&fa, A.f, 4); memcpy(&fb, B.f, 4);
  __m256i k = _mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, (int)fb, (int)fa));
  if (relu) {
    __m256 ov = _mm256_set_m128(_mm_loadu_ps(B.o), _mm_loadu_ps(A.o));
    gv = _mm256_blendv_ps(gv, zero, _mm256_cmp_ps(ov, zero, _CMP_LE_OQ));
  }
  gv = _mm256_add_ps(zero, gv); /* 0 + g, as max_pool2d's backward accumulates into zeros (-0 becomes +0) */
  __m256 e0 = _mm256_and_ps(gv, _mm256_castsi256_ps(_mm256_cmpeq_epi32(k, _mm256_set1_epi32(0))));
  __m256 e1 = _mm256_and_ps(gv, _mm256_castsi256_ps(_mm256_cmpeq_epi32(k, _mm256_set1_epi32(1))));
  __m256 e2 = _mm256_and_ps(gv, _mm256_castsi256_ps(_mm256_cmpeq_epi32(k, _mm256_set1_epi32(2))));
  __m256 e3 = _mm256_and_ps(gv, _mm256_castsi256_ps(_mm256_cmpeq_epi32(k, _mm256_set1_epi32(3))));
  __m256 l0, h0, l1, h1;
  inter(e0, e1, &l0, &h0); inter(e2, e3, &l1, &h1);
  _mm256_storeu_ps(A.r0, l0); _mm256_storeu_ps(B.r0, h0);
  _mm256_storeu_ps(A.r0 + W, l1); _mm256_storeu_ps(B.r0 + W, h1);
}
static inline void bwd1(float* r0, int64_t W, float g, float o, uint8_t k, int relu) {
  if (relu && o <= 0.0f) g = 0.0f;
  g = 0.0f + g;
  r0[0] = k == 0 ? g : 0.0f; r0[1] = k == 1 ? g : 0.0f; r0[W] = k == 2 ? g : 0.0f; r0[W + 1] = k == 3 ? g : 0.0f;
}
void pool2x2_bwd(const float* g, const float* out, const uint8_t* off, float* gx, int64_t planes, int64_t H, int64_t W, int relu) {
  const int64_t w = W / 2, rows = planes * (H / 2);
  bunit pend; int have = 0;
  for (int64_t r = 0; r < rows; r++) {
    float* r0 = gx + 2 * r * W;
    int64_t j = 0;
    for (; j + 4 <= w; j += 4) {
      bunit u = {r0 + 2 * j, g + r * w + j, out + r * w + j, off + r * w + j};
      if (have) { bwd8(pend, u, W, relu); have = 0; } else { pend = u; have = 1; }
    }
    for (; j < w; j++) bwd1(r0 + 2 * j, W, g[r * w + j], out[r * w + j], off[r * w + j], relu);
  }
  if (have) bwd8(pend, pend, W, relu);
}

/* One Adam step of n elements: PyTorch's batched (foreach) Adam, operation by operation, with its roundings:
   m.lerp_(g, w)  (for |w| < 0.5: fma(w, g - m, m); else fma(w - 1, g - m, g), as ATen's vectorized lerp);
   v.mul_(beta2).addcmul_(g, g, value=c2)  (v * beta2, then fma(c2 * g, g, v): ATen's addcmul as compiled);
   d = sqrt(v) / bc2 + eps  (the square root by MKL's vsSqrt, the function torch.sqrt calls on the CPU);
   p.addcdiv_(m, d, value=step)  (p + (step * m) / d). In blocks of BLOCK elements, so the square roots' block
   stays in the first-level cache. */
