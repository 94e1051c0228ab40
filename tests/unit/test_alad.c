/*
** test_alad.c - ALAD: inference and two training steps against the PyTorch
** reference, the initial weights, determinism, a model_train run saved and
** reloaded, scoring options, hyper-parameter errors and allocation failures.
**
** The golden files come from tests/bench/reference/make_golden_alad.py:
**   tiny-alad.safetensors, golden-alad-tiny.safetensors
**     isize 32, nc 1, nz 8, nf 4 with PyTorch's default init and non-trivial
**     batch norm; eval-mode outputs in float64: E(x), x_hat, D_xx's features
**     and logits, D_xz's and D_zz's logits, the four scores;
**   golden-alad-train-tiny.safetensors
**     nz 4, nf 2, dropout 0, sn 1, dzz 1 initialised from core/rng.c's
**     generator (seed 2718) as train_begin does, the live weights after two
**     steps on a batch of 8 (z from the same generator) and after train_finish.
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

#define TOL 1e-4   /* forward: |ours - golden| <= TOL * max(1, |golden|) */
#define TINY "tests/data/tiny-alad.safetensors"

static float *fbuf(size_t count) {
  float *p = calloc(count ? count : 1, sizeof(float));
  assert_non_null(p);
  return p;
}

/* max |a - b| / max(1e-3, |b|) over n doubles against floats */
static double max_rel_scalar(const double *a, const float *b, int n) {
  double worst = 0;
  for(int i = 0; i < n; i++)
    worst = fmax(worst, fabs(a[i] - b[i]) / fmax(1e-3, fabs((double)b[i])));
  return worst;
}

/* The same for logits (floats), which are small here (|l| ~ 0.01). */
static double max_rel_logit(const float *a, const float *b, int n) {
  double d[8];
  for(int i = 0; i < n; i++) d[i] = a[i];
  return max_rel_scalar(d, b, n);
}

static void test_golden_forward(void **state) {
  (void)state;
  anom_model *m = load_model_file(TINY);
  assert_string_equal(m->ops->name, "alad");
  assert_int_equal(m->nnets, 7);
  golden_file g;
  golden_open(&g, "tests/data/golden-alad-tiny.safetensors");
  anom_err e;
  int64_t nx, nz, nf;
  float *x = golden(&g.f, "input", &nx), *z = golden(&g.f, "z", &nz);
  float *xh = golden(&g.f, "x_hat", NULL);
  float *fr = golden(&g.f, "f_real", &nf), *ff = golden(&g.f, "f_fake", NULL);
  float *lr_ = golden(&g.f, "logit_real", NULL), *lf = golden(&g.f, "logit_fake", NULL);
  float *lxz = golden(&g.f, "logit_xz", NULL), *lzz = golden(&g.f, "logit_zz", NULL);
  const char *parts[4] = {"fm", "ch", "l1", "l2"};
  float *gs[4];
  for(int k = 0; k < 4; k++) gs[k] = golden(&g.f, parts[k], NULL);
  const int n = 4;
  size_t img = 32 * 32;

  /* the scores and x_hat through model_score */
  float *work = fbuf(model_work_floats(m, n)), *recon = fbuf((size_t)nx);
  score_result r[4];
  double es = 0;
  assert_int_equal(model_score(m, n, x, work, r, recon, NULL, &e), ANOM_OK);
  for(int k = 0; k < 4; k++){
    double got[4];
    for(int i = 0; i < n; i++){
      assert_int_equal(r[i].nparts, 4);
      assert_string_equal(r[i].part_name[k], parts[k]);
      got[i] = r[i].part[k];
    }
    es = fmax(es, max_rel_scalar(got, gs[k], n));
  }
  for(int i = 0; i < n; i++) assert_true(r[i].score == r[i].part[0]);   /* fm */
  double ex = max_rel_err(recon, xh, nx);

  /* each net on its own */
  const net *E = m->nets[0], *X = m->nets[2], *Z = m->nets[3], *Y = m->nets[4];
  const net *DXX = m->nets[5], *DZZ = m->nets[6];
  size_t big = 2 * n * img;
  float *buf = fbuf(big), *buf2 = fbuf(big), *cat = fbuf(big), *out = fbuf(big);
  size_t sc = 0;
  for(int i = 0; i < m->nnets; i++)
    if( net_scratch_floats(m->nets[i], n) > sc ) sc = net_scratch_floats(m->nets[i], n);
  float *scratch = fbuf(sc);
  net_forward(E, 0, E->nlayers, n, x, buf, scratch);
  double ez = max_rel_err(buf, z, nz);
  int fend = DXX->nlayers - 1;                  /* f_xx: all but layer_3.fc */
  assert_int_equal(DXX->layers[fend].kind, LAYER_LINEAR);
  concat_forward(n, 1, 1, (int)img, cat, x, x);
  net_forward(DXX, 0, fend, n, cat, buf, scratch);
  double efr = max_rel_err(buf, fr, nf);
  net_forward(DXX, 0, DXX->nlayers, n, cat, out, scratch);
  double elr = max_rel_logit(out, lr_, n);
  concat_forward(n, 1, 1, (int)img, cat, x, xh);
  net_forward(DXX, 0, fend, n, cat, buf, scratch);
  double eff = max_rel_err(buf, ff, nf);
  net_forward(DXX, 0, DXX->nlayers, n, cat, out, scratch);
  double elf = max_rel_logit(out, lf, n);
  /* D_xz(x, E(x)): image branch, latent branch, joint net on [x, z] */
  size_t cx = net_out_floats(X, -1), cz = net_out_floats(Z, -1);
  assert_int_equal(cx + cz, (size_t)Y->c);
  net_forward(X, 0, X->nlayers, n, x, buf, scratch);
  net_forward(Z, 0, Z->nlayers, n, z, buf2, scratch);
  concat_forward(n, (int)cx, (int)cz, 1, cat, buf, buf2);
  net_forward(Y, 0, Y->nlayers, n, cat, out, scratch);
  double exz = max_rel_logit(out, lxz, n);
  /* D_zz(E(x), E(x_hat)) */
  net_forward(E, 0, E->nlayers, n, xh, buf, scratch);
  concat_forward(n, 8, 8, 1, cat, z, buf);
  net_forward(DZZ, 0, DZZ->nlayers, n, cat, out, scratch);
  double ezz = max_rel_logit(out, lzz, n);
  printf("# max relative error: E(x) %.2e x_hat %.2e f_xx(x,x) %.2e f_xx(x,x_hat) %.2e "
         "logits xx %.2e %.2e xz %.2e zz %.2e; fm/ch/l1/l2 %.2e\n", ez, ex, efr, eff, elr,
         elf, exz, ezz, es);
  assert_true(ez <= TOL && ex <= TOL && efr <= TOL && eff <= TOL && elr <= TOL
              && elf <= TOL && exz <= TOL && ezz <= TOL && es <= TOL);

  /* the per-call option picks the score; the parts stay */
  for(int k = 0; k < 4; k++){
    char opt[32];
    snprintf(opt, sizeof(opt), "{\"score\": \"%s\"}", parts[k]);
    cJSON *o = cJSON_Parse(opt);
    score_result r2[4];
    assert_int_equal(model_score(m, n, x, work, r2, NULL, o, &e), ANOM_OK);
    for(int i = 0; i < n; i++){
      assert_true(r2[i].score == r[i].part[k]);
      for(int p = 0; p < 4; p++) assert_true(r2[i].part[p] == r[i].part[p]);
    }
    cJSON_Delete(o);
  }

  free(buf); free(buf2); free(cat); free(out); free(scratch); free(work); free(recon);
  free(x); free(z); free(xh); free(fr); free(ff); free(lr_); free(lf); free(lxz); free(lzz);
  for(int k = 0; k < 4; k++) free(gs[k]);
  golden_close(&g);
  model_free(m);
}

static void test_score_options(void **state) {
  (void)state;
  anom_model *m = load_model_file(TINY);
  float x[2 * 1024];
  for(int i = 0; i < 2 * 1024; i++) x[i] = (float)sin(0.37 * i);
  float *work = fbuf(model_work_floats(m, 2));
  score_result r[2];
  static const opt_case bad[] = {
    {"{\"score_w\": 3}", "alad: unknown scoring option 'score_w' (known: score)"},
    {"{\"score\": \"l3\"}", "alad: 'score' must be one of fm, ch, l1, l2"},
    {"{\"score\": 1}", "alad: 'score' must be one of fm, ch, l1, l2"},
  };
  check_score_errors(m, 2, x, work, bad, sizeof(bad) / sizeof(bad[0]), MSG_CONTAINS);
  /* l2 and l1 against their definitions on x_hat */
  float recon[2 * 1024];
  anom_err e;
  assert_int_equal(model_score(m, 2, x, work, r, recon, NULL, &e), ANOM_OK);
  for(int i = 0; i < 2; i++){
    double l1 = 0, l2 = 0;
    for(int k = 0; k < 1024; k++){
      double d = (double)x[i * 1024 + k] - recon[i * 1024 + k];
      l1 += fabs(d);
      l2 += d * d;
    }
    assert_true(fabs(r[i].part[2] - l1) <= 1e-9 * l1);
    assert_true(fabs(r[i].part[3] - sqrt(l2)) <= 1e-9 * sqrt(l2));
    assert_true(r[i].part[1] > 0 && r[i].part[0] > 0);
  }
  free(work);
  model_free(m);
}

static void test_create_errors(void **state) {
  (void)state;
  static const create_case cases[] = {
    {"{\"nz\": 8, \"ngf\": 4}", 32, 32, "alad: unknown hyper-parameter 'ngf' (known: nz, nf, lr, "
                                        "beta1, beta2, ema, dropout, sn, dzz, score)"},
    {"{\"nf\": 1}", 32, 32, "alad: 'nf' must be an integer from 2 to 1024"},
    {"{\"nz\": 0}", 32, 32, "alad: 'nz' must be an integer from 1 to 4096"},
    {"{\"sn\": 2}", 32, 32, "alad: 'sn' must be an integer from 0 to 1"},
    {"{\"dzz\": true}", 32, 32, "alad: 'dzz' must be an integer from 0 to 1"},
    {"{\"dropout\": 1}", 32, 32, "alad: 'dropout' must be a number from 0 to 0.9"},
    {"{\"ema\": 1}", 32, 32, "alad: 'ema' must be a number from 0 to"},
    {"{\"lr\": 0}", 32, 32, "alad: 'lr' must be a number from 1e-12 to 1"},
    {"{\"score\": \"FM\"}", 32, 32, "alad: 'score' must be one of fm, ch, l1, l2"},
    {"{}", 48, 48, "alad: the input must be square with a side of 32 or 64, found 48x48"},
    {"{}", 32, 64, "found 32x64"},
    {"{}", 128, 128, "found 128x128"},
  };
  check_create_errors("alad", cases, sizeof(cases) / sizeof(cases[0]), MSG_CONTAINS);

  /* the defaults, and the shapes at 64x64x3: L = 4, C = 128, 256, 512, 512 */
  anom_model *m = create_model("alad", 64, 3, NULL);
  assert_int_equal(m->nnets, 7);
  assert_int_equal(m->ops->batch, 32);
  cJSON *j = m->ops->hparams(m);
  assert_int_equal(cJSON_GetObjectItem(j, "nz")->valueint, 100);
  assert_int_equal(cJSON_GetObjectItem(j, "nf")->valueint, 128);
  assert_true(cJSON_GetObjectItem(j, "lr")->valuedouble == 2e-4);
  assert_true(cJSON_GetObjectItem(j, "beta1")->valuedouble == 0.5);
  assert_true(cJSON_GetObjectItem(j, "ema")->valuedouble == 0.999);
  assert_true(cJSON_GetObjectItem(j, "dropout")->valuedouble == 0.2);
  assert_int_equal(cJSON_GetObjectItem(j, "sn")->valueint, 1);
  assert_int_equal(cJSON_GetObjectItem(j, "dzz")->valueint, 1);
  assert_string_equal(cJSON_GetObjectItem(j, "score")->valuestring, "fm");
  cJSON_Delete(j);
  static const struct { const char *name; int ndim; int64_t shape[4]; } shapes[] = {
    {"encoder.layer_1.conv.weight", 4, {128, 3, 4, 4}},
    {"encoder.layer_4.conv.weight", 4, {512, 512, 4, 4}},
    {"encoder.layer_4.batch_normalization.running_var", 1, {512}},
    {"encoder.layer_5.conv.weight", 4, {100, 512, 4, 4}},
    {"encoder.layer_5.conv.bias", 1, {100}},
    {"generator.layer_1.tconv1.weight", 4, {100, 512, 4, 4}},
    {"generator.layer_2.tconv2.weight", 4, {512, 512, 4, 4}},
    {"generator.layer_3.tconv3.weight", 4, {512, 256, 4, 4}},
    {"generator.layer_4.tconv4.weight", 4, {256, 128, 4, 4}},
    {"generator.layer_5.tconv5.weight", 4, {128, 3, 4, 4}},
    {"generator.layer_5.tconv5.bias", 1, {3}},
    {"discriminator_xz.x_layer_1.conv1.weight", 4, {128, 3, 4, 4}},
    {"discriminator_xz.x_layer_4.conv4.weight", 4, {512, 512, 4, 4}},
    {"discriminator_xz.x_layer_4.batch_normalization.weight", 1, {512}},
    {"discriminator_xz.z_layer_1.conv.weight", 4, {512, 100, 1, 1}},
    {"discriminator_xz.z_layer_2.conv.weight", 4, {512, 512, 1, 1}},
    {"discriminator_xz.y_layer_1.conv.weight", 4, {1024, 512 * 16 + 512, 1, 1}},
    {"discriminator_xz.y_layer_2.conv.weight", 4, {1, 1024, 1, 1}},
    {"discriminator_xx.layer_1.conv1.weight", 4, {64, 6, 5, 5}},
    {"discriminator_xx.layer_2.conv2.weight", 4, {128, 64, 5, 5}},
    {"discriminator_xx.layer_3.fc.weight", 2, {1, 128 * 16 * 16}},
    {"discriminator_zz.y_layer_1.fc.weight", 2, {64, 200}},
    {"discriminator_zz.y_layer_2.fc.weight", 2, {32, 64}},
    {"discriminator_zz.y_layer_3.fc.weight", 2, {1, 32}},
    {"discriminator_zz.y_layer_3.fc.bias", 1, {1}},
  };
  for(size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++){
    int64_t shape[4];
    int ndim;
    if( !find_tensor(m, shapes[k].name, NULL, shape, &ndim) ) fprintf(stderr, "%s\n", shapes[k].name);
    assert_non_null(find_tensor(m, shapes[k].name, NULL, shape, &ndim));
    assert_int_equal(ndim, shapes[k].ndim);
    for(int d = 0; d < ndim; d++) assert_int_equal(shape[d], shapes[k].shape[d]);
  }
  assert_null(find_tensor(m, "encoder.layer_6.conv.weight", NULL, NULL, NULL));
  model_free(m);

  /* without D_zz: six nets, no discriminator_zz tensor; 32x32 has L = 3 */
  m = create_model("alad", 32, 1, "{\"nz\": 4, \"nf\": 2, \"dzz\": 0, \"score\": \"l2\"}");
  assert_int_equal(m->nnets, 6);
  assert_null(find_tensor(m, "discriminator_zz.y_layer_1.fc.weight", NULL, NULL, NULL));
  assert_non_null(find_tensor(m, "encoder.layer_4.conv.weight", NULL, NULL, NULL));
  assert_null(find_tensor(m, "encoder.layer_5.conv.weight", NULL, NULL, NULL));
  j = m->ops->hparams(m);
  assert_string_equal(cJSON_GetObjectItem(j, "score")->valuestring, "l2");
  assert_int_equal(cJSON_GetObjectItem(j, "dzz")->valueint, 0);
  cJSON_Delete(j);
  model_free(m);
}

/* The spectrally normalised weights of the training configuration. */
static const char *const sn_tensors[] = {
  "encoder.layer_1.conv.weight", "encoder.layer_2.conv.weight", "encoder.layer_3.conv.weight",
  "discriminator_xz.x_layer_1.conv1.weight", "discriminator_xz.x_layer_2.conv2.weight",
  "discriminator_xz.x_layer_3.conv3.weight", "discriminator_xz.z_layer_1.conv.weight",
  "discriminator_xz.z_layer_2.conv.weight", "discriminator_xz.y_layer_1.conv.weight",
  "discriminator_xx.layer_1.conv1.weight", "discriminator_xx.layer_2.conv2.weight",
  "discriminator_zz.y_layer_1.fc.weight", "discriminator_zz.y_layer_2.fc.weight",
};
#define NSN (sizeof(sn_tensors) / sizeof(sn_tensors[0]))

static int is_sn(const char *name) {
  for(size_t k = 0; k < NSN; k++)
    if( strcmp(name, sn_tensors[k]) == 0 ) return 1;
  return 0;
}

#define TRAIN_LR 2e-4
#define W_LR 1e-3      /* other weights: |d| <= W_LR lr + 2^-22 |golden| */
#define W_SN 2e-6      /* normalised weights: |d| <= W_SN max |golden tensor| */
#define W_BUF 1e-5     /* running statistics: |d| <= W_BUF max(max |golden|, 1e-3) */

typedef struct worst { double lr, sn, buf, frac; } worst;   /* frac: of the tolerance */

/*
** The model's tensors (the live weights) against golden prefix + name. The
** normalised weights are W / sigma(W) of raw weights of about 0.01, so an
** Adam step of lr moves them by about lr / sigma, many lr: they are held
** relative to their tensor's scale instead of to lr.
*/
static worst check_live(const anom_model *m, const st_file *g, const char *prefix) {
  char name[200], full[260];
  worst w = {0, 0, 0, 0};
  int nsn = 0;
  for(int i = 0; i < m->nnets; i++)
    for(int t = 0; t < net_tensor_count(m->nets[i]); t++){
      int ndim, isbuf;
      int64_t shape[4], numel;
      float *data;
      net_tensor(m->nets[i], t, name, sizeof(name), &ndim, shape, &data, &isbuf);
      snprintf(full, sizeof(full), "%s%s", prefix, name);
      float *gold = golden(g, full, &numel);
      double maxabs = 0;
      for(int64_t k = 0; k < numel; k++) maxabs = fmax(maxabs, fabs(gold[k]));
      int sn = is_sn(name);
      nsn += sn;
      for(int64_t k = 0; k < numel; k++){
        double d = fabs((double)data[k] - gold[k]), tol;
        if( isbuf ){
          tol = W_BUF * fmax(maxabs, 1e-3);
          w.buf = fmax(w.buf, d / fmax(maxabs, 1e-3));
        }else if( sn ){
          tol = W_SN * maxabs;
          w.sn = fmax(w.sn, d / maxabs);
        }else{
          tol = W_LR * TRAIN_LR + 0x1p-22 * fabs(gold[k]);
          w.lr = fmax(w.lr, d / TRAIN_LR);
        }
        w.frac = fmax(w.frac, d / tol);
        if( !(d <= tol) ){
          fprintf(stderr, "%s[%lld]: ours %.9g, golden %.9g\n", full, (long long)k,
                  data[k], gold[k]);
          fail();
        }
      }
      free(gold);
    }
  assert_int_equal(nsn, (int)NSN);
  return w;
}

static const char *train_hp = "{\"nz\": 4, \"nf\": 2, \"dropout\": 0}";

static void test_golden_train_steps(void **state) {
  (void)state;
  golden_file g;
  golden_open(&g, "tests/data/golden-alad-train-tiny.safetensors");
  anom_err e;
  anom_model *m = create_model("alad", 32, 1, train_hp);
  rng r;
  rng_seed(&r, 2718);
  void *st;
  assert_int_equal(m->ops->train_begin(m, 8, &r, &st, &e), ANOM_OK);
  float *x = golden(&g.f, "input", NULL);
  static const char *keys[] = {"d_xz", "d_xx", "d_zz", "g", "e"};
  for(int k = 0; k < 5; k++) assert_string_equal(m->ops->loss_names[k], keys[k]);
  for(int step = 1; step <= 2; step++){
    double losses[TRAIN_MAX_LOSSES];
    assert_int_equal(m->ops->train_step(m, st, 8, x, losses, &e), ANOM_OK);
    double wl = check_step_losses(&g.f, step, losses, keys, 5, 1e-3);
    char key[64];
    snprintf(key, sizeof(key), "step%d.", step);
    worst w = check_live(m, &g.f, key);
    printf("# golden training step %d: losses within %.2e; weights %.2e lr, normalised "
           "weights %.2e, running statistics %.2e (%.0f%% of the tolerance)\n", step, wl,
           w.lr, w.sn, w.buf, 100 * w.frac);
  }
  assert_null(m->ops->loss_names[5]);
  m->ops->train_finish(m, st);
  worst w = check_live(m, &g.f, "finish.");
  printf("# golden train_finish: weights %.2e lr, normalised weights %.2e, running "
         "statistics %.2e (%.0f%% of the tolerance)\n", w.lr, w.sn, w.buf, 100 * w.frac);
  /* the biases that feed a batch norm stay exactly 0 */
  assert_true(find_tensor(m, "encoder.layer_2.conv.bias", NULL, NULL, NULL)[1] == 0.0f);
  assert_true(find_tensor(m, "generator.layer_1.tconv1.bias", NULL, NULL, NULL)[3] == 0.0f);
  m->ops->train_end(m, st);
  free(x);
  model_free(m);
  golden_close(&g);
}

/* train_begin's weights: N(0, 0.01) from the rng in net order, biases 0, BN
** gamma 1; with sn the normalised layers hold those draws over one positive
** sigma each, without it the draws themselves. */
static void test_init(void **state) {
  (void)state;
  for(int sn = 0; sn <= 1; sn++){
    char hps[128];
    snprintf(hps, sizeof(hps), "{\"nz\": 4, \"nf\": 2, \"sn\": %d}", sn);
    anom_model *m = create_model("alad", 32, 1, hps);
    anom_err e;
    rng r, q;
    rng_seed(&r, 5);
    rng_seed(&q, 5);
    void *st;
    assert_int_equal(m->ops->train_begin(m, 4, &r, &st, &e), ANOM_OK);
    int normalised = 0;
    for(int i = 0; i < m->nnets; i++){
      const net *nt = m->nets[i];
      for(int l = 0; l < nt->nlayers; l++){
        const layer *ly = &nt->layers[l];
        const float *p = nt->params + ly->p_off;
        if( ly->kind == LAYER_BATCHNORM ){
          for(int c = 0; c < ly->c; c++){
            assert_true(p[c] == 1.0f && p[ly->c + c] == 0.0f);
            assert_true(nt->bufs[ly->b_off + c] == 0.0f && nt->bufs[ly->b_off + ly->c + c] == 1.0f);
          }
          continue;
        }
        if( ly->np == 0 ) continue;
        size_t nw = ly->np - (size_t)ly->oc;
        double ratio = 0;
        int scaled = 0;
        for(size_t k = 0; k < nw; k++){
          float draw = (float)(0.01f * rng_normal(&q));
          if( k == 0 ) ratio = (double)draw / p[0];
          if( p[k] != draw ) scaled = 1;
          assert_true(fabs((double)draw / p[k] - ratio) <= 1e-6 * ratio);
        }
        assert_true(ratio > 0);
        for(size_t k = nw; k < ly->np; k++) assert_true(p[k] == 0.0f);
        normalised += scaled;
      }
    }
    assert_int_equal(normalised, sn ? 13 : 0);
    m->ops->train_end(m, st);
    model_free(m);
  }
}

/* Two steps and train_finish from a seed, twice: the same saved file and
** losses (detector_test.h). Dropout (the default 0.2) draws its masks from
** the rng. */
static void test_determinism(void **state) {
  (void)state;
  float x[6 * 1024];
  for(int i = 0; i < 6 * 1024; i++) x[i] = (float)(0.8 * sin(0.013 * i * (1 + i % 7)));
  double l[TRAIN_MAX_LOSSES];
  check_determinism("alad", 32, 1, "{\"nz\": 4, \"nf\": 2}", 77, x, 6, l);
  assert_true(l[2] > 0);
  check_determinism("alad", 32, 1, "{\"nz\": 4, \"nf\": 2, \"sn\": 0, \"dzz\": 0}", 77, x, 6,
                    l);
  assert_true(l[2] == 0);          /* no D_zz: its loss reads 0 */
}

/* One epoch of model_train, then save -> load: the same scores bit for bit,
** and the same file again. */
static void test_train_save_load(void **state) {
  (void)state;
  int n = 40;
  float *x = blob_images(n, 32, 7);
  anom_model *m = create_model("alad", 32, 1, "{\"nz\": 4, \"nf\": 2, \"score\": \"l1\"}");
  train_report rep;
  train_epoch(m, x, n, 8, 3, &rep);
  assert_int_equal(rep.batches, 4);
  assert_int_equal(rep.nlosses, 5);
  assert_string_equal(rep.loss_names[4], "e");
  for(int k = 0; k < 5; k++) assert_true(isfinite(rep.losses[k]) && rep.losses[k] > 0);
  assert_true(isfinite(m->threshold));
  score_result r1[40];
  anom_model *m2 = check_save_load(m, x, n, r1);
  cJSON *j = m2->ops->hparams(m2);
  assert_string_equal(cJSON_GetObjectItem(j, "score")->valuestring, "l1");
  cJSON_Delete(j);
  for(int i = 0; i < n; i++){
    assert_int_equal(r1[i].nparts, 4);
    assert_true(r1[i].score == r1[i].part[2]);
  }
  free(x);
  model_free(m); model_free(m2);
}

/* A batch of one is refused (batch norm needs two), as is one over the size
** train_begin allocated for. */
static void test_train_step_errors(void **state) {
  (void)state;
  anom_model *m = create_model("alad", 32, 1, "{\"nz\": 4, \"nf\": 2}");
  check_batch_errors(m);
  model_free(m);
}

#ifdef ANOM_TEST
/* Every allocation of train_begin, then of model_create, failing in turn:
** an error, no leak. */
static void test_oom(void **state) {
  (void)state;
  const char *hp = "{\"nz\": 4, \"nf\": 2}";
  anom_model *m = create_model("alad", 32, 1, hp);
  rng r;
  assert_true(oom_train_begin(m, &r, NULL) > 30);
  model_free(m);
  assert_true(oom_create("alad", 32, 1, hp) > 7);
}
#endif

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_golden_forward),
    cmocka_unit_test(test_score_options),
    cmocka_unit_test(test_create_errors),
    cmocka_unit_test(test_golden_train_steps),
    cmocka_unit_test(test_init),
    cmocka_unit_test(test_determinism),
    cmocka_unit_test(test_train_save_load),
    cmocka_unit_test(test_train_step_errors),
#ifdef ANOM_TEST
    cmocka_unit_test(test_oom),
#endif
  };
  return cmocka_run_group_tests_name("alad", tests, NULL, NULL);
}
