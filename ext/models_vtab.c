/*
** models_vtab.c - the anomaly_models registry, an eponymous virtual table
** whose rows persist in the database file.
**
**   INSERT INTO anomaly_models(name, model)
**     VALUES ('tiles', anomaly_model_from_file('tiles.safetensors'));
**   SELECT name, method, width, height, channels, params, threshold FROM anomaly_models;
**   SELECT writefile('tiles.safetensors', model) FROM anomaly_models WHERE name = 'tiles';
**   INSERT OR REPLACE INTO anomaly_models(name, model) VALUES ('tiles', ?);
**   DELETE FROM anomaly_models WHERE name = 'tiles';
**
** Columns: name (unique), method, width, height, channels, params,
** threshold, created, info (the model's JSON description) and the hidden
** model (the safetensors bytes). Only name and model are written; the
** others are read from the model, which INSERT validates completely.
**
** HOW IT WORKS: rows live in an ordinary table of the main schema,
** anomaly_models_data, created by the first INSERT. Reads and writes go
** through SQL on the same connection, so they are part of the caller's
** transaction: ROLLBACK undoes a registration, other connections see it once
** committed, and the file carries its models wherever it is copied. Every
** model read back is validated again before use (model_cache.c), as a
** database file may come from anyone.
*/
#include "anomaly_ext.h"
SQLITE_EXTENSION_INIT3

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

enum { COL_NAME, COL_METHOD, COL_WIDTH, COL_HEIGHT, COL_CHANNELS, COL_PARAMS,
       COL_THRESHOLD, COL_CREATED, COL_INFO, COL_MODEL, NCOL };

static const char *col_names[NCOL] = {"name", "method", "width", "height",
  "channels", "params", "threshold", "created", "info", "model"};

/* idxNum bits chosen by xBestIndex */
#define IDX_NAME_EQ 1   /* name = ? is argv[0] */
#define IDX_MODEL   2   /* the model column is read */

typedef struct models_vtab {
  sqlite3_vtab base;     /* Base class - must be first */
  sqlite3 *db;
  anom_conn *cn;
} models_vtab;

typedef struct models_cursor {
  sqlite3_vtab_cursor base; /* Base class - must be first */
  sqlite3_stmt *stmt;       /* over the backing table, NULL when empty */
  int eof;
} models_cursor;

static void vtab_error(sqlite3_vtab *vt, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sqlite3_free(vt->zErrMsg);
  vt->zErrMsg = sqlite3_vmprintf(fmt, ap);
  va_end(ap);
}

/* Does the backing table exist yet? */
static int store_exists(sqlite3 *db, int *exists) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, "SELECT 1 FROM main.sqlite_master WHERE "
                              "type = 'table' AND name = '" ANOM_STORE "'", -1, &st, 0);
  if( rc ) return rc;
  rc = sqlite3_step(st);
  *exists = rc == SQLITE_ROW;
  rc = sqlite3_finalize(st);
  return rc;
}

static int modelsConnect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                         sqlite3_vtab **out, char **pzErr) {
  (void)argc; (void)argv;
  int rc = sqlite3_declare_vtab(db,
      "CREATE TABLE x(name TEXT, method TEXT, width INTEGER, height INTEGER, "
      "channels INTEGER, params INTEGER, threshold REAL, created TEXT, info TEXT, "
      "model BLOB HIDDEN)");
  if( rc ){
    *pzErr = sqlite3_mprintf("anomaly_models: %s", sqlite3_errmsg(db));
    return rc;
  }
  /* Rationale: the table writes state and reads model files; a view or
  ** trigger of an untrusted schema must not reach it. */
  sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
  sqlite3_vtab_config(db, SQLITE_VTAB_CONSTRAINT_SUPPORT, 1);
  models_vtab *vt = sqlite3_malloc(sizeof(*vt));
  if( !vt ) return SQLITE_NOMEM;
  memset(vt, 0, sizeof(*vt));
  vt->db = db;
  vt->cn = aux;
  *out = &vt->base;
  return SQLITE_OK;
}

static int modelsDisconnect(sqlite3_vtab *vt) {
  sqlite3_free(vt);
  return SQLITE_OK;
}

static int modelsBestIndex(sqlite3_vtab *vt, sqlite3_index_info *info) {
  (void)vt;
  int idx = 0;
  for(int i = 0; i < info->nConstraint; i++){
    const struct sqlite3_index_constraint *c = &info->aConstraint[i];
    if( c->usable && c->iColumn == COL_NAME && c->op == SQLITE_INDEX_CONSTRAINT_EQ ){
      info->aConstraintUsage[i].argvIndex = 1;
      info->aConstraintUsage[i].omit = 1;
      idx |= IDX_NAME_EQ;
      break;
    }
  }
  if( info->colUsed & ((sqlite3_uint64)1 << COL_MODEL) ) idx |= IDX_MODEL;
  info->idxNum = idx;
  if( idx & IDX_NAME_EQ ){
    info->estimatedCost = 10;
    info->estimatedRows = 1;
    info->idxFlags = SQLITE_INDEX_SCAN_UNIQUE;
  }else{
    info->estimatedCost = 1000;
    info->estimatedRows = 100;
  }
  return SQLITE_OK;
}

static int modelsOpen(sqlite3_vtab *vt, sqlite3_vtab_cursor **out) {
  (void)vt;
  models_cursor *cur = sqlite3_malloc(sizeof(*cur));
  if( !cur ) return SQLITE_NOMEM;
  memset(cur, 0, sizeof(*cur));
  *out = &cur->base;
  return SQLITE_OK;
}

static int modelsClose(sqlite3_vtab_cursor *cur) {
  sqlite3_finalize(((models_cursor *)cur)->stmt);
  sqlite3_free(cur);
  return SQLITE_OK;
}

static int modelsNext(sqlite3_vtab_cursor *base) {
  models_cursor *cur = (models_cursor *)base;
  int rc = sqlite3_step(cur->stmt);
  if( rc == SQLITE_ROW ) return SQLITE_OK;
  cur->eof = 1;
  if( rc == SQLITE_DONE ) return SQLITE_OK;
  vtab_error(base->pVtab, "anomaly_models: %s", sqlite3_errmsg(((models_vtab *)base->pVtab)->db));
  return rc;
}

static int modelsFilter(sqlite3_vtab_cursor *base, int idxNum, const char *idxStr,
                        int argc, sqlite3_value **argv) {
  (void)idxStr; (void)argc;
  models_cursor *cur = (models_cursor *)base;
  models_vtab *vt = (models_vtab *)base->pVtab;
  sqlite3_finalize(cur->stmt);
  cur->stmt = NULL;
  cur->eof = 1;
  int exists, rc = store_exists(vt->db, &exists);
  if( rc || !exists ) return rc;
  char *sql = sqlite3_mprintf(
      "SELECT rowid, name, method, width, height, channels, params, threshold, "
      "created, info, %s FROM main." ANOM_STORE "%s ORDER BY name",
      (idxNum & IDX_MODEL) ? "model" : "NULL",
      (idxNum & IDX_NAME_EQ) ? " WHERE name = ?1" : "");
  if( !sql ) return SQLITE_NOMEM;
  rc = sqlite3_prepare_v2(vt->db, sql, -1, &cur->stmt, 0);
  sqlite3_free(sql);
  if( rc ){
    vtab_error(&vt->base, "anomaly_models: %s", sqlite3_errmsg(vt->db));
    return rc;
  }
  if( idxNum & IDX_NAME_EQ ) sqlite3_bind_value(cur->stmt, 1, argv[0]);
  cur->eof = 0;
  return modelsNext(base);
}

static int modelsEof(sqlite3_vtab_cursor *cur) {
  return ((models_cursor *)cur)->eof;
}

static int modelsColumn(sqlite3_vtab_cursor *base, sqlite3_context *ctx, int col) {
  models_cursor *cur = (models_cursor *)base;
  sqlite3_result_value(ctx, sqlite3_column_value(cur->stmt, col + 1));
  return SQLITE_OK;
}

static int modelsRowid(sqlite3_vtab_cursor *base, sqlite_int64 *rowid) {
  *rowid = sqlite3_column_int64(((models_cursor *)base)->stmt, 0);
  return SQLITE_OK;
}

/* Run one statement with an optional int64 or text argument; returns rc. */
static int exec_bind(sqlite3 *db, const char *sql, const char *text, sqlite3_int64 id) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, 0);
  if( rc ) return rc;
  if( sqlite3_bind_parameter_count(st) > 0 ){
    if( text ) sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
    else sqlite3_bind_int64(st, 1, id);
  }
  while( (rc = sqlite3_step(st)) == SQLITE_ROW ){}
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Mark the cached copies of the rows matched by where (?1 = key) stale. */
static int forget_rows(sqlite3 *db, const char *where, const char *text, sqlite3_int64 id) {
  sqlite3_stmt *st;
  char *sql = sqlite3_mprintf("SELECT model FROM main." ANOM_STORE " WHERE %s", where);
  if( !sql ) return SQLITE_NOMEM;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, 0);
  sqlite3_free(sql);
  if( rc ) return rc;
  if( text ) sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
  else sqlite3_bind_int64(st, 1, id);
  while( (rc = sqlite3_step(st)) == SQLITE_ROW ){
    const void *b = sqlite3_column_blob(st, 0);
    if( b ) cache_forget(b, (size_t)sqlite3_column_bytes(st, 0));
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int models_insert(models_vtab *vt, sqlite3_value **cols) {
  sqlite3 *db = vt->db;
  for(int i = 0; i < NCOL; i++){
    if( i == COL_NAME || i == COL_MODEL ) continue;
    if( sqlite3_value_type(cols[i]) != SQLITE_NULL ){
      vtab_error(&vt->base, "anomaly_models: column '%s' is read from the model; "
                 "insert only name and model", col_names[i]);
      return SQLITE_CONSTRAINT;
    }
  }
  if( sqlite3_value_type(cols[COL_NAME]) != SQLITE_TEXT
      || sqlite3_value_bytes(cols[COL_NAME]) == 0 ){
    vtab_error(&vt->base, "anomaly_models: name must be a non-empty text");
    return SQLITE_CONSTRAINT;
  }
  if( sqlite3_value_type(cols[COL_MODEL]) != SQLITE_BLOB ){
    vtab_error(&vt->base, "anomaly_models: model must be a BLOB (for example "
               "anomaly_model_from_file('m.safetensors')), got %s",
               sqlite3_value_type(cols[COL_MODEL]) == SQLITE_NULL ? "NULL" : "a non-BLOB value");
    return SQLITE_CONSTRAINT;
  }
  const char *name = (const char *)sqlite3_value_text(cols[COL_NAME]);
  const void *blob = sqlite3_value_blob(cols[COL_MODEL]);
  int nblob = sqlite3_value_bytes(cols[COL_MODEL]);
  if( !name || (!blob && nblob) ) return SQLITE_NOMEM;

  cached_model *cm;
  anom_err e;
  anom_err_clear(&e);
  int rc = cache_acquire(blob, (size_t)nblob, &vt->cn->limits, &cm, &e);
  if( rc ){
    vtab_error(&vt->base, "anomaly_models: invalid model '%s': %s", name, e.msg);
    return rc == ANOM_ENOMEM ? SQLITE_NOMEM : SQLITE_CONSTRAINT;
  }
  const anom_model *m = cm->model;
  char *info = NULL;
  cJSON *j = model_info(m);
  if( j ) info = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  if( !info ){ cache_release(cm); return SQLITE_NOMEM; }

  rc = exec_bind(db, "CREATE TABLE IF NOT EXISTS main." ANOM_STORE "("
                 "name TEXT PRIMARY KEY NOT NULL, method TEXT NOT NULL, "
                 "width INTEGER, height INTEGER, channels INTEGER, params INTEGER, "
                 "threshold REAL, created TEXT, info TEXT, model BLOB NOT NULL)", 0, 0);
  sqlite3_stmt *st = NULL;
  int exists = 0;
  if( rc == SQLITE_OK ){
    rc = sqlite3_prepare_v2(db, "SELECT 1 FROM main." ANOM_STORE " WHERE name = ?1",
                            -1, &st, 0);
    if( rc == SQLITE_OK ){
      sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
      exists = sqlite3_step(st) == SQLITE_ROW;
      rc = sqlite3_finalize(st);
    }
  }
  if( rc == SQLITE_OK && exists ){
    if( sqlite3_vtab_on_conflict(db) != SQLITE_REPLACE ){
      vtab_error(&vt->base, "anomaly_models: a model named '%s' exists already "
                 "(use INSERT OR REPLACE, or DELETE it first)", name);
      rc = SQLITE_CONSTRAINT;
    }else{
      rc = forget_rows(db, "name = ?1", name, 0);
      if( rc == SQLITE_OK )
        rc = exec_bind(db, "DELETE FROM main." ANOM_STORE " WHERE name = ?1", name, 0);
    }
  }
  if( rc == SQLITE_OK ){
    rc = sqlite3_prepare_v2(db, "INSERT INTO main." ANOM_STORE " VALUES(?1, ?2, ?3, "
                            "?4, ?5, ?6, ?7, coalesce(?8, strftime('%Y-%m-%dT%H:%M:%SZ', 'now')), ?9, ?10)",
                            -1, &st, 0);
    if( rc == SQLITE_OK ){
      sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
      sqlite3_bind_text(st, 2, m->ops->name, -1, SQLITE_STATIC);
      sqlite3_bind_int(st, 3, m->width);
      sqlite3_bind_int(st, 4, m->height);
      sqlite3_bind_int(st, 5, m->channels);
      sqlite3_bind_int64(st, 6, model_param_count(m));
      if( isfinite(m->threshold) ) sqlite3_bind_double(st, 7, m->threshold);
      if( m->created[0] ) sqlite3_bind_text(st, 8, m->created, -1, SQLITE_STATIC);
      sqlite3_bind_text(st, 9, info, -1, SQLITE_STATIC);
      sqlite3_bind_blob(st, 10, blob, nblob, SQLITE_STATIC);
      sqlite3_step(st);
      rc = sqlite3_finalize(st);
    }
  }
  if( rc != SQLITE_OK && rc != SQLITE_CONSTRAINT )
    vtab_error(&vt->base, "anomaly_models: %s", sqlite3_errmsg(db));
  cJSON_free(info);
  cache_release(cm);
  return rc;
}

static int modelsUpdate(sqlite3_vtab *base, int argc, sqlite3_value **argv,
                        sqlite_int64 *rowid) {
  (void)rowid;
  models_vtab *vt = (models_vtab *)base;
  int exists, rc = store_exists(vt->db, &exists);
  if( rc ) return rc;
  if( argc == 1 ){                              /* DELETE */
    if( !exists ) return SQLITE_OK;
    sqlite3_int64 id = sqlite3_value_int64(argv[0]);
    rc = forget_rows(vt->db, "rowid = ?1", NULL, id);
    if( rc == SQLITE_OK )
      rc = exec_bind(vt->db, "DELETE FROM main." ANOM_STORE " WHERE rowid = ?1", NULL, id);
    if( rc ) vtab_error(base, "anomaly_models: %s", sqlite3_errmsg(vt->db));
    return rc;
  }
  if( sqlite3_value_type(argv[0]) != SQLITE_NULL ){
    vtab_error(base, "anomaly_models: UPDATE is not supported; replace a model "
               "with INSERT OR REPLACE INTO anomaly_models(name, model) VALUES (...)");
    return SQLITE_CONSTRAINT;
  }
  return models_insert(vt, argv + 2);
}

static sqlite3_module models_module = {
  0,                 /* iVersion */
  0,                 /* xCreate - eponymous only: the table always exists */
  modelsConnect,     /* xConnect */
  modelsBestIndex,   /* xBestIndex */
  modelsDisconnect,  /* xDisconnect */
  0,                 /* xDestroy */
  modelsOpen,        /* xOpen */
  modelsClose,       /* xClose */
  modelsFilter,      /* xFilter */
  modelsNext,        /* xNext */
  modelsEof,         /* xEof */
  modelsColumn,      /* xColumn */
  modelsRowid,       /* xRowid */
  modelsUpdate,      /* xUpdate */
  0, 0, 0, 0,        /* xBegin, xSync, xCommit, xRollback */
  0,                 /* xFindFunction */
  0,                 /* xRename */
  0, 0, 0,           /* xSavepoint, xRelease, xRollbackTo */
  0                  /* xShadowName */
};

static void conn_free(void *p) { anom_free(p); }

int anom_register_models_vtab(sqlite3 *db, anom_conn *cn) {
  return sqlite3_create_module_v2(db, "anomaly_models", &models_module, cn, conn_free);
}

int anom_registry_acquire(sqlite3 *db, const char *name, const model_limits *lim,
                          cached_model **out, char **zerr) {
  *out = NULL;
  *zerr = NULL;
  int exists, rc = store_exists(db, &exists);
  if( rc || !exists ) return rc;
  sqlite3_stmt *st;
  rc = sqlite3_prepare_v2(db, "SELECT rowid, typeof(model) FROM main." ANOM_STORE
                          " WHERE name = ?1", -1, &st, 0);
  if( rc ) return rc;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if( rc != SQLITE_ROW ){
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
  }
  sqlite3_int64 rowid = sqlite3_column_int64(st, 0);
  const char *type = (const char *)sqlite3_column_text(st, 1);
  if( !type ){
    sqlite3_finalize(st);
    return SQLITE_NOMEM;
  }
  if( strcmp(type, "blob") ){
    *zerr = sqlite3_mprintf("the stored model '%s' is not a BLOB", name);
    sqlite3_finalize(st);
    return SQLITE_ERROR;
  }
  sqlite3_finalize(st);
  /* read through an incremental handle: on a cache hit only the key's
  ** 64 KiB pieces pass through memory, never a copy of the whole model */
  sqlite3_blob *bh = NULL;
  rc = sqlite3_blob_open(db, "main", ANOM_STORE, "model", rowid, 0, &bh);
  if( rc ){
    sqlite3_blob_close(bh);
    return rc;
  }
  anom_err e;
  anom_err_clear(&e);
  int arc = cache_acquire_blob(bh, lim, out, &e);
  sqlite3_blob_close(bh);
  if( arc != ANOM_OK ){
    *zerr = sqlite3_mprintf("the stored model '%s' is invalid: %s", name, e.msg);
    return arc == ANOM_ENOMEM ? SQLITE_NOMEM : SQLITE_ERROR;
  }
  return SQLITE_OK;
}
