/*
** test_oom.c - out of memory anywhere in the extension, through SQL.
**
** Loads build/.../tests/anomaly_oom.so, the extension over the test build
** of core/, whose every allocation goes through a counter that can make the
** N-th one fail (anom_alloc_fail_after, core/common.h). For each statement
** below, N runs from 1 until the statement succeeds: every failure must be
** SQLITE_NOMEM ("out of memory"), never another error and never a crash, and
** afterwards the database must be intact (integrity check, the registry as
** it was, no model half-written) and the statement must work again.
*/
#include <dlfcn.h>
#include <math.h>

#include "core/image.h"
#include "sqltest.h"

static void (*fail_after)(long);

/* The OOM build beside the test programs: $ANOMALY_OOM_EXT, else the
** default build's. */
static const char *oom_path(void) {
  const char *p = getenv("ANOMALY_OOM_EXT");
  return p && *p ? p : "build/tests/anomaly_oom.so";
}

static sqlite3 *open_oom(void) {
  sqlite3 *db;
  assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
  sqlite3_enable_load_extension(db, 1);
  char *err = NULL;
  int rc = sqlite3_load_extension(db, oom_path(), "sqlite3_anomaly_init", &err);
  if( rc ) fprintf(stderr, "load %s: %s\n", oom_path(), err);
  assert_int_equal(rc, SQLITE_OK);
  void *h = dlopen(oom_path(), RTLD_NOW | RTLD_NOLOAD);
  assert_non_null(h);
  fail_after = (void (*)(long))dlsym(h, "anom_alloc_fail_after");
  assert_non_null(fail_after);
  dlclose(h);
  return db;
}

/* photos(id, image): 6 PNGs of 40 x 30, grey */
static void make_photos(sqlite3 *db) {
  exec_ok(db, "CREATE TABLE photos(id INTEGER PRIMARY KEY, image BLOB, mask BLOB)");
  for(int i = 0; i < 6; i++){
    unsigned char px[40 * 30], mk[40 * 30], *png, *mpng;
    for(int k = 0; k < 40 * 30; k++){
      px[k] = (unsigned char)(60 + (k * (i + 3)) % 50);
      mk[k] = px[k] > 90 ? 255 : 0;
    }
    size_t n, nm;
    anom_err e;
    assert_int_equal(image_encode_png(&png, &n, px, 40, 30, 1, &e), ANOM_OK);
    assert_int_equal(image_encode_png(&mpng, &nm, mk, 40, 30, 1, &e), ANOM_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO photos VALUES (?1, ?2, ?3)", -1, &st, 0),
                     SQLITE_OK);
    sqlite3_bind_int(st, 1, i);
    sqlite3_bind_blob(st, 2, png, (int)n, SQLITE_TRANSIENT);
    if( i % 2 ) sqlite3_bind_blob(st, 3, mpng, (int)nm, SQLITE_TRANSIENT);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    anom_free(png);
    anom_free(mpng);
  }
}

/* Run sql failing the 1st, 2nd, ... allocation until it succeeds. */
static void until_it_works(sqlite3 *db, const char *sql, const char *check) {
  long models = query_int(db, "SELECT count(*) FROM anomaly_models");
  long k;
  for(k = 1; k < 100000; k++){
    fail_after(k);
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, 0, 0, &err);
    fail_after(0);
    if( rc == SQLITE_OK ) break;
    if( rc != SQLITE_NOMEM ) fprintf(stderr, "%s\nallocation %ld: rc %d: %s\n", sql, k, rc, err);
    assert_int_equal(rc, SQLITE_NOMEM);
    sqlite3_free(err);
    /* nothing changed */
    assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_models"), models);
    if( k % 7 == 1 ){
      sqlite3_stmt *st = query(db, "PRAGMA integrity_check", NULL, 0);
      assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
      sqlite3_finalize(st);
    }
  }
  printf("# %ld allocations: %.60s\n", k - 1, sql);
  assert_true(k > 1);                  /* it allocates, so the loop tested something */
  if( check ) assert_int_equal(query_int(db, check), 1);
}

static void test_oom(void **state) {
  (void)state;
  sqlite3 *db = open_oom();
  make_photos(db);
  until_it_works(db, "INSERT INTO anomaly_models(name, model) VALUES ('m', "
                     "anomaly_model_from_file('" TINY "'))",
                 "SELECT count(*) = 1 FROM anomaly_models");
  until_it_works(db, "SELECT anomaly_model_info(model) FROM anomaly_models", NULL);
  until_it_works(db, "SELECT sum(anomaly_score(image, 'm')) FROM photos", NULL);
  until_it_works(db, "SELECT anomaly_scores(image, 'm') FROM photos", NULL);
  until_it_works(db, "SELECT length(anomaly_reconstruct(image, 'm')) FROM photos", NULL);
  until_it_works(db, "SELECT length(anomaly_map(image, 'm', '{\"style\": \"overlay\"}')) FROM photos", NULL);
  until_it_works(db, "SELECT length(anomaly_map(image, 'm', '{\"format\": \"f32\"}')) FROM photos", NULL);
  until_it_works(db, "SELECT length(anomaly_montage(image, 'm', id)) FROM photos", NULL);
  until_it_works(db, "SELECT anomaly_pixel_auroc(image, 'm', mask) FROM photos", NULL);
  until_it_works(db, "SELECT anomaly_auroc(id, id % 2) FROM photos", NULL);
  until_it_works(db, "SELECT anomaly_train('t', 'ganomaly', image, '{\"epochs\": 1, \"size\": 16, "
                     "\"nz\": 4, \"ngf\": 4, \"batch\": 4, \"holdout\": 0.34, \"quiet\": true}') "
                     "FROM photos",
                 "SELECT count(*) = 1 FROM anomaly_models WHERE name = 't'");
  until_it_works(db, "SELECT anomaly_train('d', 'defectgan', image, '{\"epochs\": 1, \"size\": 16, "
                     "\"nz\": 4, \"ngf\": 4, \"ndf\": 4, \"batch\": 4, \"holdout\": 0.34, "
                     "\"quiet\": true}') FROM photos",
                 "SELECT count(*) = 1 FROM anomaly_models WHERE name = 'd'");
  until_it_works(db, "SELECT length(anomaly_map(image, 'd')) FROM photos", NULL);
  sqlite3_close(db);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_oom),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
