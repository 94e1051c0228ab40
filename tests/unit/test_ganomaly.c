/*
** test_ganomaly.c - GANomaly inference against the PyTorch reference, and
** the model file: load, save, validation.
**
** The golden files under tests/data/ come from
** tests/bench/reference/make_golden.py: the authors' networks with seeded
** weights and non-trivial batch-norm statistics, run in float64; the
** anomalib ones (first_pad 4) from make_golden_anomalib.py, with anomalib's
** networks (anomalib_ganomaly_ref.py), forward and two training steps.
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

#define TOL 1e-4   /* |ours - golden| <= TOL * max(1, |golden|) */

static void check_golden(const char *model_path, const char *golden_path) {
  anom_model *m = load_model_file(model_path);
  golden_file g;
  golden_open(&g, golden_path);
  anom_err e;

  int64_t nx, nz, nz2, nxh, ns, nl1, nf, np;
  float *x = golden(&g.f, "input", &nx), *z = golden(&g.f, "z", &nz);
  float *z2 = golden(&g.f, "z_prime", &nz2), *xh = golden(&g.f, "x_hat", &nxh);
  float *score = golden(&g.f, "score", &ns), *l1 = golden(&g.f, "recon_l1", &nl1);
  float *df = golden(&g.f, "d_features", &nf), *dp = golden(&g.f, "d_prob", &np);
  int n = (int)ns;
  size_t img = (size_t)m->channels * m->height * m->width;
  assert_int_equal(nx, (int64_t)n * (int64_t)img);

  float *work = work_for(m, n);
  float *recon = malloc((size_t)nx * sizeof(float));
  score_result r[8];
  assert_int_equal(model_score(m, n, x, work, r, recon, NULL, &e), ANOM_OK);
  /* the score and its parts */
  for(int i = 0; i < n; i++){
    assert_true(fabs(r[i].score - score[i]) <= TOL * fmax(1, fabs(score[i])));
    assert_string_equal(r[i].part_name[0], "latent");
    assert_string_equal(r[i].part_name[1], "recon_l1");
    assert_true(fabs(r[i].part[1] - l1[i]) <= TOL * fmax(1, fabs(l1[i])));
  }
  double ex = max_rel_err(recon, xh, nxh);
  assert_true(ex <= TOL);

  /* z and z' through the networks one at a time (the model's first and
  ** third nets are encoder1 and encoder2) */
  const net *enc1 = m->nets[0], *enc2 = m->nets[2], *netd = m->nets[3];
  float *buf = malloc((size_t)(nz > nf ? nz : nf) * sizeof(float) + (size_t)nx * sizeof(float));
  float *scratch = malloc(net_scratch_floats(netd, n) * sizeof(float) * 2
                          + net_scratch_floats(enc1, n) * sizeof(float));
  net_forward(enc1, 0, enc1->nlayers, n, x, buf, scratch);
  double ez = max_rel_err(buf, z, nz);
  net_forward(enc2, 0, enc2->nlayers, n, xh, buf, scratch);
  double ez2 = max_rel_err(buf, z2, nz2);
  net_forward(netd, 0, netd->nlayers - 2, n, x, buf, scratch);
  double ef = max_rel_err(buf, df, nf);
  net_forward(netd, 0, netd->nlayers, n, x, buf, scratch);
  double ep = max_rel_err(buf, dp, np);
  printf("# %s: max relative error z %.2e z' %.2e x_hat %.2e d_features %.2e d_prob %.2e\n",
         model_path, ez, ez2, ex, ef, ep);
  assert_true(ez <= TOL && ez2 <= TOL && ef <= TOL && ep <= TOL);

  free(buf); free(scratch); free(work); free(recon);
  free(x); free(z); free(z2); free(xh); free(score); free(l1); free(df); free(dp);
  golden_close(&g);
  model_free(m);
}

static void test_golden_tiny(void **state) {
  (void)state;
  check_golden("tests/data/tiny-ganomaly.safetensors", "tests/data/golden-tiny.safetensors");
}

static void test_golden_tiny64rgb(void **state) {
  (void)state;
  check_golden("tests/data/tiny64rgb-ganomaly.safetensors",
               "tests/data/golden-tiny64rgb.safetensors");
}

/* anomalib's GANomaly: the first conv of E1, E2 and D pads by 4, so the
** maps run 32 -> 19 -> 9 -> 4 -> 1 and the same weights give other scores. */
static void test_golden_anomalib(void **state) {
  (void)state;
  anom_model *m = load_model_file("tests/data/tiny-anomalib-ganomaly.safetensors");
  cJSON *hp = m->ops->hparams(m);
  assert_int_equal(cJSON_GetObjectItem(hp, "first_pad")->valueint, 4);
  cJSON_Delete(hp);
  for(int i = 0; i < 4; i++){
    if( i == 1 ) continue;                    /* the decoder */
    const net *nt = m->nets[i];
    int c, h, w;
    assert_int_equal(nt->layers[0].conv.pad, 4);
    net_out_shape(nt, 0, &c, &h, &w);
    assert_int_equal(h, 19);
    assert_int_equal(w, 19);
  }
  model_free(m);
  check_golden("tests/data/tiny-anomalib-ganomaly.safetensors",
               "tests/data/golden-anomalib-tiny.safetensors");
}

/* Two training steps of the first_pad 4 network against the reference's
** (the authors' optimize_params on anomalib's networks), then a save and
** load that keeps first_pad. */
static void test_train_anomalib(void **state) {
  (void)state;
  anom_model *m = load_model_file("tests/data/tiny-anomalib-ganomaly.safetensors");
  golden_file g;
  golden_open(&g, "tests/data/golden-anomalib-tiny.safetensors");
  anom_err e;
  rng r;
  rng_seed(&r, 1);
  void *st;
  assert_int_equal(m->ops->train_begin(m, 8, &r, &st, &e), ANOM_OK);
  set_tensors(m, &g.f, "before.");           /* train_begin re-initialised */
  int64_t nx;
  float *x = golden(&g.f, "train.input", &nx);
  assert_int_equal(nx, 8 * 3 * 32 * 32);
  static const char *loss_keys[] = {"err_g", "err_g_adv", "err_g_con", "err_g_enc",
                                    "err_d", "err_d_real", "err_d_fake"};
  check_train_steps(m, st, &g.f, x, 8, loss_keys, 7, 2e-4);
  m->ops->train_end(m, st);
  anom_model *m2 = check_save_load(m, x, 8, NULL);
  cJSON *hp = m2->ops->hparams(m2);
  assert_int_equal(cJSON_GetObjectItem(hp, "first_pad")->valueint, 4);
  cJSON_Delete(hp);
  model_free(m2);
  free(x);
  golden_close(&g);
  model_free(m);
}

/* first_pad: 1 or 4 only; 4 needs a side of 32 or more; 1 is the default
** and is not written, so the authors' models keep their hparams. */
static void test_first_pad(void **state) {
  (void)state;
  static const create_case bad[] = {
    {"{\"first_pad\": 2}", 32, 32,
     "ganomaly: 'first_pad' must be 1 (the authors') or 4 (anomalib's), found 2"},
    {"{\"first_pad\": 0}", 32, 32,
     "ganomaly: 'first_pad' must be 1 (the authors') or 4 (anomalib's), found 0"},
    {"{\"first_pad\": 4.5}", 32, 32,
     "ganomaly: 'first_pad' must be 1 (the authors') or 4 (anomalib's), found 4.5"},
    {"{\"first_pad\": \"4\"}", 32, 32,
     "ganomaly: 'first_pad' must be 1 (the authors') or 4 (anomalib's), found a string"},
    {"{\"first_pad\": 4}", 16, 16,
     "ganomaly: 'first_pad' 4 needs a side of 32 or more (at 16 the encoder would end in "
     "2x2, not 1x1)"},
  };
  check_create_errors("ganomaly", bad, sizeof(bad) / sizeof(bad[0]), MSG_EXACT);
  const char *hps[] = {NULL, "{\"nz\": 8, \"ngf\": 4, \"first_pad\": 1}"};
  for(int k = 0; k < 2; k++){
    anom_model *m = create_model("ganomaly", 16, 1, hps[k]);
    cJSON *hp = m->ops->hparams(m);
    assert_null(cJSON_GetObjectItem(hp, "first_pad"));
    cJSON_Delete(hp);
    assert_int_equal(m->nets[0]->layers[0].conv.pad, 1);
    model_free(m);
  }
  /* 4 at 64: 64 -> 35 -> 17 -> 8 -> 4 -> 1, the same weights as with 1 */
  anom_model *a = create_model("ganomaly", 64, 3, "{\"nz\": 8, \"ngf\": 4, \"first_pad\": 4}");
  anom_model *b = create_model("ganomaly", 64, 3, "{\"nz\": 8, \"ngf\": 4}");
  assert_int_equal(model_param_count(a), model_param_count(b));
  int c, h, w;
  net_out_shape(a->nets[3], 0, &c, &h, &w);
  assert_int_equal(h, 35);
  net_out_shape(a->nets[3], a->nets[3]->nlayers - 3, &c, &h, &w);
  assert_true(c == 32 && h == 4 && w == 4);       /* D's features */
  net_out_shape(a->nets[2], -1, &c, &h, &w);
  assert_true(c == 8 && h == 1 && w == 1);
  model_free(a);
  model_free(b);
}

/* save(load(f)) keeps every tensor bit for bit and the metadata. */
static void test_save_roundtrip(void **state) {
  (void)state;
  anom_model *m = load_model_file("tests/data/tiny-ganomaly.safetensors"), *m2;
  anom_err e;
  m->threshold = 0.25;
  m->cal.n = 10;
  m->cal.nq = 2;
  m->cal.qp[0] = 0.5; m->cal.qv[0] = 0.1;
  m->cal.qp[1] = 0.99; m->cal.qv[1] = 0.25;
  unsigned char *out;
  size_t nout;
  assert_int_equal(model_save(m, &out, &nout, &e), ANOM_OK);
  int rc = model_load(&m2, out, nout, NULL, &e);
  if( rc ) fprintf(stderr, "%s\n", e.msg);
  assert_int_equal(rc, ANOM_OK);
  assert_int_equal(m2->nparams, m->nparams);
  assert_int_equal(m2->nbufs, m->nbufs);
  assert_memory_equal(m2->block, m->block, (m->nparams + m->nbufs) * sizeof(float));
  assert_true(m2->threshold == 0.25);
  assert_int_equal(m2->cal.n, 10);
  assert_int_equal(m2->cal.nq, 2);
  assert_true(m2->cal.qv[1] == 0.25);
  assert_string_equal(m2->ops->name, "ganomaly");
  assert_string_equal(m2->created, "2026-01-01T00:00:00Z");
  model_free(m2);
  anom_free(out);
  model_free(m);
}

/* Rewrite the model with one change to the metadata or tensors. */
typedef struct edit {
  const char *meta_key;      /* replace this key's value ... */
  const char *meta_value;    /* ... with this (NULL: drop the key) */
  const char *drop_tensor;   /* leave this tensor out */
  const char *extra_tensor;  /* add a tensor of this name */
  int poison;                /* write a NaN into the first weight */
  int keep_checksum;         /* do not recompute the checksum */
  const char *expect;        /* substring of the error */
} edit;

static unsigned char *rewrite(const st_file *f, const edit *ed, size_t *nout) {
  st_out_tensor ts[200];
  float *data[200];
  int nt = 0;
  uint32_t crc = 0;
  for(int i = 0; i < f->ntensors; i++){
    const st_tensor *t = &f->tensors[i];
    if( ed->drop_tensor && strcmp(t->name, ed->drop_tensor) == 0 ) continue;
    data[nt] = malloc((size_t)t->numel * sizeof(float) + 4);
    st_read_f32(t, NULL, 0, data[nt], NULL);
    if( ed->poison && nt == 0 ) data[nt][0] = NAN;
    ts[nt].name = t->name;
    ts[nt].ndim = t->ndim;
    memcpy(ts[nt].shape, t->shape, sizeof(t->shape));
    ts[nt].data = data[nt];
    crc = st_crc32(crc, data[nt], (size_t)t->numel * sizeof(float));
    nt++;
  }
  if( ed->extra_tensor ){
    data[nt] = calloc(4, sizeof(float));
    ts[nt].name = ed->extra_tensor;
    ts[nt].ndim = 1;
    ts[nt].shape[0] = 4;
    ts[nt].data = data[nt];
    crc = st_crc32(crc, data[nt], 4 * sizeof(float));
    nt++;
  }
  st_meta_kv meta[32];
  char crcs[32];
  snprintf(crcs, sizeof(crcs), "crc32:%08x", (unsigned)crc);
  int nmeta = 0;
  for(int i = 0; i < f->nmeta; i++){
    const char *k = f->meta[i].key, *v = f->meta[i].value;
    if( strcmp(k, "checksum") == 0 && !ed->keep_checksum ) v = crcs;
    if( ed->meta_key && strcmp(k, ed->meta_key) == 0 ){
      if( !ed->meta_value ) continue;
      v = ed->meta_value;
    }
    meta[nmeta].key = (char *)k;
    meta[nmeta].value = (char *)v;
    nmeta++;
  }
  unsigned char *out;
  anom_err e;
  assert_int_equal(st_write(&out, nout, ts, nt, meta, nmeta, &e), ANOM_OK);
  for(int i = 0; i < nt; i++) free(data[i]);
  return out;
}

static void test_model_errors(void **state) {
  (void)state;
  static const edit edits[] = {
    {"format", "other", 0, 0, 0, 0, "not a sqlite-anomaly model: metadata 'format' is 'other'"},
    {"format", NULL, 0, 0, 0, 0, "metadata 'format' is missing"},
    {"format_version", "2", 0, 0, 0, 0, "model format version 2 is newer than this build reads (1)"},
    {"format_version", "x", 0, 0, 0, 0, "metadata 'format_version' is 'x'"},
    {"method", "ganomaly2", 0, 0, 0, 0, "unknown method 'ganomaly2' (known: alad, anogan, caae, defectgan, egbad, ganomaly, skipganomaly)"},
    {"width", "0", 0, 0, 0, 0, "metadata 'width' is '0'"},
    {"height", "48", 0, 0, 0, 0, "ganomaly: the input must be square"},
    {"channels", "2", 0, 0, 0, 0, "metadata 'channels' is '2', expected 1 or 3"},
    {"channels", "3", 0, 0, 0, 0, "tensor 'netg.encoder1.main.initial-conv-3-8.weight' is missing"},
    {"fit", "stretch", 0, 0, 0, 0, "metadata 'fit' is 'stretch'"},
    {"hparams", "[1]", 0, 0, 0, 0, "metadata 'hparams' is not a JSON object"},
    {"hparams", "{\"nz\":16,\"ngf\":8,\"bogus\":1}", 0, 0, 0, 0, "unknown hyper-parameter 'bogus'"},
    {"hparams", "{\"nz\":-3}", 0, 0, 0, 0, "'nz' must be an integer from 1 to 4096"},
    {"hparams", "{\"nz\":17,\"ngf\":8}", 0, 0, 0, 0, "expected shape [17, 32, 4, 4], found [16, 32, 4, 4]"},
    {"calibration", "{\"n\":1,\"quantiles\":[[0.9,1],[0.5,2]]}", 0, 0, 0, 0, "metadata 'calibration': quantile 1"},
    {"calibration", NULL, 0, 0, 0, 0, "metadata 'calibration' is missing"},
    {"threshold", "abc", 0, 0, 0, 0, "metadata 'threshold' is 'abc', expected a number or null"},
    {"checksum", "crc32:00000000", 0, 0, 0, 1, "checksum mismatch: the file says crc32:00000000"},
    {"checksum", "md5:1", 0, 0, 0, 1, "metadata 'checksum' is 'md5:1'"},
    {0, 0, "netg.decoder.main.final-8-1-convt.weight", 0, 0, 0,
     "tensor 'netg.decoder.main.final-8-1-convt.weight' is missing"},
    {0, 0, 0, "netg.extra.weight", 0, 0, "unexpected tensor 'netg.extra.weight'"},
    {0, 0, 0, 0, 1, 0, "holds a non-finite value at index 0"},
  };
  size_t n;
  unsigned char *b = slurp("tests/data/tiny-ganomaly.safetensors", &n);
  st_file f;
  anom_err e;
  assert_int_equal(st_parse(&f, b, n, NULL, &e), ANOM_OK);
  for(size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++){
    size_t nout;
    unsigned char *out = rewrite(&f, &edits[i], &nout);
    anom_model *m = (anom_model *)1;
    anom_err_clear(&e);
    int rc = model_load(&m, out, nout, NULL, &e);
    if( rc == ANOM_OK || !strstr(e.msg, edits[i].expect) )
      fprintf(stderr, "edit %zu: rc %d, message '%s', expected '%s'\n", i, rc, e.msg,
              edits[i].expect);
    assert_int_not_equal(rc, ANOM_OK);
    assert_null(m);
    assert_non_null(strstr(e.msg, edits[i].expect));
    anom_free(out);
  }
  /* byte-level damage: truncation and a limit */
  anom_model *m;
  assert_int_not_equal(model_load(&m, b, n / 2, NULL, &e), ANOM_OK);
  model_limits lim;
  model_limits_default(&lim);
  lim.max_bytes = 1000;
  assert_int_equal(model_load(&m, b, n, &lim, &e), ANOM_ETOOBIG);
  assert_non_null(strstr(e.msg, "over the limit of 1000"));
  model_limits_default(&lim);
  lim.max_params = 1000;
  assert_int_equal(model_load(&m, b, n, &lim, &e), ANOM_ETOOBIG);
  assert_non_null(strstr(e.msg, "parameters, over the limit of 1000"));
  st_free(&f);
  free(b);
}

/* Every allocation failing in turn gives ENOMEM, never a crash or a leak. */
static void test_model_load_oom(void **state) {
  (void)state;
  oom_load("tests/data/tiny-ganomaly.safetensors");
}

static void test_create_errors(void **state) {
  (void)state;
  anom_model *m;
  anom_err e;
  assert_int_equal(model_create(&m, "nope", 32, 32, 1, NULL, NULL, &e), ANOM_EINVAL);
  assert_non_null(strstr(e.msg, "unknown method 'nope' (known: alad, anogan, caae, defectgan, egbad, ganomaly, skipganomaly)"));
  assert_int_equal(model_create(&m, "ganomaly", 40, 40, 1, NULL, NULL, &e), ANOM_EINVAL);
  assert_non_null(strstr(e.msg, "(a power of two), found 40x40"));
  assert_int_equal(model_create(&m, "ganomaly", 48, 48, 1, NULL, NULL, &e), ANOM_EINVAL);
  assert_non_null(strstr(e.msg, "(a power of two), found 48x48"));
  assert_int_equal(model_create(&m, "ganomaly", 32, 32, 4, NULL, NULL, &e), ANOM_EINVAL);
  assert_non_null(strstr(e.msg, "channels must be 1 or 3, found 4"));
  /* the full-size default network: 32x32, nz 100, ngf 64 */
  assert_int_equal(model_create(&m, "ganomaly", 32, 32, 1, NULL, NULL, &e), ANOM_OK);
  cJSON *hp = m->ops->hparams(m);
  assert_int_equal(cJSON_GetObjectItem(hp, "nz")->valueint, 100);
  assert_int_equal(cJSON_GetObjectItem(hp, "ngf")->valueint, 64);
  cJSON_Delete(hp);
  /* encoder (1->64->128->256->100) twice, decoder, and D (nz 1):
  **   enc: 1*64*16 + 64*128*16 + 128*256*16 + 256*100*16 + BN 2*(128+256)
  **   dec: 100*256*16 + 256*128*16 + 128*64*16 + 64*1*16 + BN 2*(256+128+64)
  **   D:   enc with nz 1 */
  int64_t enc = 1024 + 131072 + 524288 + 409600 + 768;
  int64_t dec = 409600 + 524288 + 131072 + 1024 + 896;
  int64_t d = 1024 + 131072 + 524288 + 4096 + 768;
  assert_int_equal(model_param_count(m), 2 * enc + dec + d);
  model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_golden_tiny),
    cmocka_unit_test(test_golden_tiny64rgb),
    cmocka_unit_test(test_golden_anomalib),
    cmocka_unit_test(test_train_anomalib),
    cmocka_unit_test(test_first_pad),
    cmocka_unit_test(test_save_roundtrip),
    cmocka_unit_test(test_model_errors),
    cmocka_unit_test(test_model_load_oom),
    cmocka_unit_test(test_create_errors),
  };
  return cmocka_run_group_tests_name("ganomaly", tests, NULL, NULL);
}
