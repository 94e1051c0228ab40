/*
** inspect.c - a small inspection program with sqlite-anomaly linked in.
**
** It opens a database whose table photos(id INTEGER PRIMARY KEY, image BLOB)
** fills up as a line runs, scores the rows it has not seen yet with a
** registered model (anomaly_scan: in batches, on every core), records them
** in inspected(id, score, flagged), and writes an overlay heat map of every
** flagged image into a folder. Run it again and it scores only what is new.
**
**   make static && cc -Iext -o inspect examples/c/inspect.c libsqlite_anomaly.a \
**       -lsqlite3 -lopenblas -lcjson -lm -lpthread
**   ./inspect line.db tiles out/            flag above the model's threshold
**   ./inspect line.db tiles out/ 0.25       or above a threshold of your own
**
** Prints one line per flagged image (id, score, heat map) and a summary.
** Exit status: 0 when it ran (flagged or not), 1 on any error, with the
** message on stderr.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "anomaly.h"

typedef struct scored {
  sqlite3_int64 id;
  double score;
  int null;       /* a NULL image: no score */
} scored;

static int fail(sqlite3 *db, const char *what) {
  fprintf(stderr, "inspect: %s: %s\n", what, db ? sqlite3_errmsg(db) : "out of memory");
  return 1;
}

/* Write the overlay heat map of photo id to dir/flagged-ID.png. */
static int write_map(sqlite3 *db, const char *model, sqlite3_int64 id, const char *dir,
                     char *path, size_t npath) {
  sqlite3_stmt *st;
  int rc = 1;
  if( sqlite3_prepare_v2(db, "SELECT anomaly_map(image, ?1, '{\"style\": \"overlay\"}') "
                         "FROM photos WHERE id = ?2", -1, &st, 0) ) return fail(db, "map");
  sqlite3_bind_text(st, 1, model, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, id);
  if( sqlite3_step(st) != SQLITE_ROW ){
    fail(db, "map");
  }else{
    const void *png = sqlite3_column_blob(st, 0);
    int n = sqlite3_column_bytes(st, 0);
    snprintf(path, npath, "%s/flagged-%lld.png", dir, (long long)id);
    FILE *fp = fopen(path, "wb");
    if( !fp || fwrite(png, 1, (size_t)n, fp) != (size_t)n ){
      fprintf(stderr, "inspect: cannot write %s\n", path);
    }else{
      rc = 0;
    }
    if( fp && fclose(fp) ) rc = 1;
  }
  sqlite3_finalize(st);
  return rc;
}

int main(int argc, char **argv) {
  if( argc < 4 || argc > 5 ){
    fprintf(stderr, "usage: inspect DB MODEL OUTDIR [THRESHOLD]\n");
    return 1;
  }
  const char *model = argv[2], *dir = argv[3];
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  scored *rows = NULL;
  size_t n = 0, cap = 0, flagged = 0;
  double threshold = 0;
  int status = 1;

  /* every connection opened from here on has sqlite-anomaly */
  sqlite3_auto_extension((void (*)(void))sqlite3_anomaly_init);
  if( sqlite3_open_v2(argv[1], &db, SQLITE_OPEN_READWRITE, NULL) ){ fail(db, argv[1]); goto done; }
  if( sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS inspected(id INTEGER PRIMARY KEY, "
                       "score REAL, flagged INTEGER NOT NULL)", 0, 0, 0) ){
    fail(db, "inspected"); goto done;
  }

  /* the threshold: given, or the one the model was calibrated with */
  if( argc == 5 ){
    threshold = atof(argv[4]);
  }else{
    if( sqlite3_prepare_v2(db, "SELECT threshold FROM anomaly_models WHERE name = ?1", -1, &st, 0) ){
      fail(db, "threshold"); goto done;
    }
    sqlite3_bind_text(st, 1, model, -1, SQLITE_STATIC);
    if( sqlite3_step(st) != SQLITE_ROW ){
      fprintf(stderr, "inspect: no model named '%s'\n", model); goto done;
    }
    if( sqlite3_column_type(st, 0) == SQLITE_NULL ){
      fprintf(stderr, "inspect: model '%s' has no threshold: give one\n", model); goto done;
    }
    threshold = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    st = NULL;
  }

  /* score what is new, in batches on every core; the rows are kept and
  ** recorded afterwards, not while the scan still reads photos */
  if( sqlite3_prepare_v2(db, "SELECT id, score FROM anomaly_scan(?1, 'SELECT id, image FROM "
                         "photos WHERE id NOT IN (SELECT id FROM inspected) ORDER BY id')",
                         -1, &st, 0) ){ fail(db, "scan"); goto done; }
  sqlite3_bind_text(st, 1, model, -1, SQLITE_STATIC);
  int rc;
  while( (rc = sqlite3_step(st)) == SQLITE_ROW ){
    if( n == cap ){
      cap = cap ? 2 * cap : 64;
      scored *more = realloc(rows, cap * sizeof(*rows));
      if( !more ){ fail(NULL, "scan"); goto done; }
      rows = more;
    }
    rows[n].id = sqlite3_column_int64(st, 0);
    rows[n].null = sqlite3_column_type(st, 1) == SQLITE_NULL;
    rows[n].score = sqlite3_column_double(st, 1);
    n++;
  }
  if( rc != SQLITE_DONE ){ fail(db, "scan"); goto done; }
  sqlite3_finalize(st);
  st = NULL;

  if( sqlite3_exec(db, "BEGIN", 0, 0, 0)
      || sqlite3_prepare_v2(db, "INSERT INTO inspected(id, score, flagged) VALUES (?1, ?2, ?3)",
                            -1, &st, 0) ){ fail(db, "record"); goto done; }
  for(size_t i = 0; i < n; i++){
    int flag = !rows[i].null && rows[i].score > threshold;
    char path[4096];
    if( flag ){
      if( write_map(db, model, rows[i].id, dir, path, sizeof(path)) ) goto done;
      printf("%lld %.4f %s\n", (long long)rows[i].id, rows[i].score, path);
      flagged++;
    }
    sqlite3_bind_int64(st, 1, rows[i].id);
    if( rows[i].null ) sqlite3_bind_null(st, 2);
    else sqlite3_bind_double(st, 2, rows[i].score);
    sqlite3_bind_int(st, 3, flag);
    if( sqlite3_step(st) != SQLITE_DONE ){ fail(db, "record"); goto done; }
    sqlite3_reset(st);
  }
  if( sqlite3_exec(db, "COMMIT", 0, 0, 0) ){ fail(db, "commit"); goto done; }
  printf("inspected %zu new image(s), %zu flagged over %.4f\n", n, flagged, threshold);
  status = 0;

done:
  sqlite3_finalize(st);
  if( status && db ) sqlite3_exec(db, "ROLLBACK", 0, 0, 0);
  sqlite3_close(db);
  free(rows);
  return status;
}
