/*
** fuzz_options.c - libFuzzer harness for the options argument of the SQL
** functions (ext/functions.c, ext/maps.c, ext/train.c) and the scoring
** options and hyper-parameters of the detectors behind them.
**
**   make fuzz FUZZ=options                    build and run it for FUZZ_SECONDS
**   ./build-fuzz/fuzz_options crash-file      replay one input (from the repo root)
**
** Setup, once: an in-memory database with the extension, four images with
** masks and a tiny model of every method (fuzz_sql.h). Each input is one
** selector byte and the options text:
**
**   byte 0      the model scored: methods[b % 7] (ganomaly, skipganomaly,
**               anogan, egbad, alad, defectgan, caae); the method trained:
**               methods[(b / 7) % 7]
**   bytes 1..   the options, bound as TEXT as they are (NUL bytes included)
**
** The options go to anomaly_score, anomaly_scores, anomaly_map,
** anomaly_reconstruct and anomaly_pixel_auroc over the four images, and to
** anomaly_train over eight images. Training gets the method's tiny widths
** and size 16 or 32 where the options name none (the defaults would take
** seconds a run), and an input asking for more than tiny work is skipped
** (see caps[] below); values out of the legal ranges still go through, to
** meet their error paths. Errors are expected; a crash, a leak, undefined
** behaviour or an error message that does not name its function is not.
*/
#include "tests/fuzz/fuzz_sql.h"

#include <cjson/cJSON.h>
#include <stdint.h>

static sqlite3 *db;

/* The functions that score with options: ?1 the model, ?2 the options. */
static const struct { const char *fn, *sql; } scoring[] = {
  {"anomaly_score", "SELECT anomaly_score(image, ?1, ?2) FROM imgs"},
  {"anomaly_scores", "SELECT anomaly_scores(image, ?1, ?2) FROM imgs"},
  {"anomaly_map", "SELECT anomaly_map(image, ?1, ?2) FROM imgs"},
  {"anomaly_reconstruct", "SELECT anomaly_reconstruct(image, ?1, ?2) FROM imgs"},
  {"anomaly_pixel_auroc", "SELECT anomaly_pixel_auroc(image, ?1, mask, ?2) FROM imgs"},
};
#define FN_TRAIN "anomaly_train"

/* The most work an input may ask for: key, largest value. Values above
** 1e7 are outside every legal range and refused before any work. */
static const struct { const char *key; double max; } caps[] = {
  {"epochs", 2}, {"size", 32}, {"width", 32}, {"height", 32}, {"nz", 16},
  {"ngf", 8}, {"ndf", 8}, {"nf", 8}, {"extralayers", 2}, {"steps", 16},
  {"critic_h1", 64}, {"critic_h2", 64}, {"n_critic", 4}, {"n_critic_early", 4},
};

static int too_costly(const cJSON *o) {
  const cJSON *it;
  cJSON_ArrayForEach(it, o){
    if( !it->string || !cJSON_IsNumber(it) ) continue;
    for(size_t k = 0; k < sizeof(caps) / sizeof(caps[0]); k++){
      if( strcmp(it->string, caps[k].key) == 0 && it->valuedouble > caps[k].max
          && it->valuedouble <= 1e7 )
        return 1;
    }
  }
  return 0;
}

/* Add "key": value to o unless it has the key. */
static void add_default(cJSON *o, const char *key, double v) {
  if( !cJSON_GetObjectItemCaseSensitive(o, key) ) cJSON_AddNumberToObject(o, key, v);
}

/* The training options: the input's, with the method's tiny settings for
** the keys it does not set. A new string to free with cJSON_free. */
static char *train_options(cJSON *o, int method) {
  cJSON *tiny = NULL;
  char buf[256];
  snprintf(buf, sizeof(buf), "{%s}", fuzz_tiny[method]);
  tiny = cJSON_Parse(buf);
  const cJSON *it;
  int sized = cJSON_GetObjectItemCaseSensitive(o, "size")
              || cJSON_GetObjectItemCaseSensitive(o, "width")
              || cJSON_GetObjectItemCaseSensitive(o, "height");
  cJSON_ArrayForEach(it, tiny){
    if( strcmp(it->string, "size") == 0 && sized ) continue;
    add_default(o, it->string, it->valuedouble);
  }
  add_default(o, "epochs", 1);
  cJSON_Delete(tiny);
  return cJSON_PrintUnformatted(o);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc; (void)argv;
  db = fuzz_db_open();
  fuzz_add_images(db);
  fuzz_add_models(db);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if( size < 1 ) return 0;
  const char *model = fuzz_methods[data[0] % FUZZ_NMETHODS];
  int method = (data[0] / FUZZ_NMETHODS) % FUZZ_NMETHODS;
  const char *opts = (const char *)data + 1;
  int nopts = (int)size - 1;
  char *text = anom_malloc(size);
  if( !text ) return 0;
  memcpy(text, opts, (size_t)nopts);
  text[nopts] = 0;
  cJSON *o = cJSON_Parse(text);
  if( o && cJSON_IsObject(o) && too_costly(o) ){
    cJSON_Delete(o);
    anom_free(text);
    return -1;   /* not added to the corpus */
  }
  for(size_t k = 0; k < sizeof(scoring) / sizeof(scoring[0]); k++)
    fuzz_run(db, scoring[k].fn, scoring[k].sql, model, opts, nopts, NULL, 0);

  /* training: the input's options with tiny defaults, or its text as it is
  ** when it is not a JSON object */
  char *topts = o && cJSON_IsObject(o) ? train_options(o, method) : NULL;
  char sql[160];
  snprintf(sql, sizeof(sql), "SELECT anomaly_train('fuzz', '%s', image, ?2) FROM "
           "train ORDER BY id", fuzz_methods[method]);
  if( topts ) fuzz_run(db, FN_TRAIN, sql, NULL, topts, (int)strlen(topts), NULL, 0);
  else fuzz_run(db, FN_TRAIN, sql, NULL, opts, nopts, NULL, 0);
  fuzz_exec(db, "DELETE FROM anomaly_models WHERE name = 'fuzz'");
  cJSON_free(topts);
  cJSON_Delete(o);
  anom_free(text);
  return 0;
}
