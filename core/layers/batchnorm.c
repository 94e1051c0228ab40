/*
** batchnorm.c - BatchNorm2d in inference mode (running statistics).
**
**   batchnorm_forward_infer(n, c, h * w, out, in, gamma, beta, mean, var, 1e-5f);
**
** Per channel the affine map is folded once, in float:
**   scale = gamma / sqrtf(var + eps),  shift = beta - mean * scale
** then every element costs one multiply-add: out = in * scale + shift.
** out may equal in. var + eps must be positive (the model loader checks).
*/
#include "layers.h"

#include <math.h>

/* in, out (N, C, HW); gamma, beta, mean, var (C) */
void batchnorm_forward_infer(int n, int c, int hw, float *out, const float *in,
                             const float *gamma, const float *beta,
                             const float *mean, const float *var, float eps) {
  for(int ch = 0; ch < c; ch++){
    float scale = gamma[ch] / sqrtf(var[ch] + eps);
    float shift = beta[ch] - mean[ch] * scale;
    for(int i = 0; i < n; i++){
      size_t base = ((size_t)i * c + ch) * hw;
      for(int j = 0; j < hw; j++) out[base + j] = in[base + j] * scale + shift;
    }
  }
}
