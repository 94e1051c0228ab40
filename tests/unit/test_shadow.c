/*
** test_shadow.c - the training-time weights of core/shadow.c: raw and
** averaged copies, the moving average's formula over many steps, spectral
** normalisation of the live weights (range by range), gradients turned
** from live to raw weights, the averaged weights put into the model at the
** end, and allocation failures.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/layers.h"
#include "core/net.h"
#include "core/rng.h"
#include "core/shadow.h"

/* Two nets in one block: a (conv, batch norm, linear) and b (linear). */
typedef struct two { net a, b; float *block; size_t n; } two;

static void two_init(two *t) {
  net_init(&t->a, "a.", 2, 4, 4);
  net_conv(&t->a, "c", 3, 3, 1, 1, 1);
  net_batchnorm(&t->a, "bn", 1e-3f);
  net_linear(&t->a, "l", 5, 1);
  net_init(&t->b, "b.", 5, 1, 1);
  net_linear(&t->b, "l", 2, 0);
  assert_false(t->a.failed || t->b.failed);
  t->n = t->a.nparams + t->b.nparams;
  t->block = calloc(t->n + t->a.nbufs, sizeof(float));
  net_bind(&t->a, t->block, t->block + t->n);
  net_bind(&t->b, t->block + t->a.nparams, NULL);
  rng r;
  rng_seed(&r, 4);
  for(size_t i = 0; i < t->n; i++) t->block[i] = (float)rng_normal(&r);
}

static void two_free(two *t) {
  net_free(&t->a);
  net_free(&t->b);
  free(t->block);
}

/* The moving average after k steps of raw += 1 starts at zero and is
** bias-corrected when training finishes: sum_j d^(k-j) (1 - d) (a0 + j)
** / (1 - d^k), up to float rounding; weights outside every averaged range
** finish raw. */
static void test_ema(void **state) {
  (void)state;
  two t;
  two_init(&t);
  shadow s;
  assert_int_equal(shadow_init(&s, t.block, t.n, 0.9f, NULL), ANOM_OK);
  assert_memory_equal(s.raw, t.block, t.n * sizeof(float));
  for(size_t i = 0; i < t.n; i++) assert_true(s.ema[i] == 0);
  size_t half = t.a.nparams;            /* only a's range moves */
  for(int k = 1; k <= 20; k++){
    for(size_t i = 0; i < half; i++) s.raw[i] += 1.0f;
    shadow_ema(&s, 0, half);
  }
  assert_int_equal(s.nranges, 1);
  assert_int_equal(s.range[0].steps, 20);
  float *live = malloc(t.n * sizeof(float));
  shadow_finish(&s, live);
  double worst = 0;
  for(size_t i = 0; i < t.n; i++){
    double a0 = t.block[i], want = a0 + (i < half ? 20 : 0);   /* b: raw */
    if( i < half ){
      want = 0;
      for(int j = 1; j <= 20; j++) want += pow(0.9, 20 - j) * 0.1 * (a0 + j);
      want /= 1 - pow(0.9, 20);
    }
    worst = fmax(worst, fabs(live[i] - want));
  }
  free(live);
  printf("# bias-corrected moving average after 20 steps: worst error %.3g (tolerance 1e-5)\n",
         worst);
  assert_true(worst <= 1e-5);
  shadow_free(&s);
  shadow_free(&s);                      /* a freed shadow frees again safely */
  two_free(&t);
}

/* Normalised layers: live = W / sigma, sigma as spectral_norm_forward gives
** it; refresh touches only its range; gradients of normalised layers become
** the backward of the normalisation, others are left alone. */
static void test_spectral(void **state) {
  (void)state;
  two t;
  two_init(&t);
  shadow s;
  rng r, r2;
  rng_seed(&r, 8);
  rng_seed(&r2, 8);
  assert_int_equal(shadow_init(&s, t.block, t.n, 0.999f, NULL), ANOM_OK);
  anom_err e;
  assert_int_equal(shadow_add_sn(&s, t.block, &t.a, 1, &r, &e), ANOM_EINVAL);
  assert_non_null(strstr(e.msg, "'a.bn'"));
  assert_int_equal(shadow_add_sn(&s, t.block, &t.a, 0, &r, NULL), ANOM_OK);   /* conv */
  assert_int_equal(shadow_add_sn(&s, t.block, &t.b, 0, &r, NULL), ANOM_OK);   /* linear */
  assert_int_equal(s.nsn, 2);
  assert_int_equal(s.sn[0].rows, 3);
  assert_int_equal(s.sn[0].cols, 18);
  assert_int_equal(s.sn[1].rows, 2);
  assert_int_equal(s.sn[1].cols, 5);
  assert_int_equal(s.sn[1].off, t.a.nparams);

  /* the same computation by hand: u drawn N(0, 1) and normalised */
  float u0[3], v0[18], wn0[54];
  double norm = 0;
  for(int k = 0; k < 3; k++){ u0[k] = (float)rng_normal(&r2); norm += (double)u0[k] * u0[k]; }
  for(int k = 0; k < 3; k++) u0[k] = (float)(u0[k] / sqrt(norm));
  for(int k = 0; k < 3; k++) assert_float_equal(s.sn[0].u[k], u0[k], 1e-7);
  float sigma = spectral_norm_forward(3, 18, wn0, s.raw, u0, v0, 1, 1e-12f);

  float *live = malloc(t.n * sizeof(float));
  for(size_t i = 0; i < t.n; i++) live[i] = -7;
  shadow_refresh(&s, live, 0, t.a.nparams);
  assert_memory_equal(live, wn0, sizeof(wn0));
  assert_float_equal(s.sn[0].sigma, sigma, 0);
  /* the rest of a's range is copied; b's range is untouched */
  assert_memory_equal(live + 54, s.raw + 54, (t.a.nparams - 54) * sizeof(float));
  for(size_t i = t.a.nparams; i < t.n; i++) assert_true(live[i] == -7);
  shadow_refresh(&s, live, t.a.nparams, t.b.nparams);
  assert_true(s.sn[1].sigma > 0);        /* b's weight, divided by its sigma */
  for(size_t i = t.a.nparams; i < t.n; i++)
    assert_float_equal(live[i], s.raw[i] / s.sn[1].sigma, 1e-6 * fabs(live[i]));

  /* gradients: the normalised range goes through spectral_norm_backward */
  float *g = malloc(t.n * sizeof(float)), *want = calloc(t.n, sizeof(float));
  for(size_t i = 0; i < t.n; i++) g[i] = (float)(0.01 * (double)i - 0.3);
  memcpy(want, g, t.n * sizeof(float));
  memset(want, 0, 54 * sizeof(float));
  spectral_norm_backward(3, 18, want, g, live, s.sn[0].u, s.sn[0].v, s.sn[0].sigma);
  shadow_grad(&s, g, live, 0, t.a.nparams);
  assert_memory_equal(g, want, t.a.nparams * sizeof(float));
  for(size_t i = t.a.nparams; i < t.n; i++)
    assert_float_equal(g[i], 0.01 * (double)i - 0.3, 1e-6);

  /* finish: live = normalised moving average; one step at decay 0.999
  ** over a's range gives ema = 0.001 (2 raw), corrected to 2 raw */
  for(size_t i = 0; i < t.n; i++) s.raw[i] *= 2;
  shadow_ema(&s, 0, t.a.nparams);
  for(size_t i = 0; i < t.n; i++) s.raw[i] /= 2;
  shadow_finish(&s, live);
  for(size_t i = t.a.nparams; i < t.n; i++)      /* b never averaged: raw, normalised */
    assert_float_equal(live[i], s.raw[i] / s.sn[1].sigma, 1e-6 * fabs(live[i]));
  for(size_t i = 54; i < t.a.nparams; i++)
    assert_float_equal(live[i], 2 * s.raw[i], 1e-6 * fabs(live[i]));
  /* the normalised layer: the average over its new sigma, which has doubled
  ** up to the one more power iteration */
  for(int i = 0; i < 54; i++)
    assert_float_equal(live[i], 2 * s.raw[i] / s.sn[0].sigma, 1e-6 * fabs(live[i]) + 1e-7);
  assert_true(s.sn[0].sigma > 1.9f * sigma && s.sn[0].sigma < 2.2f * sigma);
  free(live); free(g); free(want);
  shadow_free(&s);
  two_free(&t);
}

/* Every allocation failure is reported and leaks nothing (ASan checks). */
static void test_oom(void **state) {
  (void)state;
  two t;
  two_init(&t);
  int failures = 0;
  for(int k = 1; k < 20; k++){
    anom_alloc_fail_after(k);
    shadow s;
    rng r;
    rng_seed(&r, 1);
    anom_err e;
    int rc = shadow_init(&s, t.block, t.n, 0.5f, &e);
    if( rc == ANOM_OK ){
      rc = shadow_add_sn(&s, t.block, &t.a, 0, &r, &e);
      if( rc == ANOM_OK ) rc = shadow_add_sn(&s, t.block, &t.b, 0, &r, &e);
      shadow_free(&s);
    }
    anom_alloc_fail_after(0);
    if( rc ){
      assert_int_equal(rc, ANOM_ENOMEM);
      assert_non_null(strstr(e.msg, "out of memory"));
      failures++;
    }
  }
  assert_true(failures >= 5);
  two_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_ema),
    cmocka_unit_test(test_spectral),
    cmocka_unit_test(test_oom),
  };
  return cmocka_run_group_tests_name("shadow", tests, NULL, NULL);
}
