/*
** fuzz_model.c - libFuzzer harness for model files: the safetensors
** container (core/safetensors.c) and the model profile (core/model.c).
**
**   make fuzz FUZZ=model                      build and run it for FUZZ_SECONDS
**   ./build-fuzz/fuzz_model crash-file        replay one input
**
** Each input is a model file. model_load reads it with the default limits;
** a file refused only for its checksum is loaded again with the checksum
** patched (the fuzzer cannot compute a CRC-32, and everything after the
** check would stay out of its reach). A model that loads is then used as
** the extension uses one: one image of its shape is scored with a scratch
** buffer of model_work_floats floats, mapped with model_map, described with
** model_info, saved, and the saved file loaded and saved again. It traps
** when a promise is broken:
**
**   - a failed load returns NULL and sets a message;
**   - model_map gives the score model_score gives;
**   - a saved model loads, and saving it again gives the same bytes.
**
** AnoGAN scores with a latent search of as many steps as the file asks (up
** to 100000); the harness asks for 2 instead, to keep each run short.
*/
#include "core/common.h"
#include "core/model.h"

#include "tests/fuzz/fuzz.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* scoring is skipped for models needing more scratch than this (floats) */
#define FUZZ_MAX_WORK ((size_t)1 << 26)

static int same_double(double a, double b) {
  return a == b || (isnan(a) && isnan(b));
}

/* Score and map one image built from the input bytes. */
static void use_model(const anom_model *m, const uint8_t *data, size_t size) {
  size_t hw = (size_t)m->width * m->height, img = hw * (size_t)m->channels;
  size_t nwork = model_work_floats(m, 1);
  if( nwork > FUZZ_MAX_WORK ) return;
  float *x = anom_malloc(img * sizeof(float));
  float *recon = anom_malloc(img * sizeof(float));
  float *map = anom_malloc(hw * sizeof(float));
  float *work = anom_malloc((nwork ? nwork : 1) * sizeof(float));
  cJSON *opts = NULL;
  if( strcmp(m->ops->name, "anogan") == 0 ) opts = cJSON_Parse("{\"steps\": 2}");
  if( x && recon && map && work ){
    for(size_t i = 0; i < img; i++)
      x[i] = (float)data[(i * 7919) % size] / 127.5f - 1.0f;
    score_result r1, r2;
    anom_err e;
    anom_err_clear(&e);
    int rc1 = model_score(m, 1, x, work, &r1, recon, opts, &e);
    if( rc1 ) fuzz_check(e.msg[0] != 0, "model_score failed without a message", NULL);
    anom_err_clear(&e);
    int rc2 = model_map(m, 1, x, work, map, &r2, recon, opts, &e);
    if( rc2 ) fuzz_check(e.msg[0] != 0, "model_map failed without a message", NULL);
    fuzz_check(rc1 == rc2, "model_score and model_map disagree on failing", NULL);
    if( rc1 == ANOM_OK ){
      fuzz_check(same_double(r1.score, r2.score), "model_map's score differs from "
            "model_score's", m->ops->name);
      fuzz_check(r1.nparts >= 0 && r1.nparts <= SCORE_MAX_PARTS, "score parts", NULL);
    }
  }
  cJSON_Delete(opts);
  anom_free(work);
  anom_free(map);
  anom_free(recon);
  anom_free(x);
}

/* Save m, load the file, save again: the two files must be the same. */
static void round_trip(const anom_model *m) {
  unsigned char *b1 = NULL, *b2 = NULL;
  size_t n1 = 0, n2 = 0;
  anom_err e;
  anom_err_clear(&e);
  if( model_save(m, &b1, &n1, &e) ){
    fuzz_check(e.code == ANOM_ENOMEM, "model_save failed", e.msg);
    return;
  }
  anom_model *m2;
  anom_err_clear(&e);
  int rc = model_load(&m2, b1, n1, NULL, &e);
  fuzz_check(rc == ANOM_OK, "a saved model does not load", e.msg);
  anom_err_clear(&e);
  rc = model_save(m2, &b2, &n2, &e);
  fuzz_check(rc == ANOM_OK, "a reloaded model does not save", e.msg);
  fuzz_check(n1 == n2 && memcmp(b1, b2, n1) == 0, "save, load, save changes the file",
        NULL);
  model_free(m2);
  anom_free(b1);
  anom_free(b2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  anom_model *m = (anom_model *)1;
  anom_err e;
  anom_err_clear(&e);
  unsigned char *patched = NULL;
  int rc = model_load(&m, data, size, NULL, &e);
  if( rc ){
    fuzz_check(m == NULL, "a failed model_load left *out set", NULL);
    fuzz_check(e.msg[0] != 0, "model_load failed without a message", NULL);
    if( strstr(e.msg, "checksum mismatch") == NULL ) return 0;
    if( !(patched = anom_malloc(size)) ) return 0;
    memcpy(patched, data, size);
    if( !fuzz_fix_checksum(patched, size) ){
      anom_free(patched);
      return 0;
    }
    data = patched;
    anom_err_clear(&e);
    if( model_load(&m, data, size, NULL, &e) ){
      fuzz_check(m == NULL, "a failed model_load left *out set", NULL);
      anom_free(patched);
      return 0;
    }
  }
  use_model(m, data, size);
  cJSON *info = model_info(m);
  fuzz_check(info != NULL, "model_info failed", NULL);
  cJSON_Delete(info);
  round_trip(m);
  model_free(m);
  anom_free(patched);
  return 0;
}
