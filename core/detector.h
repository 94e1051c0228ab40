/*
** detector.h - the interface every detector implements.
**
** One detector a file under core/detectors/, each exporting one
** `const detector_ops` table; core/detectors/registry.c lists them. Adding a
** method means adding one file and one line there.
**
** A detector builds its networks into an anom_model (model.h) from the
** model's input shape and a JSON object of hyper-parameters; the model owns
** the weight block, loads and saves the tensors the networks declare, and
** hands the detector const access when scoring. A model is read-only once
** built: score() takes a const model and a caller-owned scratch buffer, so
** any number of threads can score with one copy of the weights.
*/
#ifndef ANOM_DETECTOR_H
#define ANOM_DETECTOR_H

#include "common.h"

struct cJSON;
struct anom_model;
struct rng;

#define SCORE_MAX_PARTS 8
#define TRAIN_MAX_LOSSES 8

/* The score of one image and every component the method computes. */
typedef struct score_result {
  double score;                        /* the method's anomaly score */
  int nparts;
  const char *part_name[SCORE_MAX_PARTS]; /* static strings, e.g. "latent" */
  double part[SCORE_MAX_PARTS];
} score_result;

typedef struct detector_ops {
  const char *name;   /* the method argument of anomaly_train: "ganomaly" */

  /*
  ** Read hyper-parameters from hp (a JSON object; NULL or missing keys take
  ** the authors' defaults; unknown keys and bad values are errors naming
  ** them), check them against the model's input shape, and declare the
  ** networks with model_add_net(). Private state goes in m->det.
  */
  int (*create)(struct anom_model *m, const struct cJSON *hp, anom_err *e);

  /* Free what m->det points to, or NULL when it owns nothing: the model
  ** frees m->det itself, and the nets. */
  void (*destroy)(struct anom_model *m);

  /* The effective hyper-parameters as a new JSON object (for the file). */
  struct cJSON *(*hparams)(const struct anom_model *m);

  /* Floats of scratch score() needs for a batch of n images. */
  size_t (*work_floats)(const struct anom_model *m, int n);

  /*
  ** Score n images x (n, C, H, W) in [-1, 1] into out[0..n). When recon is
  ** not NULL, also write each reconstruction x_hat (n, C, H, W) there.
  ** opts (a JSON object or NULL) holds per-call scoring options, such as
  ** AnoGAN's search steps; a method rejects the keys it does not take,
  ** naming them.
  */
  int (*score)(const struct anom_model *m, int n, const float *x, float *work,
               score_result *out, float *recon, const struct cJSON *opts,
               anom_err *e);

  /*
  ** Optional (NULL: the reconstruction residual, the mean over channels of
  ** |x - x_hat|): score n images as score() does and write each one's
  ** per-pixel anomaly map, larger meaning more anomalous, into map
  ** (n, H, W). recon may be NULL; work holds work_floats(m, n) floats.
  ** DefectGAN's map is its LBP map.
  */
  int (*map)(const struct anom_model *m, int n, const float *x, float *work,
             float *map, score_result *out, float *recon,
             const struct cJSON *opts, anom_err *e);

  /* ---- training (core/train.c drives these) */

  /* Names of the losses train_step reports, NULL-terminated ("g", "d"...). */
  const char *const *loss_names;

  /*
  ** Initialise the weights from r and allocate what training batches of up
  ** to max_batch images needs (gradients, optimiser moments, activations)
  ** into *state.
  */
  int (*train_begin)(struct anom_model *m, int max_batch, struct rng *r,
                     void **state, anom_err *e);

  /* One optimisation step on n images x (n, C, H, W); losses[i] receives
  ** the value of loss_names[i]. */
  int (*train_step)(struct anom_model *m, void *state, int n, const float *x,
                    double *losses, anom_err *e);

  /* Free *state (NULL-safe). */
  void (*train_end)(struct anom_model *m, void *state);

  /* Optional (NULL: nothing to do): after the last step and before
  ** calibration, put the weights to score with into the model; EGBAD and
  ** ALAD score with the moving average of their weights. */
  void (*train_finish)(struct anom_model *m, void *state);

  /* The authors' batch size, anomaly_train's default (0: 64). */
  int batch;

  /* Optional (NULL: nothing to do): called before the first step of each
  ** epoch, epoch counting from 0; the constrained AAE's critic schedule
  ** changes after its first epochs. */
  void (*train_epoch)(struct anom_model *m, void *state, int epoch);
} detector_ops;

/* The detector called name, or NULL. */
const detector_ops *detector_find(const char *name);

/* "anogan, ganomaly, ..." : the known methods, for error messages. */
const char *detector_names(void);

#endif /* ANOM_DETECTOR_H */
