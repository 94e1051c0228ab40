/*
** scan.c - anomaly_scan(model, query [, options]): score every row a query
** returns, in batches, on all cores, as a table-valued function.
**
**   SELECT id, score FROM anomaly_scan('tiles', 'SELECT id, image FROM photos WHERE day = 3');
**   SELECT id, score FROM anomaly_scan('tiles', 'SELECT id, image FROM photos',
**                                      '{"threads": 2, "batch": 64}')
**    ORDER BY score DESC LIMIT 20;
**   SELECT id, error FROM anomaly_scan('tiles', 'SELECT id, image FROM photos',
**                                      '{"on_error": "null"}') WHERE error IS NOT NULL;
**
** query is one SELECT whose first column is the row id (any value, returned
** as it is) and whose second is the image BLOB. Columns: id, score (REAL, as
** anomaly_score gives it), parts (JSON, as anomaly_scores gives it), error
** (NULL unless on_error is "null" and the row could not be scored). Options,
** a JSON object: threads (1..64, default the online CPUs), batch (images per
** model_score call, 1..1024, default 64), on_error ("fail", the default, or
** "null"); any other key is a scoring option of the method, as the third
** argument of anomaly_score.
**
** HOW IT WORKS: xFilter looks the model up (anom_registry_acquire, as
** anomaly_score does) and prepares query on the connection kept from
** xConnect. Rows are read in chunks of threads * batch, each image BLOB
** copied; parallel_for (core/parallel.h) then hands every worker one slice
** of the chunk, which it decodes under the connection's max_pixels, fits to
** the model (image_to_tensor) and scores with one model_score call into its
** own tensor and work buffers (kept for the life of the cursor). The chunk's
** rows are then returned in the query's order and the next chunk is read:
** memory is bounded by one chunk whatever the table's size, and
** sqlite3_interrupt() stops the scan between chunks. It runs the SQL text it
** is given, so it is SQLITE_VTAB_DIRECTONLY: no view or trigger of an
** untrusted schema can reach it (docs/security.md).
*/
#include "anomaly_ext.h"
SQLITE_EXTENSION_INIT3

#include "core/image.h"
#include "core/parallel.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define FN "anomaly_scan"
#define SCAN_MAX_BATCH 1024
#define SCAN_BATCH 64

enum { COL_ID, COL_SCORE, COL_PARTS, COL_ERROR, COL_MODEL, COL_QUERY, COL_OPTIONS };

/* idxNum bit: the options argument is given (argv[2]). */
#define IDX_OPTIONS 1

enum { ROW_NULL, ROW_SCORED, ROW_FAILED };

/* One row of a chunk. */
typedef struct scan_row {
  sqlite3_value *id;        /* the query's first column, owned */
  unsigned char *blob;      /* copy of the image, capacity cap (reused) */
  size_t nblob, cap;
  int state;                /* ROW_* */
  int err_code;             /* ANOM_* of a failed row */
  char *err;                /* its message (anom_malloc), NULL if none */
  score_result r;           /* when ROW_SCORED */
} scan_row;

/* One worker's scratch, sized for slices of up to cap images. */
typedef struct scan_slot {
  int cap;
  float *x;                 /* (cap, C, H, W) */
  float *work;              /* model_work_floats(m, cap) */
  score_result *res;        /* cap */
  int *which;               /* row index of each decoded image */
  anom_err err;             /* model_score's failure, err.code 0 if none */
} scan_slot;

typedef struct scan_vtab {
  sqlite3_vtab base;        /* Base class - must be first */
  sqlite3 *db;
  anom_conn *cn;
} scan_vtab;

typedef struct scan_cursor {
  sqlite3_vtab_cursor base; /* Base class - must be first */
  sqlite3_stmt *stmt;       /* the user's query */
  cached_model *cm;
  cJSON *opts;              /* scoring options, NULL if none */
  int threads, batch, on_error_null;
  long long max_pixels;
  scan_row *rows;           /* threads * batch */
  int nrows, pos;           /* rows in the chunk, the one returned now */
  int slice;                /* rows per slice in this chunk */
  scan_slot slots[PARALLEL_MAX_THREADS];
  int done;                 /* the query has no more rows */
  sqlite3_int64 rowid;      /* rows returned before the chunk */
} scan_cursor;

static void vtab_error(sqlite3_vtab *vt, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sqlite3_free(vt->zErrMsg);
  vt->zErrMsg = sqlite3_vmprintf(fmt, ap);
  va_end(ap);
}

static int scanConnect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                       sqlite3_vtab **out, char **pzErr) {
  (void)argc; (void)argv;
  int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(id, score REAL, parts TEXT, "
                                "error TEXT, model HIDDEN, query HIDDEN, options HIDDEN)");
  if( rc ){
    *pzErr = sqlite3_mprintf(FN ": %s", sqlite3_errmsg(db));
    return rc;
  }
  /* Rationale: it prepares and runs the SQL text it is given; a view or
  ** trigger of an untrusted schema must not reach it. */
  sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
  scan_vtab *vt = sqlite3_malloc(sizeof(*vt));
  if( !vt ) return SQLITE_NOMEM;
  memset(vt, 0, sizeof(*vt));
  vt->db = db;
  vt->cn = aux;
  *out = &vt->base;
  return SQLITE_OK;
}

static int scanDisconnect(sqlite3_vtab *vt) {
  sqlite3_free(vt);
  return SQLITE_OK;
}

/*
** model and query are required, options optional, each as an equality on
** its hidden column. A plan in which one of them is not usable yet (a join
** that has not produced it) is refused with SQLITE_CONSTRAINT so that
** SQLite picks an order that provides it.
*/
static int scanBestIndex(sqlite3_vtab *vt, sqlite3_index_info *info) {
  int slot[3] = {-1, -1, -1}, unusable = 0;
  for(int i = 0; i < info->nConstraint; i++){
    const struct sqlite3_index_constraint *c = &info->aConstraint[i];
    if( c->iColumn < COL_MODEL || c->op != SQLITE_INDEX_CONSTRAINT_EQ ) continue;
    if( !c->usable ) unusable |= 1 << (c->iColumn - COL_MODEL);
    else slot[c->iColumn - COL_MODEL] = i;
  }
  for(int k = 0; k < 3; k++)
    if( slot[k] < 0 && (unusable & (1 << k)) ) return SQLITE_CONSTRAINT;
  if( slot[0] < 0 || slot[1] < 0 ){
    vtab_error(vt, FN ": model and query are required: "
                   FN "(model, query [, options])");
    return SQLITE_ERROR;
  }
  info->idxNum = slot[2] >= 0 ? IDX_OPTIONS : 0;
  for(int k = 0; k < 3; k++){
    if( slot[k] < 0 ) continue;
    info->aConstraintUsage[slot[k]].argvIndex = k + 1;
    info->aConstraintUsage[slot[k]].omit = 1;
  }
  /* every row of the query is decoded and scored */
  info->estimatedCost = 1e6;
  info->estimatedRows = 100000;
  return SQLITE_OK;
}

static int scanOpen(sqlite3_vtab *vt, sqlite3_vtab_cursor **out) {
  (void)vt;
  scan_cursor *cur = sqlite3_malloc(sizeof(*cur));
  if( !cur ) return SQLITE_NOMEM;
  memset(cur, 0, sizeof(*cur));
  *out = &cur->base;
  return SQLITE_OK;
}

/* Drop the rows of the chunk (keeping their blob buffers). */
static void rows_clear(scan_cursor *cur) {
  for(int i = 0; i < cur->nrows; i++){
    scan_row *r = &cur->rows[i];
    sqlite3_value_free(r->id);
    r->id = NULL;
    anom_free(r->err);
    r->err = NULL;
    r->err_code = ANOM_OK;
    r->state = ROW_NULL;
    r->nblob = 0;
  }
  cur->nrows = 0;
  cur->pos = 0;
}

/* Free everything xFilter set up. */
static void scan_reset(scan_cursor *cur) {
  rows_clear(cur);
  if( cur->rows ){
    for(int i = 0; i < cur->threads * cur->batch; i++) anom_free(cur->rows[i].blob);
  }
  anom_free(cur->rows);
  cur->rows = NULL;
  for(int t = 0; t < PARALLEL_MAX_THREADS; t++){
    scan_slot *s = &cur->slots[t];
    anom_free(s->x);
    anom_free(s->work);
    anom_free(s->res);
    anom_free(s->which);
    memset(s, 0, sizeof(*s));
  }
  sqlite3_finalize(cur->stmt);
  cur->stmt = NULL;
  cJSON_Delete(cur->opts);
  cur->opts = NULL;
  if( cur->cm ) cache_release(cur->cm);
  cur->cm = NULL;
  cur->done = 1;
  cur->rowid = 0;
}

static int scanClose(sqlite3_vtab_cursor *base) {
  scan_cursor *cur = (scan_cursor *)base;
  scan_reset(cur);
  sqlite3_free(cur);
  return SQLITE_OK;
}

/* Decode, fit and score one slice of the chunk (a parallel_for item). */
static void score_slice(void *arg, int t) {
  scan_cursor *cur = arg;
  const anom_model *m = cur->cm->model;
  scan_slot *s = &cur->slots[t];
  size_t img = (size_t)m->channels * m->height * m->width;
  int lo = t * cur->slice, hi = lo + cur->slice, k = 0;
  if( hi > cur->nrows ) hi = cur->nrows;
  anom_err_clear(&s->err);
  for(int i = lo; i < hi; i++){
    scan_row *r = &cur->rows[i];
    if( r->state != ROW_SCORED ) continue;   /* NULL image, or not a BLOB */
    image_u8 im;
    anom_err e;
    anom_err_clear(&e);
    int rc = image_decode(&im, r->blob, r->nblob, cur->max_pixels, &e);
    if( rc == ANOM_OK ){
      rc = image_to_tensor(s->x + (size_t)k * img, &im, m->width, m->height,
                           m->channels, m->fit, &e);
      image_free(&im);
    }
    if( rc ){
      r->state = ROW_FAILED;
      r->err_code = rc;
      size_t len = strlen(e.msg) + 1;
      if( rc != ANOM_ENOMEM && (r->err = anom_malloc(len)) != NULL )
        memcpy(r->err, e.msg, len);
      else
        r->err_code = ANOM_ENOMEM;
      continue;
    }
    s->which[k++] = i;
  }
  if( k == 0 ) return;
  int rc = model_score(m, k, s->x, s->work, s->res, NULL, cur->opts, &s->err);
  if( rc ){
    s->err.code = rc;
    return;
  }
  for(int j = 0; j < k; j++) cur->rows[s->which[j]].r = s->res[j];
}

/* Make slot t hold slices of n images; SQLITE_NOMEM on failure. */
static int slot_reserve(scan_slot *s, const anom_model *m, int n) {
  if( s->cap >= n ) return SQLITE_OK;
  size_t img = (size_t)m->channels * m->height * m->width;
  anom_free(s->x);
  anom_free(s->work);
  anom_free(s->res);
  anom_free(s->which);
  s->cap = 0;
  size_t nx, nw;
  s->x = s->work = NULL;
  s->res = NULL;
  s->which = NULL;
  if( anom_mul_size(img, (size_t)n, &nx) || anom_mul_size(nx, sizeof(float), &nx)
      || anom_mul_size(model_work_floats(m, n), sizeof(float), &nw) )
    return SQLITE_NOMEM;
  s->x = anom_malloc(nx);
  s->work = anom_malloc(nw);
  s->res = anom_malloc((size_t)n * sizeof(score_result));
  s->which = anom_malloc((size_t)n * sizeof(int));
  if( !s->x || !s->work || !s->res || !s->which ) return SQLITE_NOMEM;
  s->cap = n;
  return SQLITE_OK;
}

/* The row id as it reads in a message. */
static char *id_text(sqlite3_value *v) {
  switch( sqlite3_value_type(v) ){
    case SQLITE_INTEGER: return sqlite3_mprintf("%lld", sqlite3_value_int64(v));
    case SQLITE_FLOAT: return sqlite3_mprintf("%!.15g", sqlite3_value_double(v));
    case SQLITE_TEXT: return sqlite3_mprintf("'%q'", (const char *)sqlite3_value_text(v));
    case SQLITE_BLOB: return sqlite3_mprintf("x'...' (a BLOB of %d bytes)",
                                             sqlite3_value_bytes(v));
    default: return sqlite3_mprintf("NULL");
  }
}

/* Read the next chunk of the query and score it. */
static int next_chunk(scan_cursor *cur) {
  scan_vtab *vt = (scan_vtab *)cur->base.pVtab;
  cur->rowid += cur->nrows;
  rows_clear(cur);
  if( cur->done ) return SQLITE_OK;
  if( anom_is_interrupted(vt->db) ) return SQLITE_INTERRUPT;
  int cap = cur->threads * cur->batch;
  while( cur->nrows < cap ){
    int rc = sqlite3_step(cur->stmt);
    if( rc == SQLITE_DONE ){ cur->done = 1; break; }
    if( rc != SQLITE_ROW ){
      cur->done = 1;
      if( rc == SQLITE_INTERRUPT || rc == SQLITE_NOMEM ) return rc;
      vtab_error(&vt->base, FN ": query: %s", sqlite3_errmsg(vt->db));
      return rc;
    }
    scan_row *r = &cur->rows[cur->nrows++];
    r->id = sqlite3_value_dup(sqlite3_column_value(cur->stmt, 0));
    if( !r->id ) return SQLITE_NOMEM;
    int t = sqlite3_column_type(cur->stmt, 1);
    if( t == SQLITE_NULL ){
      r->state = ROW_NULL;
    }else if( t != SQLITE_BLOB ){
      r->state = ROW_FAILED;
      r->err_code = ANOM_EINVAL;
      r->err = anom_malloc(80);
      if( !r->err ) return SQLITE_NOMEM;
      snprintf(r->err, 80, ANOM_IMAGE_TYPE_ERROR, anom_type_name(t));
    }else{
      const void *b = sqlite3_column_blob(cur->stmt, 1);
      size_t n = (size_t)sqlite3_column_bytes(cur->stmt, 1);
      if( n > r->cap || !r->blob ){
        anom_free(r->blob);
        r->cap = 0;
        if( !(r->blob = anom_malloc(n)) ) return SQLITE_NOMEM;
        r->cap = n;
      }
      if( n ) memcpy(r->blob, b, n);
      r->nblob = n;
      r->state = ROW_SCORED;
    }
  }
  if( cur->nrows == 0 ) return SQLITE_OK;
  /* one slice per thread, at most batch rows each */
  int per = (cur->nrows + cur->threads - 1) / cur->threads;
  cur->slice = per < cur->batch ? per : cur->batch;
  int nslices = (cur->nrows + cur->slice - 1) / cur->slice;
  const anom_model *m = cur->cm->model;
  for(int t = 0; t < nslices; t++)
    if( slot_reserve(&cur->slots[t], m, cur->slice) ) return SQLITE_NOMEM;
  anom_err e;
  anom_err_clear(&e);
  if( parallel_for(cur->threads, nslices, score_slice, cur, &e) ){
    vtab_error(&vt->base, FN ": %s", e.msg);
    return SQLITE_ERROR;
  }
  for(int t = 0; t < nslices; t++){
    const anom_err *se = &cur->slots[t].err;
    if( se->code == ANOM_ENOMEM ) return SQLITE_NOMEM;
    if( se->code ){
      vtab_error(&vt->base, FN ": %s", se->msg);
      return SQLITE_ERROR;
    }
  }
  for(int i = 0; i < cur->nrows; i++){
    const scan_row *r = &cur->rows[i];
    if( r->state != ROW_FAILED ) continue;
    if( r->err_code == ANOM_ENOMEM ) return SQLITE_NOMEM;
    if( cur->on_error_null ) continue;
    char *id = id_text(r->id);
    if( !id ) return SQLITE_NOMEM;
    vtab_error(&vt->base, FN ": row %s: %s", id, r->err);
    sqlite3_free(id);
    return SQLITE_ERROR;
  }
  return SQLITE_OK;
}

/* An integer option from lo to hi, or the error; 1 on error. */
static int int_option(sqlite3_vtab *vt, const cJSON *v, const char *name, int lo,
                      int hi, int *out) {
  if( !cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble)
      || v->valuedouble < lo || v->valuedouble > hi ){
    vtab_error(vt, FN ": option '%s' must be an integer from %d to %d", name, lo, hi);
    return 1;
  }
  *out = (int)v->valuedouble;
  return 0;
}

/* Read options (TEXT JSON or NULL) into cur; the other keys stay in
** cur->opts for model_score. */
static int read_options(scan_cursor *cur, sqlite3_value *v) {
  sqlite3_vtab *vt = cur->base.pVtab;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  cur->threads = ncpu < 1 ? 1 : ncpu > PARALLEL_MAX_THREADS ? PARALLEL_MAX_THREADS : (int)ncpu;
  cur->batch = SCAN_BATCH;
  cur->on_error_null = 0;
  if( !v || sqlite3_value_type(v) == SQLITE_NULL ) return SQLITE_OK;
  /* the type first: reading a BLOB as text would make it TEXT */
  const char *s = sqlite3_value_type(v) == SQLITE_TEXT ? (const char *)sqlite3_value_text(v) : NULL;
  cJSON *j = s ? cJSON_Parse(s) : NULL;
  if( !j || !cJSON_IsObject(j) ){
    cJSON_Delete(j);
    vtab_error(vt, FN ": options must be a JSON object, e.g. "
                   "'{\"threads\": 2, \"batch\": 64, \"on_error\": \"null\"}'");
    return SQLITE_ERROR;
  }
  cur->opts = j;
  cJSON *it;
  if( (it = cJSON_GetObjectItemCaseSensitive(j, "threads")) != NULL ){
    if( int_option(vt, it, "threads", 1, PARALLEL_MAX_THREADS, &cur->threads) )
      return SQLITE_ERROR;
    cJSON_Delete(cJSON_DetachItemViaPointer(j, it));
  }
  if( (it = cJSON_GetObjectItemCaseSensitive(j, "batch")) != NULL ){
    if( int_option(vt, it, "batch", 1, SCAN_MAX_BATCH, &cur->batch) ) return SQLITE_ERROR;
    cJSON_Delete(cJSON_DetachItemViaPointer(j, it));
  }
  if( (it = cJSON_GetObjectItemCaseSensitive(j, "on_error")) != NULL ){
    const char *oe = cJSON_GetStringValue(it);
    if( !oe || (strcmp(oe, "fail") != 0 && strcmp(oe, "null") != 0) ){
      vtab_error(vt, FN ": option 'on_error' must be \"fail\" or \"null\"");
      return SQLITE_ERROR;
    }
    cur->on_error_null = oe[0] == 'n';
    cJSON_Delete(cJSON_DetachItemViaPointer(j, it));
  }
  if( !j->child ){
    cJSON_Delete(j);
    cur->opts = NULL;
  }
  return SQLITE_OK;
}

/* Is the prepared statement one SELECT (WITH ..., VALUES ...)? */
static int is_select(sqlite3_stmt *st) {
  if( !sqlite3_stmt_readonly(st) || sqlite3_stmt_isexplain(st) ) return 0;
  const char *z = sqlite3_sql(st);
  for(;;){
    while( *z == ' ' || *z == '\t' || *z == '\n' || *z == '\r' || *z == '\f' || *z == '(' ) z++;
    if( z[0] == '-' && z[1] == '-' ){
      while( *z && *z != '\n' ) z++;
    }else if( z[0] == '/' && z[1] == '*' ){
      const char *end = strstr(z + 2, "*/");
      z = end ? end + 2 : z + strlen(z);
    }else{
      break;
    }
  }
  return sqlite3_strnicmp(z, "SELECT", 6) == 0 || sqlite3_strnicmp(z, "WITH", 4) == 0
      || sqlite3_strnicmp(z, "VALUES", 6) == 0;
}

/* Only blanks and comments after the statement? */
static int only_blanks(const char *z) {
  while( z && *z ){
    if( *z == ' ' || *z == '\t' || *z == '\n' || *z == '\r' || *z == '\f' || *z == ';' ){
      z++;
    }else if( z[0] == '-' && z[1] == '-' ){
      while( *z && *z != '\n' ) z++;
    }else if( z[0] == '/' && z[1] == '*' ){
      const char *end = strstr(z + 2, "*/");
      if( !end ) return 1;
      z = end + 2;
    }else{
      return 0;
    }
  }
  return 1;
}

static int scanFilter(sqlite3_vtab_cursor *base, int idxNum, const char *idxStr,
                      int argc, sqlite3_value **argv) {
  (void)idxStr; (void)argc;
  scan_cursor *cur = (scan_cursor *)base;
  scan_vtab *vt = (scan_vtab *)base->pVtab;
  scan_reset(cur);
  int rc = read_options(cur, (idxNum & IDX_OPTIONS) ? argv[2] : NULL);
  if( rc ) return rc;
  cur->max_pixels = vt->cn->max_pixels;
  /* the model, looked up as anomaly_score does */
  if( sqlite3_value_type(argv[0]) != SQLITE_TEXT ){
    vtab_error(&vt->base, FN ": model must be the TEXT name of a model in "
                          "anomaly_models, got %s", anom_type_name(sqlite3_value_type(argv[0])));
    return SQLITE_ERROR;
  }
  const char *name = (const char *)sqlite3_value_text(argv[0]);
  char *zerr = NULL;
  rc = anom_registry_acquire(vt->db, name, &vt->cn->limits, &cur->cm, &zerr);
  if( rc || !cur->cm ){
    if( zerr ) vtab_error(&vt->base, FN ": %s", zerr);
    else if( rc ) vtab_error(&vt->base, FN ": reading anomaly_models: %s", sqlite3_errmsg(vt->db));
    else vtab_error(&vt->base, FN ": no model named '%s' (SELECT name FROM "
                               "anomaly_models lists them)", name);
    sqlite3_free(zerr);
    return rc == SQLITE_NOMEM ? SQLITE_NOMEM : SQLITE_ERROR;
  }
  /* the query */
  if( sqlite3_value_type(argv[1]) != SQLITE_TEXT ){
    vtab_error(&vt->base, FN ": query must be the TEXT of a SELECT of (id, image), got %s",
               anom_type_name(sqlite3_value_type(argv[1])));
    return SQLITE_ERROR;
  }
  const char *sql = (const char *)sqlite3_value_text(argv[1]), *tail = NULL;
  rc = sqlite3_prepare_v2(vt->db, sql, -1, &cur->stmt, &tail);
  if( rc ){
    vtab_error(&vt->base, FN ": query: %s", sqlite3_errmsg(vt->db));
    return rc == SQLITE_NOMEM ? SQLITE_NOMEM : SQLITE_ERROR;
  }
  if( !cur->stmt || !only_blanks(tail) || !is_select(cur->stmt) ){
    vtab_error(&vt->base, FN ": query must be one SELECT statement, e.g. "
                          "'SELECT id, image FROM photos'");
    return SQLITE_ERROR;
  }
  int ncol = sqlite3_column_count(cur->stmt);
  if( ncol < 2 ){
    vtab_error(&vt->base, FN ": query must return at least 2 columns (the row id, "
                          "then the image), found %d", ncol);
    return SQLITE_ERROR;
  }
  cur->rows = anom_calloc((size_t)cur->threads * cur->batch, sizeof(scan_row));
  if( !cur->rows ) return SQLITE_NOMEM;
  cur->done = 0;
  return next_chunk(cur);
}

static int scanNext(sqlite3_vtab_cursor *base) {
  scan_cursor *cur = (scan_cursor *)base;
  if( ++cur->pos < cur->nrows ) return SQLITE_OK;
  return next_chunk(cur);
}

static int scanEof(sqlite3_vtab_cursor *base) {
  scan_cursor *cur = (scan_cursor *)base;
  return cur->pos >= cur->nrows;
}

/* A number that reads back as the same double (as anomaly_scores writes). */
static void json_number(char *buf, size_t n, double v) {
  if( isfinite(v) ) snprintf(buf, n, "%.17g", v);
  else snprintf(buf, n, "null");
}

/* The row's parts as anomaly_scores returns them. */
static void result_parts(sqlite3_context *ctx, const score_result *r) {
  char num[40];
  json_number(num, sizeof(num), r->score);
  sqlite3_str *s = sqlite3_str_new(NULL);
  sqlite3_str_appendf(s, "{\"score\":%s", num);
  for(int i = 0; i < r->nparts; i++){
    json_number(num, sizeof(num), r->part[i]);
    sqlite3_str_appendf(s, ",\"%s\":%s", r->part_name[i], num);
  }
  sqlite3_str_appendchar(s, 1, '}');
  int len = sqlite3_str_length(s);
  char *z = sqlite3_str_finish(s);
  if( !z ){ sqlite3_result_error_nomem(ctx); return; }
  sqlite3_result_text(ctx, z, len, sqlite3_free);
  sqlite3_result_subtype(ctx, 'J');
}

static int scanColumn(sqlite3_vtab_cursor *base, sqlite3_context *ctx, int col) {
  scan_cursor *cur = (scan_cursor *)base;
  const scan_row *r = &cur->rows[cur->pos];
  switch( col ){
    case COL_ID: sqlite3_result_value(ctx, r->id); break;
    case COL_SCORE:
      if( r->state == ROW_SCORED ) sqlite3_result_double(ctx, r->r.score);
      break;
    case COL_PARTS:
      if( r->state == ROW_SCORED ) result_parts(ctx, &r->r);
      break;
    case COL_ERROR:
      if( r->state == ROW_FAILED && r->err )
        sqlite3_result_text(ctx, r->err, -1, SQLITE_TRANSIENT);
      break;
    default: break;   /* the hidden arguments read back as NULL */
  }
  return SQLITE_OK;
}

static int scanRowid(sqlite3_vtab_cursor *base, sqlite_int64 *rowid) {
  scan_cursor *cur = (scan_cursor *)base;
  *rowid = cur->rowid + cur->pos;
  return SQLITE_OK;
}

static sqlite3_module scan_module = {
  0, 0, scanConnect, scanBestIndex, scanDisconnect, 0, scanOpen, scanClose, scanFilter,
  scanNext, scanEof, scanColumn, scanRowid, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
};

int anom_register_scan(sqlite3 *db, anom_conn *cn) {
  return sqlite3_create_module(db, FN, &scan_module, cn);
}
