/*
** train.c - the training loop shared by every detector, and calibration.
** See train.h.
*/
#include "train.h"
#include "heatmap.h"

#include "metrics.h"
#include "rng.h"

#include <math.h>
#include <string.h>
#include <stdio.h>
#include <time.h>

#define CALIB_BATCH 64

void train_options_default(train_options *o) {
  memset(o, 0, sizeof(*o));
  o->epochs = 15;
  o->batch = 64;
  o->holdout = 0.1;
  o->threshold_q = 0.99;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The quantile levels a model keeps (the threshold's is added). */
static const double calib_levels[] = {0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9,
                                      0.95, 0.99, 0.999, 1};

/* At most this many map values go into the colour scale's quantiles. */
#define CALIB_MAP_SAMPLES ((size_t)1 << 20)

int model_calibrate(anom_model *m, const float *x, int n, double q, anom_err *e) {
  if( n < 1 ) return anom_fail(e, ANOM_EINVAL, "calibration needs at least one image");
  size_t img = (size_t)m->channels * m->height * m->width;
  size_t hw = (size_t)m->height * m->width;
  int batch = n < CALIB_BATCH ? n : CALIB_BATCH;
  /* every step-th map value, about CALIB_MAP_SAMPLES of them */
  size_t total = (size_t)n * hw, step = (total + CALIB_MAP_SAMPLES - 1) / CALIB_MAP_SAMPLES;
  size_t nmap = 0, cap = (total + step - 1) / step;
  float *work = anom_malloc(model_work_floats(m, batch) * sizeof(float));
  float *map = anom_malloc(((size_t)batch + 1) * hw * sizeof(float));
  score_result *res = anom_malloc((size_t)batch * sizeof(*res));
  double *scores = anom_malloc((size_t)n * sizeof(double));
  double *parts = anom_malloc((size_t)n * SCORE_MAX_PARTS * sizeof(double));
  double *mapv = anom_malloc(cap * sizeof(double));
  int rc = ANOM_OK, nparts = 0;
  const char *names[SCORE_MAX_PARTS] = {0};
  if( !work || !map || !res || !scores || !parts || !mapv ){
    rc = anom_fail(e, ANOM_ENOMEM, "out of memory for calibration");
    goto done;
  }
  for(int i = 0; i < n; i += batch){
    int b = n - i < batch ? n - i : batch;
    if( (rc = model_map(m, b, x + (size_t)i * img, work, map, res, NULL, NULL, e)) ) goto done;
    for(int k = 0; k < b; k++){
      scores[i + k] = res[k].score;
      nparts = res[k].nparts;
      for(int p = 0; p < nparts; p++){
        names[p] = res[k].part_name[p];
        parts[(size_t)p * n + i + k] = res[k].part[p];
      }
      /* the colour scale sees the maps as anomaly_map draws them */
      float *mk = map + (size_t)k * hw;
      heatmap_smooth(mk, m->width, m->height, HEATMAP_SIGMA, map + (size_t)b * hw);
      size_t base = ((size_t)i + k) * hw;
      for(size_t p = (step - base % step) % step; p < hw && nmap < cap; p += step)
        mapv[nmap++] = mk[p];
    }
  }
  model_calibration *cal = &m->cal;
  memset(cal, 0, sizeof(*cal));
  cal->n = n;
  sort_doubles(scores, (size_t)n);
  for(size_t i = 0; i < sizeof(calib_levels) / sizeof(calib_levels[0]); i++){
    double p = calib_levels[i];
    if( q > (cal->nq ? cal->qp[cal->nq - 1] : -1) && q < p ){
      cal->qp[cal->nq] = q;
      cal->qv[cal->nq++] = quantile(scores, (size_t)n, q);
    }
    if( p == q && cal->nq && cal->qp[cal->nq - 1] == q ) continue;
    cal->qp[cal->nq] = p;
    cal->qv[cal->nq++] = quantile(scores, (size_t)n, p);
  }
  for(int p = 0; p < nparts; p++){
    double *v = parts + (size_t)p * n;
    sort_doubles(v, (size_t)n);
    snprintf(cal->scale_name[p], sizeof(cal->scale_name[p]), "%s", names[p]);
    cal->scale[p] = quantile(v, (size_t)n, 0.5);
  }
  cal->nscales = nparts;
  if( nmap ){
    sort_doubles(mapv, nmap);
    cal->map_ok = 1;
    cal->map_sigma = HEATMAP_SIGMA;
    cal->map_lo = quantile(mapv, nmap, 0.5);
    cal->map_hi = quantile(mapv, nmap, 0.999);
  }
  m->threshold = quantile(scores, (size_t)n, q);
done:
  anom_free(work);
  anom_free(map);
  anom_free(res);
  anom_free(scores);
  anom_free(parts);
  anom_free(mapv);
  return rc;
}

int model_train(anom_model *m, const float *x, int n, const train_options *o,
                train_report *r, anom_err *e) {
  const detector_ops *ops = m->ops;
  memset(r, 0, sizeof(*r));
  if( !ops->train_begin )
    return anom_fail(e, ANOM_EINVAL, "method '%s' cannot be trained", ops->name);
  if( o->epochs < 1 || o->batch < 2 )
    return anom_fail(e, ANOM_EINVAL, "epochs must be >= 1 and batch >= 2");
  int nhold = o->holdout > 0 ? (int)lround(o->holdout * n) : 0;
  if( o->holdout > 0 && nhold < 1 ) nhold = 1;
  int ntrain = n - nhold;
  if( ntrain < 2 )
    return anom_fail(e, ANOM_EINVAL, "training needs at least 2 images after "
                     "holding out %d for calibration, found %d in all", nhold, n);

  size_t img = (size_t)m->channels * m->height * m->width;
  int batch = ntrain < o->batch ? ntrain : o->batch;
  int batches = ntrain / batch;
  int *idx = anom_malloc((size_t)n * sizeof(int));
  float *xb = anom_malloc((size_t)batch * img * sizeof(float));
  float *hold = nhold ? anom_malloc((size_t)nhold * img * sizeof(float)) : NULL;
  void *state = NULL;
  int rc = ANOM_OK;
  rng gen;
  if( !idx || !xb || (nhold && !hold) ){
    rc = anom_fail(e, ANOM_ENOMEM, "out of memory");
    goto done;
  }
  rng_seed(&gen, o->seed);
  for(int i = 0; i < n; i++) idx[i] = i;
  rng_shuffle(&gen, idx, n);           /* idx[0..nhold) are held out */
  for(int i = 0; i < nhold; i++)
    memcpy(hold + (size_t)i * img, x + (size_t)idx[i] * img, img * sizeof(float));
  int *train = idx + nhold;

  if( (rc = ops->train_begin(m, batch, &gen, &state, e)) ) goto done;
  int nl = 0;
  while( ops->loss_names[nl] && nl < TRAIN_MAX_LOSSES ) nl++;
  double t0 = now_seconds(), sums[TRAIN_MAX_LOSSES], losses[TRAIN_MAX_LOSSES];
  for(int ep = 0; ep < o->epochs; ep++){
    rng_shuffle(&gen, train, ntrain);
    if( ops->train_epoch ) ops->train_epoch(m, state, ep);
    memset(sums, 0, sizeof(sums));
    for(int b = 0; b < batches; b++){
      if( o->interrupted && o->interrupted(o->ctx) ){
        rc = anom_fail(e, ANOM_EINTR, "interrupted");
        goto done;
      }
      for(int k = 0; k < batch; k++)
        memcpy(xb + (size_t)k * img, x + (size_t)train[b * batch + k] * img,
               img * sizeof(float));
      if( (rc = ops->train_step(m, state, batch, xb, losses, e)) ) goto done;
      for(int l = 0; l < nl; l++){
        if( !isfinite(losses[l]) ){
          rc = anom_fail(e, ANOM_EINVAL, "training diverged: loss '%s' is %g at "
                         "epoch %d batch %d (try a lower lr)", ops->loss_names[l],
                         losses[l], ep + 1, b + 1);
          goto done;
        }
        sums[l] += losses[l];
      }
      if( o->progress ){
        double mean[TRAIN_MAX_LOSSES], t = now_seconds() - t0;
        for(int l = 0; l < nl; l++) mean[l] = sums[l] / (b + 1);
        long done_images = ((long)ep * batches + b + 1) * batch;
        train_progress p = { ep + 1, o->epochs, b + 1, batches, nl, ops->loss_names,
                             mean, t, t > 0 ? (double)done_images / t : 0 };
        o->progress(o->ctx, &p);
      }
    }
    for(int l = 0; l < nl; l++) r->losses[l] = sums[l] / batches;
  }
  if( ops->train_finish ) ops->train_finish(m, state);
  r->seconds = now_seconds() - t0;
  r->images_train = ntrain;
  r->images_holdout = nhold;
  r->epochs = o->epochs;
  r->batches = batches;
  r->nlosses = nl;
  r->loss_names = ops->loss_names;
  if( nhold ){
    if( (rc = model_calibrate(m, hold, nhold, o->threshold_q, e)) ) goto done;
  }
  r->threshold = m->threshold;
done:
  if( state ) ops->train_end(m, state);
  anom_free(idx);
  anom_free(xb);
  anom_free(hold);
  return rc;
}
