/*
** spectral_norm.h - spectral normalisation of a weight, the forward and
** backward pair implemented in spectral_norm.c. Self-contained: it needs
** nothing but <stddef.h>.
*/
#ifndef ANOM_SPECTRAL_NORM_H
#define ANOM_SPECTRAL_NORM_H

#include <stddef.h>

/*
** Spectral normalisation (Miyato et al. 2018), as torch.nn.utils.spectral_norm
** computes it in training mode with n_power_iterations = 1 and dim = 0:
** the weight viewed as a matrix W (rows, cols) -- Conv2d (OC, C*K*K), Linear (OUT, IN) --
**   v = normalize(W^T u),  u' = normalize(W v),  sigma = u'^T W v,  wn = W / sigma
** normalize(a) = a / max(||a||, eps) (F.normalize), eps 1e-12.
** u (rows) is read and, when update is non-zero, overwritten with u' (the
** power iteration's state); v (cols) receives v. update == 0: no iteration,
** sigma = u^T W v from the u and v given (PyTorch's eval mode).
** Returns sigma. wn may not alias w.
*/
float spectral_norm_forward(int rows, int cols, float *wn, const float *w,
                            float *u, float *v, int update, float eps);
/*
** Backward with u and v held constant (as PyTorch and Miyato's code do):
**   dw += (dwn - <dwn, wn> u v^T) / sigma
** with u, v, sigma, wn from the forward.
*/
void spectral_norm_backward(int rows, int cols, float *dw, const float *dwn,
                            const float *wn, const float *u, const float *v,
                            float sigma);

#endif /* ANOM_SPECTRAL_NORM_H */
