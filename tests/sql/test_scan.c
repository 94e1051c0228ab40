/*
** test_scan.c - anomaly_scan(model, query [, options]), the batched,
** multi-threaded table-valued form of anomaly_score (ext/scan.c).
**
** Over 150 synthetic PNGs: for threads 1, 2, 3 and batch 1, 7, 64 the scan
** returns the rows in the query's order, and every score and part equals
** anomaly_score's and anomaly_scores': bit for bit with batch 1 (the same
** model_score call on the same tensor, whatever the thread), and within
** 1e-5 of max(1, |score|) with larger batches. Images never mix in a batch,
** but a layer runs one GEMM over several images (core/layers/conv2d.c),
** and OpenBLAS rounds an output element differently when the GEMM is wider
** (other kernel tails and blocking): activations differ in their last
** float32 bits, and the latent score, a mean of squared differences of two
** nearly equal vectors, magnifies that to 2.6e-6 relative on the tiny
** model (1.5e-6 on models/fashion-ganomaly-class0). The same for AnoGAN
** with a scoring option passed through. Then: on_error "fail" and
** "null" with a NULL row, a TEXT row, a non-image row and an image over
** max_pixels; the exact message of every bad argument; sqlite3_interrupt
** from inside the query and from the reader; a query of no rows; the model
** taken from a join; and the SQLITE_VTAB_DIRECTONLY refusal inside a view
** and a trigger.
*/
#include <cjson/cJSON.h>
#include <math.h>

#include "core/image.h"
#include "sqltest.h"

#define ROWS 150
#define TINY_ANOGAN "tests/data/tiny-anogan.safetensors"

/* The reference scores and parts, by id (1..ROWS). */
static double ref_score[ROWS + 1];
static char *ref_parts[ROWS + 1];

/* A 40 x 36 grey PNG of stripes and noise, different for every i. */
static unsigned char *make_png(int i, size_t *n) {
  unsigned char px[40 * 36], *png;
  uint32_t s = (uint32_t)i * 2654435761u + 1;
  for(int k = 0; k < 40 * 36; k++){
    s = s * 1664525u + 1013904223u;
    px[k] = (unsigned char)((k % 40 < 4 + i % 30 ? 200 - i : 30 + i / 2) + (s >> 27));
  }
  anom_err e;
  assert_int_equal(image_encode_png(&png, n, px, 40, 36, 1, &e), ANOM_OK);
  return png;
}

static void insert_blob(sqlite3 *db, const char *table, int id, const void *b, size_t n) {
  char sql[120];
  snprintf(sql, sizeof(sql), "INSERT INTO %s(id, image) VALUES (?1, ?2)", table);
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, 0), SQLITE_OK);
  sqlite3_bind_int(st, 1, id);
  sqlite3_bind_blob(st, 2, b, (int)n, SQLITE_TRANSIENT);
  assert_int_equal(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
}

/* photos(id, image) with ROWS images, models 'm' (GANomaly) and 'a' (AnoGAN). */
static sqlite3 *setup(void) {
  sqlite3 *db = open_db(":memory:");
  exec_ok(db, "CREATE TABLE photos(id INTEGER PRIMARY KEY, image BLOB)");
  for(int i = 1; i <= ROWS; i++){
    size_t n;
    unsigned char *png = make_png(i, &n);
    insert_blob(db, "photos", i, png, n);
    anom_free(png);
  }
  exec_ok(db, "INSERT INTO anomaly_models(name, model) VALUES "
              "('m', anomaly_model_from_file('" TINY "')), "
              "('a', anomaly_model_from_file('" TINY_ANOGAN "'))");
  return db;
}

/* anomaly_score and anomaly_scores of every row into ref_*. */
static void reference(sqlite3 *db, const char *model, const char *opts, int nrows) {
  char sql[300];
  snprintf(sql, sizeof(sql), "SELECT id, anomaly_score(image, '%s'%s%s%s), "
           "anomaly_scores(image, '%s'%s%s%s) FROM photos", model,
           opts ? ", '" : "", opts ? opts : "", opts ? "'" : "", model,
           opts ? ", '" : "", opts ? opts : "", opts ? "'" : "");
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, 0), SQLITE_OK);
  int n = 0;
  while( sqlite3_step(st) == SQLITE_ROW ){
    int id = sqlite3_column_int(st, 0);
    ref_score[id] = sqlite3_column_double(st, 1);
    free(ref_parts[id]);
    ref_parts[id] = strdup((const char *)sqlite3_column_text(st, 2));
    n++;
  }
  assert_int_equal(sqlite3_finalize(st), SQLITE_OK);
  assert_int_equal(n, nrows);
}

static void free_reference(void) {
  for(int i = 0; i <= ROWS; i++){ free(ref_parts[i]); ref_parts[i] = NULL; }
}

/* Within 1e-5 of max(1, |want|) (see the top of the file). */
static int close_to(double got, double want) {
  int ok = fabs(got - want) <= 1e-5 * fmax(1, fabs(want));
  if( !ok ) fprintf(stderr, "scan %.17g, anomaly_score %.17g\n", got, want);
  return ok;
}

/* Two JSON objects of parts: the same keys in the same order, close values. */
static void same_parts(const char *got, const char *want) {
  cJSON *g = cJSON_Parse(got), *w = cJSON_Parse(want);
  assert_non_null(g);
  assert_non_null(w);
  assert_int_equal(cJSON_GetArraySize(g), cJSON_GetArraySize(w));
  const cJSON *a = g->child, *b = w->child;
  for(; a && b; a = a->next, b = b->next){
    assert_string_equal(a->string, b->string);
    assert_true(close_to(a->valuedouble, b->valuedouble));
  }
  cJSON_Delete(g);
  cJSON_Delete(w);
}

/*
** Scan the rows (ordered by (id * 37) % 151, a permutation) with options and
** check each row: its id in the query's order, score and parts equal to the
** reference (bit for bit when exact, else close_to), error NULL. Returns the
** rows seen.
*/
static int check_scan(sqlite3 *db, const char *model, const char *options, int nrows,
                      const char *where, int exact) {
  char sql[400];
  snprintf(sql, sizeof(sql), "SELECT id, score, parts, error FROM anomaly_scan('%s', "
           "'SELECT id, image FROM photos %s ORDER BY (id * 37) %% 151', '%s')",
           model, where, options);
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, 0);
  if( rc ) fprintf(stderr, "prepare %s: %s\n", sql, sqlite3_errmsg(db));
  assert_int_equal(rc, SQLITE_OK);
  int n = 0, prev_key = -1;
  while( (rc = sqlite3_step(st)) == SQLITE_ROW ){
    assert_int_equal(sqlite3_column_type(st, 0), SQLITE_INTEGER);
    int id = sqlite3_column_int(st, 0);
    assert_true(id >= 1 && id <= nrows);
    int key = (id * 37) % 151;
    assert_true(key > prev_key);          /* the query's order */
    prev_key = key;
    double s = sqlite3_column_double(st, 1);
    const char *parts = (const char *)sqlite3_column_text(st, 2);
    if( exact ){
      assert_memory_equal(&s, &ref_score[id], sizeof(s));
      assert_string_equal(parts, ref_parts[id]);
    }else{
      assert_true(close_to(s, ref_score[id]));
      same_parts(parts, ref_parts[id]);
    }
    assert_int_equal(sqlite3_column_type(st, 3), SQLITE_NULL);
    n++;
  }
  if( rc != SQLITE_DONE ) fprintf(stderr, "step %s: %s\n", sql, sqlite3_errmsg(db));
  assert_int_equal(rc, SQLITE_DONE);
  assert_int_equal(sqlite3_finalize(st), SQLITE_OK);
  return n;
}

static void test_matches_score(void **state) {
  (void)state;
  sqlite3 *db = setup();
  reference(db, "m", NULL, ROWS);
  static const int threads[] = {1, 2, 3}, batch[] = {1, 7, 64};
  for(int t = 0; t < 3; t++){
    for(int b = 0; b < 3; b++){
      char opts[80];
      snprintf(opts, sizeof(opts), "{\"threads\": %d, \"batch\": %d}", threads[t], batch[b]);
      assert_int_equal(check_scan(db, "m", opts, ROWS, "", batch[b] == 1), ROWS);
    }
  }
  /* the defaults, and a chunk that is not full */
  assert_int_equal(check_scan(db, "m", "{}", ROWS, "", 0), ROWS);
  assert_int_equal(check_scan(db, "m", "{\"threads\": 3, \"batch\": 64}", ROWS,
                              "WHERE id % 10 = 3", 0), 15);
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_scan('m', "
                                 "'SELECT id, image FROM photos')"), ROWS);
  /* a sum over the scan equals the sum over anomaly_score */
  double a = query_double(db, "SELECT sum(anomaly_score(image, 'm')) FROM "
                              "(SELECT image FROM photos ORDER BY id)");
  double b = query_double(db, "SELECT sum(score) FROM anomaly_scan('m', "
                              "'SELECT id, image FROM photos ORDER BY id', '{\"threads\": 2}')");
  assert_true(close_to(b, a));
  /* ids come back as they are: TEXT, REAL, NULL */
  sqlite3_stmt *st = query(db, "SELECT id, typeof(id), score FROM anomaly_scan('m', "
                               "'SELECT ''p'' || id, image FROM photos WHERE id = 5 "
                               "UNION ALL SELECT 2.5, image FROM photos WHERE id = 6 "
                               "UNION ALL SELECT NULL, image FROM photos WHERE id = 7')",
                           NULL, 0);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "p5");
  assert_string_equal((const char *)sqlite3_column_text(st, 1), "text");
  assert_true(close_to(sqlite3_column_double(st, 2), ref_score[5]));
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_true(sqlite3_column_double(st, 0) == 2.5);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_int_equal(sqlite3_column_type(st, 0), SQLITE_NULL);
  assert_true(close_to(sqlite3_column_double(st, 2), ref_score[7]));
  assert_int_equal(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
  free_reference();
  sqlite3_close(db);
}

/* Scoring options other than threads, batch and on_error reach the method. */
static void test_scoring_options(void **state) {
  (void)state;
  sqlite3 *db = setup();
  exec_ok(db, "DELETE FROM photos WHERE id > 40");
  reference(db, "a", "{\"steps\": 3}", 40);
  assert_int_equal(check_scan(db, "a", "{\"steps\": 3, \"threads\": 2, \"batch\": 7}", 40, "", 0),
                   40);
  /* another steps gives another score: the option reaches the search */
  double s3 = query_double(db, "SELECT score FROM anomaly_scan('a', "
                               "'SELECT id, image FROM photos WHERE id = 1', '{\"steps\": 3}')");
  double s0 = query_double(db, "SELECT score FROM anomaly_scan('a', "
                               "'SELECT id, image FROM photos WHERE id = 1', '{\"steps\": 1}')");
  assert_true(s3 != s0);
  exec_err(db, "SELECT * FROM anomaly_scan('m', 'SELECT id, image FROM photos', "
               "'{\"steps\": 3}')",
           "anomaly_scan: ganomaly takes no scoring options, found 'steps'");
  free_reference();
  sqlite3_close(db);
}

/* odd(id, image): 1 good, 2 NULL, 3 TEXT, 4 not an image, 5 good. */
static sqlite3 *setup_odd(void) {
  sqlite3 *db = setup();
  exec_ok(db, "CREATE TABLE odd(id INTEGER PRIMARY KEY, image BLOB);"
              "INSERT INTO odd SELECT 1, image FROM photos WHERE id = 11;"
              "INSERT INTO odd VALUES (2, NULL), (3, 'a picture'), (4, x'01020304');"
              "INSERT INTO odd SELECT 5, image FROM photos WHERE id = 12;");
  return db;
}

static void test_on_error(void **state) {
  (void)state;
  sqlite3 *db = setup_odd();
  double s11 = query_double(db, "SELECT anomaly_score(image, 'm') FROM photos WHERE id = 11");
  double s12 = query_double(db, "SELECT anomaly_score(image, 'm') FROM photos WHERE id = 12");
  /* fail (the default): the first bad row in the query's order, by id */
  exec_err(db, "SELECT * FROM anomaly_scan('m', 'SELECT id, image FROM odd ORDER BY id')",
           "anomaly_scan: row 3: image must be a BLOB (PNG, JPEG, BMP, GIF or PNM), got TEXT");
  exec_err(db, "SELECT * FROM anomaly_scan('m', 'SELECT id, image FROM odd ORDER BY id DESC', "
               "'{\"on_error\": \"fail\", \"threads\": 2, \"batch\": 1}')",
           "anomaly_scan: row 4: not a supported image (PNG, JPEG, BMP, GIF, PNM)");
  exec_err(db, "SELECT * FROM anomaly_scan('m', 'SELECT ''r'' || id, image FROM odd WHERE id = 4')",
           "anomaly_scan: row 'r4': not a supported image");
  /* a NULL image is no error: a NULL score, as anomaly_score(NULL, ...) */
  sqlite3_stmt *st = query(db, "SELECT id, score, parts, error FROM anomaly_scan('m', "
                               "'SELECT id, image FROM odd WHERE id IN (1, 2, 5) ORDER BY id')",
                           NULL, 0);
  assert_true(close_to(sqlite3_column_double(st, 1), s11));
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_int_equal(sqlite3_column_int(st, 0), 2);
  for(int c = 1; c < 4; c++) assert_int_equal(sqlite3_column_type(st, c), SQLITE_NULL);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_true(close_to(sqlite3_column_double(st, 1), s12));
  assert_int_equal(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
  /* null: every row, the bad ones with their message */
  static const char *const want_err[6] = {NULL, NULL, NULL,
    "image must be a BLOB (PNG, JPEG, BMP, GIF or PNM), got TEXT",
    "not a supported image (PNG, JPEG, BMP, GIF, PNM)", NULL};
  for(int threads = 1; threads <= 3; threads++){
    char sql[300];
    snprintf(sql, sizeof(sql), "SELECT id, score, error FROM anomaly_scan('m', "
             "'SELECT id, image FROM odd ORDER BY id', "
             "'{\"on_error\": \"null\", \"threads\": %d, \"batch\": 2}')", threads);
    st = query(db, sql, NULL, 0);
    for(int id = 1; id <= 5; id++){
      if( id > 1 ) assert_int_equal(sqlite3_step(st), SQLITE_ROW);
      assert_int_equal(sqlite3_column_int(st, 0), id);
      if( id == 1 || id == 5 ) assert_true(close_to(sqlite3_column_double(st, 1), id == 1 ? s11 : s12));
      else assert_int_equal(sqlite3_column_type(st, 1), SQLITE_NULL);
      if( want_err[id] ){
        const char *err = (const char *)sqlite3_column_text(st, 2);
        assert_non_null(err);
        assert_non_null(strstr(err, want_err[id]));
      }else{
        assert_int_equal(sqlite3_column_type(st, 2), SQLITE_NULL);
      }
    }
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
  }
  /* the connection's decode budget applies */
  exec_ok(db, "SELECT anomaly_config('max_pixels', 1000)");
  exec_err(db, "SELECT * FROM anomaly_scan('m', 'SELECT id, image FROM odd WHERE id = 5')",
           "anomaly_scan: row 5: image is 40x36 (0.0 Mpixel), over the 0.0 Mpixel limit");
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_scan('m', 'SELECT id, image "
                                 "FROM photos', '{\"on_error\": \"null\"}') WHERE error LIKE "
                                 "'%over the 0.0 Mpixel limit'"), ROWS);
  exec_ok(db, "SELECT anomaly_config('max_pixels', 67108864)");
  sqlite3_close(db);
}

static void test_argument_errors(void **state) {
  (void)state;
  sqlite3 *db = setup();
  static const struct { const char *sql, *msg; } cases[] = {
    {"SELECT * FROM anomaly_scan('m')",
     "anomaly_scan: model and query are required: anomaly_scan(model, query [, options])"},
    {"SELECT * FROM anomaly_scan",
     "anomaly_scan: model and query are required"},
    {"SELECT * FROM anomaly_scan(NULL, 'SELECT id, image FROM photos')",
     "anomaly_scan: model must be the TEXT name of a model in anomaly_models, got NULL"},
    {"SELECT * FROM anomaly_scan(3, 'SELECT id, image FROM photos')",
     "anomaly_scan: model must be the TEXT name of a model in anomaly_models, got INTEGER"},
    {"SELECT * FROM anomaly_scan('mm', 'SELECT id, image FROM photos')",
     "anomaly_scan: no model named 'mm' (SELECT name FROM anomaly_models lists them)"},
    {"SELECT * FROM anomaly_scan('m', NULL)",
     "anomaly_scan: query must be the TEXT of a SELECT of (id, image), got NULL"},
    {"SELECT * FROM anomaly_scan('m', 'SELECT id, image FROM nowhere')",
     "anomaly_scan: query: no such table: nowhere"},
    {"SELECT * FROM anomaly_scan('m', 'SELEC id')",
     "anomaly_scan: query: near \"SELEC\": syntax error"},
    {"SELECT * FROM anomaly_scan('m', '')",
     "anomaly_scan: query must be one SELECT statement, e.g. 'SELECT id, image FROM photos'"},
    {"SELECT * FROM anomaly_scan('m', 'SELECT id, image FROM photos; DELETE FROM photos')",
     "anomaly_scan: query must be one SELECT statement"},
    {"SELECT * FROM anomaly_scan('m', 'DELETE FROM photos RETURNING id, image')",
     "anomaly_scan: query must be one SELECT statement"},
    {"SELECT * FROM anomaly_scan('m', 'EXPLAIN SELECT id, image FROM photos')",
     "anomaly_scan: query must be one SELECT statement"},
    {"SELECT * FROM anomaly_scan('m', 'PRAGMA table_info(photos)')",
     "anomaly_scan: query must be one SELECT statement"},
    {"SELECT * FROM anomaly_scan('m', 'SELECT image FROM photos')",
     "anomaly_scan: query must return at least 2 columns (the row id, then the image), found 1"},
    {"SELECT * FROM anomaly_scan('m', 'SELECT id, image FROM photos', 'threads')",
     "anomaly_scan: options must be a JSON object, e.g. '{\"threads\": 2, \"batch\": 64, "
     "\"on_error\": \"null\"}'"},
    {"SELECT * FROM anomaly_scan('m', 'SELECT id, image FROM photos', '[2]')",
     "anomaly_scan: options must be a JSON object"},
    {"SELECT * FROM anomaly_scan('m', 'SELECT id, image FROM photos', x'7b7d')",
     "anomaly_scan: options must be a JSON object"},
    {"SELECT * FROM anomaly_scan('m', 'SELECT id, image FROM photos', '{\"threads\": 0}')",
     "anomaly_scan: option 'threads' must be an integer from 1 to 64"},
    {"SELECT * FROM anomaly_scan('m', 'SELECT id, image FROM photos', '{\"threads\": 65}')",
     "anomaly_scan: option 'threads' must be an integer from 1 to 64"},
    {"SELECT * FROM anomaly_scan('m', 'SELECT id, image FROM photos', '{\"threads\": 1.5}')",
     "anomaly_scan: option 'threads' must be an integer from 1 to 64"},
    {"SELECT * FROM anomaly_scan('m', 'SELECT id, image FROM photos', '{\"batch\": \"8\"}')",
     "anomaly_scan: option 'batch' must be an integer from 1 to 1024"},
    {"SELECT * FROM anomaly_scan('m', 'SELECT id, image FROM photos', '{\"batch\": 1025}')",
     "anomaly_scan: option 'batch' must be an integer from 1 to 1024"},
    {"SELECT * FROM anomaly_scan('m', 'SELECT id, image FROM photos', '{\"on_error\": \"skip\"}')",
     "anomaly_scan: option 'on_error' must be \"fail\" or \"null\""},
  };
  for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    exec_err(db, cases[i].sql, cases[i].msg);
  /* nothing ran: the DELETEs above were refused before a step */
  assert_int_equal(query_int(db, "SELECT count(*) FROM photos"), ROWS);
  /* a NULL options argument is the defaults */
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_scan('m', "
                                 "'SELECT id, image FROM photos', NULL)"), ROWS);
  /* a comment and a semicolon after the SELECT are fine; WITH and VALUES too */
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_scan('m', "
                                 "'SELECT id, image FROM photos; -- all', NULL)"), ROWS);
  assert_int_equal(query_int(db, "SELECT count(score) FROM anomaly_scan('m', "
                                 "'WITH p AS (SELECT * FROM photos WHERE id < 4) "
                                 "SELECT id, image FROM p')"), 3);
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_scan('m', "
                                 "'VALUES (1, NULL), (2, NULL)')"), 2);
  sqlite3_close(db);
}

/* trip(id): interrupts the connection when id is 70; always 1. */
static void trip_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  if( sqlite3_value_int(argv[0]) == 70 ) sqlite3_interrupt(sqlite3_user_data(ctx));
  sqlite3_result_int(ctx, 1);
}

static void test_interrupt(void **state) {
  (void)state;
  sqlite3 *db = setup();
  assert_int_equal(sqlite3_create_function(db, "trip", 1, SQLITE_UTF8, db, trip_func, 0, 0),
                   SQLITE_OK);
  /* from inside the query, while it reads the third chunk */
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db, "SELECT id FROM anomaly_scan('m', "
                                      "'SELECT id, image FROM photos WHERE trip(id) ORDER BY id', "
                                      "'{\"threads\": 2, \"batch\": 16}')", -1, &st, 0), SQLITE_OK);
  int n = 0, rc;
  while( (rc = sqlite3_step(st)) == SQLITE_ROW ) n++;
  assert_int_equal(rc, SQLITE_INTERRUPT);
  assert_int_equal(n, 64);    /* the first chunk of 2 * 16 rows, then the second */
  sqlite3_finalize(st);
  /* from the reader: the scan stops at the next chunk, not at the end */
  assert_int_equal(sqlite3_prepare_v2(db, "SELECT id FROM anomaly_scan('m', "
                                      "'SELECT id, image FROM photos ORDER BY id', "
                                      "'{\"threads\": 2, \"batch\": 8}')", -1, &st, 0), SQLITE_OK);
  n = 0;
  while( (rc = sqlite3_step(st)) == SQLITE_ROW ){
    if( ++n == 3 ) sqlite3_interrupt(db);
  }
  assert_int_equal(rc, SQLITE_INTERRUPT);
  assert_true(n >= 3 && n <= 16);
  sqlite3_finalize(st);
  /* the connection works on */
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_scan('m', "
                                 "'SELECT id, image FROM photos')"), ROWS);
  sqlite3_close(db);
}

static void test_empty_and_join(void **state) {
  (void)state;
  sqlite3 *db = setup();
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_scan('m', "
                                 "'SELECT id, image FROM photos WHERE id < 0')"), 0);
  exec_ok(db, "CREATE TABLE none_yet(id, image)");
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_scan('m', "
                                 "'SELECT id, image FROM none_yet', '{\"threads\": 3}')"), 0);
  /* the model and the query from other tables: one scan per model */
  exec_ok(db, "CREATE TABLE jobs(model TEXT, q TEXT);"
              "INSERT INTO jobs VALUES ('m', 'SELECT id, image FROM photos WHERE id <= 10'),"
              "  ('a', 'SELECT id, image FROM photos WHERE id <= 4')");
  assert_int_equal(query_int(db, "SELECT count(*) FROM jobs, anomaly_scan(jobs.model, jobs.q) "
                                 "WHERE score IS NOT NULL"), 14);
  assert_int_equal(query_int(db, "SELECT count(*) FROM jobs j JOIN anomaly_scan s "
                                 "ON s.model = j.model AND s.query = j.q"), 14);
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_models m, "
                                 "anomaly_scan(m.name, 'SELECT id, image FROM photos "
                                 "WHERE id <= 3')"), 6);
  sqlite3_close(db);
}

/* It runs the SQL it is given: no view or trigger may reach it. */
static void test_directonly(void **state) {
  (void)state;
  sqlite3 *db = setup();
  exec_ok(db, "CREATE VIEW v_scan AS SELECT * FROM anomaly_scan('m', "
              "'SELECT id, image FROM photos');"
              "CREATE TABLE log(x);"
              "CREATE TRIGGER t_scan AFTER INSERT ON log BEGIN "
              "  SELECT count(*) FROM anomaly_scan('m', 'DELETE FROM photos RETURNING id, 1'); END;");
  for(int trusted = 0; trusted < 2; trusted++){
    exec_ok(db, trusted ? "PRAGMA trusted_schema = ON" : "PRAGMA trusted_schema = OFF");
    exec_err(db, "SELECT * FROM v_scan", "unsafe use of virtual table \"anomaly_scan\"");
    exec_err(db, "INSERT INTO log VALUES (1)", "unsafe use of virtual table \"anomaly_scan\"");
  }
  assert_int_equal(query_int(db, "SELECT count(*) FROM photos"), ROWS);
  sqlite3_close(db);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_matches_score),
    cmocka_unit_test(test_scoring_options),
    cmocka_unit_test(test_on_error),
    cmocka_unit_test(test_argument_errors),
    cmocka_unit_test(test_interrupt),
    cmocka_unit_test(test_empty_and_join),
    cmocka_unit_test(test_directonly),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
