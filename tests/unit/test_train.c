/*
** test_train.c - training: one and two full GANomaly steps against the
** PyTorch reference, Adam, the random generator, AUROC and quantiles, and a
** whole model_train run on synthetic data.
**
** tests/data/golden-train-tiny.safetensors comes from
** tests/bench/reference/make_golden_train.py: the tiny network (isize 32,
** nz 16, ngf 8) before and after two optimize_params steps of the authors'
** code on one batch of 8 images, computed in float64.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/metrics.h"
#include "core/model.h"
#include "core/optim.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/train.h"

#include "golden.h"

static void test_ganomaly_steps(void **state) {
  (void)state;
  size_t n;
  unsigned char *b = slurp("tests/data/golden-train-tiny.safetensors", &n);
  st_file g;
  anom_err e;
  assert_int_equal(st_parse(&g, b, n, NULL, &e), ANOM_OK);
  cJSON *hp = cJSON_Parse("{\"nz\": 16, \"ngf\": 8}");
  anom_model *m;
  assert_int_equal(model_create(&m, "ganomaly", 32, 32, 1, hp, NULL, &e), ANOM_OK);
  rng r;
  rng_seed(&r, 1);
  void *st;
  assert_int_equal(m->ops->train_begin(m, 8, &r, &st, &e), ANOM_OK);
  set_tensors(m, &g, "before.");
  const st_tensor *in = st_find(&g, "input");
  float *x = malloc((size_t)in->numel * sizeof(float));
  st_read_f32(in, NULL, 0, x, NULL);
  static const char *loss_keys[] = {"err_g", "err_g_adv", "err_g_con", "err_g_enc",
                                    "err_d", "err_d_real", "err_d_fake"};
  check_train_steps(m, st, &g, x, 8, loss_keys, 7, 2e-4);
  m->ops->train_end(m, st);
  free(x);
  cJSON_Delete(hp);
  model_free(m);
  st_free(&g);
  free(b);
}

/* Adam against hand-computed values: with m = v = 0, step 1 moves each
** parameter by -lr * g / (|g| + eps * ...) = -lr sign(g) (up to eps). */
static void test_adam(void **state) {
  (void)state;
  adam a = { 0.1f, 0.9f, 0.999f, 1e-8f, 0 };
  float p[3] = {1, 1, 1}, g[3] = {0.5f, -2, 0}, m[3] = {0}, v[3] = {0};
  adam_step(&a, p, g, m, v, 3);
  assert_float_equal(p[0], 0.9f, 1e-6);
  assert_float_equal(p[1], 1.1f, 1e-6);
  assert_float_equal(p[2], 1.0f, 0);
  /* step 2 with the same gradient: m_hat = g, v_hat = g^2 again */
  adam_step(&a, p, g, m, v, 3);
  assert_float_equal(p[0], 0.8f, 1e-6);
  assert_int_equal(a.t, 2);
}

static void test_rng(void **state) {
  (void)state;
  rng a, b;
  rng_seed(&a, 42);
  rng_seed(&b, 42);
  for(int i = 0; i < 100; i++) assert_true(rng_next(&a) == rng_next(&b));
  rng_seed(&a, 7);
  double s = 0, s2 = 0;
  int n = 200000;
  for(int i = 0; i < n; i++){ double x = rng_normal(&a); s += x; s2 += x * x; }
  assert_true(fabs(s / n) < 0.01);
  assert_true(fabs(s2 / n - 1) < 0.02);
  int counts[5] = {0};
  for(int i = 0; i < 50000; i++) counts[rng_below(&a, 5)]++;
  for(int k = 0; k < 5; k++) assert_true(abs(counts[k] - 10000) < 500);
  int idx[10];
  for(int i = 0; i < 10; i++) idx[i] = i;
  rng_shuffle(&a, idx, 10);
  int seen = 0;
  for(int i = 0; i < 10; i++) seen |= 1 << idx[i];
  assert_int_equal(seen, 1023);
}

/* AUROC by hand: the probability a positive outscores a negative, ties 1/2. */
static void test_auroc(void **state) {
  (void)state;
  double v;
  anom_err e;
  double s1[] = {0.1, 0.4, 0.35, 0.8};
  int y1[] = {0, 0, 1, 1};
  assert_int_equal(auroc(s1, y1, 4, &v, &e), ANOM_OK);
  assert_float_equal(v, 0.75, 1e-12);             /* sklearn's example */
  double s2[] = {1, 1, 1, 1};
  assert_int_equal(auroc(s2, y1, 4, &v, &e), ANOM_OK);
  assert_float_equal(v, 0.5, 1e-12);              /* all tied */
  double s3[] = {0.2, 0.5, 0.5, 0.9, 0.1};
  int y3[] = {0, 1, 0, 1, 0};
  /* pairs (pos, neg): 0.5 vs 0.2 > , 0.5 vs 0.5 tie, 0.5 vs 0.1 >,
  ** 0.9 beats all three: (1 + 0.5 + 1 + 3) / 6 */
  assert_int_equal(auroc(s3, y3, 5, &v, &e), ANOM_OK);
  assert_float_equal(v, 5.5 / 6, 1e-12);
  int y4[] = {1, 1, 1, 1};
  assert_int_equal(auroc(s1, y4, 4, &v, &e), ANOM_EINVAL);
  assert_non_null(strstr(e.msg, "both classes are needed, found 4 anomalous and 0 normal"));
  double sorted[] = {1, 2, 3, 4, 5};
  assert_float_equal(quantile(sorted, 5, 0.5), 3, 0);
  assert_float_equal(quantile(sorted, 5, 0.99), 4.96, 1e-12);
  assert_float_equal(quantile(sorted, 5, 0), 1, 0);
  assert_float_equal(quantile(sorted, 5, 1), 5, 0);
}

/* Synthetic normals: smooth blobs; anomalies: the same with a bright square.
** A short training must separate them and be bit-reproducible. */
static float *make_images(int n, int anomalous, uint64_t seed) {
  rng r;
  rng_seed(&r, seed);
  float *x = malloc((size_t)n * 32 * 32 * sizeof(float));
  for(int i = 0; i < n; i++){
    double cx = 10 + 12 * rng_uniform(&r), cy = 10 + 12 * rng_uniform(&r);
    double rad = 5 + 4 * rng_uniform(&r);
    int sx = 4 + (int)rng_below(&r, 20), sy = 4 + (int)rng_below(&r, 20);
    for(int y = 0; y < 32; y++){
      for(int xx = 0; xx < 32; xx++){
        double d = ((xx - cx) * (xx - cx) + (y - cy) * (y - cy)) / (rad * rad);
        float v = (float)(2 * exp(-d) - 1);
        if( anomalous && xx >= sx && xx < sx + 6 && y >= sy && y < sy + 6 ) v = 1.0f;
        x[(size_t)i * 1024 + y * 32 + xx] = v;
      }
    }
  }
  return x;
}

static void test_train_separates(void **state) {
  (void)state;
  int n = 200, nt = 60;
  float *x = make_images(n, 0, 1), *tn = make_images(nt, 0, 2), *ta = make_images(nt, 1, 3);
  cJSON *hp = cJSON_Parse("{\"nz\": 16, \"ngf\": 8, \"lr\": 0.002}");
  anom_model *m[2];
  anom_err e;
  unsigned char *blob[2];
  size_t nblob[2];
  train_report rep;
  for(int k = 0; k < 2; k++){
    assert_int_equal(model_create(&m[k], "ganomaly", 32, 32, 1, hp, NULL, &e), ANOM_OK);
    train_options o;
    train_options_default(&o);
    o.epochs = 6;
    o.batch = 16;
    o.seed = 5;
    int rc = model_train(m[k], x, n, &o, &rep, &e);
    if( rc ) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, ANOM_OK);
    assert_int_equal(model_save(m[k], &blob[k], &nblob[k], &e), ANOM_OK);
  }
  assert_int_equal(rep.images_train, 180);
  assert_int_equal(rep.images_holdout, 20);
  assert_int_equal(rep.batches, 11);
  assert_true(isfinite(m[0]->threshold));
  assert_int_equal(m[0]->cal.n, 20);
  /* same data, same seed: the same bytes, apart from nothing */
  assert_int_equal(nblob[0], nblob[1]);
  assert_memory_equal(blob[0], blob[1], nblob[0]);
  /* normals against pasted squares */
  float *all = malloc((size_t)2 * nt * 1024 * sizeof(float));
  memcpy(all, tn, (size_t)nt * 1024 * sizeof(float));
  memcpy(all + (size_t)nt * 1024, ta, (size_t)nt * 1024 * sizeof(float));
  float *work = malloc(model_work_floats(m[0], 2 * nt) * sizeof(float));
  score_result *res = malloc((size_t)2 * nt * sizeof(*res));
  assert_int_equal(model_score(m[0], 2 * nt, all, work, res, NULL, NULL, &e), ANOM_OK);
  double s[120], l1[120];
  int y[120];
  for(int i = 0; i < 2 * nt; i++){ s[i] = res[i].score; l1[i] = res[i].part[1]; y[i] = i >= nt; }
  double a_lat, a_l1;
  auroc(s, y, 2 * nt, &a_lat, &e);
  auroc(l1, y, 2 * nt, &a_l1, &e);
  printf("# synthetic squares after 6 epochs: AUROC latent %.3f, recon_l1 %.3f\n", a_lat, a_l1);
  assert_true(a_l1 > 0.8);
  free(all); free(work); free(res);
  for(int k = 0; k < 2; k++){ anom_free(blob[k]); model_free(m[k]); }
  cJSON_Delete(hp);
  free(x); free(tn); free(ta);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_ganomaly_steps),
    cmocka_unit_test(test_adam),
    cmocka_unit_test(test_rng),
    cmocka_unit_test(test_auroc),
    cmocka_unit_test(test_train_separates),
  };
  return cmocka_run_group_tests_name("train", tests, NULL, NULL);
}
