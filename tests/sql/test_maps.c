/*
** test_maps.c - anomaly_map, anomaly_reconstruct, anomaly_montage and
** anomaly_pixel_auroc through SQL (ext/maps.c), with every method.
**
** Every detector trains briefly on flat grey images (a random brightness and
** a little noise). A flat image with a bright square pasted on it must then
** get its map's maximum inside the square, both in the raw f32 map at the
** model's size and in the PNG at the image's own size; the pixel AUROC of
** such images against their masks must be high. Sizes, formats, the montage's
** layout and row limit, and every error path are checked exactly.
*/
#include <math.h>

#include "core/image.h"
#include "sqltest.h"

#define SIDE 32                 /* the models' input */
#define IW 64                   /* the defect image: 64 x 48, resized to 32 x 32 */
#define IH 48
#define DX0 12                  /* the pasted square, in the 64 x 48 image */
#define DY0 26
#define DX1 26                  /* exclusive */
#define DY1 38

static uint32_t lcg(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return *s >> 8;
}

/* A w x h grey PNG: background bg with noise of +-3, and (when defect) the
** square [DX0, DX1) x [DY0, DY1) at 250. */
static unsigned char *flat_png(int w, int h, int bg, int defect, uint32_t seed,
                               size_t *n) {
  unsigned char *px = malloc((size_t)w * h), *png;
  for(int y = 0; y < h; y++)
    for(int x = 0; x < w; x++){
      int v = bg + (int)(lcg(&seed) % 7) - 3;
      if( defect && x >= DX0 && x < DX1 && y >= DY0 && y < DY1 ) v = 250;
      px[y * w + x] = (unsigned char)v;
    }
  anom_err e;
  assert_int_equal(image_encode_png(&png, n, px, w, h, 1, &e), ANOM_OK);
  free(px);
  return png;
}

/* The mask of the square for the 64 x 48 image, as a PNG. */
static unsigned char *mask_png(size_t *n) {
  unsigned char *px = calloc((size_t)IW * IH, 1), *png;
  for(int y = DY0; y < DY1; y++)
    for(int x = DX0; x < DX1; x++) px[y * IW + x] = 255;
  anom_err e;
  assert_int_equal(image_encode_png(&png, n, px, IW, IH, 1, &e), ANOM_OK);
  free(px);
  return png;
}

static void insert_blob(sqlite3 *db, const char *sql, const void *b, size_t n) {
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, 0), SQLITE_OK);
  sqlite3_bind_blob(st, 1, b, (int)n, SQLITE_TRANSIENT);
  assert_int_equal(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
}

/*
** flat(image): 240 training images 32 x 32, backgrounds 40..100.
** probe(id, kind, image, mask): 64 x 48 images, ids 1..6 with the square
** (kind 'defect', mask set), 7..12 without (kind 'good', mask NULL).
*/
static void make_tables(sqlite3 *db) {
  exec_ok(db, "CREATE TABLE flat(image BLOB); CREATE TABLE probe(id INTEGER PRIMARY KEY, "
              "kind TEXT, image BLOB, mask BLOB)");
  exec_ok(db, "BEGIN");
  for(int i = 0; i < 240; i++){
    size_t n;
    unsigned char *p = flat_png(SIDE, SIDE, 40 + (i * 37) % 61, 0, (uint32_t)i + 1, &n);
    insert_blob(db, "INSERT INTO flat VALUES (?1)", p, n);
    free(p);
  }
  size_t nm;
  unsigned char *mask = mask_png(&nm);
  for(int i = 1; i <= 12; i++){
    size_t n;
    unsigned char *p = flat_png(IW, IH, 50 + 6 * i, i <= 6, 1000u + (uint32_t)i, &n);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO probe VALUES (?1, ?2, ?3, ?4)",
                                        -1, &st, 0), SQLITE_OK);
    sqlite3_bind_int(st, 1, i);
    sqlite3_bind_text(st, 2, i <= 6 ? "defect" : "good", -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, p, (int)n, SQLITE_TRANSIENT);
    if( i <= 6 ) sqlite3_bind_blob(st, 4, mask, (int)nm, SQLITE_TRANSIENT);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    free(p);
  }
  free(mask);
  exec_ok(db, "COMMIT");
}

/* Decode the BLOB in column 0 of the first row of sql. */
static void query_image(sqlite3 *db, const char *sql, image_u8 *im) {
  sqlite3_stmt *st = query(db, sql, NULL, 0);
  assert_int_equal(sqlite3_column_type(st, 0), SQLITE_BLOB);
  anom_err e;
  int rc = image_decode(im, sqlite3_column_blob(st, 0),
                        (size_t)sqlite3_column_bytes(st, 0), 1 << 24, &e);
  if( rc ) fprintf(stderr, "%s: %s\n", sql, e.msg);
  assert_int_equal(rc, ANOM_OK);
  sqlite3_finalize(st);
}

/* Where the largest value of n values (stride c) is. */
static size_t argmax_u8(const unsigned char *p, size_t n, int c) {
  size_t best = 0;
  for(size_t i = 1; i < n; i++) if( p[i * c] > p[best * c] ) best = i;
  return best;
}

/*
** Train method on the flat images and check its map, repair and montage.
** residual: the map is the reconstruction residual, which must find the
** square; DefectGAN's LBP map compares texture, and the noise of a flat
** background has none for it to learn, so its map is only checked for
** range (Hamming distances of 8-bit codes) and shape.
*/
static void check_method(sqlite3 *db, const char *method, const char *hp, int residual) {
  char sql[1024];
  printf("# %s\n", method);
  snprintf(sql, sizeof(sql), "SELECT anomaly_train('%s', '%s', image, json_patch("
           "'{\"epochs\": 4, \"size\": %d, \"seed\": 1, \"quiet\": true}', '%s')) FROM flat",
           method, method, SIDE, hp);
  sqlite3_stmt *st = query(db, sql, NULL, 0);
  sqlite3_finalize(st);

  /* f32: the smoothed map at the model's size, its maximum in the square
  ** (the square covers x 6..12, y 17..25 of the 32 x 32 input) */
  snprintf(sql, sizeof(sql), "SELECT anomaly_map(image, '%s', '{\"format\": \"f32\"}') "
           "FROM probe WHERE id = 1", method);
  st = query(db, sql, NULL, 0);
  assert_int_equal(sqlite3_column_bytes(st, 0), SIDE * SIDE * 4);
  const unsigned char *b = sqlite3_column_blob(st, 0);
  int best = 0;
  float bestv = -1;
  for(int i = 0; i < SIDE * SIDE; i++){
    uint32_t u = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8
               | (uint32_t)b[4 * i + 2] << 16 | (uint32_t)b[4 * i + 3] << 24;
    float v;
    memcpy(&v, &u, 4);
    assert_true(isfinite(v) && v >= 0 && (residual ? v <= 2 : v <= 8));
    if( v > bestv ){ bestv = v; best = i; }
  }
  sqlite3_finalize(st);
  int bx = best % SIDE, by = best / SIDE;
  printf("#   f32 maximum %.3f at (%d, %d)\n", bestv, bx, by);
  if( residual ){
    assert_true(bx >= DX0 / 2 - 1 && bx < DX1 / 2 + 1);
    assert_true(by >= DY0 * 2 / 3 - 1 && by < DY1 * 2 / 3 + 1);
  }

  /* PNG at the image's size; grey on the image's own scale */
  image_u8 im;
  snprintf(sql, sizeof(sql), "SELECT anomaly_map(image, '%s', '{\"style\": \"grey\", "
           "\"scale\": \"image\"}') FROM probe WHERE id = 2", method);
  query_image(db, sql, &im);
  assert_int_equal(im.w, IW);
  assert_int_equal(im.h, IH);
  assert_int_equal(im.c, 1);
  size_t at = argmax_u8(im.px, (size_t)IW * IH, 1);
  int ax = (int)(at % IW), ay = (int)(at / IW);
  printf("#   png maximum at (%d, %d)\n", ax, ay);
  assert_int_equal(im.px[at], 255);
  if( residual ) assert_true(ax >= DX0 - 3 && ax < DX1 + 3 && ay >= DY0 - 3 && ay < DY1 + 3);
  image_free(&im);

  /* heat and overlay are RGB at the image's size */
  snprintf(sql, sizeof(sql), "SELECT anomaly_map(image, '%s') FROM probe WHERE id = 3", method);
  query_image(db, sql, &im);
  assert_true(im.w == IW && im.h == IH && im.c == 3);
  image_free(&im);
  snprintf(sql, sizeof(sql), "SELECT anomaly_map(image, '%s', '{\"style\": \"overlay\"}') "
           "FROM probe WHERE id = 8", method);
  query_image(db, sql, &im);
  assert_true(im.w == IW && im.h == IH && im.c == 3);
  image_free(&im);

  /* the repair at the model's size */
  snprintf(sql, sizeof(sql), "SELECT anomaly_reconstruct(image, '%s') FROM probe WHERE id = 1",
           method);
  query_image(db, sql, &im);
  assert_true(im.w == SIDE && im.h == SIDE && im.c == 1);
  image_free(&im);

  /* pixel AUROC against the masks; the good images' pixels are all normal */
  snprintf(sql, sizeof(sql), "SELECT anomaly_pixel_auroc(image, '%s', mask) FROM probe", method);
  double pa = query_double(db, sql);
  printf("#   pixel AUROC %.4f\n", pa);
  assert_true(residual ? pa > 0.9 : pa >= 0 && pa <= 1);

  /* a montage of two rows: 32-pixel inputs make 96-pixel tiles */
  snprintf(sql, sizeof(sql), "SELECT anomaly_montage(image, '%s', kind) FROM "
           "(SELECT * FROM probe WHERE id IN (1, 7) ORDER BY id)", method);
  query_image(db, sql, &im);
  assert_int_equal(im.w, 3 * 96 + 4 * 4);
  assert_int_equal(im.h, 4 + 9 + 2 * (96 + 9 + 4) + 4);
  image_free(&im);
}

static void test_every_method(void **state) {
  (void)state;
  sqlite3 *db = open_db(":memory:");
  make_tables(db);
  check_method(db, "ganomaly", "{\"nz\": 16, \"ngf\": 8}", 1);
  check_method(db, "skipganomaly", "{\"ngf\": 8, \"ndf\": 8}", 1);
  check_method(db, "anogan", "{\"nz\": 16, \"ngf\": 8, \"steps\": 20}", 1);
  check_method(db, "egbad", "{\"nf\": 8, \"nz\": 32, \"lr\": 2e-4}", 1);
  check_method(db, "alad", "{\"nf\": 8, \"nz\": 16}", 1);
  check_method(db, "caae", "{\"nf\": 8, \"nz\": 32, \"lr\": 2e-4}", 1);
  check_method(db, "defectgan", "{\"ngf\": 8, \"ndf\": 8}", 0);
  sqlite3_close(db);
}

/* The options, the colour scales, the montage's limits and every error. */
static void test_options_and_errors(void **state) {
  (void)state;
  sqlite3 *db = open_db(":memory:");
  make_tables(db);
  sqlite3_stmt *st = query(db, "SELECT anomaly_train('g', 'ganomaly', image, '{\"epochs\": 2, "
      "\"size\": 32, \"nz\": 16, \"ngf\": 8, \"quiet\": true}') FROM flat", NULL, 0);
  sqlite3_finalize(st);
  /* the model keeps its map scale: median and 0.999 quantile of held-out maps */
  double lo = query_double(db, "SELECT info -> '$.calibration.map' ->> 'lo' FROM anomaly_models");
  double hi = query_double(db, "SELECT info -> '$.calibration.map' ->> 'hi' FROM anomaly_models");
  assert_true(lo > 0 && hi > lo);
  assert_int_equal(query_int(db, "SELECT info -> '$.calibration.map' ->> 'sigma' FROM anomaly_models"), 1);

  /* a scale above every value paints black; alpha 0 leaves the image as it was */
  image_u8 im, in;
  query_image(db, "SELECT anomaly_map(image, 'g', '{\"style\": \"grey\", \"scale\": [100, 200]}') "
                  "FROM probe WHERE id = 1", &im);
  for(size_t i = 0; i < (size_t)IW * IH; i++) assert_int_equal(im.px[i], 0);
  image_free(&im);
  query_image(db, "SELECT anomaly_map(image, 'g', '{\"style\": \"overlay\", \"alpha\": 0}') "
                  "FROM probe WHERE id = 1", &im);
  query_image(db, "SELECT image FROM probe WHERE id = 1", &in);
  for(size_t i = 0; i < (size_t)IW * IH; i++)
    for(int c = 0; c < 3; c++) assert_int_equal(im.px[3 * i + c], in.px[i]);
  image_free(&im);
  image_free(&in);
  /* the model's scale by default: the same pixels as asking for it */
  assert_int_equal(query_int(db, "SELECT anomaly_map(image, 'g') = anomaly_map(image, 'g', "
                                 "'{\"scale\": \"model\"}') FROM probe WHERE id = 2"), 1);
  assert_int_equal(query_int(db, "SELECT anomaly_map(image, 'g') = anomaly_map(image, 'g', "
                                 "'{\"scale\": \"image\"}') FROM probe WHERE id = 2"), 0);
  /* sigma 0 is the raw map: its mean is the residual score, recon_l1 */
  st = query(db, "SELECT anomaly_map(image, 'g', '{\"format\": \"f32\", \"sigma\": 0}'), "
                 "anomaly_scores(image, 'g') ->> 'recon_l1' FROM probe WHERE id = 4", NULL, 0);
  const float *f = sqlite3_column_blob(st, 0);   /* little-endian, as the host here */
  double mean = 0;
  for(int i = 0; i < SIDE * SIDE; i++) mean += f[i];
  mean /= SIDE * SIDE;
  printf("# raw map mean %.6f, recon_l1 %.6f\n", mean, sqlite3_column_double(st, 1));
  assert_true(fabs(mean - sqlite3_column_double(st, 1)) < 1e-5);
  sqlite3_finalize(st);

  /* NULL in, NULL out; no rows or only NULL images: no montage */
  assert_int_equal(query_int(db, "SELECT anomaly_map(NULL, 'g') IS NULL"), 1);
  assert_int_equal(query_int(db, "SELECT anomaly_montage(image, 'g') IS NULL FROM probe WHERE 0"), 1);
  assert_int_equal(query_int(db, "SELECT anomaly_montage(NULL, 'g') IS NULL FROM probe"), 1);

  /* errors */
  exec_err(db, "SELECT anomaly_map('x.png', 'g')",
           "anomaly_map: image must be a BLOB (PNG, JPEG, BMP, GIF or PNM), got TEXT");
  exec_err(db, "SELECT anomaly_map(substr(image, 1, 100), 'g') FROM probe WHERE id = 1",
           "anomaly_map: ");
  exec_err(db, "SELECT anomaly_map(x'00112233', 'g')", "anomaly_map: ");
  exec_err(db, "SELECT anomaly_map(image, 'nope') FROM probe WHERE id = 1",
           "anomaly_map: no model named 'nope'");
  exec_err(db, "SELECT anomaly_map(image, 1) FROM probe WHERE id = 1",
           "anomaly_map: model must be the TEXT name of a model in anomaly_models, got INTEGER");
  exec_err(db, "SELECT anomaly_map(image, 'g', 'heat') FROM probe WHERE id = 1",
           "anomaly_map: options must be a JSON object");
  exec_err(db, "SELECT anomaly_map(image, 'g', '{\"style\": \"hot\"}') FROM probe WHERE id = 1",
           "anomaly_map: option 'style' must be \"heat\", \"grey\" or \"overlay\"");
  exec_err(db, "SELECT anomaly_map(image, 'g', '{\"scale\": [2, 1]}') FROM probe WHERE id = 1",
           "anomaly_map: option 'scale' must be \"model\", \"image\" or [lo, hi] with lo < hi");
  exec_err(db, "SELECT anomaly_map(image, 'g', '{\"sigma\": 17}') FROM probe WHERE id = 1",
           "anomaly_map: option 'sigma' must be a number from 0 to 16");
  exec_err(db, "SELECT anomaly_map(image, 'g', '{\"alpha\": -1}') FROM probe WHERE id = 1",
           "anomaly_map: option 'alpha' must be a number from 0 to 1");
  exec_err(db, "SELECT anomaly_map(image, 'g', '{\"format\": \"jpeg\"}') FROM probe WHERE id = 1",
           "anomaly_map: option 'format' must be \"png\" or \"f32\"");
  exec_err(db, "SELECT anomaly_map(image, 'g', '{\"styl\": \"grey\"}') FROM probe WHERE id = 1",
           "anomaly_map: ganomaly takes no scoring options, found 'styl' (the function's "
           "own options: style, scale, sigma, alpha, format)");
  /* SQLite's length limit: 4096 bytes of floats do not fit in 4000 */
  sqlite3_limit(db, SQLITE_LIMIT_LENGTH, 4000);
  exec_err(db, "SELECT anomaly_map(image, 'g', '{\"format\": \"f32\"}') FROM probe WHERE id = 1",
           "string or blob too big");
  sqlite3_limit(db, SQLITE_LIMIT_LENGTH, 100);
  exec_err(db, "SELECT anomaly_map(image, 'g') FROM probe WHERE id = 1", "string or blob too big");
  exec_err(db, "SELECT anomaly_reconstruct(image, 'g') FROM probe WHERE id = 1",
           "string or blob too big");
  exec_err(db, "SELECT anomaly_montage(image, 'g') FROM probe", "string or blob too big");
  sqlite3_limit(db, SQLITE_LIMIT_LENGTH, 1000000000);

  /* montage: at most 64 rows by default, or what anomaly_config says */
  exec_ok(db, "CREATE TABLE many AS SELECT image FROM flat LIMIT 65");
  exec_err(db, "SELECT anomaly_montage(image, 'g') FROM many",
           "anomaly_montage: a montage holds at most 64 rows (add LIMIT 64, or raise "
           "anomaly_config('max_montage_rows', n))");
  image_u8 big;
  query_image(db, "SELECT anomaly_montage(image, 'g') FROM (SELECT image FROM many LIMIT 64)", &big);
  assert_int_equal(big.h, 4 + 9 + 64 * (96 + 9 + 4) + 4);
  image_free(&big);
  assert_int_equal(query_int(db, "SELECT anomaly_config('max_montage_rows', 2)"), 2);
  exec_err(db, "SELECT anomaly_montage(image, 'g', id) FROM probe WHERE id <= 3",
           "anomaly_montage: a montage holds at most 2 rows");
  exec_err(db, "SELECT anomaly_config('max_montage_rows', 0)",
           "anomaly_config: 'max_montage_rows' must be an integer from 1 to 4096");
  exec_err(db, "SELECT anomaly_montage(image, CASE id WHEN 1 THEN 'g' ELSE 'h' END) FROM probe "
               "WHERE id <= 2", "anomaly_montage: every row must name the same model ('g')");
  exec_err(db, "SELECT anomaly_montage(image, 'nope') FROM probe",
           "anomaly_montage: no model named 'nope'");
  exec_err(db, "SELECT anomaly_montage(x'0102', 'g') FROM probe WHERE id = 1",
           "anomaly_montage: ");

  /* pixel AUROC: masks of the image's size, only sigma among the map options */
  exec_err(db, "SELECT anomaly_pixel_auroc(image, 'g', NULL) FROM probe",
           "anomaly_pixel_auroc: both classes are needed, found ");
  exec_err(db, "SELECT anomaly_pixel_auroc(image, 'g', 'mask') FROM probe",
           "anomaly_pixel_auroc: mask must be an image BLOB (defect pixels over 127) or "
           "NULL (no defect), got TEXT");
  exec_err(db, "SELECT anomaly_pixel_auroc(p.image, 'g', f.image) FROM probe p, flat f "
               "WHERE p.id = 1 LIMIT 1",
           "anomaly_pixel_auroc: the mask is 32x32 but the image is 64x48");
  exec_err(db, "SELECT anomaly_pixel_auroc(image, 'g', x'89504e47') FROM probe WHERE id = 1",
           "anomaly_pixel_auroc: mask: ");
  exec_err(db, "SELECT anomaly_pixel_auroc(image, 'g', mask, '{\"style\": \"grey\"}') FROM probe",
           "anomaly_pixel_auroc: option 'style' does not apply here");
  double s0 = query_double(db, "SELECT anomaly_pixel_auroc(image, 'g', mask, '{\"sigma\": 0}') FROM probe");
  double s4 = query_double(db, "SELECT anomaly_pixel_auroc(image, 'g', mask, '{\"sigma\": 4}') FROM probe");
  printf("# pixel AUROC sigma 0: %.4f, sigma 4: %.4f\n", s0, s4);
  assert_true(s0 > 0.8 && s4 > 0.8 && s0 != s4);
  sqlite3_close(db);
}

/* A model file from before maps were calibrated: the image's own scale by
** default, and a clear error when the model's is asked for. */
static void test_uncalibrated_model(void **state) {
  (void)state;
  sqlite3 *db = open_db(":memory:");
  make_tables(db);
  exec_ok(db, "INSERT INTO anomaly_models(name, model) VALUES ('t', anomaly_model_from_file('" TINY "'))");
  assert_int_equal(query_int(db, "SELECT info -> '$.calibration.map' IS NULL FROM anomaly_models"), 1);
  assert_int_equal(query_int(db, "SELECT anomaly_map(image, 't') = anomaly_map(image, 't', "
                                 "'{\"scale\": \"image\"}') FROM probe WHERE id = 1"), 1);
  exec_err(db, "SELECT anomaly_map(image, 't', '{\"scale\": \"model\"}') FROM probe WHERE id = 1",
           "anomaly_map: the model has no calibrated map scale");
  sqlite3_close(db);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_every_method),
    cmocka_unit_test(test_options_and_errors),
    cmocka_unit_test(test_uncalibrated_model),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
