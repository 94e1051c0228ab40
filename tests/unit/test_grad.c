/*
** test_grad.c - the backward passes of core/layers/ against finite
** differences of their own float forwards, plus hand-computed cases, the
** += convention and the NULL gradients.
**
** Every gradient check takes a small random problem, the scalar
** L = sum(out * r) for a fixed random r (so dout = r, or L = scale * loss
** for a loss), and holds EVERY element of every analytic gradient against
** the four-point central difference
**   (8 (L(p+h) - L(p-h)) - (L(p+2h) - L(p-2h))) / 12h
** whose truncation error is O(h^4). The forwards are float, so L carries
** float rounding that the difference divides by h; to keep that small:
**   - parameters lie on a grid of 2^-12 and h is a power of two, so p +- h
**     and p +- 2h are exact floats and the step is exactly h;
**   - L is summed in double;
**   - convolutions are linear in each single parameter, so their
**     difference is exact for any h and h is large (1/4);
**   - the nonlinear layers use h = 2^-5 and keep clear of kinks by 4h.
** Each layer's worst |analytic - fd| is printed with its tolerance.
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
#include "fdcheck.h"

/* ---- helpers ------------------------------------------------------------ */

typedef struct test_rng { uint32_t s; } test_rng;

/* xorshift32, uniform in [-1, 1) */
static double rng_unit(test_rng *r) {
  r->s ^= r->s << 13;
  r->s ^= r->s >> 17;
  r->s ^= r->s << 5;
  return (r->s >> 8) * (1.0 / 8388608.0) - 1.0;
}

#define GRID 4096.0 /* parameters are multiples of 1 / GRID */

/* uniform in [lo, hi], rounded to the grid */
static float grid_rand(test_rng *r, double lo, double hi) {
  double u = lo + (hi - lo) * 0.5 * (rng_unit(r) + 1.0);
  return (float)(nearbyint(u * GRID) / GRID);
}

static void fill_grid(float *p, size_t count, test_rng *r, double lo, double hi) {
  for(size_t i = 0; i < count; i++) p[i] = grid_rand(r, lo, hi);
}

/* like fill_grid, but |p| >= gap: no kink of ReLU or |x| within reach */
static void fill_grid_away(float *p, size_t count, test_rng *r, double lo,
                           double hi, double gap) {
  for(size_t i = 0; i < count; i++){
    do p[i] = grid_rand(r, lo, hi); while( fabs(p[i]) < gap );
  }
}

/* ---- convolutions ------------------------------------------------------- */

typedef struct conv_prob {
  conv_shape s;
  int n;
  size_t nin, nout, nw;
  float *in, *wt, *bias, *out, *r, *work; /* bias may be NULL */
} conv_prob;

/* 0 when the shape is not valid (nothing allocated) */
static int conv_prob_init(conv_prob *q, int transposed, int c, int h, int w,
                          int oc, int k, int stride, int pad, int n,
                          int with_bias, test_rng *r) {
  memset(q, 0, sizeof(*q));
  if( conv_shape_init(&q->s, c, h, w, oc, k, stride, pad, transposed) )
    return 0;
  q->n = n;
  q->nin = (size_t)n * c * h * w;
  q->nout = (size_t)n * oc * q->s.oh * q->s.ow;
  q->nw = (size_t)oc * c * k * k;
  q->in = fbuf(q->nin);
  q->wt = fbuf(q->nw);
  q->bias = with_bias ? fbuf((size_t)oc) : NULL;
  q->out = fbuf(q->nout);
  q->r = fbuf(q->nout);
  q->work = fbuf(conv_work_floats(&q->s, q->n));
  fill_grid(q->in, q->nin, r, -1, 1);
  fill_grid(q->wt, q->nw, r, -0.5, 0.5);
  if( q->bias ) fill_grid(q->bias, (size_t)oc, r, -1, 1);
  fill_grid(q->r, q->nout, r, -1, 1);
  return 1;
}

static void conv_prob_free(conv_prob *q) {
  anom_free(q->in); anom_free(q->wt); anom_free(q->bias);
  anom_free(q->out); anom_free(q->r); anom_free(q->work);
}

static void conv_prob_forward(conv_prob *q) {
  if( q->s.transposed ){
    conv_transpose2d_forward(&q->s, q->n, q->out, q->in, q->wt, q->bias,
                             q->work);
  }else{
    conv2d_forward(&q->s, q->n, q->out, q->in, q->wt, q->bias, q->work);
  }
}

static void conv_prob_backward(conv_prob *q, float *din, float *dw, float *db,
                               const float *dout) {
  if( q->s.transposed ){
    conv_transpose2d_backward(&q->s, q->n, din, dw, db, dout, q->in, q->wt,
                              q->work);
  }else{
    conv2d_backward(&q->s, q->n, din, dw, db, dout, q->in, q->wt, q->work);
  }
}

static double conv_objective(void *ctx) {
  conv_prob *q = ctx;
  conv_prob_forward(q);
  return dot(q->out, q->r, q->nout);
}

typedef struct kernel_case { int k, stride, pad; } kernel_case;

static const kernel_case grad_kernels[] = {
  {3, 1, 0}, {3, 1, 1}, {3, 2, 0}, {3, 2, 1},
  {4, 1, 0}, {4, 1, 1}, {4, 2, 0}, {4, 2, 1},
  {1, 1, 0}, {1, 2, 0}, /* pointwise (no im2col), and strided 1x1 */
};

/* c, oc, h, w, n */
static const int grad_sizes[][5] = {
  {1, 1, 3, 3, 1}, {2, 3, 4, 5, 2}, {3, 2, 6, 4, 3},
  {1, 2, 5, 6, 1}, {3, 1, 3, 6, 2}, {2, 2, 6, 6, 3},
};

/* analytic gradients of every conv problem against finite differences */
static void check_conv_grads(int transposed, fd_check *ck) {
  test_rng r = {transposed ? 777u : 555u};
  int runs = 0;
  for(size_t ki = 0; ki < sizeof(grad_kernels) / sizeof(grad_kernels[0]); ki++)
  for(size_t si = 0; si < sizeof(grad_sizes) / sizeof(grad_sizes[0]); si++){
    const kernel_case *kc = &grad_kernels[ki];
    const int *z = grad_sizes[si];
    conv_prob q;
    if( !conv_prob_init(&q, transposed, z[0], z[2], z[3], z[1], kc->k,
                        kc->stride, kc->pad, z[4], (ki + si) % 3 != 0, &r) )
      continue;
    float *din = fbuf(q.nin), *dw = fbuf(q.nw), *db = fbuf((size_t)q.s.oc);
    fill_value(din, q.nin, 0.0f);
    fill_value(dw, q.nw, 0.0f);
    fill_value(db, (size_t)q.s.oc, 0.0f);
    fill_value(q.work, conv_work_floats(&q.s, q.n), NAN); /* no stale scratch */
    conv_prob_backward(&q, din, dw, q.bias ? db : NULL, q.r);
    check_grad(ck, "in", conv_objective, &q, q.in, din, q.nin);
    check_grad(ck, "weight", conv_objective, &q, q.wt, dw, q.nw);
    if( q.bias ){
      check_grad(ck, "bias", conv_objective, &q, q.bias, db, (size_t)q.s.oc);
    }else{
      for(int o = 0; o < q.s.oc; o++) assert_true(db[o] == 0.0f);
    }
    anom_free(din); anom_free(dw); anom_free(db);
    conv_prob_free(&q);
    runs++;
  }
  assert_true(runs >= 50);
}

static void test_conv2d_grad(void **state) {
  (void)state;
  fd_check ck = {"conv2d", 0.25, 2e-5, 1e-5, 0, 0, 0};
  check_conv_grads(0, &ck);
  report(&ck);
}

static void test_convt_grad(void **state) {
  (void)state;
  fd_check ck = {"conv_transpose2d", 0.25, 2e-5, 1e-5, 0, 0, 0};
  check_conv_grads(1, &ck);
  report(&ck);
}

/*
** The forward golden of test_layers.c, backward: in 3x3 = [1 2 3; 4 5 6;
** 7 8 9], kernel [1 2; 3 4], stride 1, dout 2x2 all ones:
**   dweight[ky, kx] = sum of the window's pixel at (ky, kx) over 4 windows:
**     [1+2+4+5, 2+3+5+6; 4+5+7+8, 5+6+8+9] = [12 16; 24 28]
**   dbias = 4
**   din[y, x] = sum of w over the windows covering (y, x):
**     [w00, w00+w01, w01; w00+w10, all, w01+w11; w10, w10+w11, w11]
**     = [1 3 2; 4 10 6; 3 7 4]
*/
static void test_conv2d_backward_hand(void **state) {
  (void)state;
  const float in[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, w[4] = {1, 2, 3, 4};
  const float dout[4] = {1, 1, 1, 1};
  const float want_dw[4] = {12, 16, 24, 28};
  const float want_din[9] = {1, 3, 2, 4, 10, 6, 3, 7, 4};
  float din[9], dw[4], db[1], work[32];
  conv_shape s;
  assert_int_equal(conv_shape_init(&s, 1, 3, 3, 1, 2, 1, 0, 0), 0);
  assert_true(conv_work_floats(&s, 1) <= 32);
  fill_value(din, 9, 0.0f);
  fill_value(dw, 4, 0.0f);
  db[0] = 0.0f;
  conv2d_backward(&s, 1, din, dw, db, dout, in, w, work);
  assert_floats(dw, want_dw, 4, 0);
  assert_floats(din, want_din, 9, 0);
  assert_true(db[0] == 4.0f);
}

/*
** ConvTranspose2d k2 s2 p0 from a 2x2 input [1 2; 3 4], weight [1 2; 3 4]:
** every input pixel owns its own 2x2 block of the 4x4 output, so with
** dout = the 4x4 ramp 0..15:
**   din[iy, ix] = <block (iy, ix) of dout, w>
**     block (0,0) = [0 1; 4 5]    -> 0 + 2 + 12 + 20   = 34
**     block (0,1) = [2 3; 6 7]    -> 2 + 6 + 18 + 28   = 54
**     block (1,0) = [8 9; 12 13]  -> 8 + 18 + 36 + 52  = 114
**     block (1,1) = [10 11; 14 15]-> 10 + 22 + 42 + 60 = 134
**   dweight[ky, kx] = sum over pixels of in * dout at that tap:
**     (0,0) 1*0 + 2*2 + 3*8 + 4*10   = 68
**     (0,1) 1*1 + 2*3 + 3*9 + 4*11   = 78
**     (1,0) 1*4 + 2*6 + 3*12 + 4*14  = 108
**     (1,1) 1*5 + 2*7 + 3*13 + 4*15  = 118
**   dbias = 0 + 1 + ... + 15 = 120
*/
static void test_convt_backward_hand(void **state) {
  (void)state;
  const float in[4] = {1, 2, 3, 4}, w[4] = {1, 2, 3, 4};
  float dout[16], din[4], dw[4], db[1], work[32];
  const float want_din[4] = {34, 54, 114, 134}, want_dw[4] = {68, 78, 108, 118};
  conv_shape s;
  for(int i = 0; i < 16; i++) dout[i] = (float)i;
  assert_int_equal(conv_shape_init(&s, 1, 2, 2, 1, 2, 2, 0, 1), 0);
  assert_int_equal(s.oh, 4);
  assert_true(conv_work_floats(&s, 1) <= 32);
  fill_value(din, 4, 0.0f);
  fill_value(dw, 4, 0.0f);
  db[0] = 0.0f;
  conv_transpose2d_backward(&s, 1, din, dw, db, dout, in, w, work);
  assert_floats(din, want_din, 4, 0);
  assert_floats(dw, want_dw, 4, 0);
  assert_true(db[0] == 120.0f);
}

/*
** The += convention and NULL outputs: start every gradient from a random
** G, run backward with each subset of (din, dweight, dbias) present, and
** expect G + grad in the present ones after one call and G + 2 grad after
** two. grad comes from one call into zeros with all three present.
*/
static void check_conv_accumulates(int transposed, int c, int h, int w, int oc,
                                   kernel_case kc, int n, test_rng *r) {
  conv_prob q;
  assert_true(conv_prob_init(&q, transposed, c, h, w, oc, kc.k, kc.stride,
                             kc.pad, n, 1, r));
  size_t sz[3] = {q.nin, q.nw, (size_t)oc};
  float *ref[3], *g0[3], *got[3], *want[3];
  for(int t = 0; t < 3; t++){
    ref[t] = fbuf(sz[t]);
    g0[t] = fbuf(sz[t]);
    got[t] = fbuf(sz[t]);
    want[t] = fbuf(sz[t]);
    fill_value(ref[t], sz[t], 0.0f);
    fill_grid(g0[t], sz[t], r, -4, 4);
  }
  conv_prob_backward(&q, ref[0], ref[1], ref[2], q.r);
  for(int mask = 0; mask < 8; mask++){
    float *arg[3];
    for(int t = 0; t < 3; t++){
      memcpy(got[t], g0[t], sz[t] * sizeof(float));
      arg[t] = (mask >> t) & 1 ? got[t] : NULL;
    }
    for(int calls = 1; calls <= 2; calls++){
      conv_prob_backward(&q, arg[0], arg[1], arg[2], q.r);
      for(int t = 0; t < 3; t++){
        for(size_t i = 0; i < sz[t]; i++)
          want[t][i] = arg[t] ? g0[t][i] + calls * ref[t][i] : g0[t][i];
        /* float sums in another order: a few ulps of |G| + 2 |grad| */
        assert_floats(got[t], want[t], sz[t], 1e-5);
      }
    }
  }
  for(int t = 0; t < 3; t++){
    anom_free(ref[t]); anom_free(g0[t]); anom_free(got[t]); anom_free(want[t]);
  }
  conv_prob_free(&q);
}

/*
** Chunks in backward: with n = 5 and two images a gemm, one call on the
** batch gives what five calls on one image each add up to.
*/
static void check_conv_chunked_backward(int transposed, int c, int h, int w, int oc,
                                        test_rng *r) {
  conv_prob q;
  assert_true(conv_prob_init(&q, transposed, c, h, w, oc, 4, 2, 1, 5, 1, r));
  assert_int_equal(conv_chunk(&q.s, 5), 2);
  size_t in1 = q.nin / 5, out1 = q.nout / 5;
  float *din = fbuf(q.nin), *dw = fbuf(q.nw), *db = fbuf((size_t)oc);
  float *din1 = fbuf(q.nin), *dw1 = fbuf(q.nw), *db1 = fbuf((size_t)oc);
  float *work1 = fbuf(conv_work_floats(&q.s, 1));
  fill_value(din, q.nin, 0.0f); fill_value(dw, q.nw, 0.0f); fill_value(db, (size_t)oc, 0.0f);
  fill_value(din1, q.nin, 0.0f); fill_value(dw1, q.nw, 0.0f); fill_value(db1, (size_t)oc, 0.0f);
  conv_prob_backward(&q, din, dw, db, q.r);
  for(int i = 0; i < 5; i++){
    if( transposed )
      conv_transpose2d_backward(&q.s, 1, din1 + i * in1, dw1, db1, q.r + i * out1,
                                q.in + i * in1, q.wt, work1);
    else
      conv2d_backward(&q.s, 1, din1 + i * in1, dw1, db1, q.r + i * out1,
                      q.in + i * in1, q.wt, work1);
  }
  assert_floats(din, din1, q.nin, 1e-4);
  assert_floats(dw, dw1, q.nw, 1e-3);
  assert_floats(db, db1, (size_t)oc, 1e-3);
  anom_free(din); anom_free(dw); anom_free(db);
  anom_free(din1); anom_free(dw1); anom_free(db1); anom_free(work1);
  conv_prob_free(&q);
}

static void test_conv_chunked_backward(void **state) {
  (void)state;
  test_rng r = {2718};
  check_conv_chunked_backward(0, 2, 64, 64, 3, &r);
  check_conv_chunked_backward(1, 3, 32, 32, 2, &r);
}

static void test_conv_accumulates(void **state) {
  (void)state;
  test_rng r = {31337};
  static const kernel_case kcs[] = {{4, 2, 1}, {3, 1, 1}, {1, 1, 0}};
  for(int tr = 0; tr < 2; tr++)
  for(size_t i = 0; i < sizeof(kcs) / sizeof(kcs[0]); i++)
    check_conv_accumulates(tr, 2, 4, 5, 3, kcs[i], 2, &r);
}

/* ---- batch norm ---------------------------------------------------------- */

typedef struct bn_prob {
  int n, c, hw;
  size_t count;
  float eps;
  float *in, *gamma, *beta, *out, *mean, *var, *r;
} bn_prob;

static double bn_objective(void *ctx) {
  bn_prob *q = ctx;
  batchnorm_forward_train(q->n, q->c, q->hw, q->out, q->mean, q->var, q->in,
                          q->gamma, q->beta, q->eps);
  return dot(q->out, q->r, q->count);
}

static void test_batchnorm_grad(void **state) {
  (void)state;
  /* n, c, hw: m = n * hw from 2 to 72 values per channel */
  static const int cases[][3] = {
    {1, 1, 4}, {2, 3, 3}, {3, 2, 5}, {1, 3, 9}, {2, 1, 1}, {3, 3, 1},
    {2, 2, 16}, {3, 1, 24},
  };
  fd_check ck = {"batchnorm", 1.0 / 32, 1e-4, 1e-4, 0, 0, 0};
  test_rng r = {2024};
  for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
    bn_prob q = {cases[i][0], cases[i][1], cases[i][2], 0, 1e-5f,
                 NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    q.count = (size_t)q.n * q.c * q.hw;
    size_t c = (size_t)q.c;
    q.in = fbuf(q.count); q.out = fbuf(q.count); q.r = fbuf(q.count);
    q.gamma = fbuf(c); q.beta = fbuf(c); q.mean = fbuf(c); q.var = fbuf(c);
    float *din = fbuf(q.count), *dgamma = fbuf(c), *dbeta = fbuf(c);
    fill_grid(q.in, q.count, &r, -1, 1);
    fill_grid(q.r, q.count, &r, -1, 1);
    fill_grid(q.gamma, c, &r, 0.5, 1.5);
    fill_grid(q.beta, c, &r, -1, 1);
    fill_value(din, q.count, 0.0f);
    fill_value(dgamma, c, 0.0f);
    fill_value(dbeta, c, 0.0f);
    bn_objective(&q); /* mean and var of the unperturbed batch */
    batchnorm_backward(q.n, q.c, q.hw, din, dgamma, dbeta, q.r, q.in, q.mean,
                       q.var, q.gamma, q.eps);
    check_grad(&ck, "in", bn_objective, &q, q.in, din, q.count);
    check_grad(&ck, "gamma", bn_objective, &q, q.gamma, dgamma, c);
    check_grad(&ck, "beta", bn_objective, &q, q.beta, dbeta, c);
    anom_free(q.in); anom_free(q.out); anom_free(q.r); anom_free(q.gamma);
    anom_free(q.beta); anom_free(q.mean); anom_free(q.var);
    anom_free(din); anom_free(dgamma); anom_free(dbeta);
  }
  report(&ck);
}

/*
** One channel, x = [0, 1, 2]: mean 1, biased var 2/3; eps 1/3 makes
** var + eps = 1, so rstd = 1 and xhat = [-1, 0, 1]. gamma 2, beta 0.5:
**   out = 2 xhat + 0.5 = [-1.5, 0.5, 2.5]
** dout = [1, 0, 0]: sum(dout) = 1, sum(dout xhat) = -1, m = 3:
**   din = 2 / 3 (3 dout - 1 + xhat) = [2/3, -2/3, 0]
**   dgamma = -1, dbeta = 1
*/
static void test_batchnorm_backward_hand(void **state) {
  (void)state;
  const float in[3] = {0, 1, 2}, gamma[1] = {2}, beta[1] = {0.5f};
  const float dout[3] = {1, 0, 0};
  const float want_out[3] = {-1.5f, 0.5f, 2.5f};
  const float want_din[3] = {2.0f / 3, -2.0f / 3, 0};
  float out[3], mean[1], var[1], din[3] = {0, 0, 0}, dg[1] = {0}, dbt[1] = {0};
  batchnorm_forward_train(1, 1, 3, out, mean, var, in, gamma, beta, 1.0f / 3);
  assert_true(mean[0] == 1.0f);
  assert_true(fabsf(var[0] - 2.0f / 3) <= 1e-7f);
  assert_floats(out, want_out, 3, 1e-6);
  batchnorm_backward(1, 1, 3, din, dg, dbt, dout, in, mean, var, gamma,
                     1.0f / 3);
  assert_floats(din, want_din, 3, 1e-6);
  assert_true(fabsf(dg[0] + 1.0f) <= 1e-6f);
  assert_true(dbt[0] == 1.0f);
  /* += and NULL: again with only din and dgamma, then only dbeta */
  batchnorm_backward(1, 1, 3, din, dg, NULL, dout, in, mean, var, gamma,
                     1.0f / 3);
  const float want_din2[3] = {4.0f / 3, -4.0f / 3, 0};
  assert_floats(din, want_din2, 3, 1e-6);
  assert_true(fabsf(dg[0] + 2.0f) <= 1e-6f);
  assert_true(dbt[0] == 1.0f);
  batchnorm_backward(1, 1, 3, NULL, NULL, dbt, dout, in, mean, var, gamma,
                     1.0f / 3);
  assert_floats(din, want_din2, 3, 1e-6);
  assert_true(dbt[0] == 2.0f);
}

/*
** N = 2, C = 2, HW = 2, so m = 4 values per channel.
**   ch 0 = [1, 2] and [3, 6]: mean 3, biased var (4 + 1 + 0 + 9) / 4 = 3.5,
**          unbiased 3.5 * 4/3 = 14/3
**   ch 1 = [4, 4] and [4, 4]: mean 4, var 0
** running (mean, var) from ch 0 (1, 2), ch 1 (0, 1), momentum 0.1:
**   ch 0: mean 0.9 + 0.3 = 1.2, var 1.8 + 1.4/3 = 2.2666667
**   ch 1: mean 0 + 0.4 = 0.4,  var 0.9 + 0 = 0.9
*/
static void test_batchnorm_update_running(void **state) {
  (void)state;
  const float in[8] = {1, 2, 4, 4, 3, 6, 4, 4};
  const float gamma[2] = {1, 1}, beta[2] = {0, 0};
  float out[8], mean[2], var[2];
  float run_mean[2] = {1, 0}, run_var[2] = {2, 1};
  batchnorm_forward_train(2, 2, 2, out, mean, var, in, gamma, beta, 1e-5f);
  assert_true(mean[0] == 3.0f && mean[1] == 4.0f);
  assert_true(var[0] == 3.5f && var[1] == 0.0f);
  batchnorm_update_running(2, 2, 2, run_mean, run_var, mean, var, 0.1f);
  assert_true(fabsf(run_mean[0] - 1.2f) <= 1e-6f);
  assert_true(fabsf(run_mean[1] - 0.4f) <= 1e-6f);
  assert_true(fabsf(run_var[0] - 2.2666667f) <= 1e-6f);
  assert_true(fabsf(run_var[1] - 0.9f) <= 1e-6f);
  /* a constant channel normalises to beta: (4 - 4) * rstd + 0 */
  assert_true(out[2] == 0.0f && out[3] == 0.0f && out[6] == 0.0f);
  /* one value per channel: no unbiased variance, the biased 0 is used */
  float one_mean[1] = {5}, one_var[1] = {0};
  float rm[1] = {1}, rv[1] = {2};
  batchnorm_update_running(1, 1, 1, rm, rv, one_mean, one_var, 0.1f);
  assert_true(fabsf(rm[0] - 1.4f) <= 1e-6f);
  assert_true(fabsf(rv[0] - 1.8f) <= 1e-6f);
}

/* Training output: per channel mean 0 and biased variance var / (var + eps)
** (gamma 1, beta 0), even on a large offset; mean and var match a double
** two-pass computation; in place gives the same bytes. */
static void test_batchnorm_forward_train_stats(void **state) {
  (void)state;
  enum { N = 3, C = 3, HW = 25, COUNT = N * C * HW };
  const float offset[C] = {0.5f, 100, -50}, spread[C] = {0.01f, 5, 2};
  const float gamma[C] = {1, 1, 1}, beta[C] = {0, 0, 0};
  float in[COUNT], out[COUNT], inplace[COUNT], mean[C], var[C], m2[C], v2[C];
  test_rng r = {8};
  for(int i = 0; i < N; i++)
  for(int ch = 0; ch < C; ch++)
  for(int j = 0; j < HW; j++)
    in[(i * C + ch) * HW + j] = offset[ch] + spread[ch] * (float)rng_unit(&r);
  batchnorm_forward_train(N, C, HW, out, mean, var, in, gamma, beta, 1e-5f);
  memcpy(inplace, in, sizeof(in));
  batchnorm_forward_train(N, C, HW, inplace, m2, v2, inplace, gamma, beta,
                          1e-5f);
  assert_memory_equal(inplace, out, sizeof(out));
  assert_memory_equal(m2, mean, sizeof(mean));
  assert_memory_equal(v2, var, sizeof(var));
  for(int ch = 0; ch < C; ch++){
    double s = 0, sq = 0, os = 0, osq = 0, m = N * HW;
    for(int i = 0; i < N; i++)
    for(int j = 0; j < HW; j++) s += in[(i * C + ch) * HW + j];
    for(int i = 0; i < N; i++)
    for(int j = 0; j < HW; j++){
      double d = in[(i * C + ch) * HW + j] - s / m;
      sq += d * d;
      os += out[(i * C + ch) * HW + j];
    }
    double om = os / m;
    for(int i = 0; i < N; i++)
    for(int j = 0; j < HW; j++){
      double d = out[(i * C + ch) * HW + j] - om;
      osq += d * d;
    }
    double want_var = sq / m;
    assert_true(fabs(mean[ch] - s / m) <= 1e-7 * (1 + fabs(s / m)));
    assert_true(fabs(var[ch] - want_var) <= 1e-6 * want_var);
    if( !(fabs(om) <= 1e-5 && fabs(osq / m - want_var / (want_var + 1e-5))
                              <= 1e-5) ){
      print_error("channel %d: output mean %g, variance %.9g, want 0 and "
                  "%.9g\n", ch, om, osq / m, want_var / (want_var + 1e-5));
      fail();
    }
  }
}

/* ---- activations --------------------------------------------------------- */


typedef struct act_prob {
  int kind;
  size_t count;
  float *in, *out, *r;
} act_prob;

static void act_forward(int kind, float *out, const float *in, size_t count) {
  switch( kind ){
    case ACT_LEAKY_RELU: leaky_relu_forward(out, in, count, 0.2f); break;
    case ACT_RELU: relu_forward(out, in, count); break;
    case ACT_TANH: tanh_forward(out, in, count); break;
    default: sigmoid_forward(out, in, count); break;
  }
}

static void act_backward(int kind, float *din, const float *dout,
                         const float *out, size_t count) {
  switch( kind ){
    case ACT_LEAKY_RELU: leaky_relu_backward(din, dout, out, count, 0.2f); break;
    case ACT_RELU: relu_backward(din, dout, out, count); break;
    case ACT_TANH: tanh_backward(din, dout, out, count); break;
    default: sigmoid_backward(din, dout, out, count); break;
  }
}

static double act_objective(void *ctx) {
  act_prob *q = ctx;
  act_forward(q->kind, q->out, q->in, q->count);
  return dot(q->out, q->r, q->count);
}

static void check_act_grad(int kind, const char *name, double lo, double hi) {
  fd_check ck = {name, 1.0 / 32, 2e-5, 1e-5, 0, 0, 0};
  test_rng r = {(uint32_t)(100 + kind)};
  act_prob q = {kind, 300, fbuf(300), fbuf(300), fbuf(300)};
  float *din = fbuf(q.count);
  /* clear of the kink at 0 by 4h: the 4-point stencil reaches 2h */
  fill_grid_away(q.in, q.count, &r, lo, hi, 4 * ck.h);
  fill_grid(q.r, q.count, &r, -1, 1);
  fill_value(din, q.count, 0.0f);
  act_objective(&q);
  act_backward(kind, din, q.r, q.out, q.count);
  check_grad(&ck, "in", act_objective, &q, q.in, din, q.count);
  report(&ck);
  anom_free(q.in); anom_free(q.out); anom_free(q.r); anom_free(din);
}

static void test_activation_grads(void **state) {
  (void)state;
  check_act_grad(ACT_LEAKY_RELU, "leaky_relu", -3, 3);
  check_act_grad(ACT_RELU, "relu", -3, 3);
  check_act_grad(ACT_TANH, "tanh", -3, 3);
  check_act_grad(ACT_SIGMOID, "sigmoid", -6, 6);
}

/* Hand values read off the output, including the kink at 0, and +=. */
static void test_activation_backward_hand(void **state) {
  (void)state;
  const float dout[4] = {2, 2, 2, 2};
  float din[4];
  /* leaky (slope 0.2) outputs -0.4 (from x = -2), 0, 3, 1e-30 */
  const float lout[4] = {-0.4f, 0, 3, 1e-30f};
  const float lwant[4] = {0.4f, 0.4f, 2, 2};
  fill_value(din, 4, 0.0f);
  leaky_relu_backward(din, dout, lout, 4, 0.2f);
  assert_floats(din, lwant, 4, 1e-7);
  /* relu: 0 at 0, as PyTorch */
  const float rout[4] = {0, 0, 3, 1e-30f}, rwant[4] = {0, 0, 2, 2};
  fill_value(din, 4, 0.0f);
  relu_backward(din, dout, rout, 4);
  assert_floats(din, rwant, 4, 0);
  /* tanh: 2 (1 - out^2) */
  const float tout[4] = {0, 0.5f, -0.5f, 1}, twant[4] = {2, 1.5f, 1.5f, 0};
  fill_value(din, 4, 0.0f);
  tanh_backward(din, dout, tout, 4);
  assert_floats(din, twant, 4, 0);
  /* sigmoid: 2 out (1 - out), then += with a start of 1 */
  const float sout[4] = {0.5f, 0.25f, 1, 0}, swant[4] = {1.5f, 1.375f, 1, 1};
  fill_value(din, 4, 1.0f);
  sigmoid_backward(din, dout, sout, 4);
  assert_floats(din, swant, 4, 0);
  /* += for the others: a second call doubles */
  fill_value(din, 4, 0.0f);
  leaky_relu_backward(din, dout, lout, 4, 0.2f);
  leaky_relu_backward(din, dout, lout, 4, 0.2f);
  const float lwant2[4] = {0.8f, 0.8f, 4, 4};
  assert_floats(din, lwant2, 4, 1e-7);
}

/* ---- losses -------------------------------------------------------------- */

enum { LOSS_L1, LOSS_L2, LOSS_BCE };

typedef struct loss_prob {
  int kind;
  size_t count;
  float *x, *y; /* y unused by BCE */
  float target, scale;
} loss_prob;

static double loss_eval(const loss_prob *q, float *dx) {
  switch( q->kind ){
    case LOSS_L1: return l1_loss(dx, q->x, q->y, q->count, q->scale);
    case LOSS_L2: return l2_loss(dx, q->x, q->y, q->count, q->scale);
    default: return bce_logits_loss(dx, q->x, q->target, q->count, q->scale);
  }
}

static double loss_objective(void *ctx) {
  loss_prob *q = ctx;
  return q->scale * loss_eval(q, NULL);
}

static void check_loss_grad(int kind, const char *name, float target) {
  fd_check ck = {name, 1.0 / 32, 1e-8, 1e-6, 0, 0, 0};
  test_rng r = {(uint32_t)(900 + kind)};
  loss_prob q = {kind, 200, fbuf(200), fbuf(200), target, 3.0f};
  float *dx = fbuf(q.count);
  fill_grid(q.y, q.count, &r, -1, 1);
  fill_grid(q.x, q.count, &r, kind == LOSS_BCE ? -8 : -1,
            kind == LOSS_BCE ? 8 : 1);
  if( kind == LOSS_L1 ){
    /* keep |x - y| >= 4h, clear of the kink */
    for(size_t i = 0; i < q.count; i++)
      while( fabs((double)q.x[i] - q.y[i]) < 4 * ck.h )
        q.x[i] = grid_rand(&r, -1, 1);
  }
  fill_value(dx, q.count, 0.0f);
  double l1 = loss_eval(&q, dx);
  /* dx == NULL changes nothing in the value */
  assert_true(loss_eval(&q, NULL) == l1);
  check_grad(&ck, "x", loss_objective, &q, q.x, dx, q.count);
  report(&ck);
  anom_free(q.x); anom_free(q.y); anom_free(dx);
}

static void test_loss_grads(void **state) {
  (void)state;
  check_loss_grad(LOSS_L1, "l1_loss", 0);
  check_loss_grad(LOSS_L2, "l2_loss", 0);
  check_loss_grad(LOSS_BCE, "bce_logits t=1", 1);
  check_loss_grad(LOSS_BCE, "bce_logits t=0", 0);
  check_loss_grad(LOSS_BCE, "bce_logits t=0.3", 0.3f);
}

/*
** x = [1, 2, 3], y = [0, 2, 5]: x - y = [1, 0, -2].
**   L1 = (1 + 0 + 2) / 3 = 1,       grad = [1, 0, -1] / 3 (0 at equality)
**   L2 = (1 + 0 + 4) / 3 = 5/3,     grad = 2 [1, 0, -2] / 3
** scale 1.5 multiplies the gradient only; dx starts at 1 to see the +=.
*/
static void test_l1_l2_hand(void **state) {
  (void)state;
  const float x[3] = {1, 2, 3}, y[3] = {0, 2, 5};
  float dx[3];
  fill_value(dx, 3, 1.0f);
  assert_true(l1_loss(dx, x, y, 3, 1.5f) == 1.0);
  const float want1[3] = {1.5f, 1.0f, 0.5f};
  assert_floats(dx, want1, 3, 1e-7);
  assert_true(dx[1] == 1.0f); /* exactly nothing at equality */
  fill_value(dx, 3, 1.0f);
  assert_true(fabs(l2_loss(dx, x, y, 3, 1.5f) - 5.0 / 3) <= 1e-15);
  const float want2[3] = {2.0f, 1.0f, -1.0f};
  assert_floats(dx, want2, 3, 1e-7);
  /* all equal: loss 0, gradient 0 */
  fill_value(dx, 3, 0.0f);
  assert_true(l1_loss(dx, x, x, 3, 1.0f) == 0.0);
  for(int i = 0; i < 3; i++) assert_true(dx[i] == 0.0f);
  /* count 0: nothing to average, dx untouched */
  fill_value(dx, 3, 7.0f);
  assert_true(l1_loss(dx, x, y, 0, 1.0f) == 0.0);
  assert_true(l2_loss(dx, x, y, 0, 1.0f) == 0.0);
  assert_true(bce_logits_loss(dx, x, 1.0f, 0, 1.0f) == 0.0);
  for(int i = 0; i < 3; i++) assert_true(dx[i] == 7.0f);
}

/*
** BCE from logits, scale 1, count 4:
**   logit 0, any t: loss log 2, grad (0.5 - t) / 4
**   logit +100, t 1: loss log1p(e^-100) ~ 3.7e-44, grad exactly 0
**   logit +100, t 0: loss 100 (+ e^-100), grad exactly 1/4
**   logit -100, t 1: loss 100, grad exactly -1/4
**   logit -100, t 0: loss ~ e^-100, grad ~ e^-100 / 4 (below 1e-40)
*/
static void test_bce_hand(void **state) {
  (void)state;
  const float l0[4] = {0, 0, 0, 0};
  float dx[4];
  fill_value(dx, 4, 0.0f);
  double loss = bce_logits_loss(dx, l0, 0.25f, 4, 1.0f);
  assert_true(fabs(loss - log(2.0)) <= 1e-15);
  for(int i = 0; i < 4; i++) assert_true(dx[i] == 0.0625f);
  const float big[2] = {100, -100};
  fill_value(dx, 4, 0.0f);
  loss = bce_logits_loss(dx, big, 1.0f, 2, 2.0f); /* scale 2 / count 2 */
  assert_true(isfinite(loss));
  assert_true(fabs(loss - 50.0) <= 1e-12); /* (0 + 100) / 2 */
  assert_true(dx[0] == 0.0f);
  assert_true(dx[1] == -1.0f);
  fill_value(dx, 4, 0.0f);
  loss = bce_logits_loss(dx, big, 0.0f, 2, 2.0f);
  assert_true(fabs(loss - 50.0) <= 1e-12); /* (100 + 0) / 2 */
  assert_true(dx[0] == 1.0f);
  assert_true(fabsf(dx[1]) < 1e-40f);
  /* every logit saturated the right way: loss near 0, not NaN */
  const float sure[4] = {100, 100, 100, 100};
  loss = bce_logits_loss(NULL, sure, 1.0f, 4, 1.0f);
  assert_true(loss >= 0.0 && loss < 1e-40);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_conv2d_grad),
    cmocka_unit_test(test_convt_grad),
    cmocka_unit_test(test_conv2d_backward_hand),
    cmocka_unit_test(test_convt_backward_hand),
    cmocka_unit_test(test_conv_accumulates),
    cmocka_unit_test(test_conv_chunked_backward),
    cmocka_unit_test(test_batchnorm_grad),
    cmocka_unit_test(test_batchnorm_backward_hand),
    cmocka_unit_test(test_batchnorm_update_running),
    cmocka_unit_test(test_batchnorm_forward_train_stats),
    cmocka_unit_test(test_activation_grads),
    cmocka_unit_test(test_activation_backward_hand),
    cmocka_unit_test(test_loss_grads),
    cmocka_unit_test(test_l1_l2_hand),
    cmocka_unit_test(test_bce_hand),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
