/*
** hparams.c - hyper-parameters and options from JSON. See hparams.h.
*/
#include "hparams.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

int hp_check_keys(const cJSON *obj, const char *const *known, const char *method,
                  const char *what, anom_err *e) {
  const cJSON *it;
  cJSON_ArrayForEach(it, obj){
    int k = 0;
    while( known[k] && strcmp(known[k], it->string) ) k++;
    if( known[k] ) continue;
    char list[ANOM_ERR_MAX / 2] = "";
    size_t len = 0;
    for(k = 0; known[k] && len + strlen(known[k]) + 3 < sizeof(list); k++){
      len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", k ? ", " : "",
                              known[k]);
    }
    return anom_fail(e, ANOM_EINVAL, "%s: unknown %s '%.64s' (known: %s)", method,
                     what, it->string, list);
  }
  return ANOM_OK;
}

int hp_int(const cJSON *obj, const char *method, const char *key, int def, int lo,
           int hi, int *out, anom_err *e) {
  const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
  if( !v ){ *out = def; return ANOM_OK; }
  if( !cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble)
      || v->valuedouble < lo || v->valuedouble > hi )
    return anom_fail(e, ANOM_EINVAL, "%s: '%s' must be an integer from %d to %d",
                     method, key, lo, hi);
  *out = (int)v->valuedouble;
  return ANOM_OK;
}

int hp_num(const cJSON *obj, const char *method, const char *key, double def,
           double lo, double hi, double *out, anom_err *e) {
  const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
  if( !v ){ *out = def; return ANOM_OK; }
  if( !cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi) )
    return anom_fail(e, ANOM_EINVAL, "%s: '%s' must be a number from %g to %g",
                     method, key, lo, hi);
  *out = v->valuedouble;
  return ANOM_OK;
}
