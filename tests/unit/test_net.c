/*
** test_net.c - a whole sequential network's backward pass against finite
** differences of its forward pass, in both batch-norm modes: training (batch
** statistics) and frozen (running statistics, as AnoGAN's latent search
** needs). Every layer kind appears: conv, transposed conv, linear, batch
** norm (over maps and over features), the four activations, dropout (a
** mask redrawn from the same seed at every forward, so the function is
** fixed) and reshape. Also the tensor names and shapes a net declares.
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
  net_dropout(nt, "d1", 0.3f);
  net_linear(nt, "l1", 8, 1);              /* 8@1x1 */
  net_batchnorm(nt, "b3", 1e-3f);
  net_set_momentum(nt, 0.01f);
  net_leaky_relu(nt, "a5", 0.1f);
  net_reshape(nt, "r1", 2, 2, 2);          /* 2@2x2 */
  net_conv(nt, "c3", 1, 2, 1, 0, 1);       /* 1@1x1 */
  net_sigmoid(nt, "a4");
  assert_false(nt->failed);
}

/* L = sum(out * r) in double, from a frozen or a batch-statistics forward. */
static double loss(net *nt, int frozen, const float *x, const float *r, float *scratch,
                   net_cache *c) {
  rng masks;
  rng_seed(&masks, 77);                     /* the same dropout mask every time */
  c->rng = &masks;
  if( frozen ) net_forward_frozen(nt, N, x, c, scratch);
  else net_forward_train(nt, N, x, c, 0, scratch);
  const float *y = net_cache_out(c, nt, -1);
  double s = 0;
  for(int i = 0; i < N; i++) s += (double)y[i] * r[i];
  c->rng = NULL;
  return s;
}

static void check_mode(int frozen) {
  net nt;
  build(&nt);
  float *params = calloc(nt.nparams, sizeof(float)), *bufs = calloc(nt.nbufs, sizeof(float));
  float *grads = calloc(nt.nparams, sizeof(float));
  net_bind(&nt, params, bufs);
  rng g;
  rng_seed(&g, frozen ? 13 : 12);  /* seeds whose ReLU inputs stay h away from the kink */
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

/* The tensors a net declares: names, shapes, and where they live. */
static void test_tensors(void **state) {
  (void)state;
  net nt;
  build(&nt);
  float *params = calloc(nt.nparams, sizeof(float)), *bufs = calloc(nt.nbufs, sizeof(float));
  net_bind(&nt, params, bufs);
  static const struct { const char *name; int ndim; int64_t s0, s1; } want[] = {
    {"t.c1.weight", 4, 3, 2}, {"t.c1.bias", 1, 3, 0},
    {"t.b1.weight", 1, 3, 0}, {"t.b1.bias", 1, 3, 0},
    {"t.b1.running_mean", 1, 3, 0}, {"t.b1.running_var", 1, 3, 0},
    {"t.t1.weight", 4, 3, 2},
    {"t.b2.weight", 1, 2, 0}, {"t.b2.bias", 1, 2, 0},
    {"t.b2.running_mean", 1, 2, 0}, {"t.b2.running_var", 1, 2, 0},
    {"t.c2.weight", 4, 2, 2},
    {"t.l1.weight", 2, 8, 72}, {"t.l1.bias", 1, 8, 0},
    {"t.b3.weight", 1, 8, 0}, {"t.b3.bias", 1, 8, 0},
    {"t.b3.running_mean", 1, 8, 0}, {"t.b3.running_var", 1, 8, 0},
    {"t.c3.weight", 4, 1, 2}, {"t.c3.bias", 1, 1, 0},
  };
  int nwant = (int)(sizeof(want) / sizeof(want[0]));
  assert_int_equal(net_tensor_count(&nt), nwant);
  size_t seen = 0;
  for(int i = 0; i < nwant; i++){
    char name[128];
    int ndim, is_buffer;
    int64_t shape[4];
    float *data;
    assert_int_equal(net_tensor(&nt, i, name, sizeof(name), &ndim, shape, &data, &is_buffer), 0);
    assert_string_equal(name, want[i].name);
    assert_int_equal(ndim, want[i].ndim);
    assert_int_equal(shape[0], want[i].s0);
    if( ndim > 1 ) assert_int_equal(shape[1], want[i].s1);
    size_t numel = 1;
    for(int k = 0; k < ndim; k++) numel *= (size_t)shape[k];
    if( !is_buffer ){
      assert_ptr_equal(data, params + seen);  /* parameters tile the block in order */
      seen += numel;
    }
  }
  assert_int_equal(seen, nt.nparams);
  assert_int_equal(net_tensor(&nt, nwant, (char[8]){0}, 8, (int[1]){0}, (int64_t[4]){0},
                              (float *[1]){0}, (int[1]){0}), 1);
  /* the momentum reached the batch norm it was set on */
  assert_true(nt.layers[10].kind == LAYER_BATCHNORM && nt.layers[10].momentum == 0.01f);
  assert_true(nt.layers[1].momentum == 0.1f);
  net_free(&nt);
  free(params); free(bufs);
}

/* Shape errors of the new layers are refused with a message. */
static void test_bad_layers(void **state) {
  (void)state;
  net nt;
  net_init(&nt, "q.", 2, 3, 3);
  assert_int_equal(net_reshape(&nt, "r", 2, 2, 2), 1);
  assert_true(nt.failed);
  assert_non_null(strstr(nt.err.msg, "cannot view 2x3x3 as 2x2x2"));
  net_free(&nt);
  net_init(&nt, "q.", 2, 3, 3);
  assert_int_equal(net_dropout(&nt, "d", 1.0f), 1);
  assert_non_null(strstr(nt.err.msg, "dropout needs p in [0, 1)"));
  net_free(&nt);
  net_init(&nt, "q.", 2, 3, 3);
  assert_int_equal(net_relu(&nt, "a"), 0);
  assert_int_equal(net_set_momentum(&nt, 0.5f), 1);
  assert_non_null(strstr(nt.err.msg, "not a batch norm"));
  net_free(&nt);
  net_init(&nt, "q.", 2, 3, 3);
  assert_int_equal(net_linear(&nt, "l", 0, 1), 1);
  net_free(&nt);
}

/* The training forward of a dropout layer draws exactly one uniform per
** element and zeroes about p of them; inference leaves the input alone. */
static void test_dropout_in_net(void **state) {
  (void)state;
  enum { B = 4, F = 500 };
  net nt;
  net_init(&nt, "d.", F, 1, 1);
  net_dropout(&nt, "d", 0.25f);
  net_reshape(&nt, "r", 5, 10, 10);
  assert_false(nt.failed);
  net_bind(&nt, NULL, NULL);
  float *x = malloc(B * F * sizeof(float)), *y = malloc(B * F * sizeof(float));
  for(int i = 0; i < B * F; i++) x[i] = 1.0f + (float)i / (B * F);
  float *scratch = malloc(net_train_scratch_floats(&nt, B) * sizeof(float));
  net_forward(&nt, 0, nt.nlayers, B, x, y, scratch);
  assert_memory_equal(x, y, B * F * sizeof(float));
  net_cache c;
  assert_int_equal(net_cache_init(&c, &nt, B, NULL), ANOM_OK);
  rng r1, r2;
  rng_seed(&r1, 5);
  rng_seed(&r2, 5);
  c.rng = &r1;
  net_forward_train(&nt, B, x, &c, 1, scratch);
  const float *out = net_cache_out(&c, &nt, -1);
  int zeros = 0;
  for(int i = 0; i < B * F; i++){
    int keep = rng_uniform(&r2) >= 0.25;     /* dropout_mask's rule */
    if( !keep ) zeros++;
    assert_true(keep ? fabsf(out[i] - x[i] / 0.75f) <= 1e-6f * fabsf(out[i]) : out[i] == 0);
  }
  assert_true(rng_next(&r1) == rng_next(&r2));  /* the same number of draws */
  assert_true(zeros > B * F / 5 && zeros < B * F * 3 / 10);
  net_cache_free(&c);
  net_free(&nt);
  free(x); free(y); free(scratch);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_tensors),
    cmocka_unit_test(test_bad_layers),
    cmocka_unit_test(test_dropout_in_net),
    cmocka_unit_test(test_backward_batch_stats),
    cmocka_unit_test(test_backward_frozen),
    cmocka_unit_test(test_frozen_equals_inference),
  };
  return cmocka_run_group_tests_name("net", tests, NULL, NULL);
}
