/*
** hparams.h - a detector's hyper-parameters and scoring options, read from a
** JSON object with defaults and ranges, errors naming the key.
**
**   static const char *const known[] = {"nz", "ngf", NULL};
**   if( (rc = hp_check_keys(hp, known, "ganomaly", "hyper-parameter", e)) ) ...
**   if( (rc = hp_int(hp, "ganomaly", "nz", 100, 1, 4096, &g->nz, e)) ) ...
**
** A NULL object gives every default.
*/
#ifndef ANOM_HPARAMS_H
#define ANOM_HPARAMS_H

#include "common.h"

struct cJSON;

/* Every key of obj must be in known (NULL-terminated), else ANOM_EINVAL
** "<method>: unknown <what> '<key>' (known: a, b, c)". */
int hp_check_keys(const struct cJSON *obj, const char *const *known,
                  const char *method, const char *what, anom_err *e);

/* An integer in [lo, hi]; def when absent. */
int hp_int(const struct cJSON *obj, const char *method, const char *key, int def,
           int lo, int hi, int *out, anom_err *e);

/* A number in [lo, hi]; def when absent. */
int hp_num(const struct cJSON *obj, const char *method, const char *key, double def,
           double lo, double hi, double *out, anom_err *e);

#endif /* ANOM_HPARAMS_H */
