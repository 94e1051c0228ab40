/*
** test_egbad.c - EGBAD: inference at isize 32 and 64, D's gradients and two
** training steps against the PyTorch reference, scoring options and
** hyper-parameter errors, a model_train run saved and reloaded, determinism
** and allocation failures.
**
** The golden files come from tests/bench/reference/make_golden_egbad.py:
**   tiny-egbad.safetensors, golden-egbad-tiny.safetensors
**     isize 32, nc 3, nz 8, nf 1 with seeded weights and non-trivial batch
**     norm; eval-mode outputs in float64 rounded to float32;
**   golden-egbad-64.safetensors
**     the same at isize 64, nc 1, nz 4, nf 1, the model's tensors inside;
**   golden-egbad-grad.safetensors
**     D(x, z)'s gradients (autograd, float64) with our rng's dropout masks;
**   golden-egbad-train-tiny.safetensors
**     two training steps from our own init (the reference replays core/rng.c).
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

#include "core/model.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/train.h"

#include "golden.h"
#include "detector_test.h"

/* In core/detectors/egbad.c, for tests only. */
int egbad_d_gradients(anom_model *m, int n, const float *x, const float *z,
                      const float *r, const float *q, rng *masks, double *loss,
                      float *grads, float *dx, float *dz, anom_err *e);

#define TOL 1e-4          /* forward: |ours - golden| <= TOL * max(1, |golden|) */
#define TRAIN_SEED 1357   /* make_golden_egbad.py's */
#define MASK_SEED 4242
#define NET_E 0           /* the model's nets, in order */
#define NET_G 1
#define NET_DX 2
#define NET_DZ 3
#define NET_DJ 4
#define DJ_F 3            /* Dj's layers up to the feature f */

#define TINY "tests/data/tiny-egbad.safetensors"

static double rel(double a, double b) {
  return fabs(a - b) / fmax(1e-3, fabs(b));
}

/* f(x, z) (n x 32 nf) and D's logits through the model's three D nets. */
static void d_eval(const anom_model *m, int n, const float *x, const float *z,
                   float *f, float *logit) {
  const net *dx = m->nets[NET_DX], *dz = m->nets[NET_DZ], *dj = m->nets[NET_DJ];
  size_t hx = net_out_floats(dx, -1), hz = net_out_floats(dz, -1), s = 0;
  for(int i = 0; i < m->nnets; i++)
    if( net_scratch_floats(m->nets[i], n) > s ) s = net_scratch_floats(m->nets[i], n);
  float *bx = malloc((size_t)n * hx * sizeof(float)), *bz = malloc((size_t)n * hz * sizeof(float));
  float *jin = malloc((size_t)n * (hx + hz) * sizeof(float)), *scratch = malloc(s * sizeof(float));
  net_forward(dx, 0, dx->nlayers, n, x, bx, scratch);
  net_forward(dz, 0, dz->nlayers, n, z, bz, scratch);
  concat_forward(n, (int)hx, (int)hz, 1, jin, bx, bz);
  net_forward(dj, 0, DJ_F, n, jin, f, scratch);
  net_forward(dj, DJ_F, dj->nlayers, n, f, logit, scratch);
  free(bx); free(bz); free(jin); free(scratch);
}

/* Every output of the golden g against m: the score, its parts and x_hat
** through model_score (both score kinds), z, f and the logits net by net. */
static void check_forward(const anom_model *m, const st_file *g, int n, const char *what) {
  int64_t nx, nz, nfeat;
  float *x = golden(g, "input", &nx), *xh = golden(g, "x_hat", NULL);
  float *z = golden(g, "z", &nz), *fx = golden(g, "f_x", &nfeat), *fxh = golden(g, "f_xhat", NULL);
  float *lx = golden(g, "logit_x", NULL), *lxh = golden(g, "logit_xhat", NULL);
  float *res = golden(g, "residual", NULL), *fm = golden(g, "fm", NULL), *ce = golden(g, "ce", NULL);
  float *sfm = golden(g, "score_fm", NULL), *sce = golden(g, "score_ce", NULL);
  assert_int_equal(nx, (int64_t)n * m->channels * m->height * m->width);
  anom_err e;
  float *work = work_for(m, n);
  float *recon = malloc((size_t)nx * sizeof(float));
  score_result r[4], rc[4];
  assert_true(n <= 4);
  assert_int_equal(model_score(m, n, x, work, r, recon, NULL, &e), ANOM_OK);
  cJSON *o = cJSON_Parse("{\"score\": \"ce\"}");
  assert_int_equal(model_score(m, n, x, work, rc, NULL, o, &e), ANOM_OK);
  cJSON_Delete(o);
  double es = 0;
  for(int i = 0; i < n; i++){
    assert_int_equal(r[i].nparts, 3);
    assert_string_equal(r[i].part_name[0], "residual");
    assert_string_equal(r[i].part_name[1], "fm");
    assert_string_equal(r[i].part_name[2], "ce");
    es = fmax(es, rel(r[i].score, sfm[i]));
    es = fmax(es, rel(rc[i].score, sce[i]));
    es = fmax(es, rel(r[i].part[0], res[i]));
    es = fmax(es, rel(r[i].part[1], fm[i]));
    es = fmax(es, rel(r[i].part[2], ce[i]));
  }
  double ex = max_rel_err(recon, xh, nx);

  /* z = E(x), then f and the logits on (x, z) and (x_hat, z) */
  float *buf = malloc((size_t)nz * sizeof(float)), *scratch;
  const net *enc = m->nets[NET_E];
  scratch = malloc(net_scratch_floats(enc, n) * sizeof(float));
  net_forward(enc, 0, enc->nlayers, n, x, buf, scratch);
  double ez = max_rel_err(buf, z, nz);
  float *f = malloc((size_t)nfeat * sizeof(float)), logit[4];
  d_eval(m, n, x, z, f, logit);
  double ef = max_rel_err(f, fx, nfeat), el = max_rel_err(logit, lx, n);
  d_eval(m, n, xh, z, f, logit);
  double efh = max_rel_err(f, fxh, nfeat), elh = max_rel_err(logit, lxh, n);
  printf("# %s: max relative error: z %.2e x_hat %.2e f(x) %.2e f(x_hat) %.2e logits %.2e "
         "%.2e score/parts %.2e (tolerance %.0e)\n", what, ez, ex, ef, efh, el, elh, es, TOL);
  assert_true(ez <= TOL && ex <= TOL && ef <= TOL && efh <= TOL && el <= TOL && elh <= TOL
              && es <= TOL);
  free(buf); free(scratch); free(f); free(work); free(recon);
  free(x); free(xh); free(z); free(fx); free(fxh); free(lx); free(lxh);
  free(res); free(fm); free(ce); free(sfm); free(sce);
}

static void test_golden_forward(void **state) {
  (void)state;
  anom_model *m = load_model_file(TINY);
  assert_string_equal(m->ops->name, "egbad");
  assert_int_equal(m->nnets, 5);
  golden_file g;
  golden_open(&g, "tests/data/golden-egbad-tiny.safetensors");
  check_forward(m, &g.f, 4, "isize 32, nc 3");
  golden_close(&g);
  model_free(m);
}

/* isize 64: three stride-2 levels in every net. */
static void test_golden_forward64(void **state) {
  (void)state;
  anom_model *m = create_model("egbad", 64, 1, "{\"nz\": 4, \"nf\": 1}");
  golden_file g;
  golden_open(&g, "tests/data/golden-egbad-64.safetensors");
  set_tensors(m, &g.f, "");
  check_forward(m, &g.f, 2, "isize 64, nc 1");
  golden_close(&g);
  model_free(m);
}

/* The score's weighting, the per-call options and their rejections. */
static void test_score_options(void **state) {
  (void)state;
  anom_model *m = load_model_file(TINY);
  size_t img = 3 * 32 * 32;
  float *x = malloc(2 * img * sizeof(float));
  for(size_t i = 0; i < 2 * img; i++) x[i] = (float)sin(0.37 * (double)i);
  float *work = work_for(m, 2);
  score_result r[2], r2[2];
  anom_err e;
  assert_int_equal(model_score(m, 2, x, work, r, NULL, NULL, &e), ANOM_OK);
  for(int i = 0; i < 2; i++){
    assert_true(r[i].part[0] > 0 && r[i].part[1] > 0 && r[i].part[2] > 0);
    assert_true(fabs(r[i].score - (0.9 * r[i].part[0] + 0.1 * r[i].part[1]))
                <= 1e-12 * r[i].score);
  }
  static const struct { const char *opts; double w; int ce; } ok[] = {
    {"{\"score_w\": 0.25}", 0.25, 0},
    {"{\"score\": \"ce\"}", 0.1, 1},
    {"{\"score\": \"fm\", \"score_w\": 1}", 1, 0},
    {"{\"score\": \"ce\", \"score_w\": 0}", 0, 1},
  };
  for(size_t k = 0; k < sizeof(ok) / sizeof(ok[0]); k++){
    cJSON *o = cJSON_Parse(ok[k].opts);
    assert_int_equal(model_score(m, 2, x, work, r2, NULL, o, &e), ANOM_OK);
    for(int i = 0; i < 2; i++){
      for(int p = 0; p < 3; p++) assert_true(r2[i].part[p] == r[i].part[p]);
      double want = (1 - ok[k].w) * r[i].part[0] + ok[k].w * r[i].part[ok[k].ce ? 2 : 1];
      assert_true(fabs(r2[i].score - want) <= 1e-12 * fmax(1, want));
    }
    cJSON_Delete(o);
  }
  static const opt_case bad[] = {
    {"{\"steps\": 3}", "egbad: unknown scoring option 'steps' (known: score, score_w)"},
    {"{\"score\": \"l2\"}", "egbad: 'score' must be \"fm\" or \"ce\""},
    {"{\"score\": 1}", "egbad: 'score' must be \"fm\" or \"ce\""},
    {"{\"score_w\": 1.5}", "egbad: 'score_w' must be a number from 0 to 1"},
    {"{\"score_w\": \"x\"}", "egbad: 'score_w' must be a number from 0 to 1"},
  };
  check_score_errors(m, 2, x, work, bad, sizeof(bad) / sizeof(bad[0]), MSG_EXACT);
  free(x); free(work);
  model_free(m);
}

/* The shape of tensor name in m, or a failure when it is missing. */
static void assert_shape(const anom_model *m, const char *want, int ndim, int64_t s0,
                         int64_t s1, int64_t s2, int64_t s3) {
  int64_t shape[4], w[4] = {s0, s1, s2, s3};
  int nd;
  if( !find_tensor(m, want, NULL, shape, &nd) ){
    fprintf(stderr, "tensor '%s' is missing\n", want);
    fail();
  }
  assert_int_equal(nd, ndim);
  for(int k = 0; k < nd; k++) assert_int_equal(shape[k], w[k]);
}

static void test_create(void **state) {
  (void)state;
  static const create_case cases[] = {
    {"{\"nz\": 8, \"ndf\": 1}", 32, 32, "egbad: unknown hyper-parameter 'ndf' (known: nz, nf, "
                                        "lr, beta1, beta2, ema, dropout, score, score_w)"},
    {"{\"nf\": 0}", 32, 32, "egbad: 'nf' must be an integer from 1 to 1024"},
    {"{\"nz\": 2.5}", 32, 32, "egbad: 'nz' must be an integer from 1 to 4096"},
    {"{\"dropout\": 1}", 32, 32, "egbad: 'dropout' must be a number from 0 to 0.99"},
    {"{\"ema\": 1.5}", 32, 32, "egbad: 'ema' must be a number from 0 to 1"},
    {"{\"lr\": \"big\"}", 32, 32, "egbad: 'lr' must be a number from 1e-12 to 1"},
    {"{\"score\": \"mse\"}", 32, 32, "egbad: 'score' must be \"fm\" or \"ce\""},
    {"{\"score_w\": -0.1}", 32, 32, "egbad: 'score_w' must be a number from 0 to 1"},
    {"{}", 48, 48, "egbad: the input must be square with a side of 32 or 64, found 48x48"},
    {"{}", 32, 64, "egbad: the input must be square with a side of 32 or 64, found 32x64"},
    {"{}", 128, 128, "egbad: the input must be square with a side of 32 or 64, found 128x128"},
  };
  check_create_errors("egbad", cases, sizeof(cases) / sizeof(cases[0]), MSG_EXACT);

  /* the defaults: the authors' MNIST network with 8x8 maps */
  anom_model *m = create_model("egbad", 32, 1, "{}");
  const detector_ops *ops = m->ops;
  assert_int_equal(ops->batch, 100);
  assert_non_null(ops->train_finish);
  assert_string_equal(ops->loss_names[0], "d");
  assert_string_equal(ops->loss_names[1], "g");
  assert_string_equal(ops->loss_names[2], "e");
  assert_null(ops->loss_names[3]);
  cJSON *j = ops->hparams(m);
  static const struct { const char *k; double v; } def[] = {
    {"nz", 200}, {"nf", 32}, {"lr", 1e-5}, {"beta1", 0.5}, {"beta2", 0.999},
    {"ema", 0.999}, {"dropout", 0.5}, {"score_w", 0.1},
  };
  for(size_t k = 0; k < sizeof(def) / sizeof(def[0]); k++)
    assert_true(cJSON_GetObjectItem(j, def[k].k)->valuedouble == def[k].v);
  assert_string_equal(cJSON_GetObjectItem(j, "score")->valuestring, "fm");
  cJSON_Delete(j);
  assert_int_equal(m->nnets, 5);
  assert_shape(m, "encoder.layer_1.conv.weight", 4, 32, 1, 3, 3);
  assert_shape(m, "encoder.layer_3.conv.weight", 4, 128, 64, 3, 3);
  assert_shape(m, "encoder.layer_3.batch_normalization.running_var", 1, 128, 0, 0, 0);
  assert_shape(m, "encoder.layer_4.fc.weight", 2, 200, 8192, 0, 0);
  assert_shape(m, "generator.layer_1.fc.weight", 2, 1024, 200, 0, 0);
  assert_shape(m, "generator.layer_2.batch_normalization.weight", 1, 8192, 0, 0, 0);
  assert_shape(m, "generator.layer_3.conv.weight", 4, 128, 64, 4, 4);
  assert_shape(m, "generator.layer_4.conv.bias", 1, 1, 0, 0, 0);
  assert_shape(m, "discriminator.x_layer_1.conv.weight", 4, 64, 1, 4, 4);
  assert_shape(m, "discriminator.x_layer_2.batch_normalization.bias", 1, 64, 0, 0, 0);
  assert_shape(m, "discriminator.z_layer_1.fc.weight", 2, 512, 200, 0, 0);
  assert_shape(m, "discriminator.y_layer_1.fc.weight", 2, 1024, 4096 + 512, 0, 0);
  assert_shape(m, "discriminator.y_fc_logits.fc.weight", 2, 1, 1024, 0, 0);
  int tensors = 0;
  for(int i = 0; i < m->nnets; i++) tensors += net_tensor_count(m->nets[i]);
  assert_int_equal(tensors, 50);
  assert_int_equal(model_param_count(m), 15375370);   /* egbad_ref.py's count */
  model_free(m);

  /* 64 x 64 x 3: one more level everywhere */
  m = create_model("egbad", 64, 3, "{\"nz\": 16, \"nf\": 4, \"score\": \"ce\"}");
  assert_shape(m, "encoder.layer_4.conv.weight", 4, 32, 16, 3, 3);
  assert_shape(m, "encoder.layer_5.fc.weight", 2, 16, 32 * 64, 0, 0);
  assert_shape(m, "generator.layer_2.fc.weight", 2, 32 * 64, 128, 0, 0);
  assert_shape(m, "generator.layer_4.batch_normalization.running_mean", 1, 8, 0, 0, 0);
  assert_shape(m, "generator.layer_5.conv.weight", 4, 8, 3, 4, 4);
  assert_shape(m, "discriminator.x_layer_3.batch_normalization.weight", 1, 8, 0, 0, 0);
  assert_shape(m, "discriminator.y_layer_1.fc.weight", 2, 128, 8 * 64 + 64, 0, 0);
  j = m->ops->hparams(m);
  assert_string_equal(cJSON_GetObjectItem(j, "score")->valuestring, "ce");
  cJSON_Delete(j);
  model_free(m);
}

/*
** Flags over the parameters and buffers of m: the biases of layers that feed
** a batch norm, and that batch norm's running mean. In exact arithmetic such
** a bias has gradient 0 (batch norm removes any constant per channel); in
** float it is rounding noise, which Adam, dividing by its own magnitude,
** turns into steps of up to about lr in either direction (the reference's
** float32 and float64 runs differ by 0.7 lr on one). Those biases are
** checked against Adam's bound only, and the running means they shift by
** momentum times that.
*/
static void noise_flags(const anom_model *m, uint8_t *pf, uint8_t *bf) {
  memset(pf, 0, m->nparams);
  memset(bf, 0, m->nbufs ? m->nbufs : 1);
  for(int i = 0; i < m->nnets; i++){
    const net *nt = m->nets[i];
    for(int li = 0; li + 1 < nt->nlayers; li++){
      const layer *l = &nt->layers[li], *bn = &nt->layers[li + 1];
      if( !l->has_bias || bn->kind != LAYER_BATCHNORM ) continue;
      memset(pf + (nt->params - m->block) + l->p_off + l->np - l->oc, 1, (size_t)l->oc);
      memset(bf + (nt->bufs - (m->block + m->nparams)) + bn->b_off, 1, (size_t)bn->c);
    }
  }
}

/*
** D's backward: L = sum r logit + sum q f over D(x, z) with batch
** statistics and dropout 0.5, masks from our rng. Oracle: float64 autograd
** on the same masks (golden-egbad-grad.safetensors), each gradient tensor to
** 1e-4 of its largest magnitude; central differences on a sample as well.
*/
static void test_d_gradients(void **state) {
  (void)state;
  golden_file g;
  golden_open(&g, "tests/data/golden-egbad-grad.safetensors");
  anom_err e;
  anom_model *m = create_model("egbad", 32, 1, "{\"nz\": 8, \"nf\": 1, \"dropout\": 0.5}");
  set_net_tensors(m, NET_DX, NET_DJ, &g.f);
  char name[200], full[260];
  int64_t nx, nz;
  float *x = golden(&g.f, "x", &nx), *z = golden(&g.f, "z", &nz);
  float *r = golden(&g.f, "r", NULL), *q = golden(&g.f, "q", NULL);
  float *gold_loss = golden(&g.f, "loss", NULL);
  int n = (int)(nx / 1024);
  assert_int_equal(n, 4);
  float *grads = calloc(m->nparams, sizeof(float)), *junk = calloc(m->nparams, sizeof(float));
  float *dx = calloc((size_t)nx, sizeof(float)), *dz = calloc((size_t)nz, sizeof(float));
  rng masks;
  double l0, l1;
  rng_seed(&masks, MASK_SEED);
  assert_int_equal(egbad_d_gradients(m, n, x, z, r, q, &masks, &l0, grads, dx, dz, &e), ANOM_OK);
  /* the running statistics did not move: the same masks give the same loss */
  rng_seed(&masks, MASK_SEED);
  assert_int_equal(egbad_d_gradients(m, n, x, z, r, q, &masks, &l1, junk, NULL, NULL, &e),
                   ANOM_OK);
  assert_true(l0 == l1);
  double el = fabs(l0 - gold_loss[0]) / fmax(1, fabs(gold_loss[0]));
  assert_true(el <= 1e-5);

  /* a bias feeding a batch norm has gradient 0 (noise_flags): rounding
  ** noise, held to 1e-4 of its layer's weight gradient instead */
  uint8_t *pf = malloc(m->nparams), *bf = malloc(m->nbufs);
  noise_flags(m, pf, bf);
  double worst = 0, prev_mx = 0;
  int tensors = 0, noise = 0;
  for(int i = 0; i <= NET_DJ; i++){      /* i 0, 1: dx and dz; then D's nets */
    int count = i < NET_DX ? 1 : net_tensor_count(m->nets[i]);
    for(int t = 0; t < count; t++){
      int ndim, isbuf = 0;
      int64_t shape[4], numel;
      float *data, *ours;
      int flagged = 0;
      if( i < NET_DX ){
        snprintf(full, sizeof(full), i == 0 ? "grad.x" : "grad.z");
        ours = i == 0 ? dx : dz;
      }else{
        net_tensor(m->nets[i], t, name, sizeof(name), &ndim, shape, &data, &isbuf);
        if( isbuf ) continue;
        ours = grads + (data - m->block);
        flagged = pf[data - m->block];
        snprintf(full, sizeof(full), "grad.%s", name);
      }
      float *gold = golden(&g.f, full, &numel);
      double mx = 0, d = 0;
      for(int64_t k = 0; k < numel; k++){
        mx = fmax(mx, fabs(gold[k]));
        d = fmax(d, fabs((double)ours[k] - gold[k]));
      }
      if( flagged ){
        if( d > 1e-4 * prev_mx ) fprintf(stderr, "%s: max |d| %.3g\n", full, d);
        assert_true(mx <= 1e-12 * prev_mx && d <= 1e-4 * prev_mx);
        noise++;
      }else{
        if( d > 1e-4 * mx ) fprintf(stderr, "%s: max |d| %.3g, max |gold| %.3g\n", full, d, mx);
        assert_true(mx > 0 && d <= 1e-4 * mx);
        worst = fmax(worst, d / mx);
      }
      prev_mx = mx;
      tensors++;
      free(gold);
    }
  }
  assert_int_equal(tensors, 2 + 12);   /* dx, dz, D's 12 parameter tensors */
  assert_int_equal(noise, 1);          /* x_layer_2.conv.bias */
  /* E's and G's gradients are not touched */
  size_t d_off = (size_t)(m->nets[NET_DX]->params - m->block);
  for(size_t i = 0; i < d_off; i++) assert_true(grads[i] == 0);

  /* central differences (h 1e-3) on x, z and D's weights */
  rng pick;
  rng_seed(&pick, 5);
  const double h = 1e-3;
  int checked = 0, agree = 0;
  for(int s = 0; s < 100; s++){
    float *p, gv;
    if( s < 20 ){
      size_t i = (size_t)rng_below(&pick, (uint64_t)nx);
      p = x + i; gv = dx[i];
    }else if( s < 30 ){
      size_t i = (size_t)rng_below(&pick, (uint64_t)nz);
      p = z + i; gv = dz[i];
    }else{
      size_t i = d_off + (size_t)rng_below(&pick, m->nparams - d_off);
      p = m->block + i; gv = grads[i];
    }
    float keep = *p;
    double lp, lm;
    *p = keep + (float)h;
    rng_seed(&masks, MASK_SEED);
    egbad_d_gradients(m, n, x, z, r, q, &masks, &lp, junk, NULL, NULL, &e);
    *p = keep - (float)h;
    rng_seed(&masks, MASK_SEED);
    egbad_d_gradients(m, n, x, z, r, q, &masks, &lm, junk, NULL, NULL, &e);
    *p = keep;
    double fd = (lp - lm) / (2 * h);
    agree += fabs(fd - gv) <= 2e-3 + 2e-2 * fabs(fd);
    checked++;
  }
  printf("# D gradients: %d tensors against autograd, worst max|d| / max|gold| %.2e "
         "(tolerance 1e-4), loss %.2e; central differences agree on %d of %d\n",
         tensors, worst, el, agree, checked);
  assert_true(agree >= checked * 9 / 10);
  free(x); free(z); free(r); free(q); free(gold_loss);
  free(grads); free(junk); free(dx); free(dz); free(pf); free(bf);
  golden_close(&g);
  model_free(m);
}

typedef struct train_check {
  double worst;          /* largest error on an ordinary weight, in lr */
  double worst_tol;      /* ... and as a fraction of its tolerance */
  double worst_noise;    /* largest error on a noise bias, in lr */
} train_check;

/*
** m's tensors after step (1 or 2) against "step<step>.<name>", from the
** weights w0 before step 1. Ordinary weights as golden.h's check_tensors:
** |w - gold| <= a lr + 2^-22 |gold|, a = 1e-3 where every step of the
** reference so far moved the weight by >= 0.99 lr, 2e-2 elsewhere. (Adam
** moves a weight by about lr whatever the gradient's size when the
** gradients agree; a shorter step comes from a gradient that is small or
** changed sign, and then float32's relative error in it shows: the D loss's
** gradient on the logit's bias, mean(sigmoid(l_real)) - 1 +
** mean(sigmoid(l_fake)), cancels to 1e-5 at the start.) Noise biases
** (noise_flags): within 2.2 lr per step of the golden and 1.1 lr per step of
** w0. Running statistics: 1e-5 of the tensor's largest magnitude, plus
** 0.2 lr on the running means the noise biases shift (at most 4 updates of
** momentum 0.01 times 2.2 lr per step, 2 steps). With ema set, the tensors
** are instead the bias-corrected moving average (0.25 w1 + 0.5 w2) / 0.75
** of decay 0.5 (core/shadow.h).
*/
static void check_step(const anom_model *m, const st_file *g, int step, int ema,
                       const float *w0, const uint8_t *pf, const uint8_t *bf, double lr,
                       train_check *ck) {
  char name[200], full[260], key1[260];
  memset(ck, 0, sizeof(*ck));
  for(int i = 0; i < m->nnets; i++){
    for(int t = 0; t < net_tensor_count(m->nets[i]); t++){
      int ndim, isbuf;
      int64_t shape[4], numel;
      float *data;
      net_tensor(m->nets[i], t, name, sizeof(name), &ndim, shape, &data, &isbuf);
      if( ema && isbuf ) continue;
      snprintf(full, sizeof(full), "step%d.%s", ema ? 2 : step, name);
      float *gold = golden(g, full, &numel);
      snprintf(key1, sizeof(key1), "step1.%s", name);
      float *g1 = golden(g, key1, NULL);
      double maxabs = 0;
      for(int64_t k = 0; k < numel; k++) maxabs = fmax(maxabs, fabs(gold[k]));
      for(int64_t k = 0; k < numel; k++){
        double want = gold[k], d;
        int ok;
        if( isbuf ){
          size_t bi = (size_t)(data - (m->block + m->nparams)) + (size_t)k;
          d = fabs((double)data[k] - want);
          ok = d <= 1e-5 * fmax(maxabs, 1e-3) + (bf[bi] ? 0.2 * lr : 0);
        }else{
          size_t pi = (size_t)(data - m->block) + (size_t)k;
          if( ema ) want = (0.25 * g1[k] + 0.5 * gold[k]) / 0.75;   /* bias-corrected */
          d = fabs((double)data[k] - want);
          if( pf[pi] ){
            ok = d <= 2.2 * step * lr && fabs((double)data[k] - w0[pi]) <= 1.1 * step * lr;
            ck->worst_noise = fmax(ck->worst_noise, d / lr);
          }else{
            int full_steps = fabs((double)g1[k] - w0[pi]) >= 0.99 * lr
                             && (step == 1 || fabs((double)gold[k] - g1[k]) >= 0.99 * lr);
            double tol = (full_steps ? 1e-3 : 2e-2) * lr + 0x1p-22 * fabs(want);
            ok = d <= tol;
            ck->worst = fmax(ck->worst, d / lr);
            ck->worst_tol = fmax(ck->worst_tol, d / tol);
          }
        }
        if( !ok ){
          fprintf(stderr, "%s%s[%lld]: ours %.9g, golden %.9g (before %.9g)\n",
                  ema ? "ema." : "", ema ? name : full, (long long)k, data[k], want,
                  isbuf ? 0.0 : w0[(size_t)(data - m->block) + (size_t)k]);
          fail();
        }
      }
      free(gold);
      free(g1);
    }
  }
}

/* Two training steps from our init and rng against the reference, then the
** moving average train_finish puts into the model. */
static void test_golden_train_steps(void **state) {
  (void)state;
  golden_file g;
  golden_open(&g, "tests/data/golden-egbad-train-tiny.safetensors");
  anom_err e;
  anom_model *m = create_model("egbad", 32, 1,
                               "{\"nz\": 8, \"nf\": 1, \"dropout\": 0, \"ema\": 0.5}");
  const double lr = 1e-5;
  rng r;
  rng_seed(&r, TRAIN_SEED);
  void *st;
  assert_int_equal(m->ops->train_begin(m, 8, &r, &st, &e), ANOM_OK);
  /* our init is the reference's: the first and the last weights drawn */
  static const char *drawn[] = {"encoder.layer_1.conv.weight",
                                "discriminator.y_fc_logits.fc.weight"};
  int idx[2] = {0, 0};
  idx[1] = net_tensor_count(m->nets[NET_DJ]) - 2;
  for(int k = 0; k < 2; k++){
    char name[200], full[260];
    int ndim, isbuf;
    int64_t shape[4], numel;
    float *data;
    const net *nt = m->nets[k == 0 ? NET_E : NET_DJ];
    net_tensor(nt, idx[k], name, sizeof(name), &ndim, shape, &data, &isbuf);
    assert_string_equal(name, drawn[k]);
    snprintf(full, sizeof(full), "before.%s", name);
    float *gold = golden(&g.f, full, &numel);
    for(int64_t i = 0; i < numel; i++) assert_true(data[i] == gold[i]);
    free(gold);
  }
  float *w0 = malloc(m->nparams * sizeof(float));
  memcpy(w0, m->block, m->nparams * sizeof(float));
  uint8_t *pf = malloc(m->nparams), *bf = malloc(m->nbufs);
  noise_flags(m, pf, bf);
  float *x = golden(&g.f, "input", NULL);
  static const char *keys[] = {"d", "g", "e"};
  train_check ck;
  for(int step = 1; step <= 2; step++){
    double losses[TRAIN_MAX_LOSSES];
    assert_int_equal(m->ops->train_step(m, st, 8, x, losses, &e), ANOM_OK);
    double worst_loss = check_step_losses(&g.f, step, losses, keys, 3, 0);
    check_step(m, &g.f, step, 0, w0, pf, bf, lr, &ck);
    printf("# golden training step %d: losses within %.2e (tolerance 1e-5), worst weight "
           "error %.2e lr (%.2f of its tolerance), noise biases %.2f lr\n", step, worst_loss,
           ck.worst, ck.worst_tol, ck.worst_noise);
  }
  /* train_finish: the averages become the weights; buffers stay */
  float *bufs = malloc(m->nbufs * sizeof(float));
  memcpy(bufs, m->block + m->nparams, m->nbufs * sizeof(float));
  m->ops->train_finish(m, st);
  assert_memory_equal(bufs, m->block + m->nparams, m->nbufs * sizeof(float));
  check_step(m, &g.f, 2, 1, w0, pf, bf, lr, &ck);
  printf("# moving average after two steps: worst error %.2e lr (%.2f of its tolerance), "
         "noise biases %.2f lr\n", ck.worst, ck.worst_tol, ck.worst_noise);
  m->ops->train_end(m, st);
  free(x); free(w0); free(pf); free(bf); free(bufs);
  model_free(m);
  golden_close(&g);
}

/* n synthetic nc x side x side images: a bright blob on a dark ground, a
** little dimmer in each further channel (detector_test.h's blob_images has
** one channel and another placement). */
static float *make_images(int n, int nc, int side, uint64_t seed) {
  rng r;
  rng_seed(&r, seed);
  size_t img = (size_t)nc * side * side;
  float *x = malloc((size_t)n * img * sizeof(float));
  for(int i = 0; i < n; i++){
    double cx = side * (0.3 + 0.4 * rng_uniform(&r)), cy = side * (0.3 + 0.4 * rng_uniform(&r));
    double rad = side * (0.15 + 0.12 * rng_uniform(&r));
    for(int c = 0; c < nc; c++)
      for(int y = 0; y < side; y++)
        for(int xx = 0; xx < side; xx++){
          double d = ((xx - cx) * (xx - cx) + (y - cy) * (y - cy)) / (rad * rad);
          x[(size_t)i * img + ((size_t)c * side + y) * side + xx] =
            (float)((2 - 0.3 * c) * exp(-d) - 1);
        }
  }
  return x;
}

/* One epoch of model_train, then save -> load: the same scores bit for bit,
** and the same file again. */
static void test_train_save_load(void **state) {
  (void)state;
  int n = 40;
  float *x = make_images(n, 1, 32, 7);
  anom_model *m = create_model("egbad", 32, 1, "{\"nz\": 8, \"nf\": 2, \"lr\": 1e-4}");
  train_report rep;
  train_epoch(m, x, n, 8, 3, &rep);
  assert_int_equal(rep.images_train, 36);
  assert_int_equal(rep.batches, 4);
  assert_int_equal(rep.nlosses, 3);
  assert_string_equal(rep.loss_names[2], "e");
  for(int k = 0; k < 3; k++) assert_true(isfinite(rep.losses[k]) && rep.losses[k] > 0);
  assert_true(isfinite(m->threshold));
  assert_int_equal(m->cal.nscales, 3);
  anom_model *m2 = check_save_load(m, x, n, NULL);
  cJSON *j = m2->ops->hparams(m2);
  assert_true(cJSON_GetObjectItem(j, "lr")->valuedouble == 1e-4);
  cJSON_Delete(j);
  free(x);
  model_free(m); model_free(m2);
}

/* Two steps and train_finish (isize 64, nc 3, dropout 0.5): the same seed,
** the same weights and statistics to the bit; another seed not. */
static void test_determinism(void **state) {
  (void)state;
  int n = 4;
  float *x = make_images(n, 3, 64, 11);
  check_determinism("egbad", 64, 3, "{\"nz\": 4, \"nf\": 1, \"lr\": 1e-3}", 9, x, n, NULL);
  free(x);
}

/* Batches of one (batch norm needs two) and over max_batch are refused. */
static void test_train_step_errors(void **state) {
  (void)state;
  anom_model *m = create_model("egbad", 32, 1, "{\"nz\": 4, \"nf\": 1}");
  check_batch_errors(m);
  model_free(m);
}

#ifdef ANOM_TEST
/* Every allocation of model_load, model_create, train_begin and the gradient
** hook failing in turn: an error, no crash, no leak. */
static void test_oom(void **state) {
  (void)state;
  assert_true(oom_load(TINY) > 5);
  const char *hp = "{\"nz\": 4, \"nf\": 1}";
  assert_true(oom_create("egbad", 32, 1, hp) > 5);
  anom_model *m = create_model("egbad", 32, 1, hp);
  rng r;
  assert_true(oom_train_begin(m, &r, NULL) > 20);

  anom_err e;
  int ok = 0, fails = 0;
  float x[2 * 1024] = {0}, z[2 * 4] = {0}, r2[2] = {1, 1}, q[2 * 32] = {0};
  float *grads = calloc(m->nparams, sizeof(float));
  for(long k = 1; k < 200 && !ok; k++){
    double loss;
    rng masks;
    rng_seed(&masks, 2);
    anom_alloc_fail_after(k);
    int rc = egbad_d_gradients(m, 2, x, z, r2, q, &masks, &loss, grads, NULL, NULL, &e);
    anom_alloc_fail_after(0);
    if( rc == ANOM_OK ) ok = 1;
    else{ assert_int_equal(rc, ANOM_ENOMEM); fails++; }
  }
  assert_true(ok && fails > 10);
  free(grads);
  model_free(m);
}
#endif

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_golden_forward),
    cmocka_unit_test(test_golden_forward64),
    cmocka_unit_test(test_score_options),
    cmocka_unit_test(test_create),
    cmocka_unit_test(test_d_gradients),
    cmocka_unit_test(test_golden_train_steps),
    cmocka_unit_test(test_train_save_load),
    cmocka_unit_test(test_determinism),
    cmocka_unit_test(test_train_step_errors),
#ifdef ANOM_TEST
    cmocka_unit_test(test_oom),
#endif
  };
  return cmocka_run_group_tests_name("egbad", tests, NULL, NULL);
}
