/*
** metrics.h - the numbers we judge detectors by.
**
**   auroc(scores, labels, n, &a)      ROC AUC, ties as in the Mann-Whitney U
**   quantile(sorted, n, p)            linear interpolation (numpy's default)
**
** For the millions of pixels of a pixel-level AUROC, a streaming form in
** constant memory (16 MiB), comparing values at 12 significant bits:
**
**   auroc_hist h;
**   if( auroc_hist_init(&h, &e) ) ...;
**   for each pixel: auroc_hist_add(&h, value, is_defect);
**   auroc_hist_result(&h, &a, &e);
**   auroc_hist_free(&h);
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

/*
** Values fall into 2^20 bins by the top 20 bits of their float32 ordering
** (sign, exponent and 11 mantissa bits): two values tie when they agree to
** a relative 2^-11 (5e-4), and the result is the AUROC of the values so
** rounded, exactly.
*/
#define AUROC_HIST_BITS 20

typedef struct auroc_hist {
  uint64_t *count[2];   /* [0] negatives, [1] positives, 2^AUROC_HIST_BITS bins */
  uint64_t n[2];
} auroc_hist;

int auroc_hist_init(auroc_hist *h, anom_err *e);
/* Count v (not NaN) as a positive when label is non-zero. */
void auroc_hist_add(auroc_hist *h, float v, int label);
/* ANOM_EINVAL when a class has no values. */
int auroc_hist_result(const auroc_hist *h, double *out, anom_err *e);
void auroc_hist_free(auroc_hist *h);

/* Sort x[0..n) ascending in place. */
void sort_doubles(double *x, size_t n);

/* The p-quantile (0 <= p <= 1) of ascending sorted[0..n), n >= 1. */
double quantile(const double *sorted, size_t n, double p);

#endif /* ANOM_METRICS_H */
