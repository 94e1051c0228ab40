/*
** metrics.c - AUROC and quantiles. See metrics.h.
**
** AUROC by ranks: sort the scores, give each group of tied scores the mean
** of the ranks it spans, then AUC = (R+ - P (P + 1) / 2) / (P N), where R+
** is the sum of the positives' ranks (Mann and Whitney, 1947).
*/
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct scored {
  double s;
  int pos;
} scored;

static int cmp_scored(const void *a, const void *b) {
  double x = ((const scored *)a)->s, y = ((const scored *)b)->s;
  return (x > y) - (x < y);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

void sort_doubles(double *x, size_t n) {
  qsort(x, n, sizeof(*x), cmp_double);
}

int auroc(const double *scores, const int *labels, size_t n, double *out,
          anom_err *e) {
  size_t npos = 0;
  for(size_t i = 0; i < n; i++){
    if( isnan(scores[i]) )
      return anom_fail(e, ANOM_EINVAL, "score %zu is NaN", i);
    npos += labels[i] != 0;
  }
  if( npos == 0 || npos == n )
    return anom_fail(e, ANOM_EINVAL, "both classes are needed, found %zu "
                     "anomalous and %zu normal", npos, n - npos);
  scored *v = anom_malloc(n * sizeof(*v));
  if( !v ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  for(size_t i = 0; i < n; i++){
    v[i].s = scores[i];
    v[i].pos = labels[i] != 0;
  }
  qsort(v, n, sizeof(*v), cmp_scored);
  double rank_sum = 0;
  for(size_t i = 0; i < n;){
    size_t j = i, pos = 0;
    while( j < n && v[j].s == v[i].s ){ pos += v[j].pos; j++; }
    double mid = (double)(i + 1 + j) / 2;   /* mean of ranks i+1 .. j */
    rank_sum += mid * (double)pos;
    i = j;
  }
  anom_free(v);
  double p = (double)npos, q = (double)(n - npos);
  *out = (rank_sum - p * (p + 1) / 2) / (p * q);
  return ANOM_OK;
}

double quantile(const double *sorted, size_t n, double p) {
  if( n == 1 || p <= 0 ) return sorted[0];
  if( p >= 1 ) return sorted[n - 1];
  double h = p * (double)(n - 1);
  size_t lo = (size_t)floor(h);
  double frac = h - (double)lo;
  if( lo + 1 >= n ) return sorted[n - 1];
  return sorted[lo] + frac * (sorted[lo + 1] - sorted[lo]);
}

#define HIST_BINS ((size_t)1 << AUROC_HIST_BITS)

int auroc_hist_init(auroc_hist *h, anom_err *e) {
  h->n[0] = h->n[1] = 0;
  h->count[0] = anom_calloc(HIST_BINS, sizeof(uint64_t));
  h->count[1] = anom_calloc(HIST_BINS, sizeof(uint64_t));
  if( !h->count[0] || !h->count[1] ){
    auroc_hist_free(h);
    return anom_fail(e, ANOM_ENOMEM, "out of memory for an AUROC histogram");
  }
  return ANOM_OK;
}

/* A bin index that grows with v: the float's bits made unsigned-ordered. */
static size_t hist_bin(float v) {
  uint32_t u;
  memcpy(&u, &v, sizeof(u));
  u = (u & 0x80000000u) ? ~u : u | 0x80000000u;
  return u >> (32 - AUROC_HIST_BITS);
}

void auroc_hist_add(auroc_hist *h, float v, int label) {
  int k = label != 0;
  h->count[k][hist_bin(v)]++;
  h->n[k]++;
}

int auroc_hist_result(const auroc_hist *h, double *out, anom_err *e) {
  if( !h->n[0] || !h->n[1] )
    return anom_fail(e, ANOM_EINVAL, "both classes are needed, found %llu normal "
                     "and %llu anomalous values", (unsigned long long)h->n[0],
                     (unsigned long long)h->n[1]);
  /* sum over bins of positives x (negatives below + half the negatives tied) */
  double below = 0, u = 0;
  for(size_t b = 0; b < HIST_BINS; b++){
    double neg = (double)h->count[0][b];
    u += (double)h->count[1][b] * (below + 0.5 * neg);
    below += neg;
  }
  *out = u / ((double)h->n[0] * (double)h->n[1]);
  return ANOM_OK;
}

void auroc_hist_free(auroc_hist *h) {
  anom_free(h->count[0]);
  anom_free(h->count[1]);
  h->count[0] = h->count[1] = NULL;
}
