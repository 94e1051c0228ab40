/*
** losses.c - the training losses, each a mean over `count` elements that
** returns its value in double and adds its scaled gradient into dx.
**
**   double l = l1_loss(dx, x, y, count, 50.0f);   dx += 50 * dL/dx
**   double v = l2_loss(NULL, x, y, count, 1.0f);  the value only
**
**   l1_loss          mean |x - y|                 grad sign(x - y) / count
**   l2_loss          mean (x - y)^2               grad 2 (x - y) / count
**   bce_logits_loss  mean of BCE(sigmoid(l), t)   grad (sigmoid(l) - t) / count
**
** The sign of 0 is 0, as PyTorch's L1Loss. The binary cross-entropy works
** on the logits, max(l, 0) - l t + log1p(exp(-|l|)), so no exp overflows and
** the loss of a logit of +-100 is finite (about 100) with a gradient of
** exactly 0 or +-1/count at the saturated ends. Sums run in double; count 0
** returns 0 and touches nothing.
*/
#include "layers.h"

#include <math.h>

double l1_loss(float *dx, const float *x, const float *y, size_t count,
               float scale) {
  if( count == 0 ) return 0.0;
  double sum = 0.0, g = (double)scale / (double)count;
  for(size_t i = 0; i < count; i++){
    double d = (double)x[i] - y[i];
    sum += fabs(d);
    if( dx ) dx[i] += (float)(d > 0.0 ? g : d < 0.0 ? -g : 0.0);
  }
  return sum / (double)count;
}

double l2_loss(float *dx, const float *x, const float *y, size_t count,
               float scale) {
  if( count == 0 ) return 0.0;
  double sum = 0.0, g = 2.0 * scale / (double)count;
  for(size_t i = 0; i < count; i++){
    double d = (double)x[i] - y[i];
    sum += d * d;
    if( dx ) dx[i] += (float)(g * d);
  }
  return sum / (double)count;
}

/* sigmoid in double, never taking exp of a positive argument */
static double sigmoid_d(double l) {
  if( l >= 0.0 ) return 1.0 / (1.0 + exp(-l));
  double e = exp(l);
  return e / (1.0 + e);
}

double bce_logits_loss(float *dx, const float *logits, float target,
                       size_t count, float scale) {
  if( count == 0 ) return 0.0;
  double sum = 0.0, g = (double)scale / (double)count, t = target;
  for(size_t i = 0; i < count; i++){
    double l = logits[i];
    sum += (l > 0.0 ? l : 0.0) - l * t + log1p(exp(-fabs(l)));
    if( dx ) dx[i] += (float)(g * (sigmoid_d(l) - t));
  }
  return sum / (double)count;
}
