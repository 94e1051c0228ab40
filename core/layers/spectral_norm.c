/*
** spectral_norm.c - spectral normalisation (Miyato et al. 2018), as
** torch.nn.utils.spectral_norm with n_power_iterations = 1 and dim = 0:
** a weight W is divided by an estimate of its largest singular value,
** kept up to date by one step of power iteration per training forward.
** W is the weight as a matrix (rows, cols), row-major, which is the
** weight's own memory: Conv2d (OC, C, K, K) is (OC, C*K*K), Linear
** (OUT, IN) is itself.
**
**   float u[rows], v[cols];         u: unit normal draws, kept with the weight
**   sigma = spectral_norm_forward(rows, cols, wn, w, u, v, 1, 1e-12f);
**   ...the layer runs with wn; later, with dwn = dL/dwn:
**   spectral_norm_backward(rows, cols, dw, dwn, wn, u, v, sigma);
**
** Forward, update != 0 (PyTorch's training mode):
**   v     = normalize(W^T u)
**   u'    = normalize(W v)       written over u
**   sigma = u'^T W v
**   wn    = W / sigma
** with normalize(a) = a / max(||a||, eps), F.normalize's clamp. update == 0
** (eval mode): u and v are read, neither is written, sigma = u^T W v.
** The two matrix-vector products are gemm calls (float); the norms and
** u'^T (W v) are summed in double, each normalised element is a double
** quotient rounded once, and wn = w / sigma divides by the float sigma
** returned, as PyTorch does in float32. W v is formed once, in the first
** rows floats of wn (so wn must not alias w, u or v), and serves both u'
** and sigma: sigma = u'^T (W v), which is ||W v|| when that exceeds eps.
** A zero W gives v = 0, u' = 0, sigma 0 and wn NaN, as in PyTorch. rows or
** cols < 1: nothing is touched and 0 is returned.
**
** Backward (u, v constant, as in PyTorch, whose power iteration runs under
** no_grad, and in Miyato's code):
**   dL/dW = dwn / sigma - <dwn, W> u v^T / sigma^2
**         = (dwn - <dwn, wn> u v^T) / sigma
** added (+=) into dw, each element formed in double; <dwn, wn> is summed in
** double. dw may be NULL (nothing to do). No allocation anywhere.
*/
#include "layers.h"

#include <math.h>

/* dst = a / max(||a||, eps) over count floats, the norm in double; dst may be a */
static void normalize(float *dst, const float *a, int count, float eps) {
  double ss = 0.0;
  for(int i = 0; i < count; i++) ss += (double)a[i] * a[i];
  double norm = sqrt(ss), denom = norm > (double)eps ? norm : (double)eps;
  for(int i = 0; i < count; i++) dst[i] = (float)(a[i] / denom);
}

float spectral_norm_forward(int rows, int cols, float *wn, const float *w,
                            float *u, float *v, int update, float eps) {
  if( rows < 1 || cols < 1 ) return 0.0f;
  float *wv = wn; /* W v, rows floats, before wn is written */
  if( update ){
    gemm(1, 0, cols, 1, rows, 1.0f, w, cols, u, 1, 0.0f, v, 1);
    normalize(v, v, cols, eps);
  }
  gemm(0, 0, rows, 1, cols, 1.0f, w, cols, v, 1, 0.0f, wv, 1);
  if( update ) normalize(u, wv, rows, eps);
  double acc = 0.0;
  for(int i = 0; i < rows; i++) acc += (double)u[i] * wv[i];
  float sigma = (float)acc;
  size_t count = (size_t)rows * (size_t)cols;
  for(size_t i = 0; i < count; i++) wn[i] = w[i] / sigma;
  return sigma;
}

void spectral_norm_backward(int rows, int cols, float *dw, const float *dwn,
                            const float *wn, const float *u, const float *v,
                            float sigma) {
  if( !dw || rows < 1 || cols < 1 ) return;
  size_t count = (size_t)rows * (size_t)cols;
  double c = 0.0;
  for(size_t i = 0; i < count; i++) c += (double)dwn[i] * wn[i];
  double s = sigma;
  for(int i = 0; i < rows; i++){
    double cu = c * u[i];
    const float *g = dwn + (size_t)i * cols;
    float *d = dw + (size_t)i * cols;
    for(int j = 0; j < cols; j++) d[j] += (float)((g[j] - cu * v[j]) / s);
  }
}
