/*
** test_layers.c - the forward layers of core/layers/ against their plain-loop
** twins, hand-computed values and the conv / transposed-conv adjoint identity.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "layers.h"

/* ---- helpers ------------------------------------------------------------ */

typedef struct test_rng { uint32_t s; } test_rng;

/* xorshift32, uniform in [-1, 1) */
static float rng_unit(test_rng *r) {
  r->s ^= r->s << 13;
  r->s ^= r->s >> 17;
  r->s ^= r->s << 5;
  return (float)((r->s >> 8) * (1.0 / 8388608.0) - 1.0);
}

static float *fbuf(size_t count) {
  float *p = anom_malloc((count ? count : 1) * sizeof(float));
  assert_non_null(p);
  return p;
}

static void fill_rand(float *p, size_t count, test_rng *r, float scale) {
  for(size_t i = 0; i < count; i++) p[i] = rng_unit(r) * scale;
}

static void fill_value(float *p, size_t count, float v) {
  for(size_t i = 0; i < count; i++) p[i] = v;
}

/* max over i of |got - ref| / max(1, |ref|); NaN anywhere gives +inf */
static double max_rel_err(const float *got, const float *ref, size_t count) {
  double worst = 0.0;
  for(size_t i = 0; i < count; i++){
    double d = fabs((double)got[i] - ref[i]);
    double scale = fabs((double)ref[i]) > 1.0 ? fabs((double)ref[i]) : 1.0;
    if( !(d == d) || isinf(got[i]) ) return INFINITY;
    if( d / scale > worst ) worst = d / scale;
  }
  return worst;
}

static void assert_floats(const float *got, const float *want, size_t count,
                          double tol) {
  for(size_t i = 0; i < count; i++){
    if( !(fabs((double)got[i] - want[i]) <= tol) ){
      print_error("element %zu: got %.9g, want %.9g\n", i, got[i], want[i]);
      fail();
    }
  }
}

static double dot(const float *a, const float *b, size_t count) {
  double acc = 0.0;
  for(size_t i = 0; i < count; i++) acc += (double)a[i] * b[i];
  return acc;
}

/* ---- gemm ---------------------------------------------------------------- */

static void test_gemm_hand(void **state) {
  (void)state;
  const float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8};
  const float ab[4] = {19, 22, 43, 50};   /* [1 2; 3 4] [5 6; 7 8] */
  const float atb[4] = {26, 30, 38, 44};  /* [1 3; 2 4] [5 6; 7 8] */
  const float abt[4] = {17, 23, 39, 53};  /* [1 2; 3 4] [5 7; 6 8] */
  float c[4];
  gemm(0, 0, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
  assert_floats(c, ab, 4, 0);
  gemm_naive(0, 0, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
  assert_floats(c, ab, 4, 0);
  gemm(1, 0, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
  assert_floats(c, atb, 4, 0);
  gemm_naive(1, 0, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
  assert_floats(c, atb, 4, 0);
  gemm(0, 1, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
  assert_floats(c, abt, 4, 0);
  /* alpha and beta: 2 * AB + 0.5 * AB = 2.5 AB */
  memcpy(c, ab, sizeof(c));
  gemm(0, 0, 2, 2, 2, 2.0f, a, 2, b, 2, 0.5f, c, 2);
  const float ab25[4] = {47.5f, 55, 107.5f, 125};
  assert_floats(c, ab25, 4, 0);
}

/* gemm vs gemm_naive, padded leading dimensions, pad columns untouched */
static void check_gemm(int ta, int tb, int m, int n, int k, float alpha,
                       float beta, test_rng *r) {
  int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 2, ldc = n + 1;
  size_t na = (size_t)(ta ? k : m) * lda, nb = (size_t)(tb ? n : k) * ldb;
  size_t nc = (size_t)m * ldc;
  float *a = fbuf(na), *b = fbuf(nb), *c1 = fbuf(nc), *c2 = fbuf(nc);
  fill_rand(a, na, r, 1.0f);
  fill_rand(b, nb, r, 1.0f);
  if( beta == 0.0f ){
    fill_value(c1, nc, NAN);
  }else{
    fill_rand(c1, nc, r, 1.0f);
  }
  for(int i = 0; i < m; i++) c1[(size_t)i * ldc + n] = 1234.5f; /* pad column */
  memcpy(c2, c1, nc * sizeof(float));
  gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c1, ldc);
  gemm_naive(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c2, ldc);
  for(int i = 0; i < m; i++){
    assert_true(c1[(size_t)i * ldc + n] == 1234.5f);
    assert_true(c2[(size_t)i * ldc + n] == 1234.5f);
    for(int j = 0; j < n; j++){
      assert_true(isfinite(c1[(size_t)i * ldc + j]));
      assert_true(isfinite(c2[(size_t)i * ldc + j]));
    }
  }
  double err = max_rel_err(c1, c2, nc);
  if( !(err <= 1e-5) ){
    print_error("gemm ta=%d tb=%d m=%d n=%d k=%d beta=%g: rel err %g\n", ta,
                tb, m, n, k, beta, err);
    fail();
  }
  anom_free(a); anom_free(b); anom_free(c1); anom_free(c2);
}

static void test_gemm_vs_naive(void **state) {
  (void)state;
  static const int sizes[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 13, 9},
                                 {64, 33, 65}, {2, 1, 31}, {1, 40, 3},
                                 /* one column or one row: sgemv */
                                 {100, 1, 300}, {1, 1, 50}, {1, 257, 20}, {33, 1, 1}};
  test_rng r = {12345};
  for(int ta = 0; ta < 2; ta++)
  for(int tb = 0; tb < 2; tb++)
  for(size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++){
    const int *s = sizes[i];
    check_gemm(ta, tb, s[0], s[1], s[2], 1.0f, 0.0f, &r);
    check_gemm(ta, tb, s[0], s[1], s[2], 1.5f, -0.5f, &r);
    check_gemm(ta, tb, s[0], s[1], s[2], -0.25f, 1.0f, &r);
    check_gemm(ta, tb, s[0], s[1], s[2], 0.75f, 0.0f, &r); /* NaN-filled C */
  }
}

static void test_gemm_empty_k(void **state) {
  (void)state;
  const float a[1] = {7}, b[1] = {9};
  float c[4] = {2, 4, 6, 8};
  const float half[4] = {1, 2, 3, 4}, zero[4] = {0, 0, 0, 0};
  gemm(0, 0, 2, 2, 0, 1.0f, a, 1, b, 2, 0.5f, c, 2); /* C = 0.5 C */
  assert_floats(c, half, 4, 0);
  fill_value(c, 4, NAN);
  gemm(0, 0, 2, 2, 0, 1.0f, a, 1, b, 2, 0.0f, c, 2); /* C = 0, not read */
  assert_floats(c, zero, 4, 0);
}

/* ---- conv_shape_init ----------------------------------------------------- */

static void test_conv_shape_ok(void **state) {
  (void)state;
  conv_shape s;
  /* GANomaly encoder: 32x32 -> 16x16, then 4x4 -> 1x1 */
  assert_int_equal(conv_shape_init(&s, 3, 32, 32, 64, 4, 2, 1, 0), 0);
  assert_int_equal(s.oh, 16);
  assert_int_equal(s.ow, 16);
  assert_int_equal(s.oc, 64);
  assert_int_equal(s.transposed, 0);
  /* one image: its column matrix and its output */
  assert_int_equal(conv_work_floats(&s, 1), (3 * 16 + 64) * 16 * 16);
  /* 2048 columns a gemm: 8 images of 16x16 positions */
  assert_int_equal(conv_chunk(&s, 64), 8);
  assert_int_equal(conv_chunk(&s, 5), 5);
  assert_int_equal(conv_work_floats(&s, 64), 8 * (3 * 16 + 64) * 16 * 16);
  assert_int_equal(conv_shape_init(&s, 256, 4, 4, 100, 4, 1, 0, 0), 0);
  assert_int_equal(s.oh, 1);
  assert_int_equal(s.ow, 1);
  /* non-square, odd: (5 + 2 - 3) / 2 + 1 = 3, (8 + 2 - 3) / 2 + 1 = 4 */
  assert_int_equal(conv_shape_init(&s, 1, 5, 8, 1, 3, 2, 1, 0), 0);
  assert_int_equal(s.oh, 3);
  assert_int_equal(s.ow, 4);
  /* GANomaly decoder: 1x1 -> 4x4, then 4x4 -> 8x8 */
  assert_int_equal(conv_shape_init(&s, 100, 1, 1, 256, 4, 1, 0, 7), 0);
  assert_int_equal(s.transposed, 1);
  assert_int_equal(s.oh, 4);
  assert_int_equal(s.ow, 4);
  /* transposed: the column matrix and the input */
  assert_int_equal(conv_work_floats(&s, 1), 256 * 16 * 1 * 1 + 100);
  assert_int_equal(conv_shape_init(&s, 8, 4, 3, 4, 4, 2, 1, 1), 0);
  assert_int_equal(s.oh, 8);
  assert_int_equal(s.ow, 6);
  assert_int_equal(conv_work_floats(&s, 1), 4 * 16 * 4 * 3 + 8 * 4 * 3);
  /* just under INT_MAX: (2^15 - 1) * 256 * 256 = 2^31 - 2^16 */
  assert_int_equal(conv_shape_init(&s, 32767, 256, 256, 1, 1, 1, 0, 0), 0);
  assert_int_equal(conv_work_floats(&s, 1), (size_t)32767 * 65536 + 65536);
  /* one image is over the 2 MiB a chunk aims at: still one at a time */
  assert_int_equal(conv_chunk(&s, 64), 1);
}

static void test_conv_shape_errors(void **state) {
  (void)state;
  conv_shape s;
  static const int bad[][8] = {
    /* c, h, w, oc, k, stride, pad, transposed */
    {0, 4, 4, 1, 3, 1, 1, 0},    /* no input channels */
    {-1, 4, 4, 1, 3, 1, 1, 0},
    {1, 0, 4, 1, 3, 1, 1, 0},    /* empty height */
    {1, 4, -4, 1, 3, 1, 1, 0},   /* negative width */
    {1, 4, 4, 0, 3, 1, 1, 0},    /* no output channels */
    {1, 4, 4, 1, 0, 1, 1, 0},    /* empty kernel */
    {1, 4, 4, 1, 3, 0, 1, 0},    /* stride 0 */
    {1, 4, 4, 1, 3, -2, 1, 1},
    {1, 4, 4, 1, 3, 1, -1, 0},   /* negative pad */
    {1, 3, 3, 1, 4, 1, 0, 0},    /* kernel 4 over a 3x3 input: empty */
    {1, 8, 2, 1, 5, 2, 1, 0},    /* 2 + 2 - 5 < 0 across */
    {1, 1, 1, 1, 1, 1, 1, 1},    /* transposed: 0 - 2 + 1 = -1 */
    {1, 1, 4, 1, 2, 1, 1, 1},    /* transposed: 0 - 2 + 2 = 0 rows */
    {32768, 256, 256, 1, 1, 1, 0, 0},  /* C*K*K*OH*OW = 2^31 */
    {1, 65536, 65536, 1, 1, 1, 0, 0},  /* C*H*W = 2^32 */
    {65536, 1, 1, 65536, 1, 1, 0, 0},  /* weight C*OC*K*K = 2^32 */
    {1, 16, 16, 65536, 16, 1, 0, 1},   /* transposed OC*K*K*H*W = 2^32 */
    {1, INT_MAX, 1, 1, 1, 2, 0, 1},    /* transposed OH = 2 (2^31 - 2) + 1 */
    {1, INT_MAX, 1, 1, 3, 1, INT_MAX, 0}, /* h + 2 pad passes int */
  };
  for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
    const int *b = bad[i];
    memset(&s, 0x55, sizeof(s));
    int rc = conv_shape_init(&s, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]);
    if( rc != -1 ){
      print_error("case %zu: conv_shape_init returned %d, want -1\n", i, rc);
      fail();
    }
    /* a refused shape is left all zero, never half-filled */
    assert_int_equal(s.c, 0);
    assert_int_equal(s.oh, 0);
    assert_int_equal(s.ow, 0);
    assert_int_equal(s.k, 0);
  }
}

/* ---- conv2d --------------------------------------------------------------- */

/* Golden: 1 channel, in 3x3 = [1 2 3; 4 5 6; 7 8 9], kernel 2x2 = [1 2; 3 4]. */
static void test_conv2d_hand(void **state) {
  (void)state;
  const float in[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, w[4] = {1, 2, 3, 4};
  const float bias[1] = {0.5f};
  float out[4], work[32];
  conv_shape s;
  /*
  ** stride 1, pad 0 -> 2x2, each output the window dotted with [1 2 3 4]:
  **   [1 2 4 5] -> 1 + 4 + 12 + 20 = 37    [2 3 5 6] -> 2 + 6 + 15 + 24 = 47
  **   [4 5 7 8] -> 4 + 10 + 21 + 32 = 67   [5 6 8 9] -> 5 + 12 + 24 + 36 = 77
  ** plus bias 0.5.
  */
  const float want1[4] = {37.5f, 47.5f, 67.5f, 77.5f};
  assert_int_equal(conv_shape_init(&s, 1, 3, 3, 1, 2, 1, 0, 0), 0);
  assert_true(conv_work_floats(&s, 1) <= 32);
  conv2d_forward(&s, 1, out, in, w, bias, work);
  assert_floats(out, want1, 4, 0);
  conv2d_forward_naive(&s, 1, out, in, w, bias);
  assert_floats(out, want1, 4, 0);
  /*
  ** stride 2, pad 1 -> (3 + 2 - 2) / 2 + 1 = 2. Windows start at rows/cols
  ** -1 and 1; taps on the zero border drop out:
  **   (0,0): rows -1..0, cols -1..0 -> only in[0,0] w[1,1]      = 1*4 = 4
  **   (0,1): rows -1..0, cols  1..2 -> in[0,1] w[1,0] + in[0,2] w[1,1]
  **                                  = 2*3 + 3*4 = 18
  **   (1,0): rows  1..2, cols -1..0 -> in[1,0] w[0,1] + in[2,0] w[1,1]
  **                                  = 4*2 + 7*4 = 36
  **   (1,1): rows  1..2, cols  1..2 -> 5*1 + 6*2 + 8*3 + 9*4 = 77
  */
  const float want2[4] = {4, 18, 36, 77};
  assert_int_equal(conv_shape_init(&s, 1, 3, 3, 1, 2, 2, 1, 0), 0);
  assert_int_equal(s.oh, 2);
  fill_value(out, 4, NAN);
  conv2d_forward(&s, 1, out, in, w, NULL, work);
  assert_floats(out, want2, 4, 0);
  conv2d_forward_naive(&s, 1, out, in, w, NULL);
  assert_floats(out, want2, 4, 0);
}

/* Golden for the weight layout: C = 2, OC = 2, 1x1 kernel on one pixel.
** Conv2d weight (OC, C) = [1 2; 3 4], in = [10, 100]:
**   out[0] = 1*10 + 2*100 = 210, out[1] = 3*10 + 4*100 = 430. */
static void test_conv2d_layout(void **state) {
  (void)state;
  const float in[2] = {10, 100}, w[4] = {1, 2, 3, 4}, want[2] = {210, 430};
  float out[2], work[4];
  conv_shape s;
  assert_int_equal(conv_shape_init(&s, 2, 1, 1, 2, 1, 1, 0, 0), 0);
  conv2d_forward(&s, 1, out, in, w, NULL, work);
  assert_floats(out, want, 2, 0);
  conv2d_forward_naive(&s, 1, out, in, w, NULL);
  assert_floats(out, want, 2, 0);
}

typedef struct kernel_case { int k, stride, pad; } kernel_case;

/* Run forward and naive on random data, 1e-5 relative. 0 if shape invalid. */
static int check_conv(int transposed, int c, int h, int w, int oc,
                      kernel_case kc, int n, int with_bias, test_rng *r) {
  conv_shape s;
  if( conv_shape_init(&s, c, h, w, oc, kc.k, kc.stride, kc.pad, transposed) )
    return 0;
  size_t nin = (size_t)n * c * h * w, nout = (size_t)n * oc * s.oh * s.ow;
  size_t nw = (size_t)oc * c * kc.k * kc.k, nwork = conv_work_floats(&s, n);
  float *in = fbuf(nin), *wt = fbuf(nw), *bias = fbuf((size_t)oc);
  float *out = fbuf(nout), *ref = fbuf(nout), *work = fbuf(nwork);
  /* weights at 1/sqrt(fan in), as a trained net keeps outputs near 1 */
  fill_rand(in, nin, r, 1.0f);
  fill_rand(wt, nw, r, 1.0f / sqrtf((float)c * kc.k * kc.k));
  fill_rand(bias, (size_t)oc, r, 1.0f);
  fill_value(out, nout, NAN);  /* forward must not read its output */
  fill_value(work, nwork, NAN); /* nor stale scratch */
  fill_value(ref, nout, NAN);
  const float *b = with_bias ? bias : NULL;
  if( transposed ){
    conv_transpose2d_forward(&s, n, out, in, wt, b, work);
    conv_transpose2d_forward_naive(&s, n, ref, in, wt, b);
  }else{
    conv2d_forward(&s, n, out, in, wt, b, work);
    conv2d_forward_naive(&s, n, ref, in, wt, b);
  }
  double err = max_rel_err(out, ref, nout);
  if( !(err <= 1e-5) ){
    print_error("%s c=%d h=%d w=%d oc=%d k=%d s=%d p=%d n=%d bias=%d: "
                "rel err %g\n", transposed ? "convT" : "conv", c, h, w, oc,
                kc.k, kc.stride, kc.pad, n, with_bias, err);
    fail();
  }
  anom_free(in); anom_free(wt); anom_free(bias);
  anom_free(out); anom_free(ref); anom_free(work);
  return 1;
}

static const int chans[][2] = {{1, 1}, {3, 7}, {7, 3}, {16, 16}, {1, 16},
                               {16, 3}, {3, 1}};

static void test_conv2d_vs_naive(void **state) {
  (void)state;
  static const kernel_case kernels[] = {
    {4, 2, 1}, {4, 1, 0}, {3, 1, 1}, {1, 1, 0},   /* GANomaly's */
    {3, 2, 1}, {5, 3, 2}, {2, 2, 0}, {1, 2, 0},   /* odd strides, 1x1 strided */
    {3, 1, 0}, {4, 1, 3}, {1, 1, 2},              /* no pad, pad >= k - 1 */
  };
  static const int sizes[][2] = {{4, 4}, {5, 5}, {8, 8}, {32, 32},
                                 {4, 5}, {8, 32}, {32, 5}};
  test_rng r = {777};
  int runs = 0;
  for(size_t ki = 0; ki < sizeof(kernels) / sizeof(kernels[0]); ki++)
  for(size_t ci = 0; ci < sizeof(chans) / sizeof(chans[0]); ci++)
  for(size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++){
    int n = (ci + si) % 2 ? 3 : 1, with_bias = (ki + ci + si) % 2;
    runs += check_conv(0, chans[ci][0], sizes[si][0], sizes[si][1],
                       chans[ci][1], kernels[ki], n, with_bias, &r);
  }
  /* every n and bias combination on the GANomaly shapes */
  for(size_t ki = 0; ki < 4; ki++)
  for(int n = 1; n <= 3; n += 2)
  for(int with_bias = 0; with_bias < 2; with_bias++)
    runs += check_conv(0, 3, 8, 5, 7, kernels[ki], n, with_bias, &r);
  assert_true(runs > 500);
}

/* Batches larger than a chunk: several gemms of several images each, and a
** last chunk that is short (conv_chunk is 2 here, n is 5). */
static void test_conv_chunks(void **state) {
  (void)state;
  test_rng r = {4242};
  const kernel_case k421 = {4, 2, 1}, k311 = {3, 1, 1};
  conv_shape s;
  assert_int_equal(conv_shape_init(&s, 2, 64, 64, 3, 4, 2, 1, 0), 0);
  assert_int_equal(conv_chunk(&s, 5), 2);
  assert_int_equal(conv_shape_init(&s, 3, 32, 32, 2, 4, 2, 1, 1), 0);
  assert_int_equal(conv_chunk(&s, 5), 2);
  for(int with_bias = 0; with_bias < 2; with_bias++){
    assert_true(check_conv(0, 2, 64, 64, 3, k421, 5, with_bias, &r));
    assert_true(check_conv(0, 5, 32, 64, 4, k311, 3, with_bias, &r));
    assert_true(check_conv(1, 3, 32, 32, 2, k421, 5, with_bias, &r));
    assert_true(check_conv(1, 4, 32, 64, 3, k311, 3, with_bias, &r));
  }
  /* a kernel wider than im2col's table of tap ranges (16) */
  const kernel_case k17 = {17, 1, 2};
  assert_true(check_conv(0, 2, 20, 19, 3, k17, 2, 1, &r));
  assert_true(check_conv(1, 3, 5, 4, 2, k17, 2, 1, &r));
}

/* The fused epilogue: y = act(conv(x) * scale + shift) per channel equals
** the convolution without bias followed by the same steps one at a time. */
static void test_conv_fused(void **state) {
  (void)state;
  test_rng r = {99};
  const int acts[] = {ACT_NONE, ACT_LEAKY_RELU, ACT_RELU, ACT_TANH, ACT_SIGMOID};
  for(int transposed = 0; transposed < 2; transposed++)
  for(size_t ai = 0; ai < sizeof(acts) / sizeof(acts[0]); ai++)
  for(int with_scale = 0; with_scale < 2; with_scale++){
    conv_shape s;
    int c = 5, oc = 6, n = 3;
    assert_int_equal(conv_shape_init(&s, c, 8, 8, oc, 4, 2, 1, transposed), 0);
    size_t nin = (size_t)n * c * 64, hw = (size_t)s.oh * s.ow, nout = (size_t)n * oc * hw;
    size_t nw = (size_t)oc * c * 16, nwork = conv_work_floats(&s, n);
    float *in = fbuf(nin), *wt = fbuf(nw), *scale = fbuf((size_t)oc), *shift = fbuf((size_t)oc);
    float *got = fbuf(nout), *want = fbuf(nout), *work = fbuf(nwork);
    fill_rand(in, nin, &r, 1.0f);
    fill_rand(wt, nw, &r, 0.3f);
    fill_rand(scale, (size_t)oc, &r, 2.0f);
    fill_rand(shift, (size_t)oc, &r, 1.0f);
    conv_epilogue ep = { with_scale ? scale : NULL, shift, acts[ai], 0.2f };
    if( transposed ){
      conv_transpose2d_forward_fused(&s, n, got, in, wt, &ep, work);
      conv_transpose2d_forward_naive(&s, n, want, in, wt, NULL);
    }else{
      conv2d_forward_fused(&s, n, got, in, wt, &ep, work);
      conv2d_forward_naive(&s, n, want, in, wt, NULL);
    }
    for(int i = 0; i < n; i++)
    for(int o = 0; o < oc; o++){
      float *y = want + ((size_t)i * oc + o) * hw;
      for(size_t p = 0; p < hw; p++) y[p] = y[p] * (with_scale ? scale[o] : 1.0f) + shift[o];
      if( acts[ai] == ACT_LEAKY_RELU ) leaky_relu_forward(y, y, hw, 0.2f);
      if( acts[ai] == ACT_RELU ) relu_forward(y, y, hw);
      if( acts[ai] == ACT_TANH ) tanh_forward(y, y, hw);
      if( acts[ai] == ACT_SIGMOID ) sigmoid_forward(y, y, hw);
    }
    assert_floats(got, want, nout, 1e-4);
    anom_free(in); anom_free(wt); anom_free(scale); anom_free(shift);
    anom_free(got); anom_free(want); anom_free(work);
  }
}

/* ---- conv_transpose2d ---------------------------------------------------- */

/* Golden: a 2x2 input [1 2; 3 4], one channel in and out. */
static void test_convt_hand(void **state) {
  (void)state;
  const float in[4] = {1, 2, 3, 4};
  float out[16], work[64];
  conv_shape s;
  /*
  ** k2 s2 p0 -> (2 - 1) 2 + 2 = 4: each input pixel stamps its multiple of
  ** the kernel [1 10; 100 1000] into its own 2x2 block, no overlap.
  */
  const float w1[4] = {1, 10, 100, 1000};
  const float want1[16] = {  1,   10,   2,   20,
                           100, 1000, 200, 2000,
                             3,   30,   4,   40,
                           300, 3000, 400, 4000};
  assert_int_equal(conv_shape_init(&s, 1, 2, 2, 1, 2, 2, 0, 1), 0);
  assert_int_equal(s.oh, 4);
  assert_true(conv_work_floats(&s, 1) <= 64);
  fill_value(out, 16, NAN);
  conv_transpose2d_forward(&s, 1, out, in, w1, NULL, work);
  assert_floats(out, want1, 16, 0);
  conv_transpose2d_forward_naive(&s, 1, out, in, w1, NULL);
  assert_floats(out, want1, 16, 0);
  /*
  ** k3 s2 p1 -> (2 - 1) 2 - 2 + 3 = 3, kernel w = [1 2 3; 4 5 6; 7 8 9].
  ** Input (iy, ix) lands at output (2 iy - 1 + ky, 2 ix - 1 + kx), so along
  ** one axis output 0 takes (i 0, tap 1); 1 takes (i 0, tap 2), (i 1, tap 0);
  ** 2 takes (i 1, tap 1). Writing in[iy,ix] w[ky,kx]:
  **   (0,0) = 1*w11 = 5        (0,1) = 1*w12 + 2*w10 = 6 + 8 = 14
  **   (0,2) = 2*w11 = 10       (1,0) = 1*w21 + 3*w01 = 8 + 6 = 14
  **   (1,1) = 1*w22 + 2*w20 + 3*w02 + 4*w00 = 9 + 14 + 9 + 4 = 36
  **   (1,2) = 2*w21 + 4*w01 = 16 + 8 = 24      (2,0) = 3*w11 = 15
  **   (2,1) = 3*w12 + 4*w10 = 18 + 16 = 34     (2,2) = 4*w11 = 20
  ** plus bias -1.
  */
  const float w2[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, bias[1] = {-1};
  const float want2[9] = {4, 13, 9, 13, 35, 23, 14, 33, 19};
  assert_int_equal(conv_shape_init(&s, 1, 2, 2, 1, 3, 2, 1, 1), 0);
  assert_int_equal(s.oh, 3);
  fill_value(out, 9, NAN);
  conv_transpose2d_forward(&s, 1, out, in, w2, bias, work);
  assert_floats(out, want2, 9, 0);
  conv_transpose2d_forward_naive(&s, 1, out, in, w2, bias);
  assert_floats(out, want2, 9, 0);
}

/* Golden for the weight layout: ConvTranspose2d weight is (C, OC): with
** C = 2, OC = 2, w = [1 2; 3 4], in = [10, 100]:
**   out[oc] = sum_c in[c] w[c, oc] = [10 + 300, 20 + 400] = [310, 420]. */
static void test_convt_layout(void **state) {
  (void)state;
  const float in[2] = {10, 100}, w[4] = {1, 2, 3, 4}, want[2] = {310, 420};
  float out[2], work[4];
  conv_shape s;
  assert_int_equal(conv_shape_init(&s, 2, 1, 1, 2, 1, 1, 0, 1), 0);
  conv_transpose2d_forward(&s, 1, out, in, w, NULL, work);
  assert_floats(out, want, 2, 0);
  conv_transpose2d_forward_naive(&s, 1, out, in, w, NULL);
  assert_floats(out, want, 2, 0);
  /* k2 s1 p0 from one pixel: out[oc] = in[0] w[0, oc] + in[1] w[1, oc] */
  const float w2[16] = {1, 2, 3, 4,  5, 6, 7, 8,     /* c 0: oc 0, oc 1 */
                        9, 10, 11, 12,  13, 14, 15, 16};
  const float want2[8] = {910, 1020, 1130, 1240, 1350, 1460, 1570, 1680};
  float out2[8];
  assert_int_equal(conv_shape_init(&s, 2, 1, 1, 2, 2, 1, 0, 1), 0);
  float work2[16];
  assert_true(conv_work_floats(&s, 1) <= 16);
  conv_transpose2d_forward(&s, 1, out2, in, w2, NULL, work2);
  assert_floats(out2, want2, 8, 0);
}

static void test_convt_vs_naive(void **state) {
  (void)state;
  static const kernel_case kernels[] = {
    {4, 1, 0}, {4, 2, 1}, {3, 1, 1}, {1, 1, 0},   /* GANomaly's, pointwise */
    {3, 2, 1}, {5, 3, 2}, {2, 2, 0}, {1, 2, 0},   /* odd, gaps in output */
    {3, 1, 0}, {4, 3, 0},
  };
  static const int sizes[][2] = {{1, 1}, {2, 2}, {4, 4}, {5, 3}, {8, 8},
                                 {16, 16}, {3, 8}};
  test_rng r = {4242};
  int runs = 0;
  for(size_t ki = 0; ki < sizeof(kernels) / sizeof(kernels[0]); ki++)
  for(size_t ci = 0; ci < sizeof(chans) / sizeof(chans[0]); ci++)
  for(size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++){
    int n = (ci + si) % 2 ? 3 : 1, with_bias = (ki + ci + si) % 2;
    runs += check_conv(1, chans[ci][0], sizes[si][0], sizes[si][1],
                       chans[ci][1], kernels[ki], n, with_bias, &r);
  }
  for(size_t ki = 0; ki < 4; ki++)
  for(int n = 1; n <= 3; n += 2)
  for(int with_bias = 0; with_bias < 2; with_bias++)
    runs += check_conv(1, 7, 4, 3, 3, kernels[ki], n, with_bias, &r);
  assert_true(runs > 400);
}

/*
** The adjoint identity <conv(x), y> == <x, convT(y)>, one weight tensor for
** both: Conv2d (C -> OC) weight (OC, C, K, K) is, read as ConvTranspose2d
** (OC -> C) weight (C_in = OC, C_out = C, K, K), the same bytes. Shapes come
** from the transposed side so the two are exact inverses in size (no
** output_padding needed).
*/
static void test_convt_adjoint(void **state) {
  (void)state;
  static const int cases[][7] = {
    /* oc, oh, ow (the conv's output), c, k, stride, pad */
    {3, 1, 1, 5, 4, 1, 0}, {4, 4, 4, 2, 4, 2, 1}, {2, 5, 3, 3, 3, 2, 1},
    {7, 6, 6, 1, 3, 1, 1}, {1, 3, 4, 16, 5, 3, 2}, {16, 2, 2, 3, 1, 1, 0},
    {3, 4, 2, 2, 1, 2, 0}, {5, 3, 3, 4, 2, 2, 0}, {2, 8, 8, 3, 4, 2, 1},
  };
  test_rng r = {99};
  for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
    const int *q = cases[i];
    conv_shape t, s;
    assert_int_equal(conv_shape_init(&t, q[0], q[1], q[2], q[3], q[4], q[5],
                                     q[6], 1), 0);
    assert_int_equal(conv_shape_init(&s, q[3], t.oh, t.ow, q[0], q[4], q[5],
                                     q[6], 0), 0);
    assert_int_equal(s.oh, q[1]);
    assert_int_equal(s.ow, q[2]);
    size_t nx = (size_t)s.c * s.h * s.w, ny = (size_t)s.oc * s.oh * s.ow;
    size_t nw = (size_t)s.oc * s.c * s.k * s.k;
    size_t nwork = conv_work_floats(&s, 1) > conv_work_floats(&t, 1)
                 ? conv_work_floats(&s, 1) : conv_work_floats(&t, 1);
    float *x = fbuf(nx), *y = fbuf(ny), *wt = fbuf(nw), *work = fbuf(nwork);
    float *cx = fbuf(ny), *ty = fbuf(nx);
    fill_rand(x, nx, &r, 1.0f);
    fill_rand(y, ny, &r, 1.0f);
    fill_rand(wt, nw, &r, 1.0f);
    conv2d_forward(&s, 1, cx, x, wt, NULL, work);
    conv_transpose2d_forward(&t, 1, ty, y, wt, NULL, work);
    double lhs = dot(cx, y, ny), rhs = dot(x, ty, nx);
    if( !(fabs(lhs - rhs) <= 1e-4 * fabs(lhs)) ){
      print_error("adjoint case %zu: <conv x, y> = %.9g, <x, convT y> = %.9g\n",
                  i, lhs, rhs);
      fail();
    }
    anom_free(x); anom_free(y); anom_free(wt); anom_free(work);
    anom_free(cx); anom_free(ty);
  }
}

/* im2col and col2im are adjoint for both orientations of a shape. */
static void test_im2col_adjoint(void **state) {
  (void)state;
  static const int cases[][8] = {
    {3, 5, 4, 2, 3, 2, 1, 0}, {2, 4, 4, 3, 4, 2, 1, 0}, {1, 7, 3, 1, 3, 1, 2, 0},
    {2, 3, 2, 3, 3, 2, 1, 1}, {3, 1, 1, 2, 4, 1, 0, 1}, {1, 2, 3, 2, 5, 3, 2, 1},
    /* four channels or more on a small grid: im2col's tap table */
    {5, 8, 8, 2, 4, 2, 1, 0}, {4, 6, 5, 3, 3, 1, 1, 0}, {3, 4, 4, 6, 4, 2, 1, 1},
    {8, 4, 4, 3, 4, 1, 0, 0},
  };
  test_rng r = {5};
  for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
    const int *q = cases[i];
    conv_shape s;
    assert_int_equal(conv_shape_init(&s, q[0], q[1], q[2], q[3], q[4], q[5],
                                     q[6], q[7]), 0);
    /* the image side: the input for Conv2d, the output when transposed */
    size_t nim = s.transposed ? (size_t)s.oc * s.oh * s.ow
                              : (size_t)s.c * s.h * s.w;
    size_t np = s.transposed ? (size_t)s.h * s.w : (size_t)s.oh * s.ow;
    size_t rows = (s.transposed ? (size_t)s.oc : (size_t)s.c) * s.k * s.k;
    size_t ncol = rows * np;
    float *im = fbuf(nim), *col = fbuf(ncol), *im2 = fbuf(nim), *col2 = fbuf(ncol);
    fill_rand(im, nim, &r, 1.0f);
    fill_rand(col, ncol, &r, 1.0f);
    fill_value(col2, ncol, NAN);
    fill_value(im2, nim, 0.0f);
    im2col(&s, 1, im, col2, np);
    col2im(&s, 1, col, np, im2);
    double lhs = dot(col2, col, ncol), rhs = dot(im, im2, nim);
    /* col2im sums overlaps in float, hence a float tolerance */
    if( !(fabs(lhs - rhs) <= 1e-6 * (1.0 + fabs(lhs))) ){
      print_error("case %zu: <im2col im, col> = %.12g, <im, col2im col> = "
                  "%.12g\n", i, lhs, rhs);
      fail();
    }
    anom_free(im); anom_free(col); anom_free(im2); anom_free(col2);
  }
}

/* Several images side by side, rows ld apart: image j's columns land at
** column j*np of each row and equal its own im2col, the gap after them is
** untouched, and col2im reads the same layout back into each image (both
** paths: the tap table with 4 channels, the row copy with 1). */
static void test_im2col_stride(void **state) {
  (void)state;
  test_rng r = {8};
  for(int c = 1; c <= 4; c += 3){
    conv_shape s;
    assert_int_equal(conv_shape_init(&s, c, 6, 6, 2, 4, 2, 1, 0), 0);
    size_t np = (size_t)s.oh * s.ow, rows = (size_t)c * 16, ld = 2 * np + 5;
    size_t nim = (size_t)c * 36;
    float *im = fbuf(2 * nim), *tight = fbuf(rows * np), *wide = fbuf(rows * ld);
    float *back1 = fbuf(nim), *back2 = fbuf(2 * nim);
    fill_rand(im, 2 * nim, &r, 1.0f);
    fill_value(wide, rows * ld, NAN);
    im2col(&s, 2, im, wide, ld);
    fill_value(back2, 2 * nim, 0.0f);
    for(int j = 0; j < 2; j++){
      im2col(&s, 1, im + j * nim, tight, np);
      for(size_t i = 0; i < rows; i++) assert_floats(wide + i * ld + j * np, tight + i * np, np, 0);
      fill_value(back1, nim, 0.0f);
      col2im(&s, 1, tight, np, back1);
      if( j == 0 ){
        for(size_t i = 0; i < rows; i++)
          for(size_t q = 2 * np; q < ld; q++){
            assert_true(isnan(wide[i * ld + q]));
            wide[i * ld + q] = 1e30f;                /* must not be read */
          }
        col2im(&s, 2, wide, ld, back2);
      }
      assert_floats(back2 + j * nim, back1, nim, 0);
    }
    anom_free(im); anom_free(tight); anom_free(wide); anom_free(back1); anom_free(back2);
  }
}

/* col2im adds: running it twice over a zeroed image doubles it. */
static void test_col2im_adds(void **state) {
  (void)state;
  conv_shape s;
  float col[4] = {1, 2, 3, 4}, im[9];
  /* 1 channel 3x3 image, k2 s1 p0: each of the 4 columns covers one window */
  assert_int_equal(conv_shape_init(&s, 1, 3, 3, 1, 2, 1, 0, 0), 0);
  float cm[16];
  for(int t = 0; t < 4; t++) memcpy(cm + 4 * t, col, sizeof(col)); /* all taps */
  fill_value(im, 9, 0.0f);
  col2im(&s, 1, cm, 4, im);
  /* pixel (y, x) sums col over the windows containing it */
  const float want[9] = {1, 3, 2, 4, 10, 6, 3, 7, 4};
  assert_floats(im, want, 9, 0);
  col2im(&s, 1, cm, 4, im);
  for(int i = 0; i < 9; i++) assert_true(im[i] == 2 * want[i]);
}

/* ---- batchnorm ------------------------------------------------------------ */

static void test_batchnorm_hand(void **state) {
  (void)state;
  /*
  ** gamma [3, 0.5], beta [1, -1], mean [1, 2], var [3, 15], eps 1:
  ** ch 0: sqrt(4) = 2, scale 1.5, shift 1 - 1.5 = -0.5
  ** ch 1: sqrt(16) = 4, scale 0.125, shift -1 - 0.25 = -1.25
  ** (N=2, C=2, HW=2) input and (in - mean) / sd * gamma + beta:
  **   n0 ch0 [3, -1]  -> [ 2/2*3+1, -2/2*3+1]  = [4, -2]
  **   n0 ch1 [10, 18] -> [ 8/4*.5-1, 16/4*.5-1] = [0, 1]
  **   n1 ch0 [5, 1]   -> [ 4/2*3+1,  0/2*3+1]  = [7, 1]
  **   n1 ch1 [-6, 34] -> [-8/4*.5-1, 32/4*.5-1] = [-2, 3]
  */
  const float gamma[2] = {3, 0.5f}, beta[2] = {1, -1};
  const float mean[2] = {1, 2}, var[2] = {3, 15};
  float in[8] = {3, -1, 10, 18, 5, 1, -6, 34};
  const float want[8] = {4, -2, 0, 1, 7, 1, -2, 3};
  float out[8];
  batchnorm_forward_infer(2, 2, 2, out, in, gamma, beta, mean, var, 1.0f);
  assert_floats(out, want, 8, 0);
  batchnorm_forward_infer(2, 2, 2, in, in, gamma, beta, mean, var, 1.0f);
  assert_floats(in, want, 8, 0); /* in place */
}

static void test_batchnorm_eps(void **state) {
  (void)state;
  /* var 0: the eps alone keeps it finite, (x - mean) / sqrt(1e-5) */
  const float gamma[1] = {1}, beta[1] = {0}, mean[1] = {0.5f}, var[1] = {0};
  const float in[3] = {0.5f, 1.5f, -0.5f};
  float out[3];
  batchnorm_forward_infer(1, 1, 3, out, in, gamma, beta, mean, var, 1e-5f);
  double sd = sqrt(1e-5);
  assert_true(out[0] == 0.0f);
  assert_true(fabs(out[1] - 1.0 / sd) <= 1e-6 * (1.0 / sd));
  assert_true(fabs(out[2] + 1.0 / sd) <= 1e-6 * (1.0 / sd));
}

/* ---- activations ---------------------------------------------------------- */

static void test_leaky_relu(void **state) {
  (void)state;
  float x[6] = {-2, -0.5f, 0, 0.5f, 3, -1e30f};
  const float want[6] = {-0.4f, -0.1f, 0, 0.5f, 3, -2e29f};
  float out[6];
  leaky_relu_forward(out, x, 6, 0.2f);
  assert_floats(out, want, 5, 1e-7);
  assert_true(fabsf(out[5] - want[5]) <= 1e-6f * 2e29f);
  leaky_relu_forward(x, x, 6, 0.2f); /* in place */
  assert_floats(x, out, 6, 0);
  float nan_in = NAN, nan_out = 0;
  leaky_relu_forward(&nan_out, &nan_in, 1, 0.2f);
  assert_true(isnan(nan_out));
}

static void test_relu(void **state) {
  (void)state;
  float x[5] = {-1, 0, 2.5f, -1e-30f, 1e30f};
  const float want[5] = {0, 0, 2.5f, 0, 1e30f};
  float out[5];
  relu_forward(out, x, 5);
  assert_floats(out, want, 5, 0);
  relu_forward(x, x, 5);
  assert_floats(x, want, 5, 0);
  float nan_in = NAN, nan_out = 0;
  relu_forward(&nan_out, &nan_in, 1);
  assert_true(isnan(nan_out));
}

static void test_tanh(void **state) {
  (void)state;
  float x[6] = {0, 1, -1, 0.5f, 20, -20};
  const float want[6] = {0, 0.7615941559557649f, -0.7615941559557649f,
                         0.46211715726000974f, 1, -1};
  float out[6];
  tanh_forward(out, x, 6);
  assert_floats(out, want, 6, 1e-7);
  assert_true(out[4] == 1.0f && out[5] == -1.0f);
  tanh_forward(x, x, 6);
  assert_floats(x, out, 6, 0);
}

static void test_sigmoid(void **state) {
  (void)state;
  float x[7] = {0, 1, -1, 100, -100, INFINITY, -INFINITY};
  float out[7];
  sigmoid_forward(out, x, 7);
  assert_true(out[0] == 0.5f);
  assert_true(fabs(out[1] - 0.7310585786300049) <= 1e-7);
  assert_true(fabs(out[2] - 0.2689414213699951) <= 1e-7);
  assert_true(out[3] == 1.0f);               /* saturates exactly */
  assert_true(isfinite(out[4]));             /* e^-100 ~ 3.7e-44, a denormal */
  assert_true(out[4] > 0.0f && out[4] < 1e-43f);
  assert_true(out[5] == 1.0f);
  assert_true(out[6] == 0.0f);
  /* symmetric: s(x) + s(-x) == 1 */
  for(float v = -30; v <= 30; v += 0.75f){
    float p, m, nv = -v;
    sigmoid_forward(&p, &v, 1);
    sigmoid_forward(&m, &nv, 1);
    assert_true(fabsf(p + m - 1.0f) <= 2e-7f);
  }
  float y[7];
  memcpy(y, x, sizeof(x));
  sigmoid_forward(y, y, 7); /* in place */
  assert_floats(y, out, 7, 0);
  float nan_in = NAN, nan_out = 0;
  sigmoid_forward(&nan_out, &nan_in, 1);
  assert_true(isnan(nan_out));
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_gemm_hand),
    cmocka_unit_test(test_gemm_vs_naive),
    cmocka_unit_test(test_gemm_empty_k),
    cmocka_unit_test(test_conv_shape_ok),
    cmocka_unit_test(test_conv_shape_errors),
    cmocka_unit_test(test_conv2d_hand),
    cmocka_unit_test(test_conv2d_layout),
    cmocka_unit_test(test_conv2d_vs_naive),
    cmocka_unit_test(test_convt_hand),
    cmocka_unit_test(test_convt_layout),
    cmocka_unit_test(test_convt_vs_naive),
    cmocka_unit_test(test_convt_adjoint),
    cmocka_unit_test(test_im2col_adjoint),
    cmocka_unit_test(test_col2im_adds),
    cmocka_unit_test(test_conv_chunks),
    cmocka_unit_test(test_conv_fused),
    cmocka_unit_test(test_im2col_stride),
    cmocka_unit_test(test_batchnorm_hand),
    cmocka_unit_test(test_batchnorm_eps),
    cmocka_unit_test(test_leaky_relu),
    cmocka_unit_test(test_relu),
    cmocka_unit_test(test_tanh),
    cmocka_unit_test(test_sigmoid),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
