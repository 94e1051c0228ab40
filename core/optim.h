/*
** optim.h - Adam, as torch.optim.Adam computes it (no weight decay, no
** amsgrad), over one flat block of parameters.
**
**   adam a = { .lr = 2e-4f, .beta1 = 0.5f, .beta2 = 0.999f, .eps = 1e-8f };
**   adam_step(&a, params, grads, m, v, n);     a.t counts the steps
**
** https://pytorch.org/docs/stable/generated/torch.optim.Adam.html
*/
#ifndef ANOM_OPTIM_H
#define ANOM_OPTIM_H

#include <stddef.h>

typedef struct adam {
  float lr, beta1, beta2, eps;
  long t;              /* steps taken so far */
} adam;

/* One step: m, v (n floats each, zero at first) are the moment estimates. */
void adam_step(adam *a, float *params, const float *grads, float *m, float *v,
               size_t n);

#endif /* ANOM_OPTIM_H */
