/*
** fuzz_sql.h - what the SQL harnesses (fuzz_options.c, fuzz_registry.c)
** share: an in-memory database with the extension registered by a direct
** call of its entry point (ext/ is compiled with SQLITE_CORE and linked in),
** a table of small PNG images with masks, and one tiny model of every method.
**
**   sqlite3 *db = fuzz_db_open();           dies when the setup fails
**   fuzz_add_images(db);                    imgs(id, image, mask), train(id, image)
**   fuzz_add_models(db);                    models named after their methods
**   fuzz_run(db, "anomaly_score", "SELECT anomaly_score(image, ?1) FROM imgs",
**            "ganomaly", NULL, 0, NULL, 0); errors are fine, broken promises abort
**
** The models are trained here, one epoch on eight 20x20 images, at the
** smallest size and widths each method takes (GANomaly's comes from
** tests/data/tiny-ganomaly.safetensors instead, so the harnesses must run
** from the repository root, as make fuzz does). AnoGAN's latent search is
** 3 steps. The setup takes a few seconds under the sanitizers.
*/
#ifndef ANOM_FUZZ_SQL_H
#define ANOM_FUZZ_SQL_H

#include "core/common.h"
#include "core/image.h"
#include "tests/fuzz/fuzz.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ext/extension.c's entry point, linked in (ext/ is built with SQLITE_CORE) */
int sqlite3_anomaly_init(sqlite3 *db, char **pzErrMsg,
                         const sqlite3_api_routines *pApi);

#define FUZZ_NMETHODS 7

static volatile unsigned fuzz_sink;

/* The methods, and the tiny hyper-parameters of each one's model. */
static const char *const fuzz_methods[FUZZ_NMETHODS] = {"ganomaly", "skipganomaly",
  "anogan", "egbad", "alad", "defectgan", "caae"};
static const char *const fuzz_tiny[FUZZ_NMETHODS] = {
  "\"size\": 16, \"nz\": 4, \"ngf\": 4",
  "\"size\": 32, \"nz\": 4, \"ngf\": 2, \"ndf\": 2",
  "\"size\": 16, \"nz\": 4, \"ngf\": 4, \"steps\": 3",
  "\"size\": 32, \"nz\": 4, \"nf\": 2",
  "\"size\": 32, \"nz\": 4, \"nf\": 2",
  "\"size\": 16, \"nz\": 4, \"ngf\": 4, \"ndf\": 4",
  ("\"size\": 16, \"nz\": 4, \"nf\": 2, \"critic_h1\": 4, \"critic_h2\": 4, "
   "\"n_critic\": 1, \"n_critic_early\": 1")};

static inline void fuzz_die(sqlite3 *db, const char *what) {
  fprintf(stderr, "fuzz setup: %s: %s\n(run from the repository root)\n", what,
          db ? sqlite3_errmsg(db) : "");
  abort();
}

static inline void fuzz_exec(sqlite3 *db, const char *sql) {
  char *err = NULL;
  if( sqlite3_exec(db, sql, 0, 0, &err) != SQLITE_OK ){
    fprintf(stderr, "fuzz setup: %s\n", err ? err : "");
    fuzz_die(db, sql);
  }
}

static inline sqlite3 *fuzz_db_open(void) {
  sqlite3 *db;
  char *err = NULL;
  if( sqlite3_open(":memory:", &db) != SQLITE_OK ) fuzz_die(db, "sqlite3_open");
  int rc = sqlite3_anomaly_init(db, &err, NULL);
  if( rc != SQLITE_OK && rc != SQLITE_OK_LOAD_PERMANENTLY ){
    fprintf(stderr, "fuzz setup: %s\n", err ? err : "");
    fuzz_die(db, "sqlite3_anomaly_init");
  }
  return db;
}

/* A w x h image with c channels, a gradient and a bright square, as a PNG
** bound to parameter i of st. With mask set, the square's mask instead. */
static inline void fuzz_bind_png(sqlite3_stmt *st, int i, int w, int h, int c,
                                 int k, int mask) {
  unsigned char *px = anom_malloc((size_t)w * h * c), *png = NULL;
  size_t npng = 0;
  anom_err e;
  if( !px ) fuzz_die(NULL, "out of memory");
  for(int y = 0; y < h; y++){
    for(int x = 0; x < w; x++){
      int in = x >= w / 3 && x < w / 2 && y >= h / 4 && y < h / 2;
      for(int ch = 0; ch < c; ch++){
        int v = mask ? (in ? 255 : 0)
                : in ? 250 - 9 * k : (x * 9 + y * 5 + k * 31 + ch * 60) & 255;
        px[((size_t)y * w + x) * c + ch] = (unsigned char)v;
      }
    }
  }
  if( image_encode_png(&png, &npng, px, w, h, c, &e) ) fuzz_die(NULL, e.msg);
  anom_free(px);
  sqlite3_bind_blob(st, i, png, (int)npng, SQLITE_TRANSIENT);
  anom_free(png);
}

/*
** imgs(id, image, mask): four images of other sizes and channels than the
** models', two with a defect mask; train(id, image): eight 20x20 grey ones.
*/
static inline void fuzz_add_images(sqlite3 *db) {
  static const int shape[4][3] = {{20, 20, 1}, {24, 17, 3}, {9, 30, 1}, {33, 21, 3}};
  sqlite3_stmt *st;
  fuzz_exec(db, "CREATE TABLE imgs(id INTEGER PRIMARY KEY, image BLOB, mask BLOB);"
                "CREATE TABLE train(id INTEGER PRIMARY KEY, image BLOB)");
  if( sqlite3_prepare_v2(db, "INSERT INTO imgs(image, mask) VALUES (?1, ?2)", -1,
                         &st, 0) ) fuzz_die(db, "insert imgs");
  for(int k = 0; k < 4; k++){
    fuzz_bind_png(st, 1, shape[k][0], shape[k][1], shape[k][2], k, 0);
    if( k % 2 == 0 ) fuzz_bind_png(st, 2, shape[k][0], shape[k][1], 1, k, 1);
    else sqlite3_bind_null(st, 2);
    if( sqlite3_step(st) != SQLITE_DONE ) fuzz_die(db, "insert imgs");
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  if( sqlite3_prepare_v2(db, "INSERT INTO train(image) VALUES (?1)", -1, &st, 0) )
    fuzz_die(db, "insert train");
  for(int k = 0; k < 8; k++){
    fuzz_bind_png(st, 1, 20, 20, 1, k, 0);
    if( sqlite3_step(st) != SQLITE_DONE ) fuzz_die(db, "insert train");
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
}

/* One tiny model of every method, named after it. */
static inline void fuzz_add_models(sqlite3 *db) {
  char sql[512];
  fuzz_exec(db, "INSERT INTO anomaly_models(name, model) VALUES ('ganomaly', "
                "anomaly_model_from_file('tests/data/tiny-ganomaly.safetensors'))");
  for(int i = 1; i < FUZZ_NMETHODS; i++){
    snprintf(sql, sizeof(sql), "SELECT anomaly_train('%s', '%s', image, "
             "'{%s, \"epochs\": 1, \"batch\": 4, \"seed\": 1, \"quiet\": true}') "
             "FROM train ORDER BY id", fuzz_methods[i], fuzz_methods[i], fuzz_tiny[i]);
    fuzz_exec(db, sql);
  }
}

/*
** Run sql with ?1 = model and ?2 = opts (nopts bytes, -1: to the NUL), both
** TEXT, and ?3 = blob (nblob bytes); a NULL pointer leaves its parameter NULL,
** stepping through every row. Errors are expected; the promise checked is
** that an error names the function fn, as docs/sql.md says they all do
** (SQLite's own "out of memory" and "string or blob too big" aside).
*/
static inline void fuzz_run(sqlite3 *db, const char *fn, const char *sql,
                            const char *model, const char *opts, int nopts,
                            const void *blob, int nblob) {
  sqlite3_stmt *st;
  if( sqlite3_prepare_v2(db, sql, -1, &st, 0) != SQLITE_OK ) fuzz_die(db, sql);
  if( model ) sqlite3_bind_text(st, 1, model, -1, SQLITE_STATIC);
  if( opts ) sqlite3_bind_text(st, 2, opts, nopts, SQLITE_STATIC);
  if( blob ) sqlite3_bind_blob(st, 3, blob, nblob, SQLITE_STATIC);
  int rc;
  while( (rc = sqlite3_step(st)) == SQLITE_ROW ){
    /* read every byte of every value, as a program would */
    for(int i = 0; i < sqlite3_column_count(st); i++){
      const unsigned char *b = sqlite3_column_blob(st, i);
      int n = sqlite3_column_bytes(st, i);
      unsigned sum = 0;
      for(int k = 0; b && k < n; k++) sum += b[k];
      fuzz_sink = sum;
    }
  }
  if( rc != SQLITE_DONE && fn ){
    const char *msg = sqlite3_errmsg(db);
    size_t len = strlen(fn);
    int named = strncmp(msg, fn, len) == 0 && msg[len] == ':';
    int generic = strcmp(msg, "out of memory") == 0
                  || strcmp(msg, "string or blob too big") == 0;
    fuzz_check(named || generic, "an error that does not name its function", msg);
  }
  sqlite3_finalize(st);
}

#endif /* ANOM_FUZZ_SQL_H */
