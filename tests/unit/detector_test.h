/*
** detector_test.h - what the detector tests (test_ganomaly.c, test_anogan.c,
** test_skipganomaly.c, test_egbad.c, test_alad.c, test_defectgan.c,
** test_caae.c) share: models and golden files opened with the checks
** folded in, synthetic images, tables of hyper-parameter and scoring-option
** errors checked against their messages, a training batch out of range,
** the save/load round trip, determinism of training from a seed, and every
** allocation failing in turn (those with -DANOM_TEST only, as the unit
** tests are built). Test code only: it asserts.
**
** Include order: <cmocka.h> (after the headers it needs), <cjson/cJSON.h>,
** core/model.h, core/rng.h, core/safetensors.h, core/train.h, golden.h
** (slurp, golden, TEST_UNUSED), then this file:
**
**   anom_model *m = create_model("alad", 32, 1, "{\"nz\": 4, \"nf\": 2}");
**   check_batch_errors(m);
**   float *x = blob_images(40, 32, 7);
**   train_report rep;
**   train_epoch(m, x, 40, 8, 3, &rep);
**   anom_model *m2 = check_save_load(m, x, 40, NULL);
*/
#ifndef ANOM_TEST_DETECTOR_H
#define ANOM_TEST_DETECTOR_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- models and golden files --------------------------------------------- */

/* The model in the file at path. */
static TEST_UNUSED anom_model *load_model_file(const char *path) {
  size_t n;
  unsigned char *b = slurp(path, &n);
  anom_model *m;
  anom_err e;
  anom_err_clear(&e);
  int rc = model_load(&m, b, n, NULL, &e);
  if( rc ) fprintf(stderr, "%s: %s\n", path, e.msg);
  assert_int_equal(rc, ANOM_OK);
  free(b);
  return m;
}

/* A new model of method, side x side x nc, with the hyper-parameters in
** hp_json (NULL: the defaults). */
static TEST_UNUSED anom_model *create_model(const char *method, int side, int nc,
                                            const char *hp_json) {
  cJSON *hp = hp_json ? cJSON_Parse(hp_json) : NULL;
  if( hp_json ) assert_non_null(hp);
  anom_model *m;
  anom_err e;
  anom_err_clear(&e);
  int rc = model_create(&m, method, side, side, nc, hp, NULL, &e);
  if( rc ) fprintf(stderr, "%s\n", e.msg);
  assert_int_equal(rc, ANOM_OK);
  cJSON_Delete(hp);
  return m;
}

/* model_score's work for n images (malloc'ed). */
static TEST_UNUSED float *work_for(const anom_model *m, int n) {
  float *w = malloc(model_work_floats(m, n) * sizeof(float));
  assert_non_null(w);
  return w;
}

/* A golden file, parsed: read its tensors with golden(&g.f, ...). */
typedef struct golden_file {
  unsigned char *buf;       /* the file; f points into it */
  st_file f;
} golden_file;

static TEST_UNUSED void golden_open(golden_file *g, const char *path) {
  size_t n;
  anom_err e;
  g->buf = slurp(path, &n);
  assert_int_equal(st_parse(&g->f, g->buf, n, NULL, &e), ANOM_OK);
}

static TEST_UNUSED void golden_close(golden_file *g) {
  st_free(&g->f);
  free(g->buf);
}

/* golden.h's set_tensors with no prefix, for the nets first..last of m only. */
static TEST_UNUSED void set_net_tensors(anom_model *m, int first, int last,
                                        const st_file *g) {
  char name[200];
  for(int i = first; i <= last; i++)
    for(int t = 0; t < net_tensor_count(m->nets[i]); t++){
      int ndim, isbuf;
      int64_t shape[4];
      float *data;
      net_tensor(m->nets[i], t, name, sizeof(name), &ndim, shape, &data, &isbuf);
      const st_tensor *gt = st_find(g, name);
      if( !gt ) fprintf(stderr, "golden tensor '%s' is missing\n", name);
      assert_non_null(gt);
      assert_int_equal(st_read_f32(gt, shape, ndim, data, NULL), ANOM_OK);
    }
}

/* The data of m's tensor called name, or NULL; its element count, shape and
** dimensions into those of numel, shape and ndim that are not NULL. */
static TEST_UNUSED float *find_tensor(const anom_model *m, const char *name,
                                      int64_t *numel, int64_t shape[4], int *ndim) {
  char nm[200];
  for(int i = 0; i < m->nnets; i++)
    for(int t = 0; t < net_tensor_count(m->nets[i]); t++){
      int nd, isbuf;
      int64_t sh[4];
      float *data;
      net_tensor(m->nets[i], t, nm, sizeof(nm), &nd, sh, &data, &isbuf);
      if( strcmp(nm, name) ) continue;
      int64_t c = 1;
      for(int k = 0; k < nd; k++) c *= sh[k];
      if( numel ) *numel = c;
      if( shape ) memcpy(shape, sh, sizeof(sh));
      if( ndim ) *ndim = nd;
      return data;
    }
  return NULL;
}

/*
** The losses of training step `step` against the golden's one-value tensors
** "step<step>.<keys[k]>" (loss k of train_step): |ours - gold| / max(lo,
** |gold|) <= 1e-5 each. Returns the worst of those ratios.
*/
static TEST_UNUSED double check_step_losses(const st_file *g, int step,
                                            const double *losses,
                                            const char *const *keys, int nkeys,
                                            double lo) {
  double worst = 0;
  char key[64];
  for(int k = 0; k < nkeys; k++){
    snprintf(key, sizeof(key), "step%d.%s", step, keys[k]);
    float *gold = golden(g, key, NULL);
    double rel = fabs(losses[k] - gold[0]) / fmax(lo, fabs(gold[0]));
    if( !(rel <= 1e-5) ) fprintf(stderr, "%s: ours %.9g golden %.9g\n", key, losses[k], gold[0]);
    assert_true(rel <= 1e-5);
    worst = fmax(worst, rel);
    free(gold);
  }
  return worst;
}

/* ---- synthetic images ---------------------------------------------------- */

/* n one-channel side x side images (malloc'ed) of a bright blob on a dark
** ground, 2 exp(-d^2 / rad^2) - 1, drawn from seed: at side 32 the centre
** lies in 10..22 on each axis and the radius in 5..9; other sides scale
** that by side / 32. */
static TEST_UNUSED float *blob_images(int n, int side, uint64_t seed) {
  rng r;
  rng_seed(&r, seed);
  double s = side / 32.0;
  size_t img = (size_t)side * side;
  float *x = malloc((size_t)n * img * sizeof(float));
  assert_non_null(x);
  for(int i = 0; i < n; i++){
    double cx = s * (10 + 12 * rng_uniform(&r)), cy = s * (10 + 12 * rng_uniform(&r));
    double rad = s * (5 + 4 * rng_uniform(&r));
    for(int y = 0; y < side; y++)
      for(int xx = 0; xx < side; xx++){
        double d = ((xx - cx) * (xx - cx) + (y - cy) * (y - cy)) / (rad * rad);
        x[(size_t)i * img + (size_t)y * side + xx] = (float)(2 * exp(-d) - 1);
      }
  }
  return x;
}

/* ---- errors against their messages --------------------------------------- */

/* How a message is checked: equal to the expected one, or containing it. */
typedef enum msg_match { MSG_CONTAINS, MSG_EXACT } msg_match;

static TEST_UNUSED int msg_matches(const char *got, const char *want, msg_match how) {
  return how == MSG_EXACT ? strcmp(got, want) == 0 : strstr(got, want) != NULL;
}

/* A model_create that must fail: hyper-parameters (NULL: none), size. */
typedef struct create_case {
  const char *hp;
  int w, h;
  const char *msg;
} create_case;

/* Each case of method, with one channel: EINVAL, the message, no model. */
static TEST_UNUSED void check_create_errors(const char *method, const create_case *cases,
                                            size_t ncases, msg_match how) {
  for(size_t k = 0; k < ncases; k++){
    cJSON *hp = cases[k].hp ? cJSON_Parse(cases[k].hp) : NULL;
    if( cases[k].hp ) assert_non_null(hp);
    anom_model *m = (anom_model *)1;
    anom_err e;
    anom_err_clear(&e);
    int rc = model_create(&m, method, cases[k].w, cases[k].h, 1, hp, NULL, &e);
    if( rc != ANOM_EINVAL || !msg_matches(e.msg, cases[k].msg, how) )
      fprintf(stderr, "%s %s %dx%d: rc %d, got '%s'\n", method,
              cases[k].hp ? cases[k].hp : "(none)", cases[k].w, cases[k].h, rc, e.msg);
    assert_int_equal(rc, ANOM_EINVAL);
    assert_true(msg_matches(e.msg, cases[k].msg, how));
    assert_null(m);
    cJSON_Delete(hp);
  }
}

/* Scoring options (JSON) that must be refused, with the message. */
typedef struct opt_case {
  const char *json, *msg;
} opt_case;

/* model_score of n images x with each case's options: EINVAL, the message. */
static TEST_UNUSED void check_score_errors(const anom_model *m, int n, const float *x,
                                           float *work, const opt_case *cases,
                                           size_t ncases, msg_match how) {
  score_result *r = malloc((size_t)n * sizeof(*r));
  assert_non_null(r);
  for(size_t k = 0; k < ncases; k++){
    cJSON *o = cJSON_Parse(cases[k].json);
    assert_non_null(o);
    anom_err e;
    anom_err_clear(&e);
    int rc = model_score(m, n, x, work, r, NULL, o, &e);
    if( rc != ANOM_EINVAL || !msg_matches(e.msg, cases[k].msg, how) )
      fprintf(stderr, "%s: rc %d, got '%s'\n", cases[k].json, rc, e.msg);
    assert_int_equal(rc, ANOM_EINVAL);
    assert_true(msg_matches(e.msg, cases[k].msg, how));
    cJSON_Delete(o);
  }
  free(r);
}

/* train_step refuses a batch of one (batch norm needs two) and one over the
** max_batch (4) of train_begin, with "<method>: a training batch needs 2 to
** 4 images, found <n>"; train_end takes the state, and NULL. */
static TEST_UNUSED void check_batch_errors(anom_model *m) {
  rng r;
  rng_seed(&r, 1);
  void *st;
  anom_err e;
  assert_int_equal(m->ops->train_begin(m, 4, &r, &st, &e), ANOM_OK);
  float *x = calloc(5 * (size_t)m->channels * m->height * m->width, sizeof(float));
  assert_non_null(x);
  double losses[TRAIN_MAX_LOSSES];
  static const int sizes[2] = {1, 5};
  for(int k = 0; k < 2; k++){
    char want[128];
    snprintf(want, sizeof(want), "%s: a training batch needs 2 to 4 images, found %d",
             m->ops->name, sizes[k]);
    anom_err_clear(&e);
    assert_int_equal(m->ops->train_step(m, st, sizes[k], x, losses, &e), ANOM_EINVAL);
    assert_string_equal(e.msg, want);
  }
  m->ops->train_end(m, st);
  m->ops->train_end(m, NULL);
  free(x);
}

/* ---- training, save and load --------------------------------------------- */

/* The number of losses train_step reports for m. */
static TEST_UNUSED int loss_count(const anom_model *m) {
  int k = 0;
  while( m->ops->loss_names[k] ) k++;
  return k;
}

/* model_train of m for one epoch on x (n images) in batches of batch, from
** seed; asserts success. */
static TEST_UNUSED void train_epoch(anom_model *m, const float *x, int n, int batch,
                                    uint64_t seed, train_report *rep) {
  train_options o;
  train_options_default(&o);
  o.epochs = 1;
  o.batch = batch;
  o.seed = seed;
  anom_err e;
  int rc = model_train(m, x, n, &o, rep, &e);
  if( rc ) fprintf(stderr, "%s\n", e.msg);
  assert_int_equal(rc, ANOM_OK);
}

/*
** save(m) and load it back as m2: the same method; m and m2 score x (n
** images) alike to the bit, every part, the scores finite; saving m2 gives
** the same file again. Returns m2 (the caller frees it) and, unless r is
** NULL, m's results in r (n).
*/
static TEST_UNUSED anom_model *check_save_load(const anom_model *m, const float *x, int n,
                                               score_result *r) {
  unsigned char *blob, *blob2;
  size_t nb, nb2;
  anom_model *m2;
  anom_err e;
  assert_int_equal(model_save(m, &blob, &nb, &e), ANOM_OK);
  int rc = model_load(&m2, blob, nb, NULL, &e);
  if( rc ) fprintf(stderr, "%s\n", e.msg);
  assert_int_equal(rc, ANOM_OK);
  assert_string_equal(m2->ops->name, m->ops->name);
  float *w1 = work_for(m, n), *w2 = work_for(m2, n);
  score_result *r1 = malloc(2 * (size_t)n * sizeof(*r1)), *r2 = r1 + n;
  assert_non_null(r1);
  assert_int_equal(model_score(m, n, x, w1, r1, NULL, NULL, &e), ANOM_OK);
  assert_int_equal(model_score(m2, n, x, w2, r2, NULL, NULL, &e), ANOM_OK);
  for(int i = 0; i < n; i++){
    assert_true(isfinite(r1[i].score));
    assert_true(r1[i].score == r2[i].score);
    assert_int_equal(r1[i].nparts, r2[i].nparts);
    for(int p = 0; p < r1[i].nparts; p++) assert_true(r1[i].part[p] == r2[i].part[p]);
  }
  assert_int_equal(model_save(m2, &blob2, &nb2, &e), ANOM_OK);
  assert_int_equal(nb, nb2);
  assert_memory_equal(blob, blob2, nb);
  if( r ) memcpy(r, r1, (size_t)n * sizeof(*r));
  anom_free(blob);
  anom_free(blob2);
  free(w1); free(w2); free(r1);
  return m2;
}

/*
** A new model (method, side x side x nc, hyper-parameters hp_json) after
** `steps` train_steps on x (n images, one batch) from rng seed, then
** train_finish when the method has one. Every loss finite; step s's into
** losses[s] unless losses is NULL.
*/
static TEST_UNUSED anom_model *train_steps(const char *method, int side, int nc,
                                           const char *hp_json, uint64_t seed,
                                           const float *x, int n, int steps,
                                           double (*losses)[TRAIN_MAX_LOSSES]) {
  anom_model *m = create_model(method, side, nc, hp_json);
  int nl = loss_count(m);
  rng r;
  rng_seed(&r, seed);
  void *st;
  anom_err e;
  assert_int_equal(m->ops->train_begin(m, n, &r, &st, &e), ANOM_OK);
  for(int s = 0; s < steps; s++){
    double l[TRAIN_MAX_LOSSES] = {0};
    assert_int_equal(m->ops->train_step(m, st, n, x, l, &e), ANOM_OK);
    for(int k = 0; k < nl; k++) assert_true(isfinite(l[k]));
    if( losses ) memcpy(losses[s], l, sizeof(l));
  }
  if( m->ops->train_finish ) m->ops->train_finish(m, st);
  m->ops->train_end(m, st);
  return m;
}

/*
** Two train_steps (above) from seed, twice, and once from seed + 1: the first
** two alike to the bit (weights and statistics, the saved files, every
** loss), the third not. The first run's losses of the second step into last
** (TRAIN_MAX_LOSSES) unless NULL.
*/
static TEST_UNUSED void check_determinism(const char *method, int side, int nc,
                                          const char *hp_json, uint64_t seed,
                                          const float *x, int n, double *last) {
  double la[2][TRAIN_MAX_LOSSES], lb[2][TRAIN_MAX_LOSSES];
  anom_model *a = train_steps(method, side, nc, hp_json, seed, x, n, 2, la);
  anom_model *b = train_steps(method, side, nc, hp_json, seed, x, n, 2, lb);
  anom_model *c = train_steps(method, side, nc, hp_json, seed + 1, x, n, 2, NULL);
  size_t bytes = (a->nparams + a->nbufs) * sizeof(float);
  assert_memory_equal(a->block, b->block, bytes);
  assert_memory_not_equal(a->block, c->block, bytes);
  assert_memory_equal(la, lb, sizeof(la));
  unsigned char *fa, *fb;
  size_t na, nb;
  anom_err e;
  assert_int_equal(model_save(a, &fa, &na, &e), ANOM_OK);
  assert_int_equal(model_save(b, &fb, &nb, &e), ANOM_OK);
  assert_int_equal(na, nb);
  assert_memory_equal(fa, fb, na);
  if( last ) memcpy(last, la[1], sizeof(la[1]));
  anom_free(fa);
  anom_free(fb);
  model_free(a); model_free(b); model_free(c);
}

/* ---- every allocation failing in turn ------------------------------------ */

#ifdef ANOM_TEST
/* model_load of the file at path with allocation k failing, k = 1, 2... until
** it loads: ENOMEM or EFORMAT each time, no crash, no leak. Returns the
** number of failures. */
static TEST_UNUSED int oom_load(const char *path) {
  size_t n;
  unsigned char *b = slurp(path, &n);
  int ok = 0, fails = 0;
  for(long k = 1; k < 1000 && !ok; k++){
    anom_model *m;
    anom_err e;
    anom_alloc_fail_after(k);
    int rc = model_load(&m, b, n, NULL, &e);
    anom_alloc_fail_after(0);
    if( rc == ANOM_OK ){ ok = 1; model_free(m); }
    else{ assert_true(rc == ANOM_ENOMEM || rc == ANOM_EFORMAT); fails++; }
  }
  assert_true(ok);
  free(b);
  return fails;
}

/* The same for model_create of method, side x side x nc, hyper-parameters
** hp_json: ENOMEM and no model each time. */
static TEST_UNUSED int oom_create(const char *method, int side, int nc,
                                  const char *hp_json) {
  cJSON *hp = hp_json ? cJSON_Parse(hp_json) : NULL;
  if( hp_json ) assert_non_null(hp);
  int ok = 0, fails = 0;
  for(long k = 1; k < 1000 && !ok; k++){
    anom_model *m = (anom_model *)1;
    anom_err e;
    anom_alloc_fail_after(k);
    int rc = model_create(&m, method, side, side, nc, hp, NULL, &e);
    anom_alloc_fail_after(0);
    if( rc == ANOM_OK ){ ok = 1; model_free(m); }
    else{ assert_int_equal(rc, ANOM_ENOMEM); assert_null(m); fails++; }
  }
  assert_true(ok);
  cJSON_Delete(hp);
  return fails;
}

/* The same for m->ops->train_begin(m, 4, r, ...), r seeded with 1 before
** each try: ENOMEM each time, and train_end frees what came through. The
** state that finally comes through goes to *keep (the caller ends it, and
** must keep r alive while it does), or is ended when keep is NULL. */
static TEST_UNUSED int oom_train_begin(anom_model *m, rng *r, void **keep) {
  int ok = 0, fails = 0;
  for(long k = 1; k < 1000 && !ok; k++){
    void *st = NULL;
    anom_err e;
    rng_seed(r, 1);
    anom_alloc_fail_after(k);
    int rc = m->ops->train_begin(m, 4, r, &st, &e);
    anom_alloc_fail_after(0);
    if( rc == ANOM_OK ) ok = 1;
    else{ assert_int_equal(rc, ANOM_ENOMEM); fails++; }
    if( ok && keep ) *keep = st;
    else m->ops->train_end(m, st);
  }
  assert_true(ok);
  return fails;
}
#endif /* ANOM_TEST */

#endif /* ANOM_TEST_DETECTOR_H */
