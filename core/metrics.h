/*
** metrics.h - the numbers we judge detectors by.
**
**   auroc(scores, labels, n, &a)      ROC AUC, ties as in the Mann-Whitney U
**   quantile(sorted, n, p)            linear interpolation (numpy's default)
*/
#ifndef ANOM_METRICS_H
#define ANOM_METRICS_H

#include "common.h"

/*
** Area under the ROC curve of scores against labels (non-zero: anomalous,
** the positive class), i.e. P(score of a positive > score of a negative)
** + 0.5 P(tie). Returns ANOM_EINVAL when a class is missing or a score is
** NaN. O(n log n); scores and labels are not modified.
*/
int auroc(const double *scores, const int *labels, size_t n, double *out,
          anom_err *e);

/* Sort x[0..n) ascending in place. */
void sort_doubles(double *x, size_t n);

/* The p-quantile (0 <= p <= 1) of ascending sorted[0..n), n >= 1. */
double quantile(const double *sorted, size_t n, double p);

#endif /* ANOM_METRICS_H */
