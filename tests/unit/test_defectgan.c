/*
** test_defectgan.c - DefectGAN: the encoder-decoder and D forward and the
** score parts against the PyTorch and numpy reference, two training steps
** with synthetic defects against the reference trainer, determinism, a
** model_train run saved and reloaded, scoring options, hyper-parameter
** errors and allocation failures.
**
** The golden files come from tests/bench/reference/make_golden_defectgan.py:
**   tiny-defectgan.safetensors, golden-defectgan-tiny.safetensors
**     isize 32, nc 1, nz 8, ngf 4, ndf 4, seeded weights and non-trivial
**     batch norm; 5 inputs; x_hat, D's probability and recon in float64, and
**     the numpy oracle's LBP maps and scores on that x_hat;
**   tiny32rgb-defectgan.safetensors, golden-defectgan-tiny32rgb.safetensors
**     the same with 3 channels (the luma path) and extralayers 1;
**   golden-defectgan-train-tiny.safetensors
**     two reference training steps, the defects drawn from core/rng.c's
**     generator replayed in Python.
**
** An LBP code compares a neighbour with its centre, and a repaired image has
** comparisons closer than float32 rounding (the reference script measures a
** smallest margin of 1e-8, and PyTorch's own float32 x_hat changes 25 map
** pixels of 5120 with the wider setting). So the LBP code is checked bit for
** bit on the golden x_hat, and score() bit for bit against that same code on
** our own x_hat; our end-to-end maps against the golden ones may differ in a
** few pixels, which is counted, printed and bounded.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lbp.h"
#include "core/model.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/train.h"

#include "golden.h"
#include "detector_test.h"

#define TOL 1e-4   /* |ours - golden| <= TOL * max(1, |golden|) */
#define TINY "tests/data/tiny-defectgan.safetensors"

/* The map of image x and repair xh (C, H, W) through core/lbp.c. */
static void lbp_map(int c, int h, int w, const float *x, const float *xh, int points,
                    double radius, int window, float *map) {
  size_t hw = (size_t)h * w;
  float *ga = malloc(hw * sizeof(float)), *gb = malloc(hw * sizeof(float));
  float *ham = malloc(hw * sizeof(float));
  uint32_t *ca = malloc(hw * sizeof(uint32_t)), *cb = malloc(hw * sizeof(uint32_t));
  lbp_grey(ga, x, c, h, w);
  lbp_grey(gb, xh, c, h, w);
  lbp_codes(ca, ga, h, w, points, radius);
  lbp_codes(cb, gb, h, w, points, radius);
  lbp_hamming(ham, ca, cb, hw);
  lbp_box(map, ham, h, w, window);
  free(ga); free(gb); free(ham); free(ca); free(cb);
}

typedef struct lbp_setting {
  const char *opts;         /* scoring options, NULL for the model's */
  const char *map, *score;  /* golden names */
  int points;
  double radius;
  int window;
  double top;
} lbp_setting;

static const lbp_setting settings[2] = {
  {NULL, "map", "score", 8, 1.0, 3, 0.01},
  {"{\"lbp_points\": 16, \"lbp_radius\": 2, \"window\": 5, \"top\": 0.05}", "map_opt",
   "score_opt", 16, 2.0, 5, 0.05},
};

static void check_forward(const char *model_path, const char *golden_path, int nc) {
  anom_model *m = load_model_file(model_path);
  assert_string_equal(m->ops->name, "defectgan");
  assert_int_equal(m->nnets, 3);
  assert_int_equal(m->channels, nc);
  golden_file g;
  golden_open(&g, golden_path);
  anom_err e;
  int64_t nx, np;
  float *x = golden(&g.f, "input", &nx), *xh_gold = golden(&g.f, "x_hat", NULL);
  float *dp = golden(&g.f, "d_prob", &np), *recon_gold = golden(&g.f, "recon", NULL);
  int n = (int)np, h = m->height, w = m->width;
  assert_int_equal(n, 5);
  size_t hw = (size_t)h * w, img = (size_t)nc * hw;

  float *work = work_for(m, n);
  float *xh = malloc((size_t)nx * sizeof(float)), *xh2 = malloc((size_t)nx * sizeof(float));
  float *map = malloc((size_t)n * hw * sizeof(float)), *mine = malloc(hw * sizeof(float));
  score_result r[5];

  /* the networks */
  assert_int_equal(model_score(m, n, x, work, r, xh, NULL, &e), ANOM_OK);
  double ex = max_rel_err(xh, xh_gold, nx), er = 0;
  for(int i = 0; i < n; i++){
    assert_int_equal(r[i].nparts, 2);
    assert_string_equal(r[i].part_name[0], "lbp");
    assert_string_equal(r[i].part_name[1], "recon");
    assert_true(r[i].score == r[i].part[0]);
    er = fmax(er, fabs(r[i].part[1] - recon_gold[i]) / fmax(1e-3, fabs(recon_gold[i])));
  }
  const net *d = m->nets[2];
  float *prob = malloc((size_t)n * sizeof(float));
  float *scratch = malloc(net_scratch_floats(d, n) * sizeof(float));
  net_forward(d, 0, d->nlayers, n, x, prob, scratch);
  double ep = max_rel_err(prob, dp, np);
  printf("# %s: max relative error x_hat %.2e, recon %.2e, d_prob %.2e\n", model_path, ex, er, ep);
  assert_true(ex <= TOL && er <= TOL && ep <= TOL);

  for(int s = 0; s < 2; s++){
    const lbp_setting *st = &settings[s];
    cJSON *o = st->opts ? cJSON_Parse(st->opts) : NULL;
    float *map_gold = golden(&g.f, st->map, NULL), *score_gold = golden(&g.f, st->score, NULL);
    /* (1) core/lbp.c on the golden x_hat: the oracle's maps bit for bit */
    double es = 0;
    for(int i = 0; i < n; i++){
      lbp_map(nc, h, w, x + i * img, xh_gold + i * img, st->points, st->radius, st->window,
              mine);
      assert_memory_equal(mine, map_gold + i * hw, hw * sizeof(float));
      double sc = lbp_top_mean(mine, hw, st->top);
      es = fmax(es, fabs(sc - score_gold[i]) / fmax(1, fabs(score_gold[i])));
    }
    assert_true(es <= 1e-6);
    /* (2) score() and model_map() are that code on our own x_hat */
    score_result r2[5], r3[5];
    assert_int_equal(model_score(m, n, x, work, r2, xh2, o, &e), ANOM_OK);
    assert_memory_equal(xh2, xh, (size_t)nx * sizeof(float));
    assert_int_equal(model_map(m, n, x, work, map, r3, NULL, o, &e), ANOM_OK);
    for(int i = 0; i < n; i++) assert_true(r3[i].score == r2[i].score);
    int differ = 0;
    double worst_score = 0;
    for(int i = 0; i < n; i++){
      lbp_map(nc, h, w, x + i * img, xh + i * img, st->points, st->radius, st->window, mine);
      assert_memory_equal(mine, map + i * hw, hw * sizeof(float));
      assert_true(r2[i].score == lbp_top_mean(mine, hw, st->top));
      assert_true(r2[i].part[1] == r[i].part[1]);
      /* (3) end to end against the golden maps: ties may flip a few codes */
      for(size_t k = 0; k < hw; k++) differ += map[i * hw + k] != map_gold[i * hw + k];
      worst_score = fmax(worst_score, fabs(r2[i].score - score_gold[i]));
    }
    printf("#   LBP %s: oracle maps bit for bit (top mean within %.1e); end to end %d of %d "
           "map pixels differ, scores within %.3g\n", st->opts ? "options" : "defaults", es,
           differ, (int)(n * hw), worst_score);
    assert_true(differ <= (int)(n * hw) / 100);
    if( !differ ) assert_true(worst_score <= 1e-6 * 16);
    else assert_true(worst_score <= 0.5);
    cJSON_Delete(o);
    free(map_gold);
    free(score_gold);
  }
  free(prob); free(scratch); free(work); free(xh); free(xh2); free(map); free(mine);
  free(x); free(xh_gold); free(dp); free(recon_gold);
  golden_close(&g);
  model_free(m);
}

static void test_golden_tiny(void **state) {
  (void)state;
  check_forward(TINY, "tests/data/golden-defectgan-tiny.safetensors", 1);
}

static void test_golden_tiny32rgb(void **state) {
  (void)state;
  check_forward("tests/data/tiny32rgb-defectgan.safetensors",
                "tests/data/golden-defectgan-tiny32rgb.safetensors", 3);
}

/* Scoring options: each changes the score as lbp.c says; the rejections. */
static void test_score_options(void **state) {
  (void)state;
  anom_model *m = load_model_file(TINY);
  size_t hw = 32 * 32;
  int n = 2;
  float *x = malloc(n * hw * sizeof(float)), *xh = malloc(n * hw * sizeof(float));
  for(size_t i = 0; i < n * hw; i++) x[i] = (float)sin(0.37 * (double)i);
  float *work = work_for(m, n);
  float *map = malloc(n * hw * sizeof(float)), *mine = malloc(hw * sizeof(float));
  score_result r[2];
  anom_err e;
  assert_int_equal(model_score(m, n, x, work, r, xh, NULL, &e), ANOM_OK);
  static const struct { const char *o; int p; double rad; int win; double top; } ok[] = {
    {"{\"lbp_points\": 4}", 4, 1, 3, 0.01},
    {"{\"lbp_radius\": 1.5}", 8, 1.5, 3, 0.01},
    {"{\"window\": 1}", 8, 1, 1, 0.01},
    {"{\"top\": 1}", 8, 1, 3, 1},
    {"{\"top\": 0.0001, \"window\": 7, \"lbp_points\": 32, \"lbp_radius\": 16}", 32, 16, 7, 1e-4},
  };
  for(size_t k = 0; k < sizeof(ok) / sizeof(ok[0]); k++){
    cJSON *o = cJSON_Parse(ok[k].o);
    score_result r2[2];
    assert_int_equal(model_score(m, n, x, work, r2, NULL, o, &e), ANOM_OK);
    for(int i = 0; i < n; i++){
      lbp_map(1, 32, 32, x + i * hw, xh + i * hw, ok[k].p, ok[k].rad, ok[k].win, mine);
      assert_true(r2[i].score == lbp_top_mean(mine, hw, ok[k].top));
      assert_true(r2[i].part[1] == r[i].part[1]);
    }
    cJSON_Delete(o);
  }
  /* the mean of the whole map differs from the top 1% */
  cJSON *o = cJSON_Parse("{\"top\": 1}");
  score_result r3[2];
  assert_int_equal(model_score(m, n, x, work, r3, NULL, o, &e), ANOM_OK);
  assert_true(r3[0].score < r[0].score);
  cJSON_Delete(o);

  static const opt_case bad[] = {
    {"{\"steps\": 3}", "defectgan: unknown scoring option 'steps' (known: lbp_points, "
                       "lbp_radius, window, top)"},
    {"{\"window\": 4}", "defectgan: 'window' must be odd, found 4"},
    {"{\"window\": 33}", "defectgan: 'window' must be an integer from 1 to 31"},
    {"{\"top\": 0}", "defectgan: 'top' must be a number from 0.0001 to 1"},
    {"{\"top\": 1.5}", "defectgan: 'top' must be a number from 0.0001 to 1"},
    {"{\"lbp_points\": 33}", "defectgan: 'lbp_points' must be an integer from 1 to 32"},
    {"{\"lbp_points\": 2.5}", "defectgan: 'lbp_points' must be an integer from 1 to 32"},
    {"{\"lbp_radius\": 0.25}", "defectgan: 'lbp_radius' must be a number from 0.5 to 16"},
    {"{\"lbp_radius\": \"1\"}", "defectgan: 'lbp_radius' must be a number from 0.5 to 16"},
  };
  check_score_errors(m, n, x, work, bad, sizeof(bad) / sizeof(bad[0]), MSG_EXACT);
  /* model_map refuses them alike */
  score_result rm[8];
  for(size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++){
    o = cJSON_Parse(bad[k].json);
    anom_err_clear(&e);
    assert_int_equal(model_map(m, n, x, work, map, rm, NULL, o, &e), ANOM_EINVAL);
    assert_string_equal(e.msg, bad[k].msg);
    cJSON_Delete(o);
  }
  /* recon out of model_map */
  float *xh3 = malloc(n * hw * sizeof(float));
  assert_int_equal(model_map(m, n, x, work, map, rm, xh3, NULL, &e), ANOM_OK);
  assert_memory_equal(xh3, xh, n * hw * sizeof(float));
  free(xh3);
  free(x); free(xh); free(work); free(map); free(mine);
  model_free(m);
}

static void test_create_errors(void **state) {
  (void)state;
  static const create_case cases[] = {
    {"{\"nz\": 8, \"w_con\": 1}", 32, 32, "defectgan: unknown hyper-parameter 'w_con' "
     "(known: nz, ngf, ndf, extralayers, lr, beta1, beta2, w_adv, w_l1, defect_p, defect_max, "
     "size_min, size_max, kinds, lbp_points, lbp_radius, window, top)"},
    {"{\"ndf\": 0}", 32, 32, "defectgan: 'ndf' must be an integer from 1 to 1024"},
    {"{\"kinds\": \"blocks\"}", 32, 32, "defectgan: 'kinds' must be \"all\" or a "
     "comma-separated list of block, line, noise, shift, found 'blocks'"},
    {"{\"kinds\": \"\"}", 32, 32, "defectgan: 'kinds' must be \"all\" or a "
     "comma-separated list of block, line, noise, shift, found ''"},
    {"{\"kinds\": 3}", 32, 32, "defectgan: 'kinds' must be \"all\" or a "
     "comma-separated list of block, line, noise, shift"},
    {"{\"size_min\": 0.4}", 32, 32, "defectgan: 'size_min' (0.4) must not exceed 'size_max' (0.3)"},
    {"{\"size_max\": 1.2}", 32, 32, "defectgan: 'size_max' must be a number from 0 to 1"},
    {"{\"defect_p\": 1.5}", 32, 32, "defectgan: 'defect_p' must be a number from 0 to 1"},
    {"{\"defect_max\": 0}", 32, 32, "defectgan: 'defect_max' must be an integer from 1 to 64"},
    {"{\"window\": 2}", 32, 32, "defectgan: 'window' must be odd, found 2"},
    {"{\"top\": -1}", 32, 32, "defectgan: 'top' must be a number from 0.0001 to 1"},
    {"{\"w_l1\": \"x\"}", 32, 32, "defectgan: 'w_l1' must be a number from 0 to 1e+06"},
    {"{}", 48, 48, "defectgan: the input must be square with a side of 16, 32, 64... "
     "(a power of two), found 48x48"},
    {"{}", 32, 64, "defectgan: the input must be square with a side of 16, 32, 64... "
     "(a power of two), found 32x64"},
    {"{}", 8, 8, "defectgan: the input must be square with a side of 16, 32, 64... "
     "(a power of two), found 8x8"},
  };
  check_create_errors("defectgan", cases, sizeof(cases) / sizeof(cases[0]), MSG_EXACT);
  /* the defaults, and 64x64 RGB builds */
  anom_model *m = create_model("defectgan", 64, 3,
                               "{\"nz\": 4, \"ngf\": 2, \"ndf\": 2, \"kinds\": \" shift, block\"}");
  assert_int_equal(m->nnets, 3);
  cJSON *j = m->ops->hparams(m);
  static const struct { const char *k; double v; } defs[] = {
    {"nz", 4}, {"ngf", 2}, {"ndf", 2}, {"extralayers", 0}, {"lr", 2e-4}, {"beta1", 0.5},
    {"beta2", 0.999}, {"w_adv", 1}, {"w_l1", 50}, {"defect_p", 0.9}, {"defect_max", 3},
    {"size_min", 0.05}, {"size_max", 0.3}, {"lbp_points", 8}, {"lbp_radius", 1},
    {"window", 3}, {"top", 0.01}};
  for(size_t k = 0; k < sizeof(defs) / sizeof(defs[0]); k++){
    const cJSON *v = cJSON_GetObjectItem(j, defs[k].k);
    assert_non_null(v);
    assert_true(v->valuedouble == defs[k].v);
  }
  assert_string_equal(cJSON_GetObjectItem(j, "kinds")->valuestring, "block,shift");
  assert_int_equal(cJSON_GetArraySize(j), 18);
  cJSON_Delete(j);
  /* the decoder ends in 64x64x3, D in one logit */
  const net *dec = m->nets[1], *dn = m->nets[2];
  int c, hh, ww;
  net_out_shape(dec, -1, &c, &hh, &ww);
  assert_true(c == 3 && hh == 64 && ww == 64);
  net_out_shape(dn, -1, &c, &hh, &ww);
  assert_true(c == 1 && hh == 1 && ww == 1);
  model_free(m);
  /* the smallest side */
  m = create_model("defectgan", 16, 1, NULL);
  net_out_shape(m->nets[1], -1, &c, &hh, &ww);
  assert_true(c == 1 && hh == 16 && ww == 16);
  model_free(m);
}

static void test_golden_train_steps(void **state) {
  (void)state;
  golden_file g;
  golden_open(&g, "tests/data/golden-defectgan-train-tiny.safetensors");
  anom_err e;
  anom_model *m = create_model("defectgan", 32, 1, "{\"nz\": 8, \"ngf\": 4, \"ndf\": 4}");
  rng r;
  rng_seed(&r, 1);
  void *st;
  assert_int_equal(m->ops->train_begin(m, 8, &r, &st, &e), ANOM_OK);
  set_tensors(m, &g.f, "before.");
  /* the defects of both steps come from this generator, as in the reference */
  const char *seed = st_meta(&g.f, "defect_seed");
  assert_non_null(seed);
  rng_seed(&r, strtoull(seed, NULL, 10));
  float *x = golden(&g.f, "input", NULL);
  static const char *keys[] = {"err_g", "err_d", "err_l1"};
  check_train_steps(m, st, &g.f, x, 8, keys, 3, 2e-4);
  m->ops->train_end(m, st);
  free(x);
  model_free(m);
  golden_close(&g);
}

/* Two steps from a seed, twice: the same weights and statistics, bit for bit
** (detector_test.h); the defects come from the same generator. */
static void test_determinism(void **state) {
  (void)state;
  float *x = blob_images(4, 32, 3);
  check_determinism("defectgan", 32, 1, "{\"nz\": 8, \"ngf\": 4, \"ndf\": 4, \"defect_p\": 1}",
                    42, x, 4, NULL);
  free(x);
}

/* One epoch of model_train, then save -> load: the same scores bit for bit,
** the options kept, and the same file again. */
static void test_train_save_load(void **state) {
  (void)state;
  int n = 40;
  float *x = blob_images(n, 32, 7);
  anom_model *m = create_model("defectgan", 32, 1,
                               "{\"nz\": 8, \"ngf\": 4, \"ndf\": 4, \"kinds\": \"shift,block\", "
                               "\"window\": 5, \"defect_max\": 2, \"top\": 0.02}");
  train_report rep;
  train_epoch(m, x, n, 8, 3, &rep);
  assert_int_equal(rep.images_train, 36);
  assert_int_equal(rep.batches, 4);
  assert_int_equal(rep.nlosses, 3);
  assert_string_equal(rep.loss_names[0], "g");
  assert_string_equal(rep.loss_names[1], "d");
  assert_string_equal(rep.loss_names[2], "l1");
  for(int k = 0; k < 3; k++) assert_true(isfinite(rep.losses[k]) && rep.losses[k] > 0);
  assert_true(isfinite(m->threshold));
  score_result r1[40];
  anom_model *m2 = check_save_load(m, x, n, r1);
  cJSON *j = m2->ops->hparams(m2);
  assert_string_equal(cJSON_GetObjectItem(j, "kinds")->valuestring, "block,shift");
  assert_true(cJSON_GetObjectItem(j, "window")->valuedouble == 5);
  assert_true(cJSON_GetObjectItem(j, "defect_max")->valuedouble == 2);
  assert_true(cJSON_GetObjectItem(j, "top")->valuedouble == 0.02);
  cJSON_Delete(j);
  for(int i = 0; i < n; i++){
    assert_int_equal(r1[i].nparts, 2);
    assert_true(r1[i].score >= 0 && r1[i].score <= 8);
  }
  free(x);
  model_free(m); model_free(m2);
}

/* A batch of one is refused (batch norm needs two), as is one over max_batch. */
static void test_train_step_errors(void **state) {
  (void)state;
  anom_model *m = create_model("defectgan", 32, 1, "{\"nz\": 4, \"ngf\": 2, \"ndf\": 2}");
  check_batch_errors(m);
  model_free(m);
}

#ifdef ANOM_TEST
/* Every allocation of model_load, model_create and train_begin failing in
** turn: an error, no leak. */
static void test_oom(void **state) {
  (void)state;
  assert_true(oom_load(TINY) > 5);
  const char *hp = "{\"nz\": 4, \"ngf\": 2, \"ndf\": 2, \"kinds\": \"line\"}";
  assert_true(oom_create("defectgan", 32, 1, hp) > 5);
  anom_model *m = create_model("defectgan", 32, 1, hp);
  rng r;
  void *st = NULL;
  assert_true(oom_train_begin(m, &r, &st) > 10);
  /* and a step works on the state that finally came through */
  float x[4 * 1024];
  for(int i = 0; i < 4 * 1024; i++) x[i] = (float)sin(i * 0.1);
  double losses[TRAIN_MAX_LOSSES];
  anom_err e;
  assert_int_equal(m->ops->train_step(m, st, 4, x, losses, &e), ANOM_OK);
  m->ops->train_end(m, st);
  model_free(m);
}
#endif

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_golden_tiny),
    cmocka_unit_test(test_golden_tiny32rgb),
    cmocka_unit_test(test_score_options),
    cmocka_unit_test(test_create_errors),
    cmocka_unit_test(test_golden_train_steps),
    cmocka_unit_test(test_determinism),
    cmocka_unit_test(test_train_save_load),
    cmocka_unit_test(test_train_step_errors),
#ifdef ANOM_TEST
    cmocka_unit_test(test_oom),
#endif
  };
  return cmocka_run_group_tests_name("defectgan", tests, NULL, NULL);
}
