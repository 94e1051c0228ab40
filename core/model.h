/*
** model.h - a trained detector: method, input shape, weights, calibration.
**
** A model is built either fresh (model_create: networks declared, weights
** zeroed, ready for initialisation or training) or from a model file
** (model_load: the safetensors profile of docs/model-format.md, validated
** completely before anything is returned). Once built it is read-only:
** scoring needs only a const pointer and a scratch buffer of
** model_work_floats() floats, so one copy serves every thread.
**
**   anom_model *m;
**   if( model_load(&m, blob, n, NULL, &e) ) ...;
**   float *work = anom_malloc(model_work_floats(m, 1) * sizeof(float));
**   score_result r;
**   model_score(m, 1, x, work, &r, NULL, &e);
**   model_free(m);
*/
#ifndef ANOM_MODEL_H
#define ANOM_MODEL_H

#include "common.h"
#include "detector.h"
#include "net.h"

#define MODEL_FORMAT "sqlite-anomaly"
#define MODEL_FORMAT_VERSION 1
#define MODEL_MAX_NETS 32
#define MODEL_MAX_QUANTILES 64

typedef struct model_limits {
  size_t max_bytes;        /* largest model file accepted, default 1 GiB */
  int64_t max_params;      /* most parameters + buffers, default 256 Mi */
  int max_side;            /* largest input width or height, default 1024 */
} model_limits;

void model_limits_default(model_limits *l);

/* Score calibration on held-out normal images (docs/model-format.md). */
typedef struct model_calibration {
  int n;                              /* images scored; 0 = uncalibrated */
  int nq;
  double qp[MODEL_MAX_QUANTILES];     /* quantile levels, ascending in [0, 1] */
  double qv[MODEL_MAX_QUANTILES];     /* score at each level */
  int nscales;
  char scale_name[SCORE_MAX_PARTS][32];
  double scale[SCORE_MAX_PARTS];      /* median of each score part */
  /* the colour scale of anomaly maps (smoothed with map_sigma): the median
  ** and the 0.999 quantile of the held-out images' map values; map_ok 0
  ** when the file has none (made before maps were calibrated) */
  int map_ok;
  double map_sigma, map_lo, map_hi;
} model_calibration;

typedef struct anom_model {
  const detector_ops *ops;
  int width, height, channels;        /* input shape, channels 1 or 3 */
  int fit;                            /* IMAGE_FIT_* */
  double threshold;                   /* NAN when uncalibrated */
  model_calibration cal;
  char created[40];                   /* ISO 8601, may be "" */
  int nnets;
  net *nets[MODEL_MAX_NETS];          /* declared by the detector, owned */
  size_t nparams, nbufs;              /* floats over all nets */
  float *block;                       /* nparams + nbufs floats, owned */
  void *det;                          /* detector state, freed by the model */
} anom_model;

/*
** A new model of method with input (channels, height, width), hyper-parameters
** hp (JSON object or NULL for defaults); weights are zero.
*/
int model_create(anom_model **out, const char *method, int width, int height,
                 int channels, const struct cJSON *hp, const model_limits *lim,
                 anom_err *e);

/*
** Parse, validate and load a model file. limits may be NULL. Checks, in
** order: the container; format name and version; method; input shape;
** checksum; hyper-parameters; every tensor the method declares present with
** its exact shape and no other tensor; calibration and threshold. Every
** failure says what was found and what was expected.
*/
int model_load(anom_model **out, const void *buf, size_t n,
               const model_limits *lim, anom_err *e);

/* Serialise m into a new buffer (*out, *nout), freed with anom_free. */
int model_save(const anom_model *m, unsigned char **out, size_t *nout,
               anom_err *e);

void model_free(anom_model *m);

/*
** Called by a detector's create(): declare a net (built with net_init and
** the net_* appends; the model takes ownership of the layers even on error).
*/
int model_add_net(anom_model *m, net *nt, anom_err *e);

/* Total trainable parameters and buffers (the registry's params column). */
int64_t model_param_count(const anom_model *m);

/* Floats of scratch model_score needs for a batch of n images. */
size_t model_work_floats(const anom_model *m, int n);

/* Score n images x (n, C, H, W); see detector_ops.score. opts may be NULL. */
int model_score(const anom_model *m, int n, const float *x, float *work,
                score_result *out, float *recon, const struct cJSON *opts,
                anom_err *e);

/*
** Score n images as model_score does and write each one's per-pixel anomaly
** map into map (n, H, W), at the model's input size, larger meaning more
** anomalous: the detector's own map (DefectGAN's LBP map), else the
** reconstruction residual, the mean over channels of |x - x_hat|. out holds
** n results; recon (n, C, H, W) may be NULL.
*/
int model_map(const anom_model *m, int n, const float *x, float *work, float *map,
              score_result *out, float *recon, const struct cJSON *opts,
              anom_err *e);

/*
** The model's description as a new JSON object: format, method, width,
** height, channels, fit, hparams, calibration, threshold, params, created.
*/
struct cJSON *model_info(const anom_model *m);

/* "resize" / "pad" <-> IMAGE_FIT_*; -1 for an unknown name. */
const char *model_fit_name(int fit);
int model_fit_parse(const char *s);

#endif /* ANOM_MODEL_H */
