/*
** fuzz_registry.c - libFuzzer harness for a hostile database: model bytes
** written straight into the registry's backing table (ext/models_vtab.c,
** ext/model_cache.c), behind the back of anomaly_models' validation, then
** read by everything that reads the registry.
**
**   make fuzz FUZZ=registry                   build and run it for FUZZ_SECONDS
**   ./build-fuzz/fuzz_registry crash-file     replay one input (from the repo root)
**
** Setup, once: an in-memory database with the extension, four images with
** masks and a tiny model of every method (fuzz_sql.h), and a model 'm'.
** Each input becomes the stored bytes of 'm':
**
**   raw         any input not starting with "SPL:": the bytes themselves
**   "SPL:" b f o4 c2 payload
**               one of the seven tiny models (b % 7: ganomaly, skipganomaly,
**               anogan, egbad, alad, defectgan, caae) with the c bytes at
**               offset o (little-endian, modulo its length + 1) replaced by
**               payload; flags f: 1 repairs the checksum, 2 moves the header
**               length by the size change when the splice starts inside the
**               header, 4 stores the result as TEXT instead of a BLOB
**
** with `UPDATE anomaly_models_data SET model = ?`, as a hand-edited or
** hostile database file would hold it. Then: every column of
** anomaly_models, anomaly_model_info on the stored bytes, anomaly_score,
** anomaly_scores, anomaly_map, anomaly_reconstruct and anomaly_pixel_auroc
** by name over the four images, anomaly_montage over one, and an INSERT and a
** DELETE of the bytes through anomaly_models. Errors are expected; a crash,
** a leak, undefined behaviour or an error that does not name its function
** is not. An AnoGAN model that asks for a search of more than 16 steps is
** scored with {"steps": 2}, to keep each run short.
*/
#include "tests/fuzz/fuzz_sql.h"

#include "core/model.h"

#include <cjson/cJSON.h>
#include <stdint.h>

static sqlite3 *db;
static unsigned char *base[FUZZ_NMETHODS];   /* the tiny models' files */
static size_t nbase[FUZZ_NMETHODS];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc; (void)argv;
  db = fuzz_db_open();
  fuzz_add_images(db);
  fuzz_add_models(db);
  fuzz_exec(db, "INSERT INTO anomaly_models(name, model) SELECT 'm', model FROM "
                "anomaly_models WHERE name = 'defectgan'");
  sqlite3_stmt *st;
  if( sqlite3_prepare_v2(db, "SELECT model FROM anomaly_models_data WHERE name = ?1",
                         -1, &st, 0) ) fuzz_die(db, "read models");
  for(int i = 0; i < FUZZ_NMETHODS; i++){
    sqlite3_bind_text(st, 1, fuzz_methods[i], -1, SQLITE_STATIC);
    if( sqlite3_step(st) != SQLITE_ROW ) fuzz_die(db, fuzz_methods[i]);
    nbase[i] = (size_t)sqlite3_column_bytes(st, 0);
    base[i] = anom_malloc(nbase[i]);
    if( !base[i] ) fuzz_die(NULL, "out of memory");
    memcpy(base[i], sqlite3_column_blob(st, 0), nbase[i]);
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  return 0;
}

/* The spliced model of an "SPL:" input, in a new buffer; *as_text from f. */
static unsigned char *splice(const uint8_t *data, size_t size, size_t *n,
                             int *as_text) {
  int b = data[4] % FUZZ_NMETHODS, f = data[5];
  const unsigned char *src = base[b];
  size_t ns = nbase[b];
  size_t off = ((size_t)data[6] | (size_t)data[7] << 8 | (size_t)data[8] << 16
                | (size_t)data[9] << 24) % (ns + 1);
  size_t cut = (size_t)data[10] | (size_t)data[11] << 8;
  if( cut > ns - off ) cut = ns - off;
  const uint8_t *pay = data + 12;
  size_t npay = size - 12;
  *n = ns - cut + npay;
  unsigned char *out = anom_malloc(*n ? *n : 1);
  if( !out ) return NULL;
  memcpy(out, src, off);
  memcpy(out + off, pay, npay);
  memcpy(out + off + npay, src + off + cut, ns - off - cut);
  if( (f & 2) && *n >= 8 && off >= 8 ){
    uint64_t hlen = 0;
    for(int i = 7; i >= 0; i--) hlen = hlen << 8 | src[i];
    if( off < 8 + hlen ){
      hlen = hlen + npay - cut;
      for(int i = 0; i < 8; i++) out[i] = (unsigned char)(hlen >> (8 * i));
    }
  }
  if( f & 1 ) fuzz_fix_checksum(out, *n);
  *as_text = (f & 4) != 0;
  return out;
}

/* The scoring options: {"steps": 2} for an AnoGAN model with a longer
** search, else none. NULL too when the bytes are no model. */
static const char *scoring_options(const unsigned char *blob, size_t n) {
  anom_model *m;
  anom_err e;
  const char *opts = NULL;
  if( model_load(&m, blob, n, NULL, &e) ) return NULL;
  if( strcmp(m->ops->name, "anogan") == 0 ){
    cJSON *hp = m->ops->hparams(m);
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(hp, "steps");
    if( !steps || !cJSON_IsNumber(steps) || steps->valuedouble > 16 )
      opts = "{\"steps\": 2}";
    cJSON_Delete(hp);
  }
  model_free(m);
  return opts;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  unsigned char *blob = NULL;
  size_t n = size;
  int as_text = 0;
  if( size >= 12 && memcmp(data, "SPL:", 4) == 0 ){
    if( !(blob = splice(data, size, &n, &as_text)) ) return 0;
  }else{
    if( !(blob = anom_malloc(size ? size : 1)) ) return 0;
    memcpy(blob, data, size);
  }
  sqlite3_stmt *st;
  if( sqlite3_prepare_v2(db, "UPDATE anomaly_models_data SET model = ?1 WHERE "
                         "name = 'm'", -1, &st, 0) ) fuzz_die(db, "update");
  if( as_text ) sqlite3_bind_text(st, 1, (const char *)blob, (int)n, SQLITE_STATIC);
  else sqlite3_bind_blob(st, 1, blob, (int)n, SQLITE_STATIC);
  if( sqlite3_step(st) != SQLITE_DONE ) fuzz_die(db, "update");
  sqlite3_finalize(st);

  const char *opts = scoring_options(blob, n);
  fuzz_run(db, "anomaly_models", "SELECT name, method, width, height, channels, "
           "params, threshold, created, info, model FROM anomaly_models", NULL, NULL,
           0, NULL, 0);
  fuzz_run(db, "anomaly_models", "SELECT *, model FROM anomaly_models WHERE name = 'm'",
           NULL, NULL, 0, NULL, 0);
  fuzz_run(db, "anomaly_model_info", "SELECT anomaly_model_info(model) FROM "
           "anomaly_models_data WHERE name = 'm'", NULL, NULL, 0, NULL, 0);
  fuzz_run(db, "anomaly_score", "SELECT anomaly_score(image, ?1, ?2) FROM imgs", "m",
           opts, -1, NULL, 0);
  fuzz_run(db, "anomaly_scores", "SELECT anomaly_scores(image, ?1, ?2) FROM imgs", "m",
           opts, -1, NULL, 0);
  fuzz_run(db, "anomaly_map", "SELECT anomaly_map(image, ?1, ?2) FROM imgs", "m",
           opts, -1, NULL, 0);
  fuzz_run(db, "anomaly_reconstruct", "SELECT anomaly_reconstruct(image, ?1, ?2) "
           "FROM imgs", "m", opts, -1, NULL, 0);
  fuzz_run(db, "anomaly_pixel_auroc", "SELECT anomaly_pixel_auroc(image, ?1, mask, ?2) "
           "FROM imgs", "m", opts, -1, NULL, 0);
  /* one row: encoding a contact sheet is most of the time a run takes */
  if( !opts )
    fuzz_run(db, "anomaly_montage", "SELECT anomaly_montage(image, ?1, id) FROM imgs "
             "WHERE id = 2", "m", NULL, 0, NULL, 0);
  /* the same bytes through the front door */
  fuzz_run(db, "anomaly_models", "INSERT INTO anomaly_models(name, model) "
           "VALUES ('ins', ?3)", NULL, NULL, 0, blob, (int)n);
  fuzz_exec(db, "DELETE FROM anomaly_models WHERE name = 'ins'");
  anom_free(blob);
  return 0;
}
