/*
** test_layers2.c - linear, concat and dropout (core/layers/linear.c,
** concat.c, dropout.c): forward values computed by hand, linear_forward
** against its naive twin on odd sizes, every backward against finite
** differences of its own forward, the += convention, NULL gradients, and
** the seeded dropout mask (same seed same mask, keep rate, p = 0).
**
** The finite-difference check is test_grad.c's: L = sum(out * r) for a
** fixed random r (so dout = r), parameters on a 2^-12 grid, a power-of-two
** step h so p +- h and p +- 2h are exact, L summed in double, and the
** four-point central difference
**   (8 (L(p+h) - L(p-h)) - (L(p+2h) - L(p-2h))) / 12h
** held against EVERY element of every analytic gradient with
** |analytic - fd| <= atol + rtol |fd|. All three layers are linear in each
** single parameter, so the difference is exact up to float rounding of the
** forward and h is large (1/4), as for the convolutions. Each layer's worst
** error is printed with its tolerance.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "layers.h"
#include "rng.h"
#include "fdcheck.h"

/* ---- helpers ------------------------------------------------------------ */

#define GRID 4096.0 /* parameters are multiples of 1 / GRID */

/* uniform in [lo, hi], rounded to the grid */
static float grid_rand(rng *r, double lo, double hi) {
  double u = lo + (hi - lo) * rng_uniform(r);
  return (float)(nearbyint(u * GRID) / GRID);
}

static void fill_grid(float *p, size_t count, rng *r, double lo, double hi) {
  for(size_t i = 0; i < count; i++) p[i] = grid_rand(r, lo, hi);
}

/* max over i of |got - ref| / max(1, |ref|); NaN anywhere gives +inf */
static double max_rel_err(const float *got, const double *ref, size_t count) {
  double worst = 0.0;
  for(size_t i = 0; i < count; i++){
    double d = fabs((double)got[i] - ref[i]);
    double scale = fabs(ref[i]) > 1.0 ? fabs(ref[i]) : 1.0;
    if( !(d == d) || isinf(got[i]) ) return INFINITY;
    if( d / scale > worst ) worst = d / scale;
  }
  return worst;
}

/* ---- linear --------------------------------------------------------------- */

/*
** in = [1 2 3; 4 5 6] (N 2, IN 3), weight = [1 0 -1; 2 1 0] (OUT 2),
** bias = [0.5, -1]:
**   in weight^T = [1-3, 2+2; 4-6, 8+5] = [-2 4; -2 13]
**   + bias      = [-1.5 3; -1.5 12]
*/
static void test_linear_forward_hand(void **state) {
  (void)state;
  const float in[6] = {1, 2, 3, 4, 5, 6}, w[6] = {1, 0, -1, 2, 1, 0};
  const float bias[2] = {0.5f, -1};
  const float want_b[4] = {-1.5f, 3, -1.5f, 12}, want_nb[4] = {-2, 4, -2, 13};
  float out[4];
  fill_value(out, 4, NAN); /* out is written, never read */
  linear_forward(2, 3, 2, out, in, w, bias);
  assert_floats(out, want_b, 4, 0);
  fill_value(out, 4, NAN);
  linear_forward(2, 3, 2, out, in, w, NULL);
  assert_floats(out, want_nb, 4, 0);
  fill_value(out, 4, NAN);
  linear_forward_naive(2, 3, 2, out, in, w, bias);
  assert_floats(out, want_b, 4, 0);
  fill_value(out, 4, NAN);
  linear_forward_naive(2, 3, 2, out, in, w, NULL);
  assert_floats(out, want_nb, 4, 0);
}

/*
** The same layer, dout = [1 2; -1 1]:
**   din = dout weight     = [1 0 -1 + 4 2 0; -1 0 1 + 2 1 0] = [5 2 -1; 1 1 1]
**   dweight = dout^T in   = [1 2 3 - 4 5 6; 2 4 6 + 4 5 6]  = [-3 -3 -3; 6 9 12]
**   dbias = column sums   = [0, 3]
*/
static void test_linear_backward_hand(void **state) {
  (void)state;
  const float in[6] = {1, 2, 3, 4, 5, 6}, w[6] = {1, 0, -1, 2, 1, 0};
  const float dout[4] = {1, 2, -1, 1};
  const float want_din[6] = {5, 2, -1, 1, 1, 1};
  const float want_dw[6] = {-3, -3, -3, 6, 9, 12}, want_db[2] = {0, 3};
  float din[6], dw[6], db[2];
  fill_value(din, 6, 0); fill_value(dw, 6, 0); fill_value(db, 2, 0);
  linear_backward(2, 3, 2, din, dw, db, dout, in, w);
  assert_floats(din, want_din, 6, 0);
  assert_floats(dw, want_dw, 6, 0);
  assert_floats(db, want_db, 2, 0);
  /* += : a start of 1 everywhere adds 1 */
  fill_value(din, 6, 1); fill_value(dw, 6, 1); fill_value(db, 2, 1);
  linear_backward(2, 3, 2, din, dw, db, dout, in, w);
  for(int i = 0; i < 6; i++){
    assert_true(din[i] == want_din[i] + 1);
    assert_true(dw[i] == want_dw[i] + 1);
  }
  assert_true(db[0] == 1 && db[1] == 4);
  /* NULL: each gradient alone, the others skipped; then all NULL */
  fill_value(din, 6, 0); fill_value(dw, 6, 0); fill_value(db, 2, 0);
  linear_backward(2, 3, 2, din, NULL, NULL, dout, in, w);
  assert_floats(din, want_din, 6, 0);
  linear_backward(2, 3, 2, NULL, dw, NULL, dout, in, w);
  assert_floats(dw, want_dw, 6, 0);
  linear_backward(2, 3, 2, NULL, NULL, db, dout, in, w);
  assert_floats(db, want_db, 2, 0);
  assert_floats(din, want_din, 6, 0); /* untouched by the later calls */
  assert_floats(dw, want_dw, 6, 0);
  linear_backward(2, 3, 2, NULL, NULL, NULL, dout, in, w);
  assert_floats(din, want_din, 6, 0);
}

/* test-side double oracle of linear_backward: g_* += the gradients */
static void linear_backward_ref(int n, int in_f, int out_f, double *g_in,
                                double *g_w, double *g_b, const float *dout,
                                const float *in, const float *w) {
  for(int i = 0; i < n; i++)
  for(int o = 0; o < out_f; o++){
    double d = dout[(size_t)i * out_f + o];
    g_b[o] += d;
    for(int k = 0; k < in_f; k++){
      g_in[(size_t)i * in_f + k] += d * w[(size_t)o * in_f + k];
      g_w[(size_t)o * in_f + k] += d * in[(size_t)i * in_f + k];
    }
  }
}

static void widen(double *d, const float *f, size_t count) {
  for(size_t i = 0; i < count; i++) d[i] = f[i];
}

/*
** Every n in 1..5 and in_f, out_f in 1..37, with and without bias: the
** gemm forward against the naive loop (out starts as NaN, so a read of it
** shows), and the gemm backward, adding onto random starting gradients,
** against a double-accumulating oracle.
*/
static void test_linear_vs_naive(void **state) {
  (void)state;
  enum { MAXN = 5, MAXF = 37 };
  const double tol = 1e-5; /* relative to max(1, |ref|) */
  float *in = fbuf(MAXN * MAXF), *w = fbuf(MAXF * MAXF), *bias = fbuf(MAXF);
  float *out = fbuf(MAXN * MAXF), *ref = fbuf(MAXN * MAXF);
  float *dout = fbuf(MAXN * MAXF), *din = fbuf(MAXN * MAXF);
  float *dw = fbuf(MAXF * MAXF), *db = fbuf(MAXF);
  double *ref_out = anom_malloc(MAXN * MAXF * sizeof(double));
  double *g_in = anom_malloc(MAXN * MAXF * sizeof(double));
  double *g_w = anom_malloc(MAXF * MAXF * sizeof(double));
  double *g_b = anom_malloc(MAXF * sizeof(double));
  assert_non_null(ref_out); assert_non_null(g_in);
  assert_non_null(g_w); assert_non_null(g_b);
  rng r;
  rng_seed(&r, 2024);
  double worst_fwd = 0, worst_bwd = 0;
  int runs = 0;
  for(int n = 1; n <= MAXN; n++)
  for(int in_f = 1; in_f <= MAXF; in_f++)
  for(int out_f = 1; out_f <= MAXF; out_f++)
  for(int with_bias = 0; with_bias < 2; with_bias++){
    size_t nin = (size_t)n * in_f, nout = (size_t)n * out_f;
    size_t nw = (size_t)out_f * in_f;
    const float *b = with_bias ? bias : NULL;
    fill_grid(in, nin, &r, -1, 1);
    fill_grid(w, nw, &r, -1, 1);
    fill_grid(bias, (size_t)out_f, &r, -1, 1);
    fill_value(out, nout, NAN);
    fill_value(ref, nout, NAN);
    linear_forward(n, in_f, out_f, out, in, w, b);
    linear_forward_naive(n, in_f, out_f, ref, in, w, b);
    widen(ref_out, ref, nout);
    double e = max_rel_err(out, ref_out, nout);
    if( !(e <= tol) ){
      print_error("linear_forward n %d in %d out %d bias %d: error %.3g\n",
                  n, in_f, out_f, with_bias, e);
      fail();
    }
    if( e > worst_fwd ) worst_fwd = e;

    fill_grid(dout, nout, &r, -1, 1);
    fill_grid(din, nin, &r, -1, 1);
    fill_grid(dw, nw, &r, -1, 1);
    fill_grid(db, (size_t)out_f, &r, -1, 1);
    widen(g_in, din, nin);
    widen(g_w, dw, nw);
    widen(g_b, db, (size_t)out_f);
    linear_backward(n, in_f, out_f, din, dw, db, dout, in, w);
    linear_backward_ref(n, in_f, out_f, g_in, g_w, g_b, dout, in, w);
    double eb = max_rel_err(din, g_in, nin), ew = max_rel_err(dw, g_w, nw);
    double ebb = max_rel_err(db, g_b, (size_t)out_f);
    if( ew > eb ) eb = ew;
    if( ebb > eb ) eb = ebb;
    if( !(eb <= tol) ){
      print_error("linear_backward n %d in %d out %d: error %.3g\n", n, in_f,
                  out_f, eb);
      fail();
    }
    if( eb > worst_bwd ) worst_bwd = eb;
    runs++;
  }
  assert_int_equal(runs, MAXN * MAXF * MAXF * 2);
  print_message("  linear vs naive    %d shapes, worst rel err forward %.2e, "
                "backward %.2e (tol %g)\n", runs, worst_fwd, worst_bwd, tol);
  anom_free(in); anom_free(w); anom_free(bias); anom_free(out);
  anom_free(ref); anom_free(dout); anom_free(din); anom_free(dw);
  anom_free(db); anom_free(ref_out); anom_free(g_in); anom_free(g_w);
  anom_free(g_b);
}

/* Empty products: IN 0 gives out = bias (or 0); N 0 touches nothing. */
static void test_linear_empty(void **state) {
  (void)state;
  const float bias[3] = {1, -2, 3}, dout[3] = {1, 2, 3};
  const float dummy[1] = {0}, w3[3] = {1, 1, 1};
  float out[3], dw[3] = {7, 7, 7}, db[3] = {0, 0, 0};
  fill_value(out, 3, NAN);
  linear_forward(1, 0, 3, out, dummy, dummy, bias);
  assert_floats(out, bias, 3, 0);
  fill_value(out, 3, NAN);
  linear_forward(1, 0, 3, out, dummy, dummy, NULL);
  for(int i = 0; i < 3; i++) assert_true(out[i] == 0.0f);
  linear_backward(1, 0, 3, NULL, NULL, db, dout, dummy, dummy);
  assert_floats(db, dout, 3, 0);
  /* N 0 */
  fill_value(out, 3, 5);
  linear_forward(0, 1, 3, out, dummy, w3, bias);
  for(int i = 0; i < 3; i++) assert_true(out[i] == 5.0f);
  linear_backward(0, 1, 3, out, dw, db, dout, dummy, w3);
  for(int i = 0; i < 3; i++)
    assert_true(out[i] == 5.0f && dw[i] == 7.0f && db[i] == dout[i]);
}

typedef struct linear_prob {
  int n, in_f, out_f;
  size_t nin, nout, nw;
  float *in, *w, *bias, *out, *r; /* bias may be NULL */
} linear_prob;

static double linear_objective(void *ctx) {
  linear_prob *q = ctx;
  linear_forward(q->n, q->in_f, q->out_f, q->out, q->in, q->w, q->bias);
  return dot(q->out, q->r, q->nout);
}

static void test_linear_grad(void **state) {
  (void)state;
  /* n, in_f, out_f */
  static const int sizes[][3] = {
    {1, 1, 1}, {1, 5, 3}, {2, 3, 4}, {3, 7, 2}, {4, 1, 6}, {5, 9, 5},
    {2, 16, 8}, {3, 37, 11}, {1, 64, 1}, {5, 2, 33},
  };
  fd_check ck = {"linear", 0.25, 2e-5, 1e-5, 0, 0, 0};
  rng r;
  rng_seed(&r, 31);
  for(size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++)
  for(int with_bias = 0; with_bias < 2; with_bias++){
    linear_prob q = {sizes[si][0], sizes[si][1], sizes[si][2], 0, 0, 0,
                     NULL, NULL, NULL, NULL, NULL};
    q.nin = (size_t)q.n * q.in_f;
    q.nout = (size_t)q.n * q.out_f;
    q.nw = (size_t)q.out_f * q.in_f;
    q.in = fbuf(q.nin); q.w = fbuf(q.nw); q.out = fbuf(q.nout);
    q.r = fbuf(q.nout);
    q.bias = with_bias ? fbuf((size_t)q.out_f) : NULL;
    fill_grid(q.in, q.nin, &r, -1, 1);
    fill_grid(q.w, q.nw, &r, -0.5, 0.5);
    if( q.bias ) fill_grid(q.bias, (size_t)q.out_f, &r, -1, 1);
    fill_grid(q.r, q.nout, &r, -1, 1);
    float *din = fbuf(q.nin), *dw = fbuf(q.nw), *db = fbuf((size_t)q.out_f);
    fill_value(din, q.nin, 0);
    fill_value(dw, q.nw, 0);
    fill_value(db, (size_t)q.out_f, 0);
    linear_backward(q.n, q.in_f, q.out_f, din, dw, db, q.r, q.in, q.w);
    check_grad(&ck, "in", linear_objective, &q, q.in, din, q.nin);
    check_grad(&ck, "weight", linear_objective, &q, q.w, dw, q.nw);
    if( q.bias ){
      check_grad(&ck, "bias", linear_objective, &q, q.bias, db,
                 (size_t)q.out_f);
    }else{
      /* a bias would get the column sums of dout either way */
      for(int o = 0; o < q.out_f; o++){
        double s = 0;
        for(int i = 0; i < q.n; i++) s += q.r[(size_t)i * q.out_f + o];
        assert_true(fabs(db[o] - s) <= 1e-6);
      }
    }
    anom_free(din); anom_free(dw); anom_free(db);
    anom_free(q.in); anom_free(q.w); anom_free(q.bias); anom_free(q.out);
    anom_free(q.r);
  }
  report(&ck);
}

/* ---- concat --------------------------------------------------------------- */

/*
** N 2, CA 1, CB 2, HW 2:
**   a = [1 2 | 3 4], b = [10 11 12 13 | 14 15 16 17]
**   out = [1 2 10 11 12 13 | 3 4 14 15 16 17]
** dout = 0..11 splits into da = [0 1 | 6 7], db = [2 3 4 5 | 8 9 10 11].
*/
static void test_concat_hand(void **state) {
  (void)state;
  const float a[4] = {1, 2, 3, 4};
  const float b[8] = {10, 11, 12, 13, 14, 15, 16, 17};
  const float want[12] = {1, 2, 10, 11, 12, 13, 3, 4, 14, 15, 16, 17};
  const float want_da[4] = {0, 1, 6, 7};
  const float want_db[8] = {2, 3, 4, 5, 8, 9, 10, 11};
  float out[12], dout[12], da[4], db[8];
  fill_value(out, 12, NAN);
  concat_forward(2, 1, 2, 2, out, a, b);
  assert_floats(out, want, 12, 0);
  for(int i = 0; i < 12; i++) dout[i] = (float)i;
  fill_value(da, 4, 0); fill_value(db, 8, 0);
  concat_backward(2, 1, 2, 2, da, db, dout);
  assert_floats(da, want_da, 4, 0);
  assert_floats(db, want_db, 8, 0);
  /* += : twice over */
  concat_backward(2, 1, 2, 2, da, db, dout);
  for(int i = 0; i < 4; i++) assert_true(da[i] == 2 * want_da[i]);
  for(int i = 0; i < 8; i++) assert_true(db[i] == 2 * want_db[i]);
  /* NULL on either side leaves the other side's sum right */
  fill_value(da, 4, 0); fill_value(db, 8, 0);
  concat_backward(2, 1, 2, 2, NULL, db, dout);
  assert_floats(db, want_db, 8, 0);
  concat_backward(2, 1, 2, 2, da, NULL, dout);
  assert_floats(da, want_da, 4, 0);
  assert_floats(db, want_db, 8, 0);
  concat_backward(2, 1, 2, 2, NULL, NULL, dout);
  assert_floats(da, want_da, 4, 0);
}

/* An empty side: CB 0 copies a, CA 0 copies b; N 0 touches nothing. */
static void test_concat_empty_side(void **state) {
  (void)state;
  const float a[4] = {1, 2, 3, 4}, dout[4] = {5, 6, 7, 8};
  float out[4], d[4];
  fill_value(out, 4, NAN);
  concat_forward(2, 2, 0, 1, out, a, NULL);
  assert_floats(out, a, 4, 0);
  fill_value(out, 4, NAN);
  concat_forward(2, 0, 2, 1, out, NULL, a);
  assert_floats(out, a, 4, 0);
  fill_value(d, 4, 0);
  concat_backward(2, 0, 2, 1, NULL, d, dout);
  assert_floats(d, dout, 4, 0);
  fill_value(out, 4, 9);
  concat_forward(0, 1, 1, 2, out, a, a);
  concat_backward(0, 1, 1, 2, out, out, dout);
  for(int i = 0; i < 4; i++) assert_true(out[i] == 9.0f);
}

typedef struct concat_prob {
  int n, ca, cb, hw;
  size_t na, nb, nout;
  float *a, *b, *out, *r;
} concat_prob;

static double concat_objective(void *ctx) {
  concat_prob *q = ctx;
  concat_forward(q->n, q->ca, q->cb, q->hw, q->out, q->a, q->b);
  return dot(q->out, q->r, q->nout);
}

static void test_concat_grad(void **state) {
  (void)state;
  /* n, ca, cb, hw */
  static const int sizes[][4] = {
    {1, 1, 1, 1}, {2, 1, 2, 2}, {3, 2, 1, 5}, {2, 3, 4, 6}, {1, 4, 4, 9},
    {3, 1, 5, 3}, {2, 0, 3, 4}, {2, 3, 0, 4},
  };
  fd_check ck = {"concat", 0.25, 2e-5, 1e-5, 0, 0, 0};
  rng r;
  rng_seed(&r, 77);
  for(size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++){
    const int *z = sizes[si];
    concat_prob q = {z[0], z[1], z[2], z[3], 0, 0, 0, NULL, NULL, NULL, NULL};
    q.na = (size_t)q.n * q.ca * q.hw;
    q.nb = (size_t)q.n * q.cb * q.hw;
    q.nout = q.na + q.nb;
    q.a = fbuf(q.na); q.b = fbuf(q.nb);
    q.out = fbuf(q.nout); q.r = fbuf(q.nout);
    fill_grid(q.a, q.na, &r, -1, 1);
    fill_grid(q.b, q.nb, &r, -1, 1);
    fill_grid(q.r, q.nout, &r, -1, 1);
    float *da = fbuf(q.na), *db = fbuf(q.nb);
    fill_value(da, q.na, 0);
    fill_value(db, q.nb, 0);
    concat_backward(q.n, q.ca, q.cb, q.hw, da, db, q.r);
    check_grad(&ck, "a", concat_objective, &q, q.a, da, q.na);
    check_grad(&ck, "b", concat_objective, &q, q.b, db, q.nb);
    anom_free(da); anom_free(db);
    anom_free(q.a); anom_free(q.b); anom_free(q.out); anom_free(q.r);
  }
  report(&ck);
}

/* ---- dropout -------------------------------------------------------------- */

static uint8_t *mbuf(size_t count) {
  uint8_t *m = anom_malloc(count ? count : 1);
  assert_non_null(m);
  return m;
}

/*
** The mask is a function of the seed: the same seed gives the same bytes,
** another seed others; every byte is 0 or 1 and is exactly
** !(rng_uniform < p) of the element's own draw; the rng advances by exactly
** count draws whatever p is, so a mask in two pieces equals one mask.
** p 0 keeps everything, p 1 drops everything.
*/
static void test_dropout_mask_seeded(void **state) {
  (void)state;
  enum { COUNT = 1000 };
  uint8_t *m1 = mbuf(COUNT), *m2 = mbuf(COUNT);
  rng r1, r2;
  rng_seed(&r1, 42);
  rng_seed(&r2, 42);
  dropout_mask(m1, COUNT, 0.3f, &r1);
  dropout_mask(m2, COUNT, 0.3f, &r2);
  assert_memory_equal(m1, m2, COUNT);
  assert_true(rng_next(&r1) == rng_next(&r2));
  /* the rule, element by element */
  rng_seed(&r2, 42);
  for(size_t i = 0; i < COUNT; i++){
    assert_true(m1[i] == 0 || m1[i] == 1);
    assert_int_equal(m1[i], rng_uniform(&r2) < 0.3 ? 0 : 1);
  }
  /* another seed, another mask */
  rng_seed(&r2, 43);
  dropout_mask(m2, COUNT, 0.3f, &r2);
  assert_memory_not_equal(m1, m2, COUNT);
  /* two pieces equal one mask, and the stream after it is p-independent */
  rng_seed(&r2, 42);
  dropout_mask(m2, 400, 0.3f, &r2);
  dropout_mask(m2 + 400, COUNT - 400, 0.3f, &r2);
  assert_memory_equal(m1, m2, COUNT);
  rng_seed(&r1, 42);
  rng_seed(&r2, 42);
  dropout_mask(m1, COUNT, 0.0f, &r1);
  dropout_mask(m2, COUNT, 0.9f, &r2);
  assert_true(rng_next(&r1) == rng_next(&r2));
  for(size_t i = 0; i < COUNT; i++) assert_true(m1[i] == 1);
  rng_seed(&r1, 42);
  dropout_mask(m1, COUNT, 1.0f, &r1);
  for(size_t i = 0; i < COUNT; i++) assert_true(m1[i] == 0);
  /* count 0 draws nothing */
  rng_seed(&r1, 42);
  rng_seed(&r2, 42);
  dropout_mask(m1, 0, 0.5f, &r1);
  assert_true(rng_next(&r1) == rng_next(&r2));
  anom_free(m1); anom_free(m2);
}

/*
** Over 100k draws the kept fraction is within 5 standard deviations,
** 5 sqrt(p (1 - p) / 100000) (at most 0.0079), of 1 - p, and the forward of
** all ones averages to 1 within the same band scaled by 1 / (1 - p):
** inverted dropout keeps the expectation.
*/
static void test_dropout_keep_rate(void **state) {
  (void)state;
  enum { COUNT = 100000 };
  static const float ps[] = {0.1f, 0.2f, 0.5f, 0.8f};
  uint8_t *m = mbuf(COUNT);
  float *ones = fbuf(COUNT), *out = fbuf(COUNT);
  fill_value(ones, COUNT, 1);
  rng r;
  rng_seed(&r, 7);
  for(size_t pi = 0; pi < sizeof(ps) / sizeof(ps[0]); pi++){
    double p = ps[pi], band = 5 * sqrt(p * (1 - p) / COUNT);
    dropout_mask(m, COUNT, ps[pi], &r);
    size_t kept = 0;
    for(size_t i = 0; i < COUNT; i++) kept += m[i];
    double rate = (double)kept / COUNT;
    dropout_forward(out, ones, m, COUNT, ps[pi]);
    double mean = 0;
    for(size_t i = 0; i < COUNT; i++) mean += out[i];
    mean /= COUNT;
    print_message("  dropout p %.1f     keep rate %.5f (want %.1f +- %.4f), "
                  "mean out %.5f\n", p, rate, 1 - p, band, mean);
    assert_true(fabs(rate - (1 - p)) <= band);
    assert_true(fabs(mean - 1) <= band / (1 - p) + 1e-6);
  }
  anom_free(m); anom_free(ones); anom_free(out);
}

/*
** p 0.5, scale 2: in [1 -2 3 4], mask [1 0 1 0] -> [2 0 6 0].
** p 0.25, scale 4/3: in [3 -6 1.5], mask [1 1 0] -> [4 -8 0].
** p 0: a copy of in, mask not read (NULL), in place a no-op.
** A dropped NaN stays NaN (multiplied by 0, as PyTorch).
*/
static void test_dropout_forward_hand(void **state) {
  (void)state;
  const float in[4] = {1, -2, 3, 4}, want[4] = {2, 0, 6, 0};
  const uint8_t mask[4] = {1, 0, 1, 0};
  float out[4];
  fill_value(out, 4, NAN);
  dropout_forward(out, in, mask, 4, 0.5f);
  assert_floats(out, want, 4, 0);
  /* in place */
  float x[4] = {1, -2, 3, 4};
  dropout_forward(x, x, mask, 4, 0.5f);
  assert_floats(x, want, 4, 0);
  const float in3[3] = {3, -6, 1.5f}, want3[3] = {4, -8, 0};
  const uint8_t mask3[3] = {1, 1, 0};
  dropout_forward(out, in3, mask3, 3, 0.25f);
  assert_floats(out, want3, 3, 1e-6);
  /* p 0: identity, bit for bit, with no mask */
  const float odd[4] = {1e-30f, -0.0f, 3.14159265f, -1e30f};
  fill_value(out, 4, NAN);
  dropout_forward(out, odd, NULL, 4, 0.0f);
  assert_memory_equal(out, odd, sizeof(odd));
  memcpy(x, odd, sizeof(odd));
  dropout_forward(x, x, NULL, 4, 0.0f);
  assert_memory_equal(x, odd, sizeof(odd));
  /* p 0 with a mask of zeros still copies: the mask is ignored */
  const uint8_t zeros[4] = {0, 0, 0, 0};
  dropout_forward(out, in, zeros, 4, 0.0f);
  assert_floats(out, in, 4, 0);
  /* NaN propagates through a dropped element */
  const float bad[2] = {NAN, 1};
  const uint8_t drop[2] = {0, 0};
  dropout_forward(out, bad, drop, 2, 0.5f);
  assert_true(isnan(out[0]) && out[1] == 0.0f);
  /* p 1: everything dropped, zeros and no division by 0 */
  dropout_forward(out, in, zeros, 4, 1.0f);
  for(int i = 0; i < 4; i++) assert_true(out[i] == 0.0f);
}

/*
** dout [1 2 3 4], mask [1 0 1 0], p 0.5: din += [2 0 6 0]; from a start of
** 1, [3 1 7 1]; again, [5 1 13 1]. p 0: din += dout. NULL din: nothing.
*/
static void test_dropout_backward_hand(void **state) {
  (void)state;
  const float dout[4] = {1, 2, 3, 4};
  const uint8_t mask[4] = {1, 0, 1, 0};
  const float want1[4] = {3, 1, 7, 1}, want2[4] = {5, 1, 13, 1};
  const float want0[4] = {6, 3, 16, 5};
  float din[4];
  fill_value(din, 4, 1);
  dropout_backward(din, dout, mask, 4, 0.5f);
  assert_floats(din, want1, 4, 0);
  dropout_backward(din, dout, mask, 4, 0.5f);
  assert_floats(din, want2, 4, 0);
  dropout_backward(din, dout, NULL, 4, 0.0f);
  assert_floats(din, want0, 4, 0);
  dropout_backward(NULL, dout, mask, 4, 0.5f);
  assert_floats(din, want0, 4, 0);
  dropout_backward(din, dout, mask, 4, 1.0f); /* p 1 adds nothing */
  assert_floats(din, want0, 4, 0);
}

typedef struct dropout_prob {
  size_t count;
  float p;
  const uint8_t *mask;
  float *in, *out, *r;
} dropout_prob;

static double dropout_objective(void *ctx) {
  dropout_prob *q = ctx;
  dropout_forward(q->out, q->in, q->mask, q->count, q->p);
  return dot(q->out, q->r, q->count);
}

/* din against finite differences with a fixed seeded mask, for several p */
static void test_dropout_grad(void **state) {
  (void)state;
  enum { COUNT = 500 };
  static const float ps[] = {0.0f, 0.1f, 0.25f, 0.5f, 0.9f};
  fd_check ck = {"dropout", 0.25, 2e-5, 1e-5, 0, 0, 0};
  uint8_t *mask = mbuf(COUNT);
  float *in = fbuf(COUNT), *out = fbuf(COUNT), *r = fbuf(COUNT);
  float *din = fbuf(COUNT);
  rng g;
  rng_seed(&g, 5);
  for(size_t pi = 0; pi < sizeof(ps) / sizeof(ps[0]); pi++){
    dropout_prob q = {COUNT, ps[pi], mask, in, out, r};
    dropout_mask(mask, COUNT, ps[pi], &g);
    fill_grid(in, COUNT, &g, -1, 1);
    fill_grid(r, COUNT, &g, -1, 1);
    fill_value(din, COUNT, 0);
    dropout_backward(din, r, mask, COUNT, ps[pi]);
    check_grad(&ck, "in", dropout_objective, &q, in, din, COUNT);
    /* a dropped element has exactly no gradient */
    if( ps[pi] > 0 )
      for(size_t i = 0; i < COUNT; i++) if( !mask[i] ) assert_true(din[i] == 0);
  }
  report(&ck);
  anom_free(mask); anom_free(in); anom_free(out); anom_free(r);
  anom_free(din);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_linear_forward_hand),
    cmocka_unit_test(test_linear_backward_hand),
    cmocka_unit_test(test_linear_vs_naive),
    cmocka_unit_test(test_linear_empty),
    cmocka_unit_test(test_linear_grad),
    cmocka_unit_test(test_concat_hand),
    cmocka_unit_test(test_concat_empty_side),
    cmocka_unit_test(test_concat_grad),
    cmocka_unit_test(test_dropout_mask_seeded),
    cmocka_unit_test(test_dropout_keep_rate),
    cmocka_unit_test(test_dropout_forward_hand),
    cmocka_unit_test(test_dropout_backward_hand),
    cmocka_unit_test(test_dropout_grad),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
