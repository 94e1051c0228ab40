/*
** test_threads.c - one model, many connections, many threads.
**
** Four threads, each with its own connection to one database file, score the
** same model over the same rows at once: every score must equal the score a
** single thread computed first, bit for bit (the weights are shared read-only
** through the process-wide cache; scratch is per statement). Then a writer
** replaces the model while the readers keep scoring: every statement sees
** one model from its first row to its last (never a mix, never a half-read
** file), and once the replacement has committed the next statements score
** with the new one. Run under ThreadSanitizer with `make test SANITIZE=thread`.
*/
#include <math.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "core/image.h"
#include "sqltest.h"

#define THREADS 4
#define ROWS 48
#define DB "build/test-threads.db"

static double single[ROWS], replaced[ROWS];

/* ROWS 40 x 36 grey PNGs of stripes and noise into photos(id, image). */
static void make_photos(sqlite3 *db) {
  exec_ok(db, "CREATE TABLE photos(id INTEGER PRIMARY KEY, image BLOB)");
  uint32_t s = 1;
  for(int i = 0; i < ROWS; i++){
    unsigned char px[40 * 36], *png;
    for(int k = 0; k < 40 * 36; k++){
      s = s * 1664525u + 1013904223u;
      px[k] = (unsigned char)((k % 40 < 8 + i % 20 ? 200 : 40) + (s >> 28));
    }
    size_t n;
    anom_err e;
    assert_int_equal(image_encode_png(&png, &n, px, 40, 36, 1, &e), ANOM_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO photos VALUES (?1, ?2)", -1, &st, 0),
                     SQLITE_OK);
    sqlite3_bind_int(st, 1, i);
    sqlite3_bind_blob(st, 2, png, (int)n, SQLITE_TRANSIENT);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    anom_free(png);
  }
}

/* Score every row with model 'm' in one statement; returns 0, or SQLITE_BUSY
** and the like when the statement could not run. */
static int score_all(sqlite3 *db, double *out) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, "SELECT id, anomaly_score(image, 'm') FROM photos ORDER BY id",
                              -1, &st, 0);
  if( rc ) return rc;
  int i = 0;
  while( (rc = sqlite3_step(st)) == SQLITE_ROW ){
    if( i < ROWS ) out[i] = sqlite3_column_double(st, 1);
    i++;
  }
  sqlite3_finalize(st);
  if( rc != SQLITE_DONE ) return rc;
  return i == ROWS ? 0 : SQLITE_CORRUPT;
}

typedef struct reader {
  int rounds;              /* statements to run; 0: until stop is set */
  int *stop;               /* set by the writer's side when done */
  int *phase;              /* 1 once the last replacement has committed */
  int ok, old, new_, mixed, failed;
  int after, after_new;    /* statements begun after it, and those with the new model */
} reader;

static void *read_loop(void *arg) {
  reader *r = arg;
  sqlite3 *db;
  if( sqlite3_open_v2(DB, &db, SQLITE_OPEN_READWRITE, NULL) ){ r->failed++; return NULL; }
  sqlite3_busy_timeout(db, 10000);
  sqlite3_enable_load_extension(db, 1);
  if( sqlite3_load_extension(db, ext_path(), NULL, NULL) ){ r->failed++; sqlite3_close(db); return NULL; }
  double got[ROWS];
  for(int k = 0; r->rounds ? k < r->rounds : !__atomic_load_n(r->stop, __ATOMIC_ACQUIRE); k++){
    int late = r->phase && __atomic_load_n(r->phase, __ATOMIC_ACQUIRE);
    if( score_all(db, got) ){ __atomic_add_fetch(&r->failed, 1, __ATOMIC_RELEASE); continue; }
    int same_old = 1, same_new = 1;
    for(int i = 0; i < ROWS; i++){
      same_old &= got[i] == single[i];
      same_new &= got[i] == replaced[i];
    }
    if( same_old ) r->old++;
    else if( same_new ) r->new_++;
    else r->mixed++;
    r->ok++;
    if( late ){
      r->after_new += same_new;
      __atomic_add_fetch(&r->after, 1, __ATOMIC_RELEASE);
    }
  }
  sqlite3_close(db);
  return NULL;
}

static void test_threads(void **state) {
  (void)state;
  remove(DB);
  sqlite3 *db = open_db(DB);
  exec_ok(db, "PRAGMA journal_mode = WAL");
  make_photos(db);
  exec_ok(db, "INSERT INTO anomaly_models(name, model) VALUES ('m', "
              "anomaly_model_from_file('" TINY64 "'))");
  assert_int_equal(score_all(db, replaced), 0);     /* the replacement's scores */
  exec_ok(db, "INSERT OR REPLACE INTO anomaly_models(name, model) VALUES ('m', "
              "anomaly_model_from_file('" TINY "'))");
  assert_int_equal(score_all(db, single), 0);       /* one thread, the model in use */
  int differ = 0;
  for(int i = 0; i < ROWS; i++) differ += single[i] != replaced[i];
  assert_int_equal(differ, ROWS);

  /* four threads at once: the single thread's scores, bit for bit */
  pthread_t t[THREADS];
  reader r[THREADS];
  int stop = 0, phase = 0;
  for(int k = 0; k < THREADS; k++){
    r[k] = (reader){.rounds = 6, .stop = &stop};
    assert_int_equal(pthread_create(&t[k], NULL, read_loop, &r[k]), 0);
  }
  for(int k = 0; k < THREADS; k++){
    pthread_join(t[k], NULL);
    printf("# reader %d: %d statements, all the single thread's scores: %d\n", k, r[k].ok, r[k].old);
    assert_int_equal(r[k].failed, 0);
    assert_int_equal(r[k].ok, 6);
    assert_int_equal(r[k].old, 6);
  }

  /* replaced while they score: whole statements of one model or the other */
  for(int k = 0; k < THREADS; k++){
    r[k] = (reader){.rounds = 0, .stop = &stop, .phase = &phase};
    assert_int_equal(pthread_create(&t[k], NULL, read_loop, &r[k]), 0);
  }
  sqlite3_busy_timeout(db, 10000);
  for(int round = 0; round < 4; round++){
    usleep(20000);
    exec_ok(db, round % 2 == 0
      ? "INSERT OR REPLACE INTO anomaly_models(name, model) VALUES ('m', anomaly_model_from_file('" TINY64 "'))"
      : "INSERT OR REPLACE INTO anomaly_models(name, model) VALUES ('m', anomaly_model_from_file('" TINY "'))");
  }
  exec_ok(db, "INSERT OR REPLACE INTO anomaly_models(name, model) VALUES ('m', "
              "anomaly_model_from_file('" TINY64 "'))");
  /* after the last commit, each reader's next statements see the new model */
  __atomic_store_n(&phase, 1, __ATOMIC_RELEASE);
  double after[ROWS];
  assert_int_equal(score_all(db, after), 0);
  for(int i = 0; i < ROWS; i++) assert_true(after[i] == replaced[i]);
  for(int k = 0; k < THREADS; k++)      /* until each has run two statements more */
    while( __atomic_load_n(&r[k].after, __ATOMIC_ACQUIRE) < 2
           && __atomic_load_n(&r[k].failed, __ATOMIC_ACQUIRE) == 0 ) usleep(1000);
  __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
  for(int k = 0; k < THREADS; k++){
    pthread_join(t[k], NULL);
    printf("# reader %d: %d statements: %d old model, %d new, %d mixed, %d failed\n", k,
           r[k].ok, r[k].old, r[k].new_, r[k].mixed, r[k].failed);
    assert_int_equal(r[k].mixed, 0);
    assert_int_equal(r[k].failed, 0);
    assert_true(r[k].after >= 2);
    assert_int_equal(r[k].after_new, r[k].after);
  }
  /* a fresh connection now: the new model */
  sqlite3 *db2 = open_db(DB);
  double fresh[ROWS];
  assert_int_equal(score_all(db2, fresh), 0);
  for(int i = 0; i < ROWS; i++) assert_true(fresh[i] == replaced[i]);
  sqlite3_close(db2);
  sqlite3_close(db);
  remove(DB);
}

typedef struct interrupter {
  sqlite3 *db;
  int ms;
} interrupter;

static void *interrupt_later(void *arg) {
  interrupter *it = arg;
  usleep((useconds_t)it->ms * 1000);
  sqlite3_interrupt(it->db);
  return NULL;
}

/* Run sql on db with sqlite3_interrupt() after ms; returns its status and
** the seconds it took, with the message in err. */
static int run_interrupted(sqlite3 *db, const char *sql, int ms, double *secs, char **err) {
  pthread_t t;
  interrupter it = {db, ms};
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  assert_int_equal(pthread_create(&t, NULL, interrupt_later, &it), 0);
  int rc = sqlite3_exec(db, sql, 0, 0, err);
  pthread_join(t, NULL);
  clock_gettime(CLOCK_MONOTONIC, &b);
  *secs = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
  return rc;
}

/*
** sqlite3_interrupt stops a long anomaly_train, during its scan or its
** training, within a batch, and writes no model; and a long scan of scores.
*/
static void test_interrupt(void **state) {
  (void)state;
  remove(DB);
  sqlite3 *db = open_db(DB);
  make_photos(db);
  exec_ok(db, "CREATE TABLE many AS SELECT p.image FROM photos p, photos q");  /* 2,304 rows */
  const char *train = "SELECT anomaly_train('long', 'ganomaly', image, '{\"epochs\": 500, "
                      "\"size\": 32, \"ngf\": 8, \"nz\": 8, \"quiet\": true}') FROM many";
  /* during the training: after the scan, which a one-epoch training
  ** bounds (a fraction of a second here, many seconds under a sanitizer) */
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  exec_ok(db, "SELECT anomaly_train('once', 'ganomaly', image, '{\"epochs\": 1, "
              "\"size\": 32, \"ngf\": 8, \"nz\": 8, \"quiet\": true}') FROM many");
  clock_gettime(CLOCK_MONOTONIC, &b);
  exec_ok(db, "DELETE FROM anomaly_models WHERE name = 'once'");
  double once = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
  int delay = 1500 + (int)(1500 * once);
  double secs;
  char *err = NULL;
  int rc = run_interrupted(db, train, delay, &secs, &err);
  printf("# interrupted training %.2f s after the interrupt (one epoch took %.2f s): %s\n",
         secs - delay / 1e3, once, err ? err : "(no error)");
  assert_int_equal(rc, SQLITE_INTERRUPT);
  assert_non_null(strstr(err, "anomaly_train: interrupted; no model was written"));
  assert_true(secs - delay / 1e3 < 10);      /* it stops within a batch */
  sqlite3_free(err);
  /* during the scan */
  rc = run_interrupted(db, train, 20, &secs, &err);
  printf("# interrupted scan after %.2f s: %s\n", secs, err ? err : "(no error)");
  assert_int_equal(rc, SQLITE_INTERRUPT);
  assert_true(secs < 10);
  sqlite3_free(err);
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_models WHERE name = 'long'"), 0);
  /* a scoring scan */
  exec_ok(db, "INSERT INTO anomaly_models(name, model) VALUES ('m', anomaly_model_from_file('" TINY64 "'))");
  rc = run_interrupted(db, "SELECT sum(anomaly_score(p.image, 'm')) FROM many p, photos", 300,
                       &secs, &err);
  printf("# interrupted scoring scan after %.2f s: %s\n", secs, err ? err : "(no error)");
  assert_int_equal(rc, SQLITE_INTERRUPT);
  sqlite3_free(err);
  /* the connection works on */
  assert_true(query_double(db, "SELECT anomaly_score(image, 'm') FROM photos WHERE id = 1") > 0);
  sqlite3_close(db);
  remove(DB);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_threads),
    cmocka_unit_test(test_interrupt),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
