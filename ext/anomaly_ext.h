/*
** anomaly_ext.h - what the files of ext/ share: the per-connection settings,
** the process-wide model cache and the registration functions.
**
** ext/ only translates between SQL values and core/ calls. The single piece
** of process-wide state is the model cache (model_cache.c): parsed models,
** read-only once loaded, shared between connections and threads under a
** mutex with reference counts.
*/
#ifndef ANOM_EXT_H
#define ANOM_EXT_H

#include <sqlite3ext.h>

#include "core/common.h"
#include "core/model.h"

/* Settings of one connection, changed with anomaly_config(). */
typedef struct anom_conn {
  sqlite3 *db;
  long long max_pixels;       /* image decode budget (pixels) */
  model_limits limits;        /* model file limits */
} anom_conn;

/* The registry's backing table in the main schema. */
#define ANOM_STORE "anomaly_models_data"

/* ---- model_cache.c */
typedef struct cached_model cached_model;
struct cached_model {
  uint64_t key[2];            /* hash of the model bytes */
  size_t nbytes;
  anom_model *model;          /* read-only */
  int refs;                   /* statements using it */
  int stale;                  /* its row changed: free on last release */
  uint64_t last_use;
  cached_model *next;
};

/* The parsed model for blob (loading and validating it on a miss), with a
** reference the caller gives back with cache_release. */
int cache_acquire(const void *blob, size_t n, const model_limits *lim,
                  cached_model **out, anom_err *e);
void cache_release(cached_model *c);
/* A model's row changed or went: drop its cached copy once unused. */
void cache_forget(const void *blob, size_t n);

/* ---- models_vtab.c */
/* Registers the module, which takes ownership of cn. */
int anom_register_models_vtab(sqlite3 *db, anom_conn *cn);
/* Look the model called name up in the registry of db; SQLITE_OK with
** *out NULL when there is none. */
int anom_registry_acquire(sqlite3 *db, const char *name, const model_limits *lim,
                          cached_model **out, char **zerr);

/* ---- functions.c, train.c, eval.c */
int anom_register_functions(sqlite3 *db, anom_conn *cn);
int anom_register_train(sqlite3 *db, anom_conn *cn);
int anom_register_eval(sqlite3 *db, anom_conn *cn);
/* ---- idx_vtab.c */
int anom_register_idx(sqlite3 *db);

#endif /* ANOM_EXT_H */
