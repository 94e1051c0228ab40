/*
** test_functions.c - the extension through SQL, loaded as users load it.
**
** Opens connections with Debian's libsqlite3, loads ./anomaly and checks:
** scores against the PyTorch golden outputs, the registry (persistence,
** second connection, replace, delete, rollback, export, the cache following
** a replaced model), and the exact error of every bad input of
** ../shared/eval.md section 3. Run from the repository root.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/image.h"
#include "core/safetensors.h"

#include "sqltest.h"

/* The golden inputs as PNG BLOBs in photos(id, image), and the golden
** scores and recon_l1 of the PyTorch reference. */
typedef struct golden_set {
  int n;
  double score[8], recon_l1[8];
} golden_set;

static void load_photos(sqlite3 *db, const char *table, const char *golden_path,
                        golden_set *gs) {
  size_t ng;
  unsigned char *gb = slurp(golden_path, &ng);
  st_file g;
  anom_err e;
  assert_int_equal(st_parse(&g, gb, ng, NULL, &e), ANOM_OK);
  const st_tensor *tu = st_find(&g, "input_u8"), *ts = st_find(&g, "score");
  const st_tensor *tl = st_find(&g, "recon_l1");
  int n = (int)tu->shape[0], c = (int)tu->shape[1], h = (int)tu->shape[2], w = (int)tu->shape[3];
  float *u = malloc((size_t)tu->numel * sizeof(float));
  float s[8], l1[8];
  st_read_f32(tu, NULL, 0, u, &e);
  st_read_f32(ts, NULL, 0, s, &e);
  st_read_f32(tl, NULL, 0, l1, &e);
  char sql[200];
  snprintf(sql, sizeof(sql), "CREATE TABLE %s(id INTEGER PRIMARY KEY, image BLOB)", table);
  exec_ok(db, sql);
  snprintf(sql, sizeof(sql), "INSERT INTO %s(id, image) VALUES (?1, ?2)", table);
  unsigned char *px = malloc((size_t)c * h * w);
  for(int i = 0; i < n; i++){
    for(int ch = 0; ch < c; ch++)
      for(int k = 0; k < h * w; k++)
        px[(size_t)k * c + ch] = (unsigned char)u[((size_t)i * c + ch) * h * w + k];
    unsigned char *png;
    size_t npng;
    assert_int_equal(image_encode_png(&png, &npng, px, w, h, c, &e), ANOM_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, 0), SQLITE_OK);
    sqlite3_bind_int(st, 1, i + 1);
    sqlite3_bind_blob(st, 2, png, (int)npng, SQLITE_TRANSIENT);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    anom_free(png);
    gs->score[i] = s[i];
    gs->recon_l1[i] = l1[i];
  }
  gs->n = n;
  free(px);
  free(u);
  st_free(&g);
  free(gb);
}

static void register_model(sqlite3 *db, const char *name, const char *path) {
  char sql[300];
  snprintf(sql, sizeof(sql), "INSERT INTO anomaly_models(name, model) VALUES "
           "('%s', anomaly_model_from_file('%s'))", name, path);
  exec_ok(db, sql);
}

/* Scores through SQL of the model called name over table must equal gs. */
static double check_scores(sqlite3 *db, const char *table, const char *name,
                           const golden_set *gs) {
  char sql[300];
  snprintf(sql, sizeof(sql), "SELECT id, anomaly_score(image, '%s'), "
           "anomaly_scores(image, '%s') ->> 'recon_l1' FROM %s ORDER BY id",
           name, name, table);
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, 0), SQLITE_OK);
  int i = 0;
  double worst = 0;
  while( sqlite3_step(st) == SQLITE_ROW ){
    double s = sqlite3_column_double(st, 1), l1 = sqlite3_column_double(st, 2);
    double es = fabs(s - gs->score[i]) / fmax(1, fabs(gs->score[i]));
    double el = fabs(l1 - gs->recon_l1[i]) / fmax(1, fabs(gs->recon_l1[i]));
    if( es > worst ) worst = es;
    if( el > worst ) worst = el;
    i++;
  }
  assert_int_equal(sqlite3_finalize(st), SQLITE_OK);
  assert_int_equal(i, gs->n);
  assert_true(worst <= 1e-4);
  return worst;
}

static void test_version_and_golden(void **state) {
  (void)state;
  sqlite3 *db = open_db(":memory:");
  sqlite3_stmt *st = query(db, "SELECT anomaly_version()", NULL, 0);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "v" ANOM_VERSION);
  sqlite3_finalize(st);
  golden_set g1, g2;
  load_photos(db, "photos", "tests/data/golden-tiny.safetensors", &g1);
  load_photos(db, "photos64", "tests/data/golden-tiny64rgb.safetensors", &g2);
  register_model(db, "tiles", TINY);
  register_model(db, "rgb", TINY64);
  double e1 = check_scores(db, "photos", "tiles", &g1);
  double e2 = check_scores(db, "photos64", "rgb", &g2);
  printf("# golden scores through SQL: max relative error %.2e (tiny), %.2e (tiny64rgb)\n",
         e1, e2);
  /* the registry's columns */
  st = query(db, "SELECT name, method, width, height, channels, params, threshold, "
                 "info ->> 'hparams' ->> 'nz', created FROM anomaly_models WHERE name = 'tiles'",
             NULL, 0);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "tiles");
  assert_string_equal((const char *)sqlite3_column_text(st, 1), "ganomaly");
  assert_int_equal(sqlite3_column_int(st, 2), 32);
  assert_int_equal(sqlite3_column_int(st, 3), 32);
  assert_int_equal(sqlite3_column_int(st, 4), 1);
  /* tiny: enc 1*8*16 + 8*16*16 + 16*32*16 + 32*16*16 + BN 2*(16+32) twice,
  ** dec 16*32*16 + 32*16*16 + 16*8*16 + 8*1*16 + BN 2*(32+16+8),
  ** D 128 + 2048 + 8192 + 32*1*16 + BN 2*(16+32) */
  long long enc = 128 + 2048 + 8192 + 8192 + 96;
  long long dec = 8192 + 8192 + 2048 + 128 + 112;
  long long d = 128 + 2048 + 8192 + 512 + 96;
  assert_int_equal(sqlite3_column_int64(st, 5), 2 * enc + dec + d);
  assert_int_equal(sqlite3_column_type(st, 6), SQLITE_NULL);
  assert_int_equal(sqlite3_column_int(st, 7), 16);
  assert_string_equal((const char *)sqlite3_column_text(st, 8), "2026-01-01T00:00:00Z");
  sqlite3_finalize(st);
  /* an RGB image scored by a grey model is converted: same score as grey */
  exec_ok(db, "CREATE TABLE grey AS SELECT 1 AS id, image FROM photos WHERE id = 1");
  double sg = query_double(db, "SELECT anomaly_score(image, 'tiles') FROM photos WHERE id = 2");
  double sr = query_double(db, "SELECT anomaly_score(image, 'tiles') FROM photos64 WHERE id = 2");
  assert_true(isfinite(sg) && isfinite(sr));
  sqlite3_close(db);
}

static void test_registry(void **state) {
  (void)state;
  unlink(DBFILE);
  sqlite3 *db = open_db(DBFILE);
  golden_set g1, g2;
  load_photos(db, "photos", "tests/data/golden-tiny.safetensors", &g1);
  load_photos(db, "photos64", "tests/data/golden-tiny64rgb.safetensors", &g2);
  /* empty registry before the first INSERT: no backing table yet */
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_models"), 0);
  exec_err(db, "SELECT anomaly_score(image, 'tilez') FROM photos",
           "anomaly_score: no model named 'tilez' (SELECT name FROM anomaly_models lists them)");
  register_model(db, "tiles", TINY);
  exec_err(db, "INSERT INTO anomaly_models(name, model) VALUES ('tiles', "
               "anomaly_model_from_file('" TINY "'))",
           "anomaly_models: a model named 'tiles' exists already (use INSERT OR REPLACE, "
           "or DELETE it first)");
  /* rollback undoes a registration */
  exec_ok(db, "BEGIN");
  register_model(db, "other", TINY);
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_models"), 2);
  exec_ok(db, "ROLLBACK");
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_models"), 1);
  sqlite3_close(db);

  /* persistence: a new connection on the reopened file scores the same */
  db = open_db(DBFILE);
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_models WHERE name = 'tiles'"), 1);
  check_scores(db, "photos", "tiles", &g1);
  /* a statement whose model is cached reads the stored file 64 KiB at a time
  ** to check its key: SQLite never holds a copy of the whole model (the old
  ** whole-column read raised its high-water mark by the file's size) */
  long long stored = query_int(db, "SELECT length(model) FROM anomaly_models_data "
                                   "WHERE name = 'tiles'");
  assert_true(stored > 200000);
  const char *one = "SELECT anomaly_score(image, 'tiles') FROM photos LIMIT 1";
  double s1 = query_double(db, one);
  sqlite3_int64 base = sqlite3_memory_used();
  sqlite3_memory_highwater(1);
  assert_true(query_double(db, one) == s1);
  assert_true(sqlite3_memory_highwater(0) - base < stored / 2);
  /* export: the hidden model column gives the file's bytes back */
  size_t n;
  unsigned char *file = slurp(TINY, &n);
  sqlite3_stmt *st = query(db, "SELECT model FROM anomaly_models WHERE name = 'tiles'", NULL, 0);
  assert_int_equal(sqlite3_column_bytes(st, 0), (int)n);
  assert_memory_equal(sqlite3_column_blob(st, 0), file, n);
  sqlite3_finalize(st);
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_models WHERE model IS NULL"), 0);

  /* a second connection sees it, and follows a replacement */
  sqlite3 *db2 = open_db(DBFILE);
  check_scores(db2, "photos", "tiles", &g1);
  exec_ok(db, "INSERT OR REPLACE INTO anomaly_models(name, model) VALUES ('tiles', "
              "anomaly_model_from_file('" TINY64 "'))");
  assert_int_equal(query_int(db2, "SELECT width FROM anomaly_models WHERE name = 'tiles'"), 64);
  assert_int_equal(query_int(db2, "SELECT channels FROM anomaly_models"), 3);
  check_scores(db2, "photos64", "tiles", &g2);
  check_scores(db, "photos64", "tiles", &g2);
  /* delete */
  exec_ok(db, "DELETE FROM anomaly_models WHERE name = 'tiles'");
  assert_int_equal(query_int(db2, "SELECT count(*) FROM anomaly_models"), 0);
  exec_err(db2, "SELECT anomaly_score(image, 'tiles') FROM photos",
           "anomaly_score: no model named 'tiles'");
  /* UPDATE and derived columns are refused */
  register_model(db, "tiles", TINY);
  exec_err(db, "UPDATE anomaly_models SET name = 'x'",
           "anomaly_models: UPDATE is not supported");
  exec_err(db, "INSERT INTO anomaly_models(name, method, model) VALUES ('y', 'ganomaly', "
               "anomaly_model_from_file('" TINY "'))",
           "anomaly_models: column 'method' is read from the model; insert only name and model");
  exec_err(db, "INSERT INTO anomaly_models(name, model) VALUES (NULL, "
               "anomaly_model_from_file('" TINY "'))",
           "anomaly_models: name must be a non-empty text");
  exec_err(db, "INSERT INTO anomaly_models(name, model) VALUES ('z', NULL)",
           "anomaly_models: model must be a BLOB");
  exec_err(db, "INSERT INTO anomaly_models(name, model) VALUES ('z', x'00112233')",
           "anomaly_models: invalid model 'z':");
  free(file);
  sqlite3_close(db2);

  /* a hostile database: the stored bytes overwritten behind the registry */
  exec_ok(db, "UPDATE anomaly_models_data SET model = substr(model, 1, 5000) WHERE name = 'tiles'");
  exec_err(db, "SELECT anomaly_score(image, 'tiles') FROM photos",
           "anomaly_score: the stored model 'tiles' is invalid:");
  exec_ok(db, "UPDATE anomaly_models_data SET model = 'text' WHERE name = 'tiles'");
  exec_err(db, "SELECT anomaly_score(image, 'tiles') FROM photos",
           "anomaly_score: the stored model 'tiles' is not a BLOB");
  sqlite3_close(db);
  unlink(DBFILE);
}

/* Bad inputs (eval.md section 3): each a clear error naming the function. */
static void test_bad_inputs(void **state) {
  (void)state;
  sqlite3 *db = open_db(":memory:");
  golden_set g;
  load_photos(db, "photos", "tests/data/golden-tiny.safetensors", &g);
  register_model(db, "tiles", TINY);
  /* NULL in, NULL out */
  assert_int_equal(query_int(db, "SELECT anomaly_score(NULL, 'tiles') IS NULL"), 1);
  assert_int_equal(query_int(db, "SELECT anomaly_scores(NULL, 'tiles') IS NULL"), 1);
  exec_err(db, "SELECT anomaly_score(x'', 'tiles')", "anomaly_score: empty blob");
  exec_err(db, "SELECT anomaly_score('a.png', 'tiles')",
           "anomaly_score: image must be a BLOB (PNG, JPEG, BMP, GIF or PNM), got TEXT");
  exec_err(db, "SELECT anomaly_score(42, 'tiles')", "got INTEGER");
  exec_err(db, "SELECT anomaly_score(x'68656c6c6f', 'tiles')",
           "anomaly_score: not a supported image");
  exec_err(db, "SELECT anomaly_score(image, NULL) FROM photos",
           "anomaly_score: model must be the TEXT name of a model in anomaly_models, got NULL");
  exec_err(db, "SELECT anomaly_scores(image, 'nope') FROM photos",
           "anomaly_scores: no model named 'nope'");
  /* truncated PNG */
  sqlite3_stmt *st = query(db, "SELECT image FROM photos WHERE id = 3", NULL, 0);
  int n = sqlite3_column_bytes(st, 0);
  unsigned char *png = malloc((size_t)n);
  memcpy(png, sqlite3_column_blob(st, 0), (size_t)n);
  sqlite3_finalize(st);
  blob_err(db, "SELECT anomaly_score(?1, 'tiles')", png, n / 2, "anomaly_score: truncated PNG");
  blob_err(db, "SELECT anomaly_score(?1, 'tiles')", png, n - 6, "anomaly_score: truncated PNG");
  free(png);
  /* a header that declares a decompression bomb */
  exec_ok(db, "SELECT anomaly_config('max_pixels', 100)");
  exec_err(db, "SELECT anomaly_score(image, 'tiles') FROM photos",
           "anomaly_score: image is 32x32");
  exec_ok(db, "SELECT anomaly_config('max_pixels', 67108864)");
  assert_int_equal(query_int(db, "SELECT anomaly_config('max_pixels')"), 67108864);
  exec_err(db, "SELECT anomaly_config('max_pixels', -1)",
           "anomaly_config: 'max_pixels' must be an integer from 1 to");
  exec_err(db, "SELECT anomaly_config('colour')", "anomaly_config: unknown key 'colour'");
  /* the model limits, each refusing the tiny model (66,960 parameters, 32 a side) */
  assert_int_equal(query_int(db, "SELECT anomaly_config('max_model_params')"), 256LL << 20);
  exec_ok(db, "SELECT anomaly_config('max_model_params', 66959)");
  exec_err(db, "SELECT anomaly_model_from_file('" TINY "')", "anomaly_model_from_file: invalid model: ");
  exec_ok(db, "SELECT anomaly_config('max_model_params', 268435456)");
  exec_ok(db, "SELECT anomaly_config('max_model_side', 16)");
  exec_err(db, "SELECT anomaly_model_from_file('" TINY "')", "anomaly_model_from_file: invalid model: ");
  exec_ok(db, "SELECT anomaly_config('max_model_side', 1024)");
  exec_ok(db, "SELECT anomaly_config('max_model_bytes', 1000)");
  exec_err(db, "SELECT anomaly_model_from_file('" TINY "')", "string or blob too big");
  exec_ok(db, "SELECT anomaly_config('max_model_bytes', 1073741824)");
  assert_true(query_int(db, "SELECT length(anomaly_model_from_file('" TINY "'))") > 0);
  /* training memory: memory_mb may not pass the connection's cap */
  exec_ok(db, "SELECT anomaly_config('max_train_mb', 100)");
  exec_err(db, "SELECT anomaly_train('x', 'ganomaly', image, '{\"memory_mb\": 101}') FROM photos",
           "anomaly_train: option 'memory_mb' must be an integer from 1 to 100");
  exec_ok(db, "SELECT anomaly_config('max_train_mb', 2048)");
  /* model files */
  exec_err(db, "SELECT anomaly_model_from_file('tests/data/no-such.safetensors')",
           "anomaly_model_from_file: cannot open 'tests/data/no-such.safetensors': No such file");
  exec_err(db, "SELECT anomaly_model_from_file('tests/data/golden-tiny.safetensors')",
           "anomaly_model_from_file: invalid model: not a sqlite-anomaly model");
  exec_err(db, "SELECT anomaly_model_info('x')",
           "anomaly_model_info: model must be a BLOB (the bytes of a model file), got TEXT");
  assert_int_equal(query_int(db, "SELECT anomaly_model_info(NULL) IS NULL"), 1);
  assert_int_equal(query_int(db, "SELECT anomaly_model_info(anomaly_model_from_file('"
                                 TINY "')) ->> 'params'"), 2 * 18656 + 18672 + 10976);
  /* corrupt model BLOBs: header length, JSON, offsets, dtype, checksum */
  size_t nf;
  unsigned char *file = slurp(TINY, &nf), *bad = malloc(nf);
  memcpy(bad, file, nf);
  bad[0] = 0xff; bad[1] = 0xff; bad[2] = 0xff;
  blob_err(db, "SELECT anomaly_model_info(?1)", bad, (int)nf,
           "anomaly_model_info: invalid model: header length");
  memcpy(bad, file, nf);
  bad[8] = '[';
  blob_err(db, "SELECT anomaly_model_info(?1)", bad, (int)nf, "anomaly_model_info: invalid model:");
  memcpy(bad, file, nf);
  bad[nf - 1] ^= 0x55;   /* a flipped bit in the last weight */
  blob_err(db, "INSERT INTO anomaly_models(name, model) VALUES ('bad', ?1)", bad, (int)nf,
           "checksum mismatch");
  char *hdr = (char *)bad + 8, *p;
  memcpy(bad, file, nf);
  assert_non_null(p = strstr(hdr, "\"F32\""));
  memcpy(p, "\"I32\"", 5);
  blob_err(db, "SELECT anomaly_model_info(?1)", bad, (int)nf, "I32");
  memcpy(bad, file, nf);
  assert_non_null(p = strstr(hdr, "\"data_offsets\":[0,"));
  memcpy(p + 16, "9", 1);
  blob_err(db, "SELECT anomaly_model_info(?1)", bad, (int)nf, "anomaly_model_info: invalid model:");
  blob_err(db, "SELECT anomaly_model_info(?1)", file, 100, "anomaly_model_info: invalid model:");
  free(bad);
  free(file);
  sqlite3_close(db);
}


#define FMNIST "/usr/share/datasets/fashion-mnist/"

/* Fashion-MNIST through anomaly_idx into fashion(split, idx, label, image). */
static void import_fashion(sqlite3 *db) {
  exec_ok(db, "CREATE TABLE fashion(id INTEGER PRIMARY KEY, split TEXT, idx INT, label INT, image BLOB)");
  exec_ok(db, "INSERT INTO fashion(split, idx, label, image) SELECT 'train', idx, label, image "
              "FROM anomaly_idx('" FMNIST "train-images-idx3-ubyte.gz', '" FMNIST "train-labels-idx1-ubyte.gz')");
  exec_ok(db, "INSERT INTO fashion(split, idx, label, image) SELECT 'test', idx, label, image "
              "FROM anomaly_idx('" FMNIST "t10k-images-idx3-ubyte.gz', '" FMNIST "t10k-labels-idx1-ubyte.gz')");
}

/* anomaly_idx: the real files, and its errors. */
static void test_idx(void **state) {
  (void)state;
  sqlite3 *db = open_db(":memory:");
  import_fashion(db);
  assert_int_equal(query_int(db, "SELECT count(*) FROM fashion WHERE split = 'train'"), 60000);
  assert_int_equal(query_int(db, "SELECT count(*) FROM fashion WHERE split = 'test'"), 10000);
  /* 6,000 training and 1,000 test images a class */
  assert_int_equal(query_int(db, "SELECT count(DISTINCT n) FROM (SELECT count(*) AS n FROM "
                                 "fashion WHERE split = 'train' GROUP BY label)"), 1);
  assert_int_equal(query_int(db, "SELECT sum(label) FROM fashion WHERE split = 'test'"), 45000);
  /* the first test image is an ankle boot (label 9), a 28x28 grey PNG */
  sqlite3_stmt *st = query(db, "SELECT label, image FROM fashion WHERE split = 'test' AND idx = 0",
                           NULL, 0);
  assert_int_equal(sqlite3_column_int(st, 0), 9);
  const unsigned char *png = sqlite3_column_blob(st, 1);
  assert_memory_equal(png + 1, "PNG", 3);
  assert_int_equal(png[19], 28);   /* IHDR width, big-endian */
  assert_int_equal(png[23], 28);   /* height */
  assert_int_equal(png[25], 0);    /* colour type: grey */
  sqlite3_finalize(st);
  /* no labels file: label is NULL */
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_idx('" FMNIST
                                 "t10k-images-idx3-ubyte.gz') WHERE label IS NULL"), 10000);
  exec_err(db, "SELECT count(*) FROM anomaly_idx('nope.gz')",
           "anomaly_idx: cannot open 'nope.gz': No such file");
  exec_err(db, "SELECT count(*) FROM anomaly_idx('" TINY "')",
           "anomaly_idx: '" TINY "': not an IDX file");
  exec_err(db, "SELECT count(*) FROM anomaly_idx('" FMNIST "t10k-images-idx3-ubyte.gz', '"
               FMNIST "train-labels-idx1-ubyte.gz')",
           "anomaly_idx: the labels file holds 60000 labels for 10000 images");
  exec_err(db, "SELECT count(*) FROM anomaly_idx('" FMNIST "t10k-labels-idx1-ubyte.gz')",
           "anomaly_idx: the images file has 1 dimension(s)");
  exec_err(db, "SELECT count(*) FROM anomaly_idx", "anomaly_idx: the images file is required");
  sqlite3_close(db);
}

static void test_auroc_sql(void **state) {
  (void)state;
  sqlite3 *db = open_db(":memory:");
  /* sklearn's example: 0.75; NULL rows are skipped */
  assert_true(query_double(db, "WITH t(s, y) AS (VALUES (0.1, 0), (0.4, 0), "
                               "(0.35, 1), (0.8, 1), (NULL, 1), (0.5, NULL)) SELECT anomaly_auroc(s, y) FROM t") == 0.75);
  /* ties count one half */
  assert_true(query_double(db, "WITH t(s, y) AS (VALUES (0.2, 0), (0.5, 1), "
                               "(0.5, 0), (0.9, 1), (0.1, 0)) SELECT anomaly_auroc(s, y) FROM t") == 5.5 / 6);
  assert_true(query_double(db, "WITH t(s, y) AS (VALUES (1, 0), (1, 1)) SELECT anomaly_auroc(s, y) FROM t") == 0.5);
  exec_err(db, "WITH t(s, y) AS (VALUES (1, 1), (2, 1)) SELECT anomaly_auroc(s, y) FROM t",
           "anomaly_auroc: both classes are needed, found 2 anomalous and 0 normal");
  exec_err(db, "WITH t(s, y) AS (VALUES ('a', 1), (2, 0)) SELECT anomaly_auroc(s, y) FROM t",
           "anomaly_auroc: score and is_anomalous must be numbers");
  exec_err(db, "SELECT anomaly_auroc(1, 1) WHERE 0", "anomaly_auroc: both classes are needed");
  sqlite3_close(db);
}

/* Train on 3,000 trousers (a narrow GANomaly, ngf 16, 3 epochs: about 140
** steps, where the latent score has settled; fewer steps or fewer images
** leave it inverted), then score trousers against the other classes. */
static void test_train_fashion(void **state) {
  (void)state;
  sqlite3 *db = open_db(":memory:");
  import_fashion(db);
  sqlite3_stmt *st = query(db,
      "SELECT anomaly_train('trousers', 'ganomaly', image, '{\"epochs\": 3, \"ngf\": 16, "
      "\"fit\": \"pad\", \"seed\": 3, \"quiet\": true}') FROM (SELECT image FROM fashion "
      "WHERE split = 'train' AND label = 1 ORDER BY idx LIMIT 3000)", NULL, 0);
  const char *js = (const char *)sqlite3_column_text(st, 0);
  printf("# %s\n", js);
  assert_non_null(strstr(js, "\"images\":3000,\"train\":2700,\"holdout\":300"));
  assert_non_null(strstr(js, "\"epochs\":3,\"batches_per_epoch\":42"));
  sqlite3_finalize(st);
  assert_int_equal(query_int(db, "SELECT threshold > 0 FROM anomaly_models WHERE name = 'trousers'"), 1);
  assert_int_equal(query_int(db, "SELECT info ->> '$.calibration.n' FROM anomaly_models"), 300);
  exec_ok(db, "CREATE TABLE scored AS SELECT label, anomaly_scores(image, 'trousers') AS j "
              "FROM fashion WHERE split = 'test' AND idx < 2000");
  double auc = query_double(db, "SELECT anomaly_auroc(j ->> 'score', label <> 1) FROM scored");
  double auc_l1 = query_double(db, "SELECT anomaly_auroc(j ->> 'recon_l1', label <> 1) FROM scored");
  printf("# 3,000 trousers, 3 epochs, ngf 16: test AUROC %.4f (latent), %.4f (recon_l1), "
         "first 2,000 test images\n", auc, auc_l1);
  assert_true(auc > 0.9);        /* measured 0.991 */
  assert_true(auc_l1 > 0.85);    /* measured 0.916 */
  /* the threshold flags few trousers and many others */
  double fp = query_double(db, "SELECT avg((j ->> 'score') > (SELECT threshold FROM anomaly_models)) "
                               "FROM scored WHERE label = 1");
  double tp = query_double(db, "SELECT avg((j ->> 'score') > (SELECT threshold FROM anomaly_models)) "
                               "FROM scored WHERE label <> 1");
  printf("# flagged over the threshold: %.3f of trousers, %.3f of the rest\n", fp, tp);
  assert_true(fp < 0.1 && tp > 0.5);
  /* the reconstruction is a PNG at the model's input size */
  st = query(db, "SELECT anomaly_reconstruct(image, 'trousers') FROM fashion WHERE split = 'test' "
                 "AND idx = 2", NULL, 0);
  const unsigned char *png = sqlite3_column_blob(st, 0);
  assert_memory_equal(png + 1, "PNG", 3);
  assert_int_equal(png[19], 32);
  assert_int_equal(png[23], 32);
  sqlite3_finalize(st);

  /* errors, and no partial model after any of them */
  exec_err(db, "SELECT anomaly_train('trousers', 'ganomaly', image) FROM fashion WHERE idx < 3",
           "anomaly_train: a model named 'trousers' exists already (add \"replace\": true");
  exec_err(db, "SELECT anomaly_train('x', 'ganomaIy', image) FROM fashion WHERE idx < 3",
           "anomaly_train: unknown method 'ganomaIy' (known: alad, anogan, caae, defectgan, egbad, ganomaly, skipganomaly)");
  exec_err(db, "SELECT anomaly_train('x', 'ganomaly', image, '{\"epoch\": 1}') FROM fashion WHERE idx < 3",
           "anomaly_train: ganomaly: unknown hyper-parameter 'epoch'");
  exec_err(db, "SELECT anomaly_train('x', 'ganomaly', image, '{\"epochs\": 0}') FROM fashion WHERE idx < 3",
           "anomaly_train: option 'epochs' must be an integer from 1 to 100000");
  exec_err(db, "SELECT anomaly_train('x', 'ganomaly', image, '{\"nz\": \"big\"}') FROM fashion WHERE idx < 3",
           "anomaly_train: ganomaly: 'nz' must be an integer");
  exec_err(db, "SELECT anomaly_train('x', 'ganomaly', image, '{\"size\": 40}') FROM fashion WHERE idx < 3",
           "anomaly_train: ganomaly: the input must be square with a side of 16, 32, 64... (a power of two), found 40x40");
  exec_err(db, "SELECT anomaly_train('x', 'ganomaly', image, 'epochs=1') FROM fashion WHERE idx < 3",
           "anomaly_train: options must be a JSON object");
  exec_err(db, "SELECT anomaly_train('x', 'ganomaly', image) FROM fashion WHERE 0",
           "anomaly_train: no images to train on");
  exec_err(db, "SELECT anomaly_train('x', 'ganomaly', 'photo.png')",
           "anomaly_train: image must be a BLOB (PNG, JPEG, BMP, GIF or PNM), got TEXT");
  exec_err(db, "SELECT anomaly_train('x', 'ganomaly', image, '{\"memory_mb\": 1}') FROM fashion "
               "WHERE split = 'train' AND idx < 300",
           "anomaly_train: the images need more than 1 MiB at 32x32x1 (257 images so far)");
  exec_err(db, "SELECT anomaly_train('x', 'ganomaly', image) FROM (SELECT image FROM fashion "
               "WHERE split = 'test' AND idx < 2 UNION ALL SELECT x'89504e470d0a1a0a')",
           "anomaly_train: image 3: ");
  exec_err(db, "SELECT anomaly_train('x', 'ganomaly', image, '{\"holdout\": 0.5}') FROM fashion "
               "WHERE idx < 3 AND split = 'test'",
           "anomaly_train: training needs at least 2 images after holding out 2 for calibration, found 3");
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_models"), 1);

  /* scoring options: GANomaly takes none; AnoGAN's search is set per call */
  exec_err(db, "SELECT anomaly_score(image, 'trousers', '{\"steps\": 5}') FROM fashion WHERE idx = 0",
           "anomaly_score: ganomaly takes no scoring options, found 'steps'");
  exec_err(db, "SELECT anomaly_score(image, 'trousers', '[1]') FROM fashion WHERE idx = 0",
           "anomaly_score: options must be a JSON object");
  st = query(db, "SELECT anomaly_train('ag', 'anogan', image, '{\"epochs\": 1, \"ngf\": 8, "
                 "\"nz\": 16, \"steps\": 10, \"batch\": 32, \"fit\": \"pad\", \"quiet\": true}') "
                 "FROM (SELECT image FROM fashion WHERE split = 'train' AND label = 1 LIMIT 200)", NULL, 0);
  assert_non_null(strstr((const char *)sqlite3_column_text(st, 0), "\"method\":\"anogan\""));
  sqlite3_finalize(st);
  double s10 = query_double(db, "SELECT anomaly_score(image, 'ag') FROM fashion WHERE split = 'test' AND idx = 5");
  double s3 = query_double(db, "SELECT anomaly_score(image, 'ag', '{\"steps\": 3}') FROM fashion "
                               "WHERE split = 'test' AND idx = 5");
  double s3b = query_double(db, "SELECT anomaly_scores(image, 'ag', '{\"steps\": 3}') ->> 'score' "
                                "FROM fashion WHERE split = 'test' AND idx = 5");
  assert_true(isfinite(s10) && isfinite(s3) && s10 != s3);
  assert_true(s3 == s3b);   /* a seeded search: the same score every time */
  exec_err(db, "SELECT anomaly_score(image, 'ag', '{\"step\": 3}') FROM fashion WHERE idx = 0",
           "anomaly_score: anogan: unknown scoring option 'step' (known: steps, lambda, lr, seed)");

  /* Skip-GANomaly: trains, scores, takes its score weight per call */
  st = query(db, "SELECT anomaly_train('sk', 'skipganomaly', image, '{\"epochs\": 1, \"ngf\": 8, "
                 "\"ndf\": 8, \"batch\": 32, \"fit\": \"pad\", \"quiet\": true}') "
                 "FROM (SELECT image FROM fashion WHERE split = 'train' AND label = 1 LIMIT 200)", NULL, 0);
  assert_non_null(strstr((const char *)sqlite3_column_text(st, 0), "\"method\":\"skipganomaly\""));
  sqlite3_finalize(st);
  st = query(db, "SELECT anomaly_scores(image, 'sk') ->> 'rec', anomaly_scores(image, 'sk') ->> 'lat', "
                 "anomaly_score(image, 'sk'), anomaly_score(image, 'sk', '{\"score_w\": 1}') "
                 "FROM fashion WHERE split = 'test' AND idx = 7", NULL, 0);
  double rec = sqlite3_column_double(st, 0), lat = sqlite3_column_double(st, 1);
  assert_true(fabs(sqlite3_column_double(st, 2) - (0.9 * rec + 0.1 * lat)) <= 1e-9 * (rec + lat));
  assert_true(sqlite3_column_double(st, 3) == rec);
  sqlite3_finalize(st);
  exec_err(db, "SELECT anomaly_score(image, 'sk', '{\"score_w\": 2}') FROM fashion WHERE idx = 0",
           "anomaly_score: skipganomaly: 'score_w' must be a number from 0 to 1");
  sqlite3_close(db);
}

/* The BiGAN detectors in SQL: EGBAD and ALAD train on trousers and score
** with their parts and per-call options. No AUROC floor here: a BiGAN needs
** thousands of steps before its reconstructions mean anything (the PyTorch
** reference agrees), far beyond this suite's budget; docs/benchmarks.md
** has their full-size rows. */
static void test_bigans(void **state) {
  (void)state;
  sqlite3 *db = open_db(":memory:");
  import_fashion(db);
  exec_ok(db, "CREATE TEMP VIEW trousers AS SELECT image FROM fashion WHERE split = 'train' "
              "AND label = 1 ORDER BY idx LIMIT 1000");
  sqlite3_stmt *st = query(db, "SELECT anomaly_train('eg', 'egbad', image, '{\"epochs\": 3, "
      "\"nf\": 8, \"nz\": 32, \"lr\": 2e-4, \"fit\": \"pad\", \"quiet\": true}') "
      "FROM trousers", NULL, 0);
  const char *js = (const char *)sqlite3_column_text(st, 0);
  printf("# %s\n", js);
  assert_non_null(strstr(js, "\"method\":\"egbad\""));
  assert_non_null(strstr(js, "\"batches_per_epoch\":9"));     /* the authors' batch, 100 */
  sqlite3_finalize(st);
  st = query(db, "SELECT anomaly_train('al', 'alad', image, '{\"epochs\": 2, \"nf\": 8, "
      "\"nz\": 16, \"fit\": \"pad\", \"quiet\": true}') FROM trousers", NULL, 0);
  js = (const char *)sqlite3_column_text(st, 0);
  printf("# %s\n", js);
  assert_non_null(strstr(js, "\"batches_per_epoch\":28"));    /* the authors' batch, 32 */
  sqlite3_finalize(st);

  /* EGBAD: score = 0.9 residual + 0.1 fm, or ce on request */
  st = query(db, "SELECT j ->> 'residual', j ->> 'fm', j ->> 'ce', j ->> 'score', "
                 "anomaly_score(image, 'eg', '{\"score\": \"ce\", \"score_w\": 0.5}') "
                 "FROM (SELECT image, anomaly_scores(image, 'eg') AS j FROM fashion "
                 "WHERE split = 'test' AND idx = 3)", NULL, 0);
  double res = sqlite3_column_double(st, 0), fm = sqlite3_column_double(st, 1);
  double ce = sqlite3_column_double(st, 2), sc = sqlite3_column_double(st, 3);
  double sce = sqlite3_column_double(st, 4);
  assert_true(res > 0 && fm > 0 && ce > 0);
  assert_true(fabs(sc - (0.9 * res + 0.1 * fm)) <= 1e-6 * sc);
  assert_true(fabs(sce - (0.5 * res + 0.5 * ce)) <= 1e-6 * sce);
  sqlite3_finalize(st);
  exec_err(db, "SELECT anomaly_score(image, 'eg', '{\"score\": \"l1\"}') FROM fashion WHERE idx = 0",
           "anomaly_score: egbad: ");
  exec_err(db, "SELECT anomaly_score(image, 'eg', '{\"steps\": 1}') FROM fashion WHERE idx = 0",
           "anomaly_score: egbad: unknown scoring option 'steps'");

  /* ALAD: four scores, the chosen one per call */
  st = query(db, "SELECT j ->> 'fm', j ->> 'ch', j ->> 'l1', j ->> 'l2', j ->> 'score', "
                 "anomaly_score(image, 'al', '{\"score\": \"l2\"}') FROM (SELECT image, "
                 "anomaly_scores(image, 'al') AS j FROM fashion WHERE split = 'test' AND idx = 3)",
             NULL, 0);
  assert_true(sqlite3_column_double(st, 0) > 0 && sqlite3_column_double(st, 1) > 0);
  assert_true(sqlite3_column_double(st, 4) == sqlite3_column_double(st, 0));   /* fm by default */
  double l1 = sqlite3_column_double(st, 2), l2 = sqlite3_column_double(st, 3);
  assert_true(l2 > 0 && l2 <= l1);                    /* ||.||_2 <= ||.||_1 */
  assert_true(fabs(sqlite3_column_double(st, 5) - l2) <= 1e-9 * l2);
  sqlite3_finalize(st);
  exec_err(db, "SELECT anomaly_score(image, 'al', '{\"score\": \"fm2\"}') FROM fashion WHERE idx = 0",
           "anomaly_score: alad: ");
  exec_err(db, "SELECT anomaly_train('x', 'alad', image, '{\"size\": 48}') FROM fashion WHERE idx < 3",
           "anomaly_train: alad: ");
  exec_err(db, "SELECT anomaly_train('x', 'egbad', image, '{\"dropout\": 1}') FROM fashion WHERE idx < 3",
           "anomaly_train: egbad: 'dropout' must be a number from 0 to ");

  sqlite3_close(db);
}

/* The inspection-minded detectors in SQL: defectgan and caae train on
** trousers and score with their parts; both beat chance clearly on the
** first 2,000 test images after a short training. */
static void test_inspection_methods(void **state) {
  (void)state;
  sqlite3 *db = open_db(":memory:");
  import_fashion(db);
  exec_ok(db, "CREATE TEMP VIEW trousers AS SELECT image FROM fashion WHERE split = 'train' "
              "AND label = 1 ORDER BY idx LIMIT 3000");
  sqlite3_stmt *st = query(db, "SELECT anomaly_train('dg', 'defectgan', image, '{\"epochs\": 3, "
      "\"ngf\": 16, \"ndf\": 16, \"fit\": \"pad\", \"quiet\": true}') FROM trousers", NULL, 0);
  const char *js = (const char *)sqlite3_column_text(st, 0);
  printf("# %s\n", js);
  assert_non_null(strstr(js, "\"method\":\"defectgan\""));
  sqlite3_finalize(st);
  st = query(db, "SELECT anomaly_train('ca', 'caae', image, '{\"epochs\": 3, \"nf\": 8, "
      "\"nz\": 32, \"n_critic_early\": 2, \"lr\": 5e-4, \"fit\": \"pad\", \"quiet\": true}') "
      "FROM trousers", NULL, 0);
  js = (const char *)sqlite3_column_text(st, 0);
  printf("# %s\n", js);
  assert_non_null(strstr(js, "\"batches_per_epoch\":42"));     /* the authors' batch, 64 */
  sqlite3_finalize(st);

  /* defectgan: the LBP score is the mean of the map's top 1%; per-call LBP settings */
  st = query(db, "SELECT j ->> 'lbp', j ->> 'recon', j ->> 'score', "
                 "anomaly_score(image, 'dg', '{\"top\": 1}'), "
                 "anomaly_score(image, 'dg', '{\"lbp_points\": 4, \"lbp_radius\": 2}') "
                 "FROM (SELECT image, anomaly_scores(image, 'dg') AS j FROM fashion "
                 "WHERE split = 'test' AND idx = 3)", NULL, 0);
  double lbp = sqlite3_column_double(st, 0), top_all = sqlite3_column_double(st, 3);
  assert_true(sqlite3_column_double(st, 2) == lbp);
  assert_true(sqlite3_column_double(st, 1) > 0);
  assert_true(top_all >= 0 && top_all <= lbp);     /* the mean of all <= the mean of the top */
  assert_true(sqlite3_column_double(st, 4) != lbp);
  sqlite3_finalize(st);
  exec_err(db, "SELECT anomaly_score(image, 'dg', '{\"window\": 4}') FROM fashion WHERE idx = 0",
           "anomaly_score: defectgan: ");
  exec_err(db, "SELECT anomaly_train('x', 'defectgan', image, '{\"kinds\": \"block,crater\"}') "
               "FROM fashion WHERE idx < 3", "anomaly_train: defectgan: ");
  /* caae: the mean absolute residual, and the mean squared one */
  st = query(db, "SELECT j ->> 'residual', j ->> 'l2', j ->> 'score' FROM (SELECT "
                 "anomaly_scores(image, 'ca') AS j FROM fashion WHERE split = 'test' AND idx = 3)",
             NULL, 0);
  double r1 = sqlite3_column_double(st, 0), r2 = sqlite3_column_double(st, 1);
  assert_true(r1 > 0 && r2 > 0 && sqlite3_column_double(st, 2) == r1);
  assert_true(r2 <= 4 * r1);                        /* |d| <= 2 on [-1, 1] images */
  sqlite3_finalize(st);
  exec_err(db, "SELECT anomaly_train('x', 'caae', image, '{\"rho\": -1}') FROM fashion WHERE idx < 3",
           "anomaly_train: caae: 'rho' must be a number from ");

  exec_ok(db, "CREATE TABLE scored AS SELECT label, anomaly_scores(image, 'dg') AS d, "
              "anomaly_scores(image, 'ca') AS c FROM fashion WHERE split = 'test' AND idx < 2000");
  double auc_lbp = query_double(db, "SELECT anomaly_auroc(d ->> 'lbp', label <> 1) FROM scored");
  double auc_rec = query_double(db, "SELECT anomaly_auroc(d ->> 'recon', label <> 1) FROM scored");
  double auc_ca = query_double(db, "SELECT anomaly_auroc(c ->> 'residual', label <> 1) FROM scored");
  double auc_ca2 = query_double(db, "SELECT anomaly_auroc(c ->> 'l2', label <> 1) FROM scored");
  printf("# 3,000 trousers, 3 epochs, first 2,000 test images: defectgan (ngf 16) lbp %.4f, "
         "recon %.4f; caae (nf 8, lr 5e-4) residual %.4f, l2 %.4f\n",
         auc_lbp, auc_rec, auc_ca, auc_ca2);
  /* defectgan over seeds 0, 1, 2 one build earlier: lbp 0.762, 0.730,
  ** 0.799; recon 0.869, 0.847, 0.864 (a short GAN training moves with the
  ** order of float sums too, so the floors sit below the lowest seed) */
  assert_true(auc_lbp > 0.65);     /* measured 0.841 */
  assert_true(auc_rec > 0.8);      /* measured 0.848 */
  /* caae at lr 2e-4 swung between 0.54 and 0.70 with the seed and with the
  ** order of float sums; at 5e-4 seeds 0, 1, 2 gave 0.854, 0.906, 0.928
  ** (one build earlier) */
  assert_true(auc_ca > 0.75);      /* measured 0.810 */
  assert_true(auc_ca2 > 0.75);     /* measured 0.855 */
  sqlite3_close(db);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_version_and_golden),
    cmocka_unit_test(test_registry),
    cmocka_unit_test(test_bad_inputs),
    cmocka_unit_test(test_idx),
    cmocka_unit_test(test_auroc_sql),
    cmocka_unit_test(test_train_fashion),
    cmocka_unit_test(test_bigans),
    cmocka_unit_test(test_inspection_methods),
  };
  return cmocka_run_group_tests_name("sql", tests, NULL, NULL);
}
