/*
** linear.c - a fully connected layer, PyTorch's nn.Linear:
**   out (N, OUT) = in (N, IN) x weight^T (IN, OUT) + bias (OUT)
** with weight stored as PyTorch stores it, (OUT, IN).
**
**   linear_forward(n, in_f, out_f, out, in, weight, bias);
**   ...later, with the same in and weight:
**   linear_backward(n, in_f, out_f, din, dweight, dbias, dout, in, weight);
**
** The forward is one gemm; with a bias each row of out is first set to the
** bias and the gemm adds into it (beta 1), otherwise beta 0 and out is not
** read. The backward is two gemms and a column sum, each adding (+=):
**   din (N, IN)       += dout (N, OUT) x weight (OUT, IN)
**   dweight (OUT, IN) += dout^T (OUT, N) x in (N, IN)
**   dbias (OUT)       += dout summed over N, in double per output
** and any of din, dweight, dbias may be NULL to skip it. in_f == 0 is a
** valid empty product (out = bias, or 0); n == 0 touches nothing. out must
** not alias in or weight. linear_forward_naive is the double-accumulating
** loop linear_forward is tested against.
*/
#include "layers.h"

#include <string.h>

void linear_forward(int n, int in_f, int out_f, float *out, const float *in,
                    const float *weight, const float *bias) {
  if( n <= 0 || out_f <= 0 || in_f < 0 ) return;
  float beta = 0.0f;
  if( bias ){
    for(int i = 0; i < n; i++)
      memcpy(out + (size_t)i * out_f, bias, (size_t)out_f * sizeof(float));
    beta = 1.0f;
  }
  gemm(0, 1, n, out_f, in_f, 1.0f, in, in_f, weight, in_f, beta, out, out_f);
}

void linear_forward_naive(int n, int in_f, int out_f, float *out,
                          const float *in, const float *weight,
                          const float *bias) {
  for(int i = 0; i < n; i++)
  for(int o = 0; o < out_f; o++){
    double acc = bias ? bias[o] : 0.0;
    for(int k = 0; k < in_f; k++)
      acc += (double)in[(size_t)i * in_f + k] * weight[(size_t)o * in_f + k];
    out[(size_t)i * out_f + o] = (float)acc;
  }
}

void linear_backward(int n, int in_f, int out_f, float *din, float *dweight,
                     float *dbias, const float *dout, const float *in,
                     const float *weight) {
  if( n <= 0 || out_f <= 0 || in_f < 0 ) return;
  if( din ){
    gemm(0, 0, n, in_f, out_f, 1.0f, dout, out_f, weight, in_f, 1.0f, din,
         in_f);
  }
  if( dweight ){
    gemm(1, 0, out_f, in_f, n, 1.0f, dout, out_f, in, in_f, 1.0f, dweight,
         in_f);
  }
  if( dbias ){
    for(int o = 0; o < out_f; o++){
      double acc = 0.0;
      for(int i = 0; i < n; i++) acc += dout[(size_t)i * out_f + o];
      dbias[o] += (float)acc;
    }
  }
}
