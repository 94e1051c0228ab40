/*
** dropout.c - inverted dropout, as PyTorch's nn.Dropout in training mode,
** with the mask drawn from the training rng so a seed fixes it.
**
**   uint8_t *mask = anom_malloc(count);
**   dropout_mask(mask, count, 0.5f, r);            1 = keep, 0 = drop
**   dropout_forward(out, in, mask, count, 0.5f);    out = in * mask / (1 - p)
**   ...later, with the same mask:
**   dropout_backward(din, dout, mask, count, 0.5f); din += dout * mask / (1 - p)
**
** mask[i] = !(u_i < p) with u_i = rng_uniform(r) in [0, 1), so each element
** is kept with probability 1 - p. Exactly count numbers are drawn whatever
** p is, one per element in order, so the draws after a mask do not depend
** on p, and two masks of c1 and c2 elements equal one mask of c1 + c2.
**
** A dropped element is multiplied by 0, not overwritten, so NaN or inf in
** stays NaN out as in PyTorch, and a broken activation is not hidden.
**
** p is meant to lie in [0, 1). Outside it nothing breaks: p <= 0 (or NaN)
** keeps everything and the forward copies in (mask is not read and may be
** NULL); p >= 1 drops everything, multiplying by 0 (PyTorch's p = 1),
** never dividing by 0. The scale 1 / (1 - p) is formed once in float.
** out may equal in; din may be NULL.
*/
#include "layers.h"

#include <string.h>

#include "rng.h"

void dropout_mask(uint8_t *mask, size_t count, float p, struct rng *r) {
  for(size_t i = 0; i < count; i++)
    mask[i] = rng_uniform(r) < (double)p ? 0 : 1;
}

void dropout_forward(float *out, const float *in, const uint8_t *mask,
                     size_t count, float p) {
  if( !(p > 0.0f) ){
    if( out != in && count ) memcpy(out, in, count * sizeof(float));
    return;
  }
  if( p >= 1.0f ){
    for(size_t i = 0; i < count; i++) out[i] = in[i] * 0.0f;
    return;
  }
  float scale = 1.0f / (1.0f - p);
  for(size_t i = 0; i < count; i++) out[i] = in[i] * (mask[i] ? scale : 0.0f);
}

void dropout_backward(float *din, const float *dout, const uint8_t *mask,
                      size_t count, float p) {
  if( !din ) return;
  if( !(p > 0.0f) ){
    for(size_t i = 0; i < count; i++) din[i] += dout[i];
    return;
  }
  if( p >= 1.0f ){
    for(size_t i = 0; i < count; i++) din[i] += dout[i] * 0.0f;
    return;
  }
  float scale = 1.0f / (1.0f - p);
  for(size_t i = 0; i < count; i++)
    din[i] += dout[i] * (mask[i] ? scale : 0.0f);
}
