/*
** optim.c - Adam. The arithmetic follows torch.optim.Adam's single-tensor
** path step for step (bias corrections folded in the same places), so a
** step agrees with PyTorch's to float rounding.
*/
#include "optim.h"

#include <math.h>

void adam_step(adam *a, float *params, const float *grads, float *m, float *v,
               size_t n) {
  a->t++;
  double bc1 = 1.0 - pow(a->beta1, (double)a->t);
  double bc2 = 1.0 - pow(a->beta2, (double)a->t);
  float step_size = (float)(a->lr / bc1);
  float bc2_sqrt = (float)sqrt(bc2);
  float b1 = a->beta1, b2 = a->beta2;
  for(size_t i = 0; i < n; i++){
    float g = grads[i];
    m[i] = m[i] * b1 + g * (1 - b1);
    v[i] = v[i] * b2 + g * g * (1 - b2);
    float denom = sqrtf(v[i]) / bc2_sqrt + a->eps;
    params[i] -= step_size * m[i] / denom;
  }
}
