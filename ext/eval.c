/*
** eval.c - anomaly_auroc(score, is_anomalous), an aggregate: the ROC AUC of
** the scores against the labels, ties counted as in the Mann-Whitney U.
**
**   SELECT anomaly_auroc(anomaly_score(image, 'shirts'), label <> 6)
**     FROM fashion WHERE split = 'test';
**
** Rows where either argument is NULL are skipped. is_anomalous is true when
** non-zero. An error when one class is missing.
*/
#include "anomaly_ext.h"
SQLITE_EXTENSION_INIT3

#include "core/metrics.h"

#include <math.h>
#include <string.h>

typedef struct auroc_agg {
  double *s;
  int *y;
  size_t n, cap;
  int failed;
} auroc_agg;

static void aurocStep(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  auroc_agg *a = sqlite3_aggregate_context(ctx, sizeof(*a));
  if( !a ){ sqlite3_result_error_nomem(ctx); return; }
  if( a->failed ) return;
  int ts = sqlite3_value_numeric_type(argv[0]), ty = sqlite3_value_numeric_type(argv[1]);
  if( ts == SQLITE_NULL || ty == SQLITE_NULL ) return;
  if( (ts != SQLITE_INTEGER && ts != SQLITE_FLOAT) || (ty != SQLITE_INTEGER && ty != SQLITE_FLOAT) ){
    a->failed = 1;
    sqlite3_result_error(ctx, "anomaly_auroc: score and is_anomalous must be numbers", -1);
    return;
  }
  double s = sqlite3_value_double(argv[0]);
  if( isnan(s) ){
    a->failed = 1;
    sqlite3_result_error(ctx, "anomaly_auroc: a score is NaN", -1);
    return;
  }
  if( a->n == a->cap ){
    size_t cap = a->cap ? a->cap * 2 : 1024;
    double *ns = anom_realloc(a->s, cap * sizeof(double));
    if( ns ) a->s = ns;
    int *ny = ns ? anom_realloc(a->y, cap * sizeof(int)) : NULL;
    if( !ns || !ny ){ a->failed = 1; sqlite3_result_error_nomem(ctx); return; }
    a->y = ny;
    a->cap = cap;
  }
  a->s[a->n] = s;
  a->y[a->n] = sqlite3_value_double(argv[1]) != 0;
  a->n++;
}

static void aurocFinal(sqlite3_context *ctx) {
  auroc_agg *a = sqlite3_aggregate_context(ctx, 0);
  if( a && a->failed ){ anom_free(a->s); anom_free(a->y); return; }
  double v;
  anom_err e;
  anom_err_clear(&e);
  int rc = a ? auroc(a->s, a->y, a->n, &v, &e)
             : anom_fail(&e, ANOM_EINVAL, "both classes are needed, found no rows");
  if( rc == ANOM_ENOMEM ) sqlite3_result_error_nomem(ctx);
  else if( rc ){
    char *z = sqlite3_mprintf("anomaly_auroc: %s", e.msg);
    sqlite3_result_error(ctx, z ? z : "out of memory", -1);
    sqlite3_free(z);
  }else sqlite3_result_double(ctx, v);
  if( a ){ anom_free(a->s); anom_free(a->y); }
}

int anom_register_eval(sqlite3 *db, anom_conn *cn) {
  return sqlite3_create_function_v2(db, "anomaly_auroc", 2, SQLITE_UTF8 |
                                    SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, cn, 0,
                                    aurocStep, aurocFinal, 0);
}
