/*
** train.c - anomaly_train(name, method, image [, options]), an aggregate
** that trains a detector on the normal images a query returns and
** registers it in anomaly_models.
**
**   SELECT anomaly_train('shirts', 'ganomaly', image, '{"epochs": 15, "size": 32, "seed": 1}')
**     FROM fashion WHERE split = 'train' AND label = 6;
**
** Each image is decoded and fitted to the model's input as it arrives; only
** the tensors are kept, within a memory budget. 10% of them (seeded) are
** held out to calibrate the score; the model, its calibration and threshold
** are written in one INSERT at the end, so a failure part-way leaves no
** model behind. Returns a JSON summary. On a terminal a progress line is
** written to stderr.
**
** Options (a JSON object), beside the method's hyper-parameters (see
** docs/sql.md): epochs, batch, seed, holdout, threshold (the quantile of
** held-out scores, 0.99), size (or width and height; 32), channels (1 or 3;
** default: the first image's), fit ("resize" or "pad"), memory_mb (2048),
** replace (false), quiet (false).
*/
#include "anomaly_ext.h"
SQLITE_EXTENSION_INIT3

#include "core/image.h"
#include "core/train.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FN "anomaly_train"

typedef struct train_agg {
  int started;
  char *name, *method, *options;   /* the first row's arguments */
  anom_model *model;               /* built at the first row */
  train_options topt;
  int width, height, channels, fit;
  long long memory;                /* bytes the tensors may take */
  int replace, quiet;
  float *x;                        /* n tensors (C, H, W) */
  size_t n, cap, nulls;
  int failed;                      /* a row failed: xFinal must not train */
  sqlite3 *db;                     /* for train_interrupted */
} train_agg;

static const char *const general_keys[] = {"epochs", "batch", "seed", "holdout",
  "threshold", "size", "width", "height", "channels", "fit", "memory_mb",
  "replace", "quiet", NULL};

static int is_general(const char *k) {
  for(int i = 0; general_keys[i]; i++) if( strcmp(k, general_keys[i]) == 0 ) return 1;
  return 0;
}

static void agg_error(sqlite3_context *ctx, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *z = sqlite3_vmprintf(fmt, ap);
  va_end(ap);
  if( !z ){ sqlite3_result_error_nomem(ctx); return; }
  char *full = sqlite3_mprintf(FN ": %s", z);
  sqlite3_free(z);
  if( !full ){ sqlite3_result_error_nomem(ctx); return; }
  sqlite3_result_error(ctx, full, -1);
  sqlite3_free(full);
}

/* An integer option in [lo, hi]; 0 on success, else the error is set. */
static int opt_int(sqlite3_context *ctx, const cJSON *o, const char *key, long long lo,
                   long long hi, long long *v) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
  if( !it ) return 0;
  if( !cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble)
      || it->valuedouble < (double)lo || it->valuedouble > (double)hi ){
    agg_error(ctx, "option '%s' must be an integer from %lld to %lld", key, lo, hi);
    return 1;
  }
  *v = (long long)it->valuedouble;
  return 0;
}

static int opt_num(sqlite3_context *ctx, const cJSON *o, const char *key, double lo,
                   double hi, double *v) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
  if( !it ) return 0;
  if( !cJSON_IsNumber(it) || !(it->valuedouble >= lo && it->valuedouble <= hi) ){
    agg_error(ctx, "option '%s' must be a number from %g to %g", key, lo, hi);
    return 1;
  }
  *v = it->valuedouble;
  return 0;
}

static int opt_bool(sqlite3_context *ctx, const cJSON *o, const char *key, int *v) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
  if( !it ) return 0;
  if( !cJSON_IsBool(it) ){
    agg_error(ctx, "option '%s' must be true or false", key);
    return 1;
  }
  *v = cJSON_IsTrue(it);
  return 0;
}

static char *dup_text(sqlite3_value *v) {
  const unsigned char *t = sqlite3_value_text(v);
  return t ? sqlite3_mprintf("%s", t) : NULL;
}

/* Does the registry hold a model called name? -1 on error. */
static int model_exists(sqlite3 *db, const char *name) {
  sqlite3_stmt *st;
  if( sqlite3_prepare_v2(db, "SELECT 1 FROM anomaly_models WHERE name = ?1", -1, &st, 0) )
    return -1;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* The first row: check the arguments, parse the options, build the model. */
static int agg_start(sqlite3_context *ctx, train_agg *a, int argc, sqlite3_value **argv,
                     const image_u8 *first) {
  anom_conn *cn = sqlite3_user_data(ctx);
  if( sqlite3_value_type(argv[0]) != SQLITE_TEXT || sqlite3_value_bytes(argv[0]) == 0 ){
    agg_error(ctx, "name must be a non-empty text");
    return 1;
  }
  if( sqlite3_value_type(argv[1]) != SQLITE_TEXT ){
    agg_error(ctx, "method must be a text (%s)", "ganomaly");
    return 1;
  }
  a->name = dup_text(argv[0]);
  a->method = dup_text(argv[1]);
  a->options = argc > 3 && sqlite3_value_type(argv[3]) != SQLITE_NULL ? dup_text(argv[3])
                                                                     : sqlite3_mprintf("{}");
  if( !a->name || !a->method || !a->options ){ sqlite3_result_error_nomem(ctx); return 1; }
  const detector_ops *ops = detector_find(a->method);
  if( !ops ){
    agg_error(ctx, "unknown method '%s' (known: %s)", a->method, detector_names());
    return 1;
  }
  cJSON *o = cJSON_Parse(a->options);
  if( !o || !cJSON_IsObject(o) ){
    cJSON_Delete(o);
    agg_error(ctx, "options must be a JSON object, e.g. '{\"epochs\": 15}'");
    return 1;
  }
  cJSON *hp = cJSON_CreateObject();
  long long epochs = 15, batch = ops->batch ? ops->batch : 64, seed = 0, size = 32, width = -1, height = -1;
  long long channels = first->c;
  long long memory_mb = cn->max_train_mb < 2048 ? cn->max_train_mb : 2048;
  double holdout = 0.1, thr = 0.99;
  int rc = 1;
  a->fit = IMAGE_FIT_RESIZE;
  const cJSON *it;
  cJSON_ArrayForEach(it, o){
    if( !is_general(it->string) )
      cJSON_AddItemToObject(hp, it->string, cJSON_Duplicate(it, 1));
  }
  const cJSON *fit = cJSON_GetObjectItemCaseSensitive(o, "fit");
  if( opt_int(ctx, o, "epochs", 1, 100000, &epochs)
      || opt_int(ctx, o, "batch", 2, 4096, &batch)
      || opt_int(ctx, o, "seed", 0, (long long)1 << 53, &seed)
      || opt_num(ctx, o, "holdout", 0, 0.5, &holdout)
      || opt_num(ctx, o, "threshold", 0.5, 1, &thr)
      || opt_int(ctx, o, "size", 1, cn->limits.max_side, &size)
      || opt_int(ctx, o, "width", 1, cn->limits.max_side, &width)
      || opt_int(ctx, o, "height", 1, cn->limits.max_side, &height)
      || opt_int(ctx, o, "channels", 1, 3, &channels)
      || opt_int(ctx, o, "memory_mb", 1, cn->max_train_mb, &memory_mb)
      || opt_bool(ctx, o, "replace", &a->replace)
      || opt_bool(ctx, o, "quiet", &a->quiet) )
    goto done;
  if( channels == 2 ){ agg_error(ctx, "option 'channels' must be 1 or 3"); goto done; }
  if( fit && (!cJSON_IsString(fit) || (a->fit = model_fit_parse(fit->valuestring)) < 0) ){
    agg_error(ctx, "option 'fit' must be \"resize\" or \"pad\"");
    goto done;
  }
  a->width = width > 0 ? (int)width : (int)size;
  a->height = height > 0 ? (int)height : (int)size;
  a->channels = (int)channels;
  a->memory = memory_mb << 20;
  train_options_default(&a->topt);
  a->topt.epochs = (int)epochs;
  a->topt.batch = (int)batch;
  a->topt.seed = (uint64_t)seed;
  a->topt.holdout = holdout;
  a->topt.threshold_q = thr;

  if( !a->replace ){
    int ex = model_exists(sqlite3_context_db_handle(ctx), a->name);
    if( ex != 0 ){
      if( ex > 0 ) agg_error(ctx, "a model named '%s' exists already (add "
                             "\"replace\": true to the options to overwrite it)", a->name);
      else agg_error(ctx, "reading anomaly_models: %s",
                     sqlite3_errmsg(sqlite3_context_db_handle(ctx)));
      goto done;
    }
  }
  anom_err e;
  anom_err_clear(&e);
  int mrc = model_create(&a->model, a->method, a->width, a->height, a->channels, hp,
                         &cn->limits, &e);
  if( mrc ){
    if( strstr(e.msg, "unknown hyper-parameter") )
      agg_error(ctx, "%s; general options: epochs, batch, seed, holdout, threshold, "
                "size, width, height, channels, fit, memory_mb, replace, quiet", e.msg);
    else if( mrc == ANOM_ENOMEM ) sqlite3_result_error_nomem(ctx);
    else agg_error(ctx, "%s", e.msg);
    goto done;
  }
  a->model->fit = a->fit;
  rc = 0;
done:
  cJSON_Delete(hp);
  cJSON_Delete(o);
  return rc;
}

static int same_text(sqlite3_value *v, const char *s) {
  const unsigned char *t = sqlite3_value_text(v);
  return t && s && strcmp((const char *)t, s) == 0;
}

static int train_row(sqlite3_context *ctx, train_agg *a, int argc, sqlite3_value **argv);

static void trainStep(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  train_agg *a = sqlite3_aggregate_context(ctx, sizeof(*a));
  if( !a ){ sqlite3_result_error_nomem(ctx); return; }
  if( a->failed ) return;
  /* SQLite calls xFinal even after an error here: remember it */
  a->failed = 1;
  if( train_row(ctx, a, argc, argv) == 0 ) a->failed = 0;
}

/* Add one row; 0 on success, else the error is set on ctx. */
static int train_row(sqlite3_context *ctx, train_agg *a, int argc, sqlite3_value **argv) {
  anom_conn *cn = sqlite3_user_data(ctx);
  int t = sqlite3_value_type(argv[2]);
  if( t == SQLITE_NULL ){ a->nulls++; return 0; }
  if( t != SQLITE_BLOB ){
    agg_error(ctx, ANOM_IMAGE_TYPE_ERROR, anom_type_name(t));
    return 1;
  }
  image_u8 im;
  anom_err e;
  anom_err_clear(&e);
  int rc = image_decode(&im, sqlite3_value_blob(argv[2]),
                        (size_t)sqlite3_value_bytes(argv[2]), cn->max_pixels, &e);
  if( rc ){
    if( rc == ANOM_ENOMEM ) sqlite3_result_error_nomem(ctx);
    else agg_error(ctx, "image %lld: %s", (long long)(a->n + a->nulls + 1), e.msg);
    return 1;
  }
  if( !a->started ){
    a->started = 1;
    if( agg_start(ctx, a, argc, argv, &im) ){ image_free(&im); return 1; }
  }else if( !same_text(argv[0], a->name) || !same_text(argv[1], a->method)
            || (argc > 3 && sqlite3_value_type(argv[3]) != SQLITE_NULL
                && !same_text(argv[3], a->options)) ){
    image_free(&im);
    agg_error(ctx, "name, method and options must be the same on every row");
    return 1;
  }
  if( !a->model ){ image_free(&im); return 1; }   /* the first row failed */
  size_t img = (size_t)a->channels * a->height * a->width;
  if( (long long)((a->n + 1) * img * sizeof(float)) > a->memory ){
    image_free(&im);
    agg_error(ctx, "the images need more than %lld MiB at %dx%dx%d (%lld images so "
              "far); raise option \"memory_mb\" or train on fewer images",
              a->memory >> 20, a->width, a->height, a->channels, (long long)(a->n + 1));
    return 1;
  }
  if( a->n == a->cap ){
    size_t cap = a->cap ? a->cap * 2 : 256;
    float *x = anom_realloc(a->x, cap * img * sizeof(float));
    if( !x ){ image_free(&im); sqlite3_result_error_nomem(ctx); return 1; }
    a->x = x;
    a->cap = cap;
  }
  rc = image_to_tensor(a->x + a->n * img, &im, a->width, a->height, a->channels, a->fit, &e);
  image_free(&im);
  if( rc == ANOM_ENOMEM ){ sqlite3_result_error_nomem(ctx); return 1; }
  if( rc ){
    agg_error(ctx, "image %lld: %s", (long long)(a->n + a->nulls + 1), e.msg);
    return 1;
  }
  a->n++;
  return 0;
}

static void print_progress(void *ctx, const train_progress *p) {
  const train_agg *a = ctx;
  double total = (double)p->epochs * p->batches;
  double done = (double)(p->epoch - 1) * p->batches + p->batch;
  double left = done > 0 ? p->seconds * (total - done) / done : 0;
  fprintf(stderr, "\r%s '%s': epoch %d/%d batch %d/%d", FN, a->name, p->epoch,
          p->epochs, p->batch, p->batches);
  for(int i = 0; i < p->nlosses; i++){
    if( strchr(p->loss_names[i], '_') ) continue;   /* totals only */
    fprintf(stderr, "  %s %.4g", p->loss_names[i], p->losses[i]);
  }
  fprintf(stderr, "  %.0f img/s  %dm%02ds left   ", p->images_per_second,
          (int)left / 60, (int)left % 60);
  if( done == total ) fprintf(stderr, "\n");
  fflush(stderr);
}

/* core/train.c polls this between batches. */
static int train_interrupted(void *ctx) {
  const train_agg *a = ctx;
  return anom_is_interrupted(a->db);
}

static void agg_free(train_agg *a) {
  sqlite3_free(a->name);
  sqlite3_free(a->method);
  sqlite3_free(a->options);
  model_free(a->model);
  anom_free(a->x);
  memset(a, 0, sizeof(*a));
}

static void trainFinal(sqlite3_context *ctx) {
  train_agg *a = sqlite3_aggregate_context(ctx, 0);
  if( a && a->failed ){ agg_free(a); return; }   /* the error is reported already */
  if( !a || !a->model ){
    if( !a || !a->started )
      agg_error(ctx, "no images to train on (the query returned no rows%s)",
                a && a->nulls ? ", or only NULL images" : "");
    if( a ) agg_free(a);
    return;
  }
  sqlite3 *db = sqlite3_context_db_handle(ctx);
  anom_err e;
  anom_err_clear(&e);
  train_report rep;
  a->db = db;
  a->topt.ctx = a;
  a->topt.interrupted = train_interrupted;
  if( !a->quiet && isatty(2) ) a->topt.progress = print_progress;
  /* an interrupted scan ends here too, as SQLite cleans the aggregate up */
  int rc = anom_is_interrupted(db) ? ANOM_EINTR
         : model_train(a->model, a->x, (int)a->n, &a->topt, &rep, &e);
  unsigned char *blob = NULL;
  size_t nblob = 0;
  if( rc == ANOM_OK ){
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(a->model->created, sizeof(a->model->created), "%Y-%m-%dT%H:%M:%SZ", &tm);
    rc = model_save(a->model, &blob, &nblob, &e);
  }
  if( rc ){
    if( rc == ANOM_ENOMEM ) sqlite3_result_error_nomem(ctx);
    else if( rc == ANOM_EINTR ){
      agg_error(ctx, "interrupted; no model was written");
      sqlite3_result_error_code(ctx, SQLITE_INTERRUPT);
    }else agg_error(ctx, "%s", e.msg);
    agg_free(a);
    return;
  }
  sqlite3_stmt *st;
  int src = sqlite3_prepare_v2(db, a->replace
      ? "INSERT OR REPLACE INTO anomaly_models(name, model) VALUES (?1, ?2)"
      : "INSERT INTO anomaly_models(name, model) VALUES (?1, ?2)", -1, &st, 0);
  if( src == SQLITE_OK ){
    sqlite3_bind_text(st, 1, a->name, -1, SQLITE_STATIC);
    sqlite3_bind_blob64(st, 2, blob, nblob, SQLITE_STATIC);
    sqlite3_step(st);
    src = sqlite3_finalize(st);
  }
  anom_free(blob);
  if( src == SQLITE_NOMEM ){
    sqlite3_result_error_nomem(ctx);
    agg_free(a);
    return;
  }
  if( src != SQLITE_OK ){
    agg_error(ctx, "saving the model: %s", sqlite3_errmsg(db));
    if( src == SQLITE_INTERRUPT ) sqlite3_result_error_code(ctx, SQLITE_INTERRUPT);
    agg_free(a);
    return;
  }
  cJSON *j = cJSON_CreateObject();
  char *s = NULL;
  if( j ){
    cJSON_AddStringToObject(j, "name", a->name);
    cJSON_AddStringToObject(j, "method", a->method);
    cJSON_AddNumberToObject(j, "images", (double)a->n);
    cJSON_AddNumberToObject(j, "train", rep.images_train);
    cJSON_AddNumberToObject(j, "holdout", rep.images_holdout);
    cJSON_AddNumberToObject(j, "null_images", (double)a->nulls);
    cJSON_AddNumberToObject(j, "width", a->width);
    cJSON_AddNumberToObject(j, "height", a->height);
    cJSON_AddNumberToObject(j, "channels", a->channels);
    cJSON_AddNumberToObject(j, "epochs", rep.epochs);
    cJSON_AddNumberToObject(j, "batches_per_epoch", rep.batches);
    cJSON_AddNumberToObject(j, "seconds", round(rep.seconds * 1000) / 1000);
    cJSON *l = cJSON_AddObjectToObject(j, "losses");
    for(int i = 0; l && i < rep.nlosses; i++)
      cJSON_AddNumberToObject(l, rep.loss_names[i], rep.losses[i]);
    if( isfinite(rep.threshold) ) cJSON_AddNumberToObject(j, "threshold", rep.threshold);
    else cJSON_AddNullToObject(j, "threshold");
    s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
  }
  if( s ){
    sqlite3_result_text(ctx, s, -1, SQLITE_TRANSIENT);
    sqlite3_result_subtype(ctx, 'J');
    cJSON_free(s);
  }else{
    sqlite3_result_error_nomem(ctx);
  }
  agg_free(a);
}

int anom_register_train(sqlite3 *db, anom_conn *cn) {
  /* Rationale for DIRECTONLY: it writes the registry and runs for minutes;
  ** a view or trigger of an untrusted schema must not start it. */
  int rc = SQLITE_OK;
  for(int nargs = 3; nargs <= 4 && rc == SQLITE_OK; nargs++)
    rc = sqlite3_create_function_v2(db, FN, nargs, SQLITE_UTF8 | SQLITE_DIRECTONLY, cn,
                                    0, trainStep, trainFinal, 0);
  return rc;
}
