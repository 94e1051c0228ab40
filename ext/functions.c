/*
** functions.c - the SQL functions that read models and score images.
**
**   anomaly_version()                  -> 'v0.1.0'
**   anomaly_model_from_file(path)      -> BLOB   the validated model file
**   anomaly_model_info(model_blob)     -> JSON   what the model is
**   anomaly_score(image, model [, options])       -> REAL  the method's anomaly score
**   anomaly_scores(image, model [, options])      -> JSON  the score and every part
**   anomaly_reconstruct(image, model [, options]) -> BLOB  PNG of the repair x_hat
**
** image is a PNG, JPEG, BMP, GIF or PNM BLOB; model is a name in
** anomaly_models; options, a JSON object, holds the scoring options the
** method takes (AnoGAN's steps, for one). A NULL image gives NULL. The model is looked up once per
** statement and kept as the argument's auxdata, with a scratch buffer sized
** for it, so scoring a table allocates nothing per row beyond the decode.
** Errors name the function and say what to do.
*/
#include "anomaly_ext.h"
SQLITE_EXTENSION_INIT3

#include "core/image.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

void anom_stmt_model_free(void *p) {
  stmt_model *sm = p;
  if( !sm ) return;
  cache_release(sm->cm);
  anom_free(sm->x);
  anom_free(sm->work);
  anom_free(sm->recon);
  anom_free(sm->map);
  anom_free(sm->tmp);
  anom_free(sm);
}

void anom_result_errorf(sqlite3_context *ctx, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *z = sqlite3_vmprintf(fmt, ap);
  va_end(ap);
  if( z ) sqlite3_result_error(ctx, z, -1);
  else sqlite3_result_error_nomem(ctx);
  sqlite3_free(z);
}

int anom_too_big(sqlite3_context *ctx, size_t n) {
  int limit = sqlite3_limit(sqlite3_context_db_handle(ctx), SQLITE_LIMIT_LENGTH, -1);
  if( n > (size_t)limit ){
    sqlite3_result_error_toobig(ctx);
    return 1;
  }
  return 0;
}

void anom_result_png(sqlite3_context *ctx, const char *fn, const unsigned char *px,
                     int w, int h, int c) {
  unsigned char *png;
  size_t n;
  anom_err e;
  anom_err_clear(&e);
  int rc = image_encode_png(&png, &n, px, w, h, c, &e);
  if( rc ) anom_result_error(ctx, fn, rc, e.msg);
  else if( anom_too_big(ctx, n) ) anom_free(png);
  else sqlite3_result_blob64(ctx, png, n, anom_free);
}

int anom_is_interrupted(sqlite3 *db) {
#if SQLITE_VERSION_NUMBER >= 3041000
  return sqlite3_is_interrupted(db);
#else
# ifndef SQLITE_CORE
  /* built against older headers: the routines table only grows, so a 3.41
  ** library has is_interrupted right after the last member we know */
  if( sqlite3_libversion_number() >= 3041000 ){
    const struct { sqlite3_api_routines known; int (*is_interrupted)(sqlite3 *); } *api =
      (const void *)sqlite3_api;
    return api->is_interrupted(db);
  }
# endif
  /* older libraries: a statement run now fails at once if db is interrupted */
  sqlite3_stmt *st;
  if( sqlite3_prepare_v2(db, "SELECT 1", -1, &st, 0) != SQLITE_OK )
    return sqlite3_errcode(db) == SQLITE_INTERRUPT;
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_INTERRUPT;
#endif
}

const char *anom_type_name(int t) {
  switch( t ){
    case SQLITE_INTEGER: return "INTEGER";
    case SQLITE_FLOAT: return "REAL";
    case SQLITE_TEXT: return "TEXT";
    case SQLITE_BLOB: return "BLOB";
    default: return "NULL";
  }
}

void anom_result_error(sqlite3_context *ctx, const char *fn, int rc,
                              const char *msg) {
  if( rc == ANOM_ENOMEM ){ sqlite3_result_error_nomem(ctx); return; }
  char *z = sqlite3_mprintf("%s: %s", fn, msg);
  if( !z ){ sqlite3_result_error_nomem(ctx); return; }
  sqlite3_result_error(ctx, z, -1);
  sqlite3_free(z);
}

stmt_model *anom_stmt_model_open(sqlite3_context *ctx, const char *fn,
                                 sqlite3_value *name_value) {
  if( sqlite3_value_type(name_value) != SQLITE_TEXT ){
    anom_result_errorf(ctx, "%s: model must be the TEXT name of a model in "
                            "anomaly_models, got %s", fn,
                            anom_type_name(sqlite3_value_type(name_value)));
    return NULL;
  }
  const char *name = (const char *)sqlite3_value_text(name_value);
  anom_conn *cn = sqlite3_user_data(ctx);
  cached_model *cm;
  char *zerr;
  int rc = anom_registry_acquire(sqlite3_context_db_handle(ctx), name, &cn->limits,
                                 &cm, &zerr);
  if( rc || !cm ){
    char *z;
    if( zerr ) z = sqlite3_mprintf("%s: %s", fn, zerr);
    else if( rc ) z = sqlite3_mprintf("%s: reading anomaly_models: %s", fn,
                                      sqlite3_errmsg(sqlite3_context_db_handle(ctx)));
    else z = sqlite3_mprintf("%s: no model named '%s' (SELECT name FROM "
                             "anomaly_models lists them)", fn, name);
    if( rc == SQLITE_NOMEM || !z ) sqlite3_result_error_nomem(ctx);
    else sqlite3_result_error(ctx, z, -1);
    sqlite3_free(z);
    sqlite3_free(zerr);
    return NULL;
  }
  const anom_model *m = cm->model;
  size_t hw = (size_t)m->height * m->width;
  stmt_model *sm = anom_calloc(1, sizeof(*sm));
  if( sm ){
    sm->cm = cm;
    sm->x = anom_malloc((size_t)m->channels * hw * sizeof(float));
    sm->recon = anom_malloc((size_t)m->channels * hw * sizeof(float));
    sm->map = anom_malloc(hw * sizeof(float));
    sm->tmp = anom_malloc(hw * sizeof(float));
    sm->work = anom_malloc(model_work_floats(m, 1) * sizeof(float));
  }
  if( !sm || !sm->x || !sm->work || !sm->recon || !sm->map || !sm->tmp ){
    if( sm ) anom_stmt_model_free(sm);
    else cache_release(cm);
    sqlite3_result_error_nomem(ctx);
    return NULL;
  }
  return sm;
}

/*
** The model named by argv[i] for this statement: from auxdata, or looked up
** in the registry and prepared. On failure the error is set on ctx and
** NULL returned. The caller must pass a fresh one to sqlite3_set_auxdata
** (*fresh set) after using it.
*/
static stmt_model *resolve_model(sqlite3_context *ctx, const char *fn,
                                 sqlite3_value **argv, int i, int *fresh) {
  *fresh = 0;
  stmt_model *sm = sqlite3_get_auxdata(ctx, i);
  if( sm ) return sm;
  sm = anom_stmt_model_open(ctx, fn, argv[i]);
  *fresh = sm != NULL;
  return sm;
}

static void json_free(void *p) { cJSON_Delete(p); }

/*
** The scoring options of argv[2] when argc > 2, parsed once per statement:
** from auxdata, or parsed now with *fresh set, and then the caller hands
** them to sqlite3_set_auxdata(ctx, 2, ...) after use (SQLite keeps them for
** the next rows, or frees them at once if the argument is not constant).
** Returns 1 with the error set on ctx when they are not a JSON object.
*/
static int resolve_options(sqlite3_context *ctx, const char *fn, int argc,
                           sqlite3_value **argv, cJSON **opts, int *fresh) {
  *opts = NULL;
  *fresh = 0;
  if( argc < 3 || sqlite3_value_type(argv[2]) == SQLITE_NULL ) return 0;
  if( (*opts = sqlite3_get_auxdata(ctx, 2)) != NULL ) return 0;
  const char *s = (const char *)sqlite3_value_text(argv[2]);
  cJSON *j = s ? cJSON_Parse(s) : NULL;
  if( !j || !cJSON_IsObject(j) ){
    cJSON_Delete(j);
    anom_result_errorf(ctx, "%s: options must be a JSON object, e.g. "
                            "'{\"steps\": 100}'", fn);
    return 1;
  }
  *opts = j;
  *fresh = 1;
  return 0;
}

int anom_decode(sqlite3_context *ctx, const char *fn, sqlite3_value *v,
                const stmt_model *sm, image_u8 *keep) {
  anom_conn *cn = sqlite3_user_data(ctx);
  const anom_model *m = sm->cm->model;
  int t = sqlite3_value_type(v);
  if( t == SQLITE_NULL ){ sqlite3_result_null(ctx); return 1; }
  if( t != SQLITE_BLOB ){
    anom_result_errorf(ctx, "%s: " ANOM_IMAGE_TYPE_ERROR, fn, anom_type_name(t));
    return 1;
  }
  const void *blob = sqlite3_value_blob(v);
  size_t n = (size_t)sqlite3_value_bytes(v);
  image_u8 im;
  anom_err e;
  anom_err_clear(&e);
  int rc = image_decode(&im, blob, n, cn->max_pixels, &e);
  if( rc == ANOM_OK ){
    rc = image_to_tensor(sm->x, &im, m->width, m->height, m->channels, m->fit, &e);
    if( rc == ANOM_OK && keep ) *keep = im;
    else image_free(&im);
  }
  if( rc ){
    anom_result_error(ctx, fn, rc, e.msg);
    return 1;
  }
  return 0;
}

/* Decode argv[0] and score it (keeping the reconstruction in sm->recon when
** want_recon); 1 when a result (error or NULL) is set. */
static int score_image(sqlite3_context *ctx, const char *fn, sqlite3_value **argv,
                       stmt_model *sm, const cJSON *opts, score_result *r,
                       int want_recon) {
  if( anom_decode(ctx, fn, argv[0], sm, NULL) ) return 1;
  anom_err e;
  anom_err_clear(&e);
  int rc = model_score(sm->cm->model, 1, sm->x, sm->work, r,
                       want_recon ? sm->recon : NULL, opts, &e);
  if( rc ){
    anom_result_error(ctx, fn, rc, e.msg);
    return 1;
  }
  return 0;
}

/* Resolve the model and the options of a scoring call; 1 when an error is set. */
typedef struct call_state {
  stmt_model *sm;
  cJSON *opts;
  int fresh_model, fresh_opts;
} call_state;

static int call_begin(sqlite3_context *ctx, const char *fn, int argc,
                      sqlite3_value **argv, call_state *cs) {
  memset(cs, 0, sizeof(*cs));
  if( resolve_options(ctx, fn, argc, argv, &cs->opts, &cs->fresh_opts) ) return 1;
  cs->sm = resolve_model(ctx, fn, argv, 1, &cs->fresh_model);
  if( !cs->sm ){
    if( cs->fresh_opts ) cJSON_Delete(cs->opts);
    return 1;
  }
  return 0;
}

/* Hand the freshly resolved model and options to SQLite for the next rows. */
static void call_end(sqlite3_context *ctx, call_state *cs) {
  if( cs->fresh_opts ) sqlite3_set_auxdata(ctx, 2, cs->opts, json_free);
  if( cs->fresh_model ) sqlite3_set_auxdata(ctx, 1, cs->sm, anom_stmt_model_free);
}

static void scoreFunc(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  call_state cs;
  if( call_begin(ctx, "anomaly_score", argc, argv, &cs) ) return;
  score_result r;
  if( !score_image(ctx, "anomaly_score", argv, cs.sm, cs.opts, &r, 0) )
    sqlite3_result_double(ctx, r.score);
  call_end(ctx, &cs);
}

/*
** Add a number that reads back as the same double: cJSON prints 15 digits
** when they compare equal within its epsilon, which loses the last bits, so
** anomaly_scores(...) ->> 'score' would differ from anomaly_score(...).
*/
static void json_add_exact(cJSON *obj, const char *name, double v) {
  char buf[40];
  if( !isfinite(v) ){ cJSON_AddNullToObject(obj, name); return; }
  snprintf(buf, sizeof(buf), "%.17g", v);
  cJSON_AddRawToObject(obj, name, buf);
}

static void scoresFunc(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  call_state cs;
  if( call_begin(ctx, "anomaly_scores", argc, argv, &cs) ) return;
  score_result r;
  if( !score_image(ctx, "anomaly_scores", argv, cs.sm, cs.opts, &r, 0) ){
    cJSON *j = cJSON_CreateObject();
    char *s = NULL;
    if( j ){
      json_add_exact(j, "score", r.score);
      for(int i = 0; i < r.nparts; i++) json_add_exact(j, r.part_name[i], r.part[i]);
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
  }
  call_end(ctx, &cs);
}

static void reconstructFunc(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *fn = "anomaly_reconstruct";
  call_state cs;
  if( call_begin(ctx, fn, argc, argv, &cs) ) return;
  stmt_model *sm = cs.sm;
  score_result r;
  if( !score_image(ctx, fn, argv, sm, cs.opts, &r, 1) ){
    const anom_model *m = sm->cm->model;
    unsigned char *px = anom_malloc((size_t)m->channels * m->height * m->width);
    if( !px ){
      sqlite3_result_error_nomem(ctx);
    }else{
      image_from_tensor(px, sm->recon, m->width, m->height, m->channels);
      anom_result_png(ctx, fn, px, m->width, m->height, m->channels);
      anom_free(px);
    }
  }
  call_end(ctx, &cs);
}

static void versionFunc(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc; (void)argv;
  sqlite3_result_text(ctx, "v" ANOM_VERSION, -1, SQLITE_STATIC);
}

/* Validate blob as a model; on failure set the error on ctx and return 1. */
static int check_model_blob(sqlite3_context *ctx, const char *fn, const void *blob,
                            size_t n, anom_model **out) {
  anom_conn *cn = sqlite3_user_data(ctx);
  anom_err e;
  anom_err_clear(&e);
  int rc = model_load(out, blob, n, &cn->limits, &e);
  if( rc ){
    char msg[ANOM_ERR_MAX + 32];
    snprintf(msg, sizeof(msg), "invalid model: %s", e.msg);
    anom_result_error(ctx, fn, rc, msg);
    return 1;
  }
  return 0;
}

static void modelFromFileFunc(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  const char *fn = "anomaly_model_from_file";
  anom_conn *cn = sqlite3_user_data(ctx);
  if( sqlite3_value_type(argv[0]) == SQLITE_NULL ){ sqlite3_result_null(ctx); return; }
  const char *path = (const char *)sqlite3_value_text(argv[0]);
  if( !path ){ sqlite3_result_error_nomem(ctx); return; }
  FILE *f = fopen(path, "rb");
  if( !f ){
    anom_result_errorf(ctx, "%s: cannot open '%s': %s", fn, path, strerror(errno));
    return;
  }
  unsigned char *buf = NULL;
  long size = -1;
  if( fseek(f, 0, SEEK_END) == 0 ) size = ftell(f);
  int limit = sqlite3_limit(sqlite3_context_db_handle(ctx), SQLITE_LIMIT_LENGTH, -1);
  if( size < 0 || fseek(f, 0, SEEK_SET) != 0 ){
    anom_result_errorf(ctx, "%s: cannot read '%s' (not a regular file?)", fn, path);
  }else if( (unsigned long)size > cn->limits.max_bytes || size > limit ){
    sqlite3_result_error_toobig(ctx);
  }else if( !(buf = sqlite3_malloc64(size ? (sqlite3_uint64)size : 1)) ){
    sqlite3_result_error_nomem(ctx);
  }else if( fread(buf, 1, (size_t)size, f) != (size_t)size ){
    anom_result_errorf(ctx, "%s: short read from '%s'", fn, path);
  }else{
    anom_model *m;
    if( !check_model_blob(ctx, fn, buf, (size_t)size, &m) ){
      model_free(m);
      sqlite3_result_blob(ctx, buf, (int)size, sqlite3_free);
      buf = NULL;
    }
  }
  sqlite3_free(buf);
  fclose(f);
}

static void modelInfoFunc(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  const char *fn = "anomaly_model_info";
  int t = sqlite3_value_type(argv[0]);
  if( t == SQLITE_NULL ){ sqlite3_result_null(ctx); return; }
  if( t != SQLITE_BLOB ){
    anom_result_errorf(ctx, "%s: model must be a BLOB (the bytes of a model "
                            "file), got %s", fn, anom_type_name(t));
    return;
  }
  const void *b = sqlite3_value_blob(argv[0]);
  size_t n = (size_t)sqlite3_value_bytes(argv[0]);
  anom_model *m;
  if( check_model_blob(ctx, fn, b, n, &m) ) return;
  cJSON *j = model_info(m);
  char *s = NULL;
  if( j ){
    cJSON_AddNumberToObject(j, "bytes", (double)n);
    s = cJSON_PrintUnformatted(j);
  }
  cJSON_Delete(j);
  model_free(m);
  if( !s ){ sqlite3_result_error_nomem(ctx); return; }
  sqlite3_result_text(ctx, s, -1, SQLITE_TRANSIENT);
  sqlite3_result_subtype(ctx, 'J');
  cJSON_free(s);
}

typedef struct func_def {
  const char *name;
  int nargs;
  int flags;
  void (*fn)(sqlite3_context *, int, sqlite3_value **);
} func_def;

int anom_register_functions(sqlite3 *db, anom_conn *cn) {
  /* Flags. Scoring reads the registry, which changes: not DETERMINISTIC.
  ** Rationale for DIRECTONLY: anomaly_model_from_file reads files; an
  ** attacker who controls a database schema must not reach it from a view
  ** or trigger. */
  static const func_def defs[] = {
    {"anomaly_version", 0, SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, versionFunc},
    {"anomaly_model_from_file", 1, SQLITE_UTF8 | SQLITE_DIRECTONLY, modelFromFileFunc},
    {"anomaly_model_info", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, modelInfoFunc},
    {"anomaly_score", 2, SQLITE_UTF8, scoreFunc},
    {"anomaly_score", 3, SQLITE_UTF8, scoreFunc},
    {"anomaly_scores", 2, SQLITE_UTF8, scoresFunc},
    {"anomaly_scores", 3, SQLITE_UTF8, scoresFunc},
    {"anomaly_reconstruct", 2, SQLITE_UTF8, reconstructFunc},
    {"anomaly_reconstruct", 3, SQLITE_UTF8, reconstructFunc},
  };
  for(size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++){
    int rc = sqlite3_create_function_v2(db, defs[i].name, defs[i].nargs, defs[i].flags,
                                        cn, defs[i].fn, 0, 0, 0);
    if( rc ) return rc;
  }
  return SQLITE_OK;
}
