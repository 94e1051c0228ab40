/*
** test_anogan.c - AnoGAN: networks and latent search against the PyTorch
** reference, scoring options, training, save/load, determinism.
**
** The golden files come from tests/bench/reference/make_golden_anogan.py:
** tiny-anogan.safetensors (isize 32, nc 1, nz 16, ngf 8, seeded DCGAN
** weights, non-trivial batch-norm statistics) and golden-anogan-tiny.safetensors
** (G(z), D on 4 images, 5 search steps on 2 images, all in float64).
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

#include "core/detectors/anogan.h"
#include "core/model.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/train.h"

#include "golden.h"
#include "detector_test.h"

#define TOL 1e-4   /* |ours - golden| <= TOL * max(1, |golden|) */
#define MODEL_PATH "tests/data/tiny-anogan.safetensors"
#define GOLDEN_PATH "tests/data/golden-anogan-tiny.safetensors"
#define NZ 16
#define IMG 1024

static double rel(double a, double b) { return fabs(a - b) / fmax(1.0, fabs(b)); }

/* ---- (1) networks against the reference ---------------------------------- */

static void test_golden_forward(void **state) {
  (void)state;
  anom_model *m = load_model_file(MODEL_PATH);
  golden_file g;
  golden_open(&g, GOLDEN_PATH);
  assert_int_equal(m->nnets, 2);
  const net *G = m->nets[0], *D = m->nets[1];
  assert_string_equal(G->prefix, "netg.");
  assert_string_equal(G->layers[0].name, "main.initial-16-32-convt");
  assert_string_equal(D->layers[D->nlayers - 2].name, "classifier.0");
  int64_t nz, nout, nx, nf, np;
  float *z = golden(&g.f, "z", &nz), *gout = golden(&g.f, "g_out", &nout);
  float *x = golden(&g.f, "input", &nx), *df = golden(&g.f, "d_features", &nf);
  float *dp = golden(&g.f, "d_prob", &np);
  assert_int_equal(nz, 4 * NZ);
  assert_int_equal(nf, 4 * 32 * 16);   /* f(x): 32x4x4 at ngf 8 */
  float *buf = malloc((size_t)nout * sizeof(float));
  size_t sg = net_scratch_floats(G, 4), sd = net_scratch_floats(D, 4);
  float *scratch = malloc((sg > sd ? sg : sd) * sizeof(float));
  net_forward(G, 0, G->nlayers, 4, z, buf, scratch);
  double eg = max_rel_err(buf, gout, nout);
  net_forward(D, 0, D->nlayers - 2, 4, x, buf, scratch);
  double ef = max_rel_err(buf, df, nf);
  net_forward(D, 0, D->nlayers, 4, x, buf, scratch);
  double ep = max_rel_err(buf, dp, np);
  printf("# golden forward: max relative error G(z) %.2e, d_features %.2e, d_prob %.2e\n",
         eg, ef, ep);
  assert_true(eg <= TOL && ef <= TOL && ep <= TOL);
  free(buf); free(scratch);
  free(z); free(gout); free(x); free(df); free(dp);
  golden_close(&g);
  model_free(m);
}

/* ---- (2) the search against the reference -------------------------------- */

static void test_golden_search(void **state) {
  (void)state;
  anom_model *m = load_model_file(MODEL_PATH);
  golden_file g;
  golden_open(&g, GOLDEN_PATH);
  float *sx = golden(&g.f, "search_input", NULL), *z0 = golden(&g.f, "search_z0", NULL);
  float *zg = golden(&g.f, "search_z", NULL), *l0g = golden(&g.f, "search_loss0", NULL);
  float *lg = golden(&g.f, "search_loss", NULL);
  float *work = work_for(m, 2), z[2 * NZ];
  double loss[2];
  /* L at z0: no steps */
  anogan_search(m, 2, sx, z0, 0, 0.1, 0.01, z, loss, work);
  assert_memory_equal(z, z0, sizeof(z));
  double e0 = fmax(rel(loss[0], l0g[0]), rel(loss[1], l0g[1]));
  /* 5 steps */
  anogan_search(m, 2, sx, z0, 5, 0.1, 0.01, z, loss, work);
  double ez = max_rel_err(z, zg, 2 * NZ);
  double el = fmax(rel(loss[0], lg[0]), rel(loss[1], lg[1]));
  printf("# golden search: relative error L(z0) %.2e, z after 5 steps %.2e, L %.2e "
         "(L %.4f -> %.4f, %.4f -> %.4f)\n", e0, ez, el, l0g[0], loss[0], l0g[1], loss[1]);
  assert_true(e0 <= TOL && ez <= TOL && el <= TOL);
  /* each image alone gives the same (batch norm is frozen) */
  for(int i = 0; i < 2; i++){
    float zi[NZ];
    double li;
    anogan_search(m, 1, sx + i * IMG, z0 + i * NZ, 5, 0.1, 0.01, zi, &li, work);
    assert_true(max_rel_err(zi, z + i * NZ, NZ) <= 1e-6);
    assert_true(rel(li, loss[i]) <= 1e-6);
  }
  free(work); free(sx); free(z0); free(zg); free(l0g); free(lg);
  golden_close(&g);
  model_free(m);
}

/* ---- (3) the search lowers L; score() is the search from seeded z0 ------- */

static void test_search_lowers_loss(void **state) {
  (void)state;
  anom_model *m = load_model_file(MODEL_PATH);
  golden_file g;
  golden_open(&g, GOLDEN_PATH);
  float *sx = golden(&g.f, "search_input", NULL);      /* [0]: G(z') plus noise */
  float *work = work_for(m, 1), z0[NZ], z[NZ];
  rng r;
  rng_seed(&r, 0);
  for(int k = 0; k < NZ; k++) z0[k] = (float)rng_normal(&r);
  double l0, l50;
  anogan_search(m, 1, sx, z0, 0, 0.1, 0.001, z, &l0, work);
  anogan_search(m, 1, sx, z0, 50, 0.1, 0.001, z, &l50, work);
  printf("# search on a generated image: L %.4f at z0, %.4f after 50 steps\n", l0, l50);
  assert_true(l50 < l0);

  /* model_score with 50 steps is exactly that search, G(final z) the recon */
  cJSON *opts = cJSON_Parse("{\"steps\": 50}");
  score_result res;
  anom_err e;
  float recon[IMG], gz[IMG];
  assert_int_equal(model_score(m, 1, sx, work, &res, recon, opts, &e), ANOM_OK);
  assert_true(res.score == l50);
  assert_int_equal(res.nparts, 2);
  assert_string_equal(res.part_name[0], "residual");
  assert_string_equal(res.part_name[1], "discrimination");
  assert_true(rel(res.score, 0.9 * res.part[0] + 0.1 * res.part[1]) <= 1e-12);
  const net *G = m->nets[0];
  float *scratch = malloc(net_scratch_floats(G, 1) * sizeof(float));
  net_forward(G, 0, G->nlayers, 1, z, gz, scratch);
  assert_true(max_rel_err(recon, gz, IMG) <= 1e-6);
  double r1 = 0;
  for(int k = 0; k < IMG; k++) r1 += fabs((double)sx[k] - recon[k]);
  assert_true(rel(res.part[0], r1) <= 1e-9);
  cJSON_Delete(opts);
  free(scratch); free(work); free(sx);
  golden_close(&g);
  model_free(m);
}

/* Scores of a batch equal the scores of its images one at a time. */
static void test_batch_independent(void **state) {
  (void)state;
  anom_model *m = load_model_file(MODEL_PATH);
  golden_file g;
  golden_open(&g, GOLDEN_PATH);
  float *x = golden(&g.f, "input", NULL);
  float *work = work_for(m, 4);
  cJSON *opts = cJSON_Parse("{\"steps\": 8, \"lr\": 0.01}");
  score_result all[4], one;
  anom_err e;
  assert_int_equal(model_score(m, 4, x, work, all, NULL, opts, &e), ANOM_OK);
  for(int i = 3; i >= 0; i--){
    assert_int_equal(model_score(m, 1, x + i * IMG, work, &one, NULL, opts, &e), ANOM_OK);
    assert_true(rel(one.score, all[i].score) <= 1e-6);
  }
  cJSON_Delete(opts);
  free(work); free(x);
  golden_close(&g);
  model_free(m);
}

/* ---- (4) per-call options ------------------------------------------------ */

static int score_opts(const anom_model *m, const float *x, float *work, const char *json,
                      score_result *r, anom_err *e) {
  cJSON *o = json ? cJSON_Parse(json) : NULL;
  if( json ) assert_non_null(o);
  anom_err_clear(e);
  int rc = model_score(m, 1, x, work, r, NULL, o, e);
  cJSON_Delete(o);
  return rc;
}

static void test_options(void **state) {
  (void)state;
  anom_model *m = load_model_file(MODEL_PATH);
  golden_file g;
  golden_open(&g, GOLDEN_PATH);
  float *x = golden(&g.f, "input", NULL);
  float *work = work_for(m, 1);
  score_result a, b;
  anom_err e;
  /* lambda 0: the residual alone; lambda 1: the discrimination alone */
  assert_int_equal(score_opts(m, x, work, "{\"steps\": 3, \"lambda\": 0}", &a, &e), ANOM_OK);
  assert_true(a.score == a.part[0]);
  assert_int_equal(score_opts(m, x, work, "{\"steps\": 3, \"lambda\": 1}", &a, &e), ANOM_OK);
  assert_true(a.score == a.part[1]);
  /* steps and lr change the result; the stored defaults are the empty options */
  assert_int_equal(score_opts(m, x, work, "{\"steps\": 3}", &a, &e), ANOM_OK);
  assert_int_equal(score_opts(m, x, work, "{\"steps\": 4}", &b, &e), ANOM_OK);
  assert_true(a.score != b.score);
  assert_int_equal(score_opts(m, x, work, "{\"steps\": 3, \"lr\": 0.05}", &b, &e), ANOM_OK);
  assert_true(a.score != b.score);
  assert_int_equal(score_opts(m, x, work, "{\"steps\": 3, \"lr\": 0.001, \"lambda\": 0.1, "
                              "\"seed\": 0}", &b, &e), ANOM_OK);
  assert_true(a.score == b.score);

  static const opt_case bad[] = {
    {"{\"x\": 1}", "anogan: unknown scoring option 'x' (known: steps, lambda, lr, seed)"},
    {"{\"steps\": 0}", "'steps' must be an integer from 1 to 100000"},
    {"{\"steps\": 100001}", "'steps' must be an integer from 1 to 100000"},
    {"{\"steps\": 2.5}", "'steps' must be an integer"},
    {"{\"steps\": \"5\"}", "'steps' must be an integer"},
    {"{\"lambda\": -0.1}", "'lambda' must be a number from 0 to 1"},
    {"{\"lambda\": 1.5}", "'lambda' must be a number from 0 to 1"},
    {"{\"lambda\": null}", "'lambda' must be a number"},
    {"{\"lr\": 0}", "'lr' must be a number greater than 0"},
    {"{\"lr\": -1}", "'lr' must be a number greater than 0"},
    {"{\"lr\": 1e999}", "'lr' must be a number greater than 0"},
    {"{\"seed\": -1}", "'seed' must be an integer from 0"},
    {"{\"seed\": 0.5}", "'seed' must be an integer from 0"},
    {"[1]", "scoring options must be a JSON object"},
  };
  check_score_errors(m, 1, x, work, bad, sizeof(bad) / sizeof(bad[0]), MSG_CONTAINS);
  free(work); free(x);
  golden_close(&g);
  model_free(m);
}

/* Hyper-parameters: defaults, stored search defaults, errors. */
static void test_hparams(void **state) {
  (void)state;
  anom_model *m;
  anom_err e;
  assert_int_equal(model_create(&m, "anogan", 32, 32, 3, NULL, NULL, &e), ANOM_OK);
  cJSON *hp = m->ops->hparams(m);
  static const struct { const char *k; double v; } def[] = {
    {"nz", 100}, {"ngf", 64}, {"extralayers", 0}, {"lr", 2e-4}, {"beta1", 0.5},
    {"beta2", 0.999}, {"steps", 500}, {"lambda", 0.1}, {"search_lr", 0.001},
    {"search_beta1", 0.5},
  };
  assert_int_equal(cJSON_GetArraySize(hp), 10);
  for(size_t i = 0; i < sizeof(def) / sizeof(def[0]); i++)
    assert_true(cJSON_GetObjectItem(hp, def[i].k)->valuedouble == def[i].v);
  cJSON_Delete(hp);
  /* G: 100 -> 256x4x4 -> 128x8x8 -> 64x16x16 -> 3x32x32; f(x) 256x4x4 */
  const net *G = m->nets[0], *D = m->nets[1];
  int c, h, w;
  net_out_shape(G, -1, &c, &h, &w);
  assert_true(c == 3 && h == 32 && w == 32);
  assert_string_equal(G->layers[0].name, "main.initial-100-256-convt");
  net_out_shape(D, D->nlayers - 3, &c, &h, &w);
  assert_true(c == 256 && h == 4 && w == 4);
  assert_string_equal(D->layers[D->nlayers - 3].name, "features.7");
  model_free(m);

  static const create_case bad[] = {
    {"{\"alpha\": 1}", 32, 32, "anogan: unknown hyper-parameter 'alpha' (known: nz, ngf, "
     "extralayers, lr, beta1, beta2, steps, lambda, search_lr, search_beta1)"},
    {"{\"steps\": 0}", 32, 32, "'steps' must be an integer from 1 to 100000"},
    {"{\"lambda\": 2}", 32, 32, "'lambda' must be a number from 0 to 1"},
    {"{\"search_lr\": 0}", 32, 32, "'search_lr' must be a number from"},
    {"{\"nz\": 0}", 32, 32, "'nz' must be an integer from 1"},
    {NULL, 32, 48, "square with a side of 16, 32, 64... (a power of two), found 32x48"},
    {NULL, 40, 40, "found 40x40"},
  };
  check_create_errors("anogan", bad, sizeof(bad) / sizeof(bad[0]), MSG_CONTAINS);
}

/* ---- (5) training, save, load -------------------------------------------- */

/* One epoch of model_train, then save -> load (detector_test.h): the same
** weights and threshold, the same scores of new images bit for bit. */
static void test_train_save_load(void **state) {
  (void)state;
  int n = 40;
  float *x = blob_images(n, 32, 11);
  anom_model *m = create_model("anogan", 32, 1, "{\"nz\": 16, \"ngf\": 8, \"steps\": 20}");
  train_report rep;
  train_epoch(m, x, n, 8, 3, &rep);
  assert_int_equal(rep.nlosses, 4);
  assert_string_equal(rep.loss_names[0], "g");
  assert_string_equal(rep.loss_names[3], "d_fake");
  /* after a few steps from the DCGAN init D is still near 1/2 everywhere */
  for(int i = 0; i < 4; i++) assert_true(isfinite(rep.losses[i]));
  assert_true(rel(rep.losses[1], rep.losses[2] + rep.losses[3]) <= 1e-12);
  assert_true(rep.losses[2] > 0.2 && rep.losses[2] < 1.2);
  assert_true(rep.losses[3] > 0.2 && rep.losses[3] < 1.2);
  assert_true(isfinite(m->threshold));
  printf("# 1 epoch on %d blobs: g %.4f d %.4f (real %.4f fake %.4f), threshold %.4f\n",
         rep.images_train, rep.losses[0], rep.losses[1], rep.losses[2], rep.losses[3],
         m->threshold);

  float *t = blob_images(3, 32, 12);
  score_result r1[3];
  anom_model *m2 = check_save_load(m, t, 3, r1);
  assert_string_equal(m2->ops->name, "anogan");
  assert_memory_equal(m2->block, m->block, (m->nparams + m->nbufs) * sizeof(float));
  cJSON *hp2 = m2->ops->hparams(m2);
  assert_true(cJSON_GetObjectItem(hp2, "steps")->valuedouble == 20);
  assert_true(cJSON_GetObjectItem(hp2, "nz")->valuedouble == 16);
  cJSON_Delete(hp2);
  assert_true(rel(m2->threshold, m->threshold) <= 1e-8);   /* stored as %.9g */
  for(int i = 0; i < 3; i++){
    assert_int_equal(r1[i].nparts, 2);
    assert_true(r1[i].score > 0);
  }
  free(t);
  model_free(m2);
  model_free(m);
  free(x);
}

/* One training step from the DCGAN init: D outputs are near 1/2, so each
** BCE is near ln 2; the step moves both networks by about lr. */
static void test_train_step(void **state) {
  (void)state;
  anom_model *m = create_model("anogan", 32, 1, "{\"nz\": 16, \"ngf\": 8}");
  anom_err e;
  float *x = blob_images(4, 32, 5);
  rng r;
  rng_seed(&r, 9);
  void *st = NULL;
  assert_int_equal(m->ops->train_begin(m, 4, &r, &st, &e), ANOM_OK);
  size_t total = m->nparams + m->nbufs;
  float *before = malloc(total * sizeof(float));
  memcpy(before, m->block, total * sizeof(float));
  double l[4];
  assert_int_equal(m->ops->train_step(m, st, 4, x, l, &e), ANOM_OK);
  printf("# first training step: g %.4f d %.4f (real %.4f fake %.4f)\n", l[0], l[1], l[2], l[3]);
  for(int i = 0; i < 4; i++) assert_true(l[i] > 0.4 && l[i] < (i == 1 ? 2.0 : 1.0));
  assert_true(l[1] == l[2] + l[3]);
  const net *G = m->nets[0], *D = m->nets[1];
  /* the first weight of each net moved by about lr (Adam's first step) */
  double dg = fabs(G->params[0] - before[G->params - m->block]);
  double dd = fabs(D->params[0] - before[D->params - m->block]);
  assert_true(dg > 1e-4 && dg < 3e-4);
  assert_true(dd > 1e-4 && dd < 3e-4);
  m->ops->train_end(m, st);
  check_batch_errors(m);
  free(before);
  free(x);
  model_free(m);
}


/* ---- training against the reference -------------------------------------- */

#define TRAIN_PATH "tests/data/golden-anogan-train-tiny.safetensors"
#define Z_SEED 99

/* Two DCGAN steps from the reference's weights, with the z our rng draws. */
static void test_golden_train(void **state) {
  (void)state;
  golden_file g;
  golden_open(&g, TRAIN_PATH);
  anom_model *m = create_model("anogan", 32, 1, "{\"nz\": 16, \"ngf\": 8}");
  anom_err e;
  int64_t nx, nz1, nloss[2];
  float *x = golden(&g.f, "input", &nx), *z1 = golden(&g.f, "z1", &nz1);
  float *loss[2] = {golden(&g.f, "loss1", &nloss[0]), golden(&g.f, "loss2", &nloss[1])};
  int n = (int)(nx / IMG);
  assert_int_equal(n, 8);
  assert_true(nz1 == n * NZ && nloss[0] == 4 && nloss[1] == 4);
  /* the reference replays our rng: same z */
  rng r;
  rng_seed(&r, Z_SEED);
  for(int k = 0; k < n * NZ; k++) assert_true(fabsf((float)rng_normal(&r) - z1[k]) <= 1e-6f);

  void *st = NULL;
  assert_int_equal(m->ops->train_begin(m, n, &r, &st, &e), ANOM_OK);
  set_tensors(m, &g.f, "before.");
  rng_seed(&r, Z_SEED);
  for(int s = 0; s < 2; s++){
    double l[4];
    assert_int_equal(m->ops->train_step(m, st, n, x, l, &e), ANOM_OK);
    char prefix[16];
    snprintf(prefix, sizeof(prefix), "step%d.", s + 1);
    double w = check_tensors(m, &g.f, prefix, 2e-4);
    double el = 0;
    for(int i = 0; i < 4; i++) el = fmax(el, rel(l[i], loss[s][i]));
    printf("# training step %d: worst weight error %.2e lr, losses max relative error %.2e\n",
           s + 1, w, el);
    assert_true(el <= TOL);
  }
  m->ops->train_end(m, st);
  free(x); free(z1); free(loss[0]); free(loss[1]);
  model_free(m);
  golden_close(&g);
}

/* ---- (6) determinism ----------------------------------------------------- */

static void test_determinism(void **state) {
  (void)state;
  anom_model *m = load_model_file(MODEL_PATH);
  golden_file g;
  golden_open(&g, GOLDEN_PATH);
  float *x = golden(&g.f, "input", NULL);
  float *work = work_for(m, 1);
  score_result a, b, c, d;
  anom_err e;
  assert_int_equal(score_opts(m, x, work, "{\"steps\": 5, \"seed\": 7}", &a, &e), ANOM_OK);
  assert_int_equal(score_opts(m, x, work, "{\"steps\": 5, \"seed\": 7}", &b, &e), ANOM_OK);
  assert_int_equal(score_opts(m, x, work, "{\"steps\": 5, \"seed\": 8}", &c, &e), ANOM_OK);
  assert_true(a.score == b.score && a.part[0] == b.part[0] && a.part[1] == b.part[1]);
  assert_true(a.score != c.score);
  /* default seed is 0 */
  assert_int_equal(score_opts(m, x, work, "{\"steps\": 5}", &a, &e), ANOM_OK);
  assert_int_equal(score_opts(m, x, work, "{\"steps\": 5, \"seed\": 0}", &d, &e), ANOM_OK);
  assert_true(a.score == d.score);
  free(work); free(x);
  golden_close(&g);
  model_free(m);
}

/* Every allocation failing in turn: ENOMEM, never a crash or a leak. */
static void test_oom(void **state) {
  (void)state;
  oom_load(MODEL_PATH);
  anom_model *m = create_model("anogan", 32, 1, "{\"nz\": 16, \"ngf\": 8}");
  rng r;
  oom_train_begin(m, &r, NULL);
  model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_golden_forward),
    cmocka_unit_test(test_golden_search),
    cmocka_unit_test(test_search_lowers_loss),
    cmocka_unit_test(test_batch_independent),
    cmocka_unit_test(test_options),
    cmocka_unit_test(test_hparams),
    cmocka_unit_test(test_train_save_load),
    cmocka_unit_test(test_train_step),
    cmocka_unit_test(test_golden_train),
    cmocka_unit_test(test_determinism),
    cmocka_unit_test(test_oom),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
