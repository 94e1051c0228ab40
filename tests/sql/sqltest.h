/*
** sqltest.h - what the SQL test programs share: a connection with the
** extension loaded, and statements that must succeed or fail with a given
** message. Each test_*.c under tests/sql includes it once (static functions).
*/
#ifndef ANOM_SQLTEST_H
#define ANOM_SQLTEST_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TINY "tests/data/tiny-ganomaly.safetensors"
#define TINY64 "tests/data/tiny64rgb-ganomaly.safetensors"
#define DBFILE "build/test-registry.db"

/* The extension under test: $ANOMALY_EXT (a sanitizer build), else ./anomaly. */
static inline const char *ext_path(void) {
  const char *p = getenv("ANOMALY_EXT");
  return p && *p ? p : "./anomaly";
}

static inline sqlite3 *open_db(const char *path) {
  sqlite3 *db;
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_enable_load_extension(db, 1);
  char *err = NULL;
  int rc = sqlite3_load_extension(db, ext_path(), NULL, &err);
  if( rc ) fprintf(stderr, "load: %s\n", err);
  assert_int_equal(rc, SQLITE_OK);
  sqlite3_enable_load_extension(db, 0);
  return db;
}

static inline void exec_ok(sqlite3 *db, const char *sql) {
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, 0, 0, &err);
  if( rc ) fprintf(stderr, "sql: %s\nerror: %s\n", sql, err);
  sqlite3_free(err);
  assert_int_equal(rc, SQLITE_OK);
}

/* Run sql, which must fail with a message containing expect. */
static inline void exec_err(sqlite3 *db, const char *sql, const char *expect) {
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, 0, 0, &err);
  if( rc == SQLITE_OK || !err || !strstr(err, expect) )
    fprintf(stderr, "sql: %s\nexpected error: %s\ngot (rc %d): %s\n", sql, expect, rc,
            err ? err : "(none)");
  assert_int_not_equal(rc, SQLITE_OK);
  assert_non_null(err);
  assert_non_null(strstr(err, expect));
  sqlite3_free(err);
}

/* A prepared statement with blob bound to ?1, stepped to its first row. */
static inline sqlite3_stmt *query(sqlite3 *db, const char *sql, const void *blob, int n) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, 0);
  if( rc ) fprintf(stderr, "prepare %s: %s\n", sql, sqlite3_errmsg(db));
  assert_int_equal(rc, SQLITE_OK);
  if( blob ) sqlite3_bind_blob(st, 1, blob, n, SQLITE_TRANSIENT);
  rc = sqlite3_step(st);
  if( rc != SQLITE_ROW ) fprintf(stderr, "step %s: %s\n", sql, sqlite3_errmsg(db));
  assert_int_equal(rc, SQLITE_ROW);
  return st;
}

static inline double query_double(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = query(db, sql, NULL, 0);
  double v = sqlite3_column_double(st, 0);
  sqlite3_finalize(st);
  return v;
}

static inline long long query_int(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = query(db, sql, NULL, 0);
  long long v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

/* Run sql with blob as ?1; it must fail with expect in the message. */
static inline void blob_err(sqlite3 *db, const char *sql, const void *blob, int n,
                     const char *expect) {
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, 0), SQLITE_OK);
  sqlite3_bind_blob(st, 1, blob, n, SQLITE_TRANSIENT);
  int rc = sqlite3_step(st);
  const char *msg = sqlite3_errmsg(db);
  if( rc == SQLITE_ROW || rc == SQLITE_DONE || !strstr(msg, expect) )
    fprintf(stderr, "sql: %s\nexpected error: %s\ngot (rc %d): %s\n", sql, expect, rc, msg);
  assert_true(rc != SQLITE_ROW && rc != SQLITE_DONE);
  assert_non_null(strstr(msg, expect));
  sqlite3_finalize(st);
}

static inline unsigned char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc((size_t)size);
  assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
  fclose(f);
  *n = (size_t)size;
  return buf;
}

#endif /* ANOM_SQLTEST_H */
