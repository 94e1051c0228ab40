/*
** train.h - training a model on normal images, then calibrating it.
**
**   train_options o;
**   train_options_default(&o);          the authors' 15 epochs, batch 64
**   o.seed = 1;
**   train_report r;
**   model_train(m, x, n, &o, &r, &e);   x: n images (n, C, H, W) in [-1, 1]
**
** A seeded share of the images (o.holdout, 10% by default) is held out;
** the detector trains on the rest for o.epochs epochs of shuffled batches
** (the last incomplete batch of an epoch is dropped, as the reference's
** data loader does). The held-out images are then scored: the model keeps
** quantiles of their scores, the median of each score part, and a
** threshold at quantile o.threshold_q (0.99). Same data, same seed, one
** thread: the same model, bit for bit.
*/
#ifndef ANOM_TRAIN_H
#define ANOM_TRAIN_H

#include "model.h"

typedef struct train_progress {
  int epoch, epochs;          /* 1-based epoch */
  int batch, batches;         /* 1-based batch within the epoch */
  int nlosses;
  const char *const *loss_names;
  const double *losses;       /* running mean over the epoch so far */
  double seconds;             /* since training started */
  double images_per_second;
} train_progress;

typedef struct train_options {
  int epochs;                 /* 15 */
  int batch;                  /* 64 */
  uint64_t seed;              /* 0 */
  double holdout;             /* share held out for calibration, 0.1 */
  double threshold_q;         /* threshold = this quantile of held-out scores, 0.99 */
  /* called after every batch when not NULL */
  void (*progress)(void *ctx, const train_progress *p);
  /* polled between batches; non-zero stops training with ANOM_EINTR */
  int (*interrupted)(void *ctx);
  void *ctx;
} train_options;

typedef struct train_report {
  int images_train, images_holdout, epochs, batches;
  int nlosses;
  const char *const *loss_names;
  double losses[TRAIN_MAX_LOSSES];  /* mean over the last epoch */
  double seconds;
  double threshold;
} train_report;

void train_options_default(train_options *o);

int model_train(anom_model *m, const float *x, int n, const train_options *o,
                train_report *r, anom_err *e);

/*
** Score n images and set m's calibration (quantiles, part medians) and
** threshold at quantile q. Used by model_train on the held-out images.
*/
int model_calibrate(anom_model *m, const float *x, int n, double q, anom_err *e);

#endif /* ANOM_TRAIN_H */
