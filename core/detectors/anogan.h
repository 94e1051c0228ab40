/*
** anogan.h - AnoGAN's latent search, exposed for the unit tests.
**
** The detector itself is reached through anogan_ops (detector.h); this header
** only lets a test start the search from a z0 of its choice and read z back:
**
**   float *work = malloc(model_work_floats(m, n) * sizeof(float));
**   anogan_search(m, n, x, z0, 5, 0.1, 0.01, z, loss, work);
*/
#ifndef ANOM_ANOGAN_H
#define ANOM_ANOGAN_H

struct anom_model;

/*
** Run `steps` Adam steps (lr, the model's search_beta1, beta2 0.999, eps
** 1e-8; steps 0 evaluates z0) on z from z0 (n, nz), minimising per image
**   L(z) = (1 - lambda) * sum |x - G(z)| + lambda * sum |f(x) - f(G(z))|
** with the model's networks frozen; write the final z (n, nz) to z_out and
** L at the final z (n) to loss_out. x is (n, C, H, W); work holds
** model_work_floats(m, n) floats. m must be an 'anogan' model.
*/
void anogan_search(const struct anom_model *m, int n, const float *x,
                   const float *z0, int steps, double lambda, double lr,
                   float *z_out, double *loss_out, float *work);

#endif /* ANOM_ANOGAN_H */
