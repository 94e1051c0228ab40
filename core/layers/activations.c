/*
** activations.c - elementwise activations over `count` floats.
**
**   leaky_relu_forward(x, x, count, 0.2f);     in place is fine (out == in)
**
** NaN in gives NaN out for all four, so a broken weight shows up in a
** score instead of being clipped away. sigmoid never evaluates expf of a
** positive argument, so it neither overflows nor loses its tails:
** sigmoid(+inf) == 1, sigmoid(-inf) == 0.
**
** The backward passes take the forward OUTPUT and add into din:
**
**   leaky_relu_backward(din, dout, out, count, 0.2f);   din += dout * f'
**
** with f' read off the output: leaky ReLU out > 0 ? 1 : slope (so at 0 the
** slope, as PyTorch), ReLU out > 0 ? 1 : 0, tanh 1 - out^2, sigmoid
** out (1 - out).
*/
#include "layers.h"

#include <math.h>

void leaky_relu_forward(float *out, const float *in, size_t count, float slope) {
  for(size_t i = 0; i < count; i++){
    float x = in[i];
    out[i] = x < 0.0f ? x * slope : x;
  }
}

void relu_forward(float *out, const float *in, size_t count) {
  for(size_t i = 0; i < count; i++){
    float x = in[i];
    out[i] = x < 0.0f ? 0.0f : x;
  }
}

void tanh_forward(float *out, const float *in, size_t count) {
  for(size_t i = 0; i < count; i++) out[i] = tanhf(in[i]);
}

void sigmoid_forward(float *out, const float *in, size_t count) {
  for(size_t i = 0; i < count; i++){
    float x = in[i];
    if( x >= 0.0f ){
      out[i] = 1.0f / (1.0f + expf(-x));
    }else{
      float e = expf(x); /* NaN lands here too and stays NaN */
      out[i] = e / (1.0f + e);
    }
  }
}

void leaky_relu_backward(float *din, const float *dout, const float *out,
                         size_t count, float slope) {
  for(size_t i = 0; i < count; i++)
    din[i] += out[i] > 0.0f ? dout[i] : slope * dout[i];
}

void relu_backward(float *din, const float *dout, const float *out,
                   size_t count) {
  for(size_t i = 0; i < count; i++)
    if( out[i] > 0.0f ) din[i] += dout[i];
}

void tanh_backward(float *din, const float *dout, const float *out,
                   size_t count) {
  for(size_t i = 0; i < count; i++)
    din[i] += dout[i] * (1.0f - out[i] * out[i]);
}

void sigmoid_backward(float *din, const float *dout, const float *out,
                      size_t count) {
  for(size_t i = 0; i < count; i++)
    din[i] += dout[i] * out[i] * (1.0f - out[i]);
}
