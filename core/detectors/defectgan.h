/*
** defectgan.h - DefectGAN's per-pixel anomaly map, for callers that want
** more than the image score (a per-pixel map API, the tests).
**
**   float *work = malloc(model_work_floats(m, n) * sizeof(float));
**   float *map = malloc((size_t)n * m->height * m->width * sizeof(float));
**   if( defectgan_map(m, n, x, work, opts, map, NULL, &e) ) ...
**
** The detector itself is reached through defectgan_ops (detector.h).
*/
#ifndef ANOM_DEFECTGAN_H
#define ANOM_DEFECTGAN_H

#include "../common.h"

struct anom_model;
struct cJSON;

/*
** For n images x (n, C, H, W) in [-1, 1], repair each (x_hat = decoder(
** encoder(x)), inference mode) and write map (n, H, W): the number of bits
** in which the LBP codes of grey(x) and grey(x_hat) differ, averaged over a
** window x window box (lbp.h). opts (a JSON object or NULL) may override the
** model's lbp_points, lbp_radius and window (top is accepted and ignored);
** other keys are an error naming them. recon, unless NULL, receives x_hat
** (n, C, H, W). work holds model_work_floats(m, n) floats. m must be a
** 'defectgan' model.
*/
int defectgan_map(const struct anom_model *m, int n, const float *x, float *work,
                  const struct cJSON *opts, float *map, float *recon, anom_err *e);

#endif /* ANOM_DEFECTGAN_H */
