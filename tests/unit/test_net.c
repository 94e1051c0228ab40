/*
** test_net.c - a whole sequential network's backward pass against finite
** differences of its forward pass, in both batch-norm modes: training (batch
** statistics) and frozen (running statistics, as AnoGAN's latent search
** needs). Every layer kind appears: conv, transposed conv, batch norm, the
** four activations.
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

#include "core/net.h"
#include "core/rng.h"

enum { N = 2, C = 2, H = 6, W = 6 };

static void build(net *nt) {
  net_init(nt, "t.", C, H, W);
  net_conv(nt, "c1", 3, 4, 2, 1, 1);       /* 3@3x3 */
  net_batchnorm(nt, "b1", 1e-5f);
  net_leaky_relu(nt, "a1", 0.2f);
  net_convt(nt, "t1", 2, 4, 2, 1, 0);      /* 2@6x6 */
  net_batchnorm(nt, "b2", 1e-5f);
  net_relu(nt, "a2");
  net_conv(nt, "c2", 2, 3, 1, 1, 0);       /* 2@6x6 */
  net_tanh(nt, "a3");
  net_conv(nt, "c3", 1, 6, 1, 0, 1);       /* 1@1x1 */
  net_sigmoid(nt, "a4");
  assert_false(nt->failed);
}

/* L = sum(out * r) in double, from a frozen or a batch-statistics forward. */
static double loss(net *nt, int frozen, const float *x, const float *r, float *scratch,
                   net_cache *c) {
  if( frozen ) net_forward_frozen(nt, N, x, c, scratch);
  else net_forward_train(nt, N, x, c, 0, scratch);
  const float *y = net_cache_out(c, nt, -1);
  double s = 0;
  for(int i = 0; i < N; i++) s += (double)y[i] * r[i];
  return s;
}

static void check_mode(int frozen) {
  net nt;
  build(&nt);
  float *params = calloc(nt.nparams, sizeof(float)), *bufs = calloc(nt.nbufs, sizeof(float));
  float *grads = calloc(nt.nparams, sizeof(float));
  net_bind(&nt, params, bufs);
  rng g;
  rng_seed(&g, frozen ? 11 : 12);
  for(size_t i = 0; i < nt.nparams; i++) params[i] = (float)(0.4 * rng_normal(&g));
  for(int i = 0; i < nt.nlayers; i++){
    const layer *l = &nt.layers[i];
    if( l->kind != LAYER_BATCHNORM ) continue;
    for(int k = 0; k < l->c; k++){
      bufs[l->b_off + k] = (float)(0.2 * rng_normal(&g));
      bufs[l->b_off + l->c + k] = (float)(0.5 + rng_uniform(&g));
      params[l->p_off + k] = (float)(1 + 0.3 * rng_normal(&g));
    }
  }
  float x[N * C * H * W], dx[N * C * H * W], r[N];
  for(int i = 0; i < N * C * H * W; i++) x[i] = (float)rng_normal(&g);
  for(int i = 0; i < N; i++) r[i] = (float)(1 + rng_uniform(&g));
  net_cache c;
  assert_int_equal(net_cache_init(&c, &nt, N, NULL), ANOM_OK);
  float *scratch = malloc(net_train_scratch_floats(&nt, N) * sizeof(float) * 2);
  /* dL/dout = r (the sigmoid's output gradient) */
  loss(&nt, frozen, x, r, scratch, &c);
  memset(dx, 0, sizeof(dx));
  net_backward(&nt, N, x, &c, nt.nlayers, r, dx, grads, scratch);

  const double h = 1e-3;
  double worst = 0;
  int checked = 0;
  for(int i = 0; i < N * C * H * W; i++){
    float keep = x[i];
    x[i] = keep + (float)h; double lp = loss(&nt, frozen, x, r, scratch, &c);
    x[i] = keep - (float)h; double lm = loss(&nt, frozen, x, r, scratch, &c);
    x[i] = keep;
    double fd = (lp - lm) / (2 * h), err = fabs(fd - dx[i]);
    worst = fmax(worst, err / (1e-3 + fabs(fd)));
    assert_true(err <= 2e-3 + 2e-2 * fabs(fd));
    checked++;
  }
  for(size_t i = 0; i < nt.nparams; i++){
    float keep = params[i];
    params[i] = keep + (float)h; double lp = loss(&nt, frozen, x, r, scratch, &c);
    params[i] = keep - (float)h; double lm = loss(&nt, frozen, x, r, scratch, &c);
    params[i] = keep;
    double fd = (lp - lm) / (2 * h), err = fabs(fd - grads[i]);
    if( err > 2e-3 + 2e-2 * fabs(fd) )
      fprintf(stderr, "param %zu: fd %.6g analytic %.6g\n", i, fd, grads[i]);
    assert_true(err <= 2e-3 + 2e-2 * fabs(fd));
    checked++;
  }
  printf("# %s batch norm: %d gradients of the whole net checked\n",
         frozen ? "frozen" : "batch-statistics", checked);
  net_cache_free(&c);
  net_free(&nt);
  free(params); free(bufs); free(grads); free(scratch);
}

static void test_backward_batch_stats(void **state) { (void)state; check_mode(0); }
static void test_backward_frozen(void **state) { (void)state; check_mode(1); }

/* net_forward_frozen gives the inference forward's output exactly. */
static void test_frozen_equals_inference(void **state) {
  (void)state;
  net nt;
  build(&nt);
  float *params = calloc(nt.nparams, sizeof(float)), *bufs = calloc(nt.nbufs, sizeof(float));
  net_bind(&nt, params, bufs);
  rng g;
  rng_seed(&g, 3);
  net_init_dcgan(&nt, &g);
  float x[N * C * H * W], y[N];
  for(int i = 0; i < N * C * H * W; i++) x[i] = (float)rng_normal(&g);
  float *scratch = malloc(net_train_scratch_floats(&nt, N) * sizeof(float));
  net_cache c;
  assert_int_equal(net_cache_init(&c, &nt, N, NULL), ANOM_OK);
  net_forward_frozen(&nt, N, x, &c, scratch);
  net_forward(&nt, 0, nt.nlayers, N, x, y, scratch);
  assert_memory_equal(y, net_cache_out(&c, &nt, -1), sizeof(y));
  net_cache_free(&c);
  net_free(&nt);
  free(params); free(bufs); free(scratch);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_backward_batch_stats),
    cmocka_unit_test(test_backward_frozen),
    cmocka_unit_test(test_frozen_equals_inference),
  };
  return cmocka_run_group_tests_name("net", tests, NULL, NULL);
}
