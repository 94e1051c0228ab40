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
  long long max_train_mb;     /* the most anomaly_train's memory_mb may be */
  long long max_montage_rows; /* rows an anomaly_montage may hold */
} anom_conn;

/* The default of max_train_mb. */
#define ANOM_TRAIN_MB 2048

/* The default of max_montage_rows. */
#define ANOM_MONTAGE_ROWS 64

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
/* The same for a stored model open as an incremental BLOB: the key is read
** in pieces, and the whole model only on a miss. */
int cache_acquire_blob(sqlite3_blob *bh, const model_limits *lim, cached_model **out,
                       anom_err *e);
void cache_release(cached_model *c);
/* A model's row changed or went: drop its cached copy once unused. */
void cache_forget(const void *blob, size_t n);
/* What the cache holds now: models, how many a statement uses, and the
** bytes of their files. */
void cache_stats(int *models, int *in_use, size_t *file_bytes);

/* ---- models_vtab.c */
/* Registers the module, which takes ownership of cn. */
int anom_register_models_vtab(sqlite3 *db, anom_conn *cn);
/* Look the model called name up in the registry of db; SQLITE_OK with
** *out NULL when there is none. */
int anom_registry_acquire(sqlite3 *db, const char *name, const model_limits *lim,
                          cached_model **out, char **zerr);

/* ---- functions.c: what the functions that score images share */
struct image_u8;

/* A model prepared for one statement: a cache reference and scratch. */
typedef struct stmt_model {
  cached_model *cm;   /* reference into the process-wide cache */
  float *x;           /* (C, H, W) input tensor */
  float *work;        /* model_work_floats(m, 1) */
  float *recon;       /* (C, H, W) reconstruction */
  float *map;         /* (H, W) anomaly map */
  float *tmp;         /* (H, W) scratch */
} stmt_model;

/* The model named by the TEXT value name_value, prepared; NULL with the
** error set on ctx (messages start with fn). */
stmt_model *anom_stmt_model_open(sqlite3_context *ctx, const char *fn,
                                 sqlite3_value *name_value);
void anom_stmt_model_free(void *sm);

/*
** Decode the image BLOB v into sm->x, fitted to the model. Returns 1 when a
** result is set instead: NULL for a NULL value, else an error. When keep is
** not NULL it receives the decoded image (free with image_free).
*/
int anom_decode(sqlite3_context *ctx, const char *fn, sqlite3_value *v,
                const stmt_model *sm, struct image_u8 *keep);

/* Set an error formatted as sqlite3_mprintf does (out of memory as
** SQLITE_NOMEM); messages start with the function's name. */
void anom_result_errorf(sqlite3_context *ctx, const char *fmt, ...);

/* Set a core error on ctx as "fn: msg" (out of memory as SQLITE_NOMEM). */
void anom_result_error(sqlite3_context *ctx, const char *fn, int rc, const char *msg);
const char *anom_type_name(int sqlite_type);

/* The message for an image value of the wrong type (%s: anom_type_name). */
#define ANOM_IMAGE_TYPE_ERROR "image must be a BLOB (PNG, JPEG, BMP, GIF or PNM), got %s"

/* 1, with "string or blob too big" set on ctx, when a result of n bytes
** would pass the connection's SQLITE_LIMIT_LENGTH. */
int anom_too_big(sqlite3_context *ctx, size_t n);

/* Set (h, w, c) bytes as a PNG result of ctx, or the error (the encoder's,
** or "string or blob too big"). */
void anom_result_png(sqlite3_context *ctx, const char *fn, const unsigned char *px,
                     int w, int h, int c);

/*
** Whether sqlite3_interrupt() was called on db while a statement runs:
** sqlite3_is_interrupted() on SQLite 3.41 and later (also when built with
** older headers); before 3.41, whether a trivial statement fails with
** SQLITE_INTERRUPT, which works while the interrupted statement is active.
*/
int anom_is_interrupted(sqlite3 *db);

/* ---- functions.c, train.c, eval.c, maps.c */
int anom_register_functions(sqlite3 *db, anom_conn *cn);
int anom_register_train(sqlite3 *db, anom_conn *cn);
int anom_register_eval(sqlite3 *db, anom_conn *cn);
int anom_register_maps(sqlite3 *db, anom_conn *cn);
/* ---- idx_vtab.c */
int anom_register_idx(sqlite3 *db);
/* ---- scan.c */
int anom_register_scan(sqlite3 *db, anom_conn *cn);
/* ---- settings.c: anomaly_config and anomaly_debug */
int anom_register_settings(sqlite3 *db, anom_conn *cn);

#endif /* ANOM_EXT_H */
