/*
** test_sn.c - spectral normalisation (core/layers/spectral_norm.c):
** three training-mode calls and the gradient against PyTorch's
** torch.nn.utils.spectral_norm, the forward against a double oracle on
** larger matrices, the backward against finite differences, cases with a
** known answer (eval mode, a rank-1 W, diagonal matrices, the eps clamp),
** and the += convention.
**
** The golden file tests/data/golden-sn.safetensors comes from
** tests/bench/reference/make_golden_sn.py: a Conv2d(3, 5, 3) (W 5 x 27) and a
** Linear(7, 4) (W 4 x 7) from a fixed seed, run in float64 from their float32
** weight and initial u, rounded to float32.
**
** The finite-difference check is fdcheck.h's, on the function the backward
** differentiates: W -> W / (u^T W v) with u and v fixed after one update,
** which is spectral_norm_forward with update 0. L = sum(wn * r) for a fixed
** random r (so dwn = r), parameters on the 2^-12 grid, every element of dw.
** Unlike the linear layers this is not linear in a single parameter: a step
** h moves sigma by u_i v_j h, and the four-point difference's truncation
** error is O((h u_i v_j / sigma)^4) while its rounding error (L of float
** wn, sigma of a float gemm) is O(eps_f |L| / h). Rounding dominates: the
** worst error is 4e-6 at h 2^-4, 7e-6 at 2^-5, 2.4e-5 at 2^-7; h is 2^-5.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/model.h"
#include "core/safetensors.h"
#include "common.h"
#include "layers.h"
#include "rng.h"
#include "fdcheck.h"
#include "golden.h"

#define GOLDEN_PATH "tests/data/golden-sn.safetensors"
#define EPS 1e-12f
#define GRID 4096.0 /* parameters are multiples of 1 / GRID */

/* ---- helpers ------------------------------------------------------------ */

/* uniform in [lo, hi], rounded to the grid */
static float grid_rand(rng *r, double lo, double hi) {
  double x = lo + (hi - lo) * rng_uniform(r);
  return (float)(nearbyint(x * GRID) / GRID);
}

static void fill_grid(float *p, size_t count, rng *r, double lo, double hi) {
  for(size_t i = 0; i < count; i++) p[i] = grid_rand(r, lo, hi);
}

static void fill_normal(float *p, size_t count, rng *r) {
  for(size_t i = 0; i < count; i++) p[i] = (float)rng_normal(r);
}

static double *dbuf(size_t count) {
  double *p = anom_malloc((count ? count : 1) * sizeof(double));
  assert_non_null(p);
  return p;
}

/* max |got - ref| / max |ref| over the tensor; NaN gives +inf */
static double tensor_err(const float *got, const double *ref, size_t count) {
  double worst = 0.0, scale = 0.0;
  for(size_t i = 0; i < count; i++){
    double d = fabs((double)got[i] - ref[i]);
    if( !(d == d) ) return INFINITY;
    if( d > worst ) worst = d;
    if( fabs(ref[i]) > scale ) scale = fabs(ref[i]);
  }
  return worst / (scale > 0 ? scale : 1.0);
}

/*
** Double oracle of one forward from the float u (and v when !update):
** v = normalize(W^T u), u' = normalize(W v), sigma = u'^T W v, wn = W / sigma
** with every sum in double and nothing rounded to float.
*/
static double sn_ref(int rows, int cols, const float *w, const float *u,
                     const float *v_in, int update, double *u_out,
                     double *v_out, double *wn) {
  double ss = 0.0;
  for(int j = 0; j < cols; j++){
    if( update ){
      double acc = 0.0;
      for(int i = 0; i < rows; i++) acc += (double)w[(size_t)i * cols + j] * u[i];
      v_out[j] = acc;
      ss += acc * acc;
    }else v_out[j] = v_in[j];
  }
  if( update ){
    double d = fmax(sqrt(ss), EPS);
    for(int j = 0; j < cols; j++) v_out[j] /= d;
  }
  /* W v into wn, then u' */
  ss = 0.0;
  for(int i = 0; i < rows; i++){
    double acc = 0.0;
    for(int j = 0; j < cols; j++) acc += (double)w[(size_t)i * cols + j] * v_out[j];
    wn[i] = acc;
    ss += acc * acc;
  }
  double d = fmax(sqrt(ss), EPS), sigma = 0.0;
  for(int i = 0; i < rows; i++){
    u_out[i] = update ? wn[i] / d : u[i];
    sigma += u_out[i] * wn[i];
  }
  for(size_t k = 0; k < (size_t)rows * cols; k++) wn[k] = w[k] / sigma;
  return sigma;
}

/* ---- golden vs PyTorch -------------------------------------------------- */

/*
** From weight_orig and u0, three update calls chained in C (each from the
** u the previous call left), each call's u, v, sigma and wn against the
** golden, then the backward of the third with dwn = r against autograd's
** dL/dweight_orig. |ours - golden| <= 1e-5 max(1, |golden|).
*/
static void check_golden_layer(const st_file *g, const char *layer, int rows,
                               int cols) {
  const double tol = 1e-5;
  char name[64];
  int64_t n;
  snprintf(name, sizeof(name), "%s.weight_orig", layer);
  float *w = golden(g, name, &n);
  assert_int_equal(n, (int64_t)rows * cols);
  snprintf(name, sizeof(name), "%s.u0", layer);
  float *u = golden(g, name, &n);
  assert_int_equal(n, rows);
  float *v = fbuf((size_t)cols), *wn = fbuf((size_t)rows * cols);
  fill_value(v, (size_t)cols, NAN); /* v is written, never read */
  double worst[4] = {0, 0, 0, 0};   /* u, v, sigma, wn */
  float sigma = 0;
  for(int k = 1; k <= 3; k++){
    fill_value(wn, (size_t)rows * cols, NAN);
    sigma = spectral_norm_forward(rows, cols, wn, w, u, v, 1, EPS);
    static const char *const what[4] = {"u", "v", "sigma", "wn"};
    const float *got[4] = {u, v, &sigma, wn};
    const int64_t want_n[4] = {rows, cols, 1, (int64_t)rows * cols};
    for(int t = 0; t < 4; t++){
      snprintf(name, sizeof(name), "%s.%s%d", layer, what[t], k);
      float *gold = golden(g, name, &n);
      assert_int_equal(n, want_n[t]);
      double e = max_rel_err(got[t], gold, n);
      if( !(e <= tol) ){
        print_error("%s call %d: %s error %.3g\n", layer, k, what[t], e);
        fail();
      }
      if( e > worst[t] ) worst[t] = e;
      free(gold);
    }
  }
  snprintf(name, sizeof(name), "%s.r", layer);
  float *r = golden(g, name, &n);
  snprintf(name, sizeof(name), "%s.grad", layer);
  float *grad = golden(g, name, &n);
  float *dw = fbuf((size_t)rows * cols);
  fill_value(dw, (size_t)rows * cols, 0);
  spectral_norm_backward(rows, cols, dw, r, wn, u, v, sigma);
  double eg = max_rel_err(dw, grad, n);
  print_message("  golden %-6s %dx%d, 3 calls: worst rel err u %.2e, v %.2e, "
                "sigma %.2e, wn %.2e; grad %.2e (tol %g)\n", layer, rows, cols,
                worst[0], worst[1], worst[2], worst[3], eg, tol);
  assert_true(eg <= tol);
  free(w); free(u); free(r); free(grad);
  anom_free(v); anom_free(wn); anom_free(dw);
}

static void test_sn_golden(void **state) {
  (void)state;
  size_t nb;
  unsigned char *buf = slurp(GOLDEN_PATH, &nb);
  st_file g;
  anom_err e;
  anom_err_clear(&e);
  assert_int_equal(st_parse(&g, buf, nb, NULL, &e), ANOM_OK);
  check_golden_layer(&g, "conv", 5, 3 * 3 * 3);
  check_golden_layer(&g, "linear", 4, 7);
  st_free(&g);
  free(buf);
}

/* ---- the forward against the double oracle ------------------------------ */

/*
** Shapes from a vector to a 256 x 2304 conv weight (256, 256, 3, 3): three
** chained update calls, each against sn_ref from the same float u, then an
** eval call (update 0) from the u and v the last left. Errors are
** max |ours - ref| / max |ref| per tensor, tol 1e-5.
*/
static void test_sn_vs_ref(void **state) {
  (void)state;
  static const int sizes[][2] = {
    {1, 1}, {1, 9}, {9, 1}, {3, 3}, {5, 27}, {64, 576}, {100, 37},
    {256, 2304},
  };
  const double tol = 1e-5;
  rng r;
  rng_seed(&r, 4242);
  double worst_u = 0, worst_v = 0, worst_s = 0, worst_wn = 0;
  for(size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++){
    int rows = sizes[si][0], cols = sizes[si][1];
    size_t nw = (size_t)rows * cols;
    float *w = fbuf(nw), *wn = fbuf(nw), *u = fbuf((size_t)rows);
    float *u_in = fbuf((size_t)rows), *v = fbuf((size_t)cols);
    double *ru = dbuf((size_t)rows), *rv = dbuf((size_t)cols), *rwn = dbuf(nw);
    fill_grid(w, nw, &r, -1, 1);
    fill_normal(u, (size_t)rows, &r);
    for(int call = 0; call < 4; call++){
      int update = call < 3;
      memcpy(u_in, u, (size_t)rows * sizeof(float));
      float sigma = spectral_norm_forward(rows, cols, wn, w, u, v, update, EPS);
      double rs = sn_ref(rows, cols, w, u_in, v, update, ru, rv, rwn);
      double eu = tensor_err(u, ru, (size_t)rows);
      double ev = tensor_err(v, rv, (size_t)cols);
      double es = fabs(sigma - rs) / rs, ewn = tensor_err(wn, rwn, nw);
      if( !(eu <= tol && ev <= tol && es <= tol && ewn <= tol) ){
        print_error("%dx%d call %d: error u %.3g v %.3g sigma %.3g wn %.3g\n",
                    rows, cols, call, eu, ev, es, ewn);
        fail();
      }
      if( !update ) assert_memory_equal(u, u_in, (size_t)rows * sizeof(float));
      worst_u = fmax(worst_u, eu); worst_v = fmax(worst_v, ev);
      worst_s = fmax(worst_s, es); worst_wn = fmax(worst_wn, ewn);
    }
    anom_free(w); anom_free(wn); anom_free(u); anom_free(u_in); anom_free(v);
    anom_free(ru); anom_free(rv); anom_free(rwn);
  }
  print_message("  vs double oracle   worst err u %.2e, v %.2e, sigma %.2e, "
                "wn %.2e (tol %g, up to 256x2304)\n", worst_u, worst_v,
                worst_s, worst_wn, tol);
}

/* ---- finite differences ------------------------------------------------- */

typedef struct sn_prob {
  int rows, cols;
  float *w, *wn, *u, *v, *r;
} sn_prob;

/* L = sum(r * W / (u^T W v)), u and v fixed */
static double sn_objective(void *ctx) {
  sn_prob *q = ctx;
  spectral_norm_forward(q->rows, q->cols, q->wn, q->w, q->u, q->v, 0, EPS);
  return dot(q->wn, q->r, (size_t)q->rows * q->cols);
}

static void test_sn_grad(void **state) {
  (void)state;
  static const int sizes[][2] = {
    {1, 1}, {1, 6}, {6, 1}, {2, 3}, {4, 7}, {5, 27}, {8, 16}, {16, 9},
    {12, 40},
  };
  fd_check ck = {"spectral_norm", 1.0 / 32, 2e-5, 2e-5, 0, 0, 0};
  rng g;
  rng_seed(&g, 1729);
  for(size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++){
    sn_prob q = {sizes[si][0], sizes[si][1], NULL, NULL, NULL, NULL, NULL};
    size_t nw = (size_t)q.rows * q.cols;
    q.w = fbuf(nw); q.wn = fbuf(nw); q.r = fbuf(nw);
    q.u = fbuf((size_t)q.rows); q.v = fbuf((size_t)q.cols);
    float *dw = fbuf(nw);
    fill_grid(q.w, nw, &g, -1, 1);
    fill_grid(q.r, nw, &g, -1, 1);
    fill_normal(q.u, (size_t)q.rows, &g);
    float sigma = spectral_norm_forward(q.rows, q.cols, q.wn, q.w, q.u, q.v, 1,
                                        EPS);
    assert_true(sigma > 0);
    fill_value(dw, nw, 0);
    spectral_norm_backward(q.rows, q.cols, dw, q.r, q.wn, q.u, q.v, sigma);
    check_grad(&ck, "w", sn_objective, &q, q.w, dw, nw);
    anom_free(q.w); anom_free(q.wn); anom_free(q.r); anom_free(q.u);
    anom_free(q.v); anom_free(dw);
  }
  report(&ck);
}

/* ---- known answers ------------------------------------------------------ */

/*
** update 0: W = [1 2; 3 4], u = [1 0], v = [0 1]: sigma = W[0][1] = 2,
** wn = W / 2, u and v untouched. u = [0.6 0.8], v = [0.8 0.6]:
** W v = [2, 4.8], sigma = 1.2 + 3.84 = 5.04.
*/
static void test_sn_eval_hand(void **state) {
  (void)state;
  const float w[4] = {1, 2, 3, 4}, want_wn[4] = {0.5f, 1, 1.5f, 2};
  float u[2] = {1, 0}, v[2] = {0, 1}, wn[4];
  fill_value(wn, 4, NAN);
  float sigma = spectral_norm_forward(2, 2, wn, w, u, v, 0, EPS);
  assert_true(sigma == 2.0f);
  assert_floats(wn, want_wn, 4, 0);
  assert_true(u[0] == 1 && u[1] == 0 && v[0] == 0 && v[1] == 1);
  float u2[2] = {0.6f, 0.8f}, v2[2] = {0.8f, 0.6f};
  sigma = spectral_norm_forward(2, 2, wn, w, u2, v2, 0, EPS);
  assert_true(fabs(sigma - 5.04) <= 1e-6 * 5.04);
  assert_true(u2[0] == 0.6f && u2[1] == 0.8f && v2[0] == 0.8f && v2[1] == 0.6f);
  for(int i = 0; i < 4; i++) assert_true(wn[i] == w[i] / sigma);
  /* u need not be a unit vector in eval mode: sigma is linear in u */
  float u3[2] = {2, 0};
  sigma = spectral_norm_forward(2, 2, wn, w, u3, v, 0, EPS);
  assert_true(sigma == 4.0f && u3[0] == 2 && u3[1] == 0);
}

/*
** W = a b^T (exact in float: a and b on a 1/64 grid): W^T u = (a.u) b, so
** one iteration from any u with a.u != 0 gives v = s b / |b|, u' = s a / |a|
** (s the sign of a.u) and sigma = |a| |b|, to 1e-5 even when u is nearly
** orthogonal to a (a.u ~ 1e-3 |a| |u|). Then only v is off by more than
** float rounding: W^T u cancels down to (a.u) b in float, each element
** within rows 2^-24 sum |a_i u_i| |b_j|, so v is held to 1e-5 plus that
** bound over |a.u| |b_j|. u' = W v / |W v| is s a / |a| whatever v is, and
** sigma = |a| |b.v| moves only by the square of v's error.
*/
/* uniform in [-1, 1] on a 1/64 grid: products of two are exact in float */
static float coarse_rand(rng *r) {
  return (float)(nearbyint(64 * (2 * rng_uniform(r) - 1)) / 64);
}

static void test_sn_rank1(void **state) {
  (void)state;
  static const int sizes[][2] = {{1, 1}, {2, 5}, {5, 2}, {7, 7}, {16, 27}};
  rng g;
  rng_seed(&g, 99);
  double worst_s = 0, worst_u = 0, worst_v = 0;
  int cases = 0;
  for(size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++)
  for(int kind = 0; kind < 3; kind++){
    int rows = sizes[si][0], cols = sizes[si][1];
    float a[16], b[27], u[16], v[27], w[16 * 27], wn[16 * 27];
    for(int i = 0; i < rows; i++) a[i] = coarse_rand(&g);
    for(int j = 0; j < cols; j++) b[j] = coarse_rand(&g);
    a[0] = 0.75f; /* a, b nonzero */
    b[0] = -0.5f;
    for(int i = 0; i < rows; i++)
      for(int j = 0; j < cols; j++) w[i * cols + j] = a[i] * b[j];
    double na = 0, nb = 0, au = 0, nu = 0, sum_au = 0;
    for(int i = 0; i < rows; i++) na += (double)a[i] * a[i];
    for(int j = 0; j < cols; j++) nb += (double)b[j] * b[j];
    na = sqrt(na);
    nb = sqrt(nb);
    fill_normal(u, (size_t)rows, &g);
    if( kind == 1 ) for(int i = 0; i < rows; i++) u[i] = -a[i]; /* a.u < 0 */
    if( kind == 2 && rows > 1 ){
      /* u = a^perp + 1e-3 a: nearly orthogonal to a */
      double pa = 0;
      for(int i = 0; i < rows; i++) pa += (double)u[i] * a[i];
      for(int i = 0; i < rows; i++)
        u[i] = (float)(u[i] - pa / (na * na) * a[i] + 1e-3 * a[i]);
    }
    for(int i = 0; i < rows; i++){
      au += (double)a[i] * u[i];
      nu += (double)u[i] * u[i];
      sum_au += fabs((double)a[i] * u[i]);
    }
    assert_true(fabs(au) > 1e-4 * na * sqrt(nu)); /* not orthogonal */
    double s = au > 0 ? 1 : -1;
    float sigma = spectral_norm_forward(rows, cols, wn, w, u, v, 1, EPS);
    double want = na * nb, es = fabs(sigma - want) / want, eu = 0, ev = 0;
    for(int i = 0; i < rows; i++) eu = fmax(eu, fabs(u[i] - s * a[i] / na));
    int v_ok = 1;
    for(int j = 0; j < cols; j++){
      double d = fabs(v[j] - s * b[j] / nb);
      double tol_v = 1e-5 + rows * 0x1p-24 * sum_au / fabs(au) * fabs(b[j]) / nb;
      if( !(d <= tol_v) ) v_ok = 0;
      ev = fmax(ev, d);
    }
    if( !(es <= 1e-5 && eu <= 1e-5 && v_ok) ){
      print_error("rank 1 %dx%d kind %d: sigma %.9g want %.9g (err %.3g), "
                  "u err %.3g, v err %.3g\n", rows, cols, kind, sigma, want,
                  es, eu, ev);
      fail();
    }
    worst_s = fmax(worst_s, es);
    worst_u = fmax(worst_u, eu);
    worst_v = fmax(worst_v, ev);
    cases++;
  }
  print_message("  rank 1 a b^T       %d cases: sigma = |a| |b| to %.2e, u' to "
                "%.2e (tol 1e-5), v to %.2e (a.u ~ 1e-3 |a| |u| included)\n",
                cases, worst_s, worst_u, worst_v);
}

/*
** Power iteration converges to the largest singular value: a 4 x 6 matrix
** with diagonal (3, -2, 1, 0.5) (sigma_max 3, u -> +-e1; the error shrinks by
** (2/3)^2 a call), and the symmetric [2 1; 1 2] (singular values 3 and 1).
*/
static void test_sn_converges(void **state) {
  (void)state;
  float w[24], wn[24], u[4] = {0.5f, 0.5f, 0.5f, 0.5f}, v[6];
  fill_value(w, 24, 0);
  w[0] = 3; w[7] = -2; w[14] = 1; w[21] = 0.5f;
  float sigma = 0;
  for(int k = 0; k < 30; k++)
    sigma = spectral_norm_forward(4, 6, wn, w, u, v, 1, EPS);
  print_message("  diag(3 -2 1 .5)    sigma %.9g after 30 calls, u %.2g %.2g "
                "%.2g %.2g\n", sigma, u[0], u[1], u[2], u[3]);
  assert_true(fabs(sigma - 3) <= 1e-5 * 3);
  assert_true(fabs(fabs(u[0]) - 1) <= 1e-6 && fabs(fabs(v[0]) - 1) <= 1e-6);
  for(int i = 1; i < 4; i++) assert_true(fabs(u[i]) <= 1e-5);
  for(int i = 0; i < 24; i++) assert_true(wn[i] == w[i] / sigma);
  /* one call from u = e2 finds sigma 2 exactly: e2 is a singular vector */
  float e2[4] = {0, 1, 0, 0};
  sigma = spectral_norm_forward(4, 6, wn, w, e2, v, 1, EPS);
  assert_true(sigma == 2.0f && e2[1] == 1.0f && v[1] == -1.0f);

  const float s2[4] = {2, 1, 1, 2};
  float us[2] = {1, 0}, vs[2], wns[4];
  for(int k = 0; k < 20; k++)
    sigma = spectral_norm_forward(2, 2, wns, s2, us, vs, 1, EPS);
  assert_true(fabs(sigma - 3) <= 1e-5 * 3);
  assert_true(fabs(us[0] - us[1]) <= 1e-5 && fabs(vs[0] - vs[1]) <= 1e-5);
}

/*
** eps is a clamp, as F.normalize's: W = diag(2, 1), u = [1 0], eps 10:
** W^T u = [2 0], |.| 2 < 10, v = [0.2 0]; W v = [0.4 0], u' = [0.04 0];
** sigma = 0.04 * 0.4 = 0.016. A zero W: v = 0, u' = 0, sigma 0, no NaN in
** u or v (wn = 0 / 0 is NaN, as PyTorch's). rows or cols 0: returns 0 and
** touches nothing.
*/
static void test_sn_eps(void **state) {
  (void)state;
  const float w[4] = {2, 0, 0, 1};
  float u[2] = {1, 0}, v[2], wn[4];
  float sigma = spectral_norm_forward(2, 2, wn, w, u, v, 1, 10.0f);
  assert_true(fabs(v[0] - 0.2) <= 1e-7 && v[1] == 0);
  assert_true(fabs(u[0] - 0.04) <= 1e-8 && u[1] == 0);
  assert_true(fabs(sigma - 0.016) <= 1e-7 * 0.016);
  const float z[4] = {0, 0, 0, 0};
  float uz[2] = {0.6f, 0.8f}, vz[2] = {NAN, NAN};
  sigma = spectral_norm_forward(2, 2, wn, z, uz, vz, 1, EPS);
  assert_true(sigma == 0.0f);
  for(int i = 0; i < 2; i++) assert_true(uz[i] == 0 && vz[i] == 0);
  for(int i = 0; i < 4; i++) assert_true(isnan(wn[i]));
  float keep[4] = {7, 7, 7, 7};
  assert_true(spectral_norm_forward(0, 2, keep, w, keep, keep, 1, EPS) == 0.0f);
  assert_true(spectral_norm_forward(2, 0, keep, w, keep, keep, 1, EPS) == 0.0f);
  for(int i = 0; i < 4; i++) assert_true(keep[i] == 7);
}

/* ---- backward: values, +=, accumulation ---------------------------------- */

/*
** W = [1 2; 3 4], u = [1 0], v = [0 1], sigma 2, wn = W / 2, so
** L = sum(dwn * W) / W01.
**   dwn = [1 0; 0 0]: L = W00 / W01, dw = [1/2 -1/4; 0 0]
**   dwn = ones:       L = sum W / W01, dw = [1/2 (2 - 10)/4; 1/2 1/2]
**                                          = [0.5 -2; 0.5 0.5]
** then += (from a start of 1, and twice), NULL dw, and the GAN pattern: two
** backwards through the same forward (D(real), D(fake)) add up to one
** backward of the summed dwn.
*/
static void test_sn_backward_hand(void **state) {
  (void)state;
  const float w[4] = {1, 2, 3, 4};
  float u[2] = {1, 0}, v[2] = {0, 1}, wn[4], dw[4];
  float sigma = spectral_norm_forward(2, 2, wn, w, u, v, 0, EPS);
  assert_true(sigma == 2.0f);
  const float d1[4] = {1, 0, 0, 0}, want1[4] = {0.5f, -0.25f, 0, 0};
  const float d2[4] = {1, 1, 1, 1}, want2[4] = {0.5f, -2, 0.5f, 0.5f};
  fill_value(dw, 4, 0);
  spectral_norm_backward(2, 2, dw, d1, wn, u, v, sigma);
  assert_floats(dw, want1, 4, 0);
  fill_value(dw, 4, 0);
  spectral_norm_backward(2, 2, dw, d2, wn, u, v, sigma);
  assert_floats(dw, want2, 4, 0);
  /* += : from 1, then again */
  fill_value(dw, 4, 1);
  spectral_norm_backward(2, 2, dw, d2, wn, u, v, sigma);
  for(int i = 0; i < 4; i++) assert_true(dw[i] == want2[i] + 1);
  spectral_norm_backward(2, 2, dw, d2, wn, u, v, sigma);
  for(int i = 0; i < 4; i++) assert_true(dw[i] == 2 * want2[i] + 1);
  /* NULL dw: nothing to do, no crash */
  spectral_norm_backward(2, 2, NULL, d2, wn, u, v, sigma);
  /* empty: nothing touched */
  spectral_norm_backward(0, 2, dw, d2, wn, u, v, sigma);
  spectral_norm_backward(2, 0, dw, d2, wn, u, v, sigma);
  for(int i = 0; i < 4; i++) assert_true(dw[i] == 2 * want2[i] + 1);
}

static void test_sn_backward_accumulates(void **state) {
  (void)state;
  enum { ROWS = 12, COLS = 33, NW = ROWS * COLS };
  rng g;
  rng_seed(&g, 555);
  float *w = fbuf(NW), *wn = fbuf(NW), *u = fbuf(ROWS), *v = fbuf(COLS);
  float *d1 = fbuf(NW), *d2 = fbuf(NW), *dsum = fbuf(NW), *start = fbuf(NW);
  float *acc = fbuf(NW), *once = fbuf(NW), *alone = fbuf(NW);
  fill_grid(w, NW, &g, -1, 1);
  fill_normal(u, ROWS, &g);
  float sigma = spectral_norm_forward(ROWS, COLS, wn, w, u, v, 1, EPS);
  fill_grid(d1, NW, &g, -1, 1);
  fill_grid(d2, NW, &g, -1, 1);
  for(int i = 0; i < NW; i++) dsum[i] = d1[i] + d2[i]; /* exact on the grid */
  fill_grid(start, NW, &g, -1, 1);
  /* start + g(d1) + g(d2) against start + g(d1 + d2), and each against a
  ** double oracle: the backward is linear in dwn */
  memcpy(acc, start, NW * sizeof(float));
  spectral_norm_backward(ROWS, COLS, acc, d1, wn, u, v, sigma);
  spectral_norm_backward(ROWS, COLS, acc, d2, wn, u, v, sigma);
  memcpy(once, start, NW * sizeof(float));
  spectral_norm_backward(ROWS, COLS, once, dsum, wn, u, v, sigma);
  fill_value(alone, NW, 0);
  spectral_norm_backward(ROWS, COLS, alone, d1, wn, u, v, sigma);
  double c1 = dot(d1, wn, NW), c2 = dot(d2, wn, NW);
  double worst_acc = 0, worst_ref = 0;
  for(int i = 0; i < ROWS; i++)
  for(int j = 0; j < COLS; j++){
    int k = i * COLS + j;
    double g1 = (d1[k] - c1 * u[i] * v[j]) / sigma;
    double g2 = (d2[k] - c2 * u[i] * v[j]) / sigma;
    double want = start[k] + g1 + g2;
    worst_acc = fmax(worst_acc, fabs((double)acc[k] - once[k]));
    worst_ref = fmax(worst_ref, fabs(acc[k] - want));
    worst_ref = fmax(worst_ref, fabs(alone[k] - g1));
  }
  print_message("  dw accumulation    two backwards vs one of the sum %.2e, "
                "vs double oracle %.2e (tol 1e-5)\n", worst_acc, worst_ref);
  assert_true(worst_acc <= 1e-5 && worst_ref <= 1e-5);
  anom_free(w); anom_free(wn); anom_free(u); anom_free(v); anom_free(d1);
  anom_free(d2); anom_free(dsum); anom_free(start); anom_free(acc);
  anom_free(once); anom_free(alone);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_sn_golden),
    cmocka_unit_test(test_sn_vs_ref),
    cmocka_unit_test(test_sn_grad),
    cmocka_unit_test(test_sn_eval_hand),
    cmocka_unit_test(test_sn_rank1),
    cmocka_unit_test(test_sn_converges),
    cmocka_unit_test(test_sn_eps),
    cmocka_unit_test(test_sn_backward_hand),
    cmocka_unit_test(test_sn_backward_accumulates),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
