/*
** concat.c - channel concatenation of two NCHW tensors with the same N, H
** and W, as torch.cat([a, b], 1) (the U-Net skips of Skip-GANomaly).
**
**   concat_forward(n, ca, cb, h * w, out, a, b);    out (N, CA+CB, HW)
**   concat_backward(n, ca, cb, h * w, da, db, dout);
**
** Per image, out holds a's CA channels and then b's CB channels; both are
** contiguous runs, so each image is two memcpy. The backward splits dout
** the same way and adds (+=) each part into da and db; either may be NULL
** to skip it. ca or cb may be 0 (an empty side). out must not alias a or b.
*/
#include "layers.h"

#include <string.h>

void concat_forward(int n, int ca, int cb, int hw, float *out, const float *a,
                    const float *b) {
  if( n <= 0 || hw <= 0 || ca < 0 || cb < 0 ) return;
  size_t na = (size_t)ca * hw, nb = (size_t)cb * hw;
  for(int i = 0; i < n; i++){
    float *y = out + (size_t)i * (na + nb);
    if( na ) memcpy(y, a + (size_t)i * na, na * sizeof(float));
    if( nb ) memcpy(y + na, b + (size_t)i * nb, nb * sizeof(float));
  }
}

void concat_backward(int n, int ca, int cb, int hw, float *da, float *db,
                     const float *dout) {
  if( n <= 0 || hw <= 0 || ca < 0 || cb < 0 ) return;
  size_t na = (size_t)ca * hw, nb = (size_t)cb * hw;
  for(int i = 0; i < n; i++){
    const float *dy = dout + (size_t)i * (na + nb);
    if( da ){
      float *dx = da + (size_t)i * na;
      for(size_t j = 0; j < na; j++) dx[j] += dy[j];
    }
    if( db ){
      float *dx = db + (size_t)i * nb;
      for(size_t j = 0; j < nb; j++) dx[j] += dy[na + j];
    }
  }
}
