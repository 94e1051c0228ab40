/*
** test_settings.c - anomaly_config('threads' [, n]) and anomaly_debug()
** (ext/settings.c).
**
** threads: reading it gives the BLAS's thread count, setting it returns
** the number in effect, which every connection then reads (OpenBLAS has one
** for the process), and each bad value is refused with its message. While
** two threads score through their own connections, a third flips the
** setting between 1 and 2 for as long as they run: no crash, no sanitizer
** report, and every score within 1e-5 of the one computed before.
** anomaly_debug: valid JSON whose fields agree with what SQL says
** elsewhere (anomaly_version, sqlite_version, anomaly_config), a cache
** count that follows a model being used, and limits that follow
** anomaly_config. The refusal from a view is in test_security.c.
*/
#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>

#include "sqltest.h"

#define PHOTOS 4
#define ROUNDS 40

static void register_tiny64(sqlite3 *db) {
  exec_ok(db, "CREATE TABLE IF NOT EXISTS photos(id INTEGER PRIMARY KEY, image BLOB)");
  for(int i = 1; i <= PHOTOS; i++){
    char path[64];
    snprintf(path, sizeof path, "tests/data/photos/%d.png", i);
    size_t n;
    unsigned char *png = slurp(path, &n);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO photos(id, image) "
                                        "VALUES (?2, ?1)", -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_blob(st, 1, png, (int)n, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, i);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    free(png);
  }
  exec_ok(db, "INSERT OR REPLACE INTO anomaly_models(name, model) "
              "VALUES ('m', anomaly_model_from_file('" TINY64 "'))");
}

/* the scores of photos 1..PHOTOS with the model 'm' */
static void scores(sqlite3 *db, double out[PHOTOS]) {
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db, "SELECT anomaly_score(image, 'm') FROM photos "
                                      "ORDER BY id", -1, &st, NULL), SQLITE_OK);
  int i = 0;
  while( sqlite3_step(st) == SQLITE_ROW ){
    assert_true(i < PHOTOS);
    out[i++] = sqlite3_column_double(st, 0);
  }
  assert_int_equal(sqlite3_finalize(st), SQLITE_OK);
  assert_int_equal(i, PHOTOS);
}

static void test_threads_setting(void **state) {
  (void)state;
  sqlite3 *a = open_db(":memory:"), *b = open_db(":memory:");
  long long was = query_int(a, "SELECT anomaly_config('threads')");
  assert_true(was >= 1);
  assert_int_equal(query_int(a, "SELECT anomaly_config('threads', 1)"), 1);
  assert_int_equal(query_int(a, "SELECT anomaly_config('threads')"), 1);
  /* process-wide: the other connection sees it */
  assert_int_equal(query_int(b, "SELECT anomaly_config('threads')"), 1);
  /* OpenBLAS may cap the number; what it returns is what is in effect */
  long long two = query_int(b, "SELECT anomaly_config('threads', 2)");
  assert_true(two >= 1 && two <= 2);
  assert_int_equal(query_int(a, "SELECT anomaly_config('threads')"), two);
  const char *msg = "anomaly_config: 'threads' must be an integer from 1 to 1024";
  exec_err(a, "SELECT anomaly_config('threads', 0)", msg);
  exec_err(a, "SELECT anomaly_config('threads', 1025)", msg);
  exec_err(a, "SELECT anomaly_config('threads', -3)", msg);
  exec_err(a, "SELECT anomaly_config('threads', 1.5)", msg);
  exec_err(a, "SELECT anomaly_config('threads', 'two')", msg);
  exec_err(a, "SELECT anomaly_config('threads', NULL)", msg);
  exec_err(a, "SELECT anomaly_config('thread')",
           "anomaly_config: unknown key 'thread' (known: max_pixels, max_model_bytes, "
           "max_model_params, max_model_side, max_train_mb, max_montage_rows, threads)");
  exec_err(a, "SELECT anomaly_config(NULL)", "anomaly_config: unknown key 'NULL'");
  /* refused values changed nothing */
  assert_int_equal(query_int(a, "SELECT anomaly_config('threads')"), two);
  assert_true(query_int(a, "SELECT anomaly_config('threads', 1024)") >= 1);
  char sql[64];
  query_int(a, sqlite3_snprintf(sizeof sql, sql, "SELECT anomaly_config('threads', %lld)", was));
  sqlite3_close(a);
  sqlite3_close(b);
}

typedef struct scorer {
  const double *want;
  int rounds, worst_ok;
  double worst;
  int done;           /* set (atomically) when the thread ends */
} scorer;

static void *score_rounds(void *p) {
  scorer *s = p;
  sqlite3 *db;
  /* cmocka's asserts must stay on the main thread: plain calls here */
  if( sqlite3_open(DBFILE, &db) != SQLITE_OK ) return NULL;
  sqlite3_enable_load_extension(db, 1);
  if( sqlite3_load_extension(db, ext_path(), NULL, NULL) != SQLITE_OK ){
    sqlite3_close(db);
    return NULL;
  }
  sqlite3_stmt *st;
  s->worst_ok = sqlite3_prepare_v2(db, "SELECT anomaly_score(image, 'm') FROM photos "
                                   "ORDER BY id", -1, &st, NULL) == SQLITE_OK;
  for(int r = 0; r < s->rounds && s->worst_ok; r++){
    int i = 0;
    while( sqlite3_step(st) == SQLITE_ROW && i < PHOTOS ){
      double d = fabs(sqlite3_column_double(st, 0) - s->want[i]) / fmax(1.0, fabs(s->want[i]));
      if( d > s->worst ) s->worst = d;
      i++;
    }
    if( sqlite3_reset(st) != SQLITE_OK || i != PHOTOS ) s->worst_ok = 0;
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  __atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
  return NULL;
}

static void test_threads_while_scoring(void **state) {
  (void)state;
  remove(DBFILE);
  sqlite3 *db = open_db(DBFILE);
  register_tiny64(db);
  long long was = query_int(db, "SELECT anomaly_config('threads')");
  double want[PHOTOS];
  scores(db, want);
  scorer s[2] = {{want, ROUNDS, 0, 0, 0}, {want, ROUNDS, 0, 0, 0}};
  pthread_t t[2];
  for(int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, score_rounds, &s[i]), 0);
  /* flip until both are done, so that every flip overlaps scoring */
  int flips = 0;
  while( !__atomic_load_n(&s[0].done, __ATOMIC_ACQUIRE)
         || !__atomic_load_n(&s[1].done, __ATOMIC_ACQUIRE) ){
    query_int(db, flips++ % 2 ? "SELECT anomaly_config('threads', 1)"
                              : "SELECT anomaly_config('threads', 2)");
  }
  for(int i = 0; i < 2; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
  printf("# %d flips while scoring; worst relative difference %.2g, %.2g\n", flips,
         s[0].worst, s[1].worst);
  assert_true(flips >= 10);
  for(int i = 0; i < 2; i++){
    assert_true(s[i].worst_ok);
    assert_true(s[i].worst <= 1e-5);
  }
  /* and after: the same scores again at either setting */
  double again[PHOTOS];
  for(int n = 1; n <= 2; n++){
    char sql[64];
    query_int(db, sqlite3_snprintf(sizeof sql, sql, "SELECT anomaly_config('threads', %d)", n));
    scores(db, again);
    for(int i = 0; i < PHOTOS; i++) assert_true(fabs(again[i] - want[i]) <= 1e-5 * fmax(1.0, want[i]));
  }
  char sql[64];
  query_int(db, sqlite3_snprintf(sizeof sql, sql, "SELECT anomaly_config('threads', %lld)", was));
  sqlite3_close(db);
  remove(DBFILE);
}

/* anomaly_debug() parsed; the caller frees it */
static cJSON *debug_json(sqlite3 *db) {
  sqlite3_stmt *st = query(db, "SELECT anomaly_debug()", NULL, 0);
  assert_int_equal(sqlite3_column_type(st, 0), SQLITE_TEXT);
  cJSON *j = cJSON_Parse((const char *)sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  assert_non_null(j);
  return j;
}

static const char *field_str(const cJSON *j, const char *obj, const char *key) {
  const cJSON *o = obj ? cJSON_GetObjectItemCaseSensitive(j, obj) : j;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if( !cJSON_IsString(v) ) fail_msg("anomaly_debug: %s.%s is not a string", obj ? obj : "", key);
  return v->valuestring;
}

static double field_num(const cJSON *j, const char *obj, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, obj), key);
  if( !cJSON_IsNumber(v) ) fail_msg("anomaly_debug: %s.%s is not a number", obj, key);
  return v->valuedouble;
}

static void test_debug(void **state) {
  (void)state;
  sqlite3 *db = open_db(":memory:");
  cJSON *j = debug_json(db);
  char *s = cJSON_PrintUnformatted(j);
  printf("# %s\n", s);
  cJSON_free(s);

  /* what it says agrees with the rest of SQL */
  sqlite3_stmt *st = query(db, "SELECT substr(anomaly_version(), 2), sqlite_version()", NULL, 0);
  assert_string_equal(field_str(j, NULL, "version"), (const char *)sqlite3_column_text(st, 0));
  assert_string_equal(field_str(j, "sqlite", "version"), (const char *)sqlite3_column_text(st, 1));
  sqlite3_finalize(st);
  assert_true(strlen(field_str(j, NULL, "commit")) > 0);
  assert_non_null(strstr(field_str(j, "build", "cflags"), "-Wall"));
  assert_string_equal(field_str(j, "build", "linked"), "loadable");
  assert_string_equal(field_str(j, "blas", "name"), "OpenBLAS");
  assert_non_null(strstr(field_str(j, "blas", "config"), "OpenBLAS"));
  /* the kernels named in the configuration are the core reported */
  assert_non_null(strstr(field_str(j, "blas", "config"), field_str(j, "blas", "core")));
  assert_int_equal((long long)field_num(j, "blas", "threads"),
                   query_int(db, "SELECT anomaly_config('threads')"));
  assert_true(field_num(j, "blas", "processors") >= 1);
  assert_true(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(
      cJSON_GetObjectItemCaseSensitive(j, "cpu"), "avx2")));
  assert_int_equal((long long)field_num(j, "limits", "max_pixels"), 64LL << 20);
  /* a run that must set OPENBLAS_CORETYPE is told so */
  const char *core = field_str(j, "blas", "core");
  if( strcmp(core, "Prescott") == 0 )
    printf("# advice: %s\n", field_str(j, "blas", "advice"));
  else
    assert_null(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "blas"),
                                                 "advice"));
  cJSON_Delete(j);

  /* the cache and the limits follow what the connection does; other tests
  ** in this program may have left models cached, so compare with before */
  j = debug_json(db);
  double models0 = field_num(j, "models_cached", "models");
  cJSON_Delete(j);
  register_tiny64(db);
  exec_ok(db, "SELECT anomaly_score(image, 'm') FROM photos");
  exec_ok(db, "SELECT anomaly_config('max_pixels', 12345)");
  j = debug_json(db);
  assert_true(field_num(j, "models_cached", "models") >= 1);
  assert_true(field_num(j, "models_cached", "models") >= models0);
  assert_true(field_num(j, "models_cached", "file_bytes") >= 1000);
  assert_int_equal((long long)field_num(j, "limits", "max_pixels"), 12345);
  cJSON_Delete(j);
  /* while a statement holds the model, it is in use */
  st = query(db, "SELECT anomaly_score(image, 'm'), anomaly_debug() ->> '$.models_cached.in_use' "
                 "FROM photos", NULL, 0);
  assert_true(sqlite3_column_int(st, 1) >= 1);
  sqlite3_finalize(st);
  sqlite3_close(db);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_threads_setting),
    cmocka_unit_test(test_threads_while_scoring),
    cmocka_unit_test(test_debug),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
