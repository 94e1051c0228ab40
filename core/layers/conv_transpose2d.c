/*
** conv_transpose2d.c - ConvTranspose2d forward (output_padding 0).
**
**   conv_shape s;
**   conv_shape_init(&s, c, h, w, oc, 4, 2, 1, 1);          transposed = 1
**   conv_transpose2d_forward(&s, n, out, in, weight, bias, work);
**
** The weight is PyTorch's (C, OC, K, K), i.e. row-major (C, OC*K*K). Per
** image, one gemm builds the column matrix and col2im scatters it:
**   col (OC*K*K, H*W) = weight^T (OC*K*K, C) x in (C, H*W)
**   out (OC, OH, OW)  = 0, then col2im(col)
** with no zero-stuffed input. A 1x1 kernel with stride 1 and no padding
** writes the gemm straight into the output. conv_transpose2d_forward_naive
** is the scatter definition it is tested against.
**
** conv_transpose2d_backward runs the adjoint, accumulating (+=): the
** forward's col2im turns into im2col of the output gradient, so per image
**   colgrad (OC*K*K, H*W) = im2col(dout)           (in work)
**   din (C, H*W)         += weight (C, OC*K*K) x colgrad
**   dweight (C, OC*K*K)  += in (C, H*W) x colgrad^T
**   dbias (OC)           += dout summed over positions
*/
#include "layers.h"

#include <string.h>

/* out (OC, HW) += bias (OC) */
static void add_bias(float *out, const float *bias, int oc, size_t hw) {
  for(int o = 0; o < oc; o++){
    float *p = out + (size_t)o * hw;
    for(size_t i = 0; i < hw; i++) p[i] += bias[o];
  }
}

void conv_transpose2d_forward(const conv_shape *s, int n, float *out,
                              const float *in, const float *weight,
                              const float *bias, float *work) {
  int okk = s->oc * s->k * s->k, hw = s->h * s->w;
  size_t in_img = (size_t)s->c * hw, out_img = (size_t)s->oc * s->oh * s->ow;
  int pointwise = s->k == 1 && s->stride == 1 && s->pad == 0;
  for(int i = 0; i < n; i++){
    const float *x = in + i * in_img;
    float *y = out + i * out_img;
    if( pointwise ){
      gemm(1, 0, okk, hw, s->c, 1.0f, weight, okk, x, hw, 0.0f, y, hw);
    }else{
      gemm(1, 0, okk, hw, s->c, 1.0f, weight, okk, x, hw, 0.0f, work, hw);
      memset(y, 0, out_img * sizeof(float));
      col2im(s, work, y);
    }
    if( bias ) add_bias(y, bias, s->oc, (size_t)s->oh * s->ow);
  }
}

/* dbias (OC) += dout (OC, HW) summed over HW, in double per channel */
static void add_bias_grad(float *dbias, const float *dout, int oc, size_t hw) {
  for(int o = 0; o < oc; o++){
    const float *p = dout + (size_t)o * hw;
    double acc = 0.0;
    for(size_t i = 0; i < hw; i++) acc += p[i];
    dbias[o] += (float)acc;
  }
}

void conv_transpose2d_backward(const conv_shape *s, int n, float *din,
                               float *dweight, float *dbias, const float *dout,
                               const float *in, const float *weight,
                               float *work) {
  int okk = s->oc * s->k * s->k, hw = s->h * s->w;
  size_t in_img = (size_t)s->c * hw, out_img = (size_t)s->oc * s->oh * s->ow;
  int pointwise = s->k == 1 && s->stride == 1 && s->pad == 0;
  for(int i = 0; i < n; i++){
    const float *dy = dout + i * out_img;
    if( dbias ) add_bias_grad(dbias, dy, s->oc, (size_t)s->oh * s->ow);
    if( !din && !dweight ) continue;
    const float *colgrad = dy; /* pointwise: dout is its own column matrix */
    if( !pointwise ){
      im2col(s, dy, work);
      colgrad = work;
    }
    if( din )
      gemm(0, 0, s->c, hw, okk, 1.0f, weight, okk, colgrad, hw, 1.0f,
           din + i * in_img, hw);
    if( dweight )
      gemm(0, 1, s->c, okk, hw, 1.0f, in + i * in_img, hw, colgrad, hw, 1.0f,
           dweight, okk);
  }
}

/* out = bias, then for every input pixel and tap:
**   out[o, iy*stride - pad + ky, ix*stride - pad + kx]
**       += in[c, iy, ix] * w[c, o, ky, kx]
** (taps landing outside the output are dropped). */
void conv_transpose2d_forward_naive(const conv_shape *s, int n, float *out,
                                    const float *in, const float *weight,
                                    const float *bias) {
  int k = s->k;
  size_t ohw = (size_t)s->oh * s->ow;
  for(int i = 0; i < n; i++){
    const float *x = in + (size_t)i * s->c * s->h * s->w;
    float *y = out + (size_t)i * s->oc * ohw;
    for(int o = 0; o < s->oc; o++)
      for(size_t p = 0; p < ohw; p++) y[o * ohw + p] = bias ? bias[o] : 0.0f;
    for(int c = 0; c < s->c; c++)
    for(int iy = 0; iy < s->h; iy++)
    for(int ix = 0; ix < s->w; ix++)
    for(int o = 0; o < s->oc; o++)
    for(int ky = 0; ky < k; ky++)
    for(int kx = 0; kx < k; kx++){
      int oy = iy * s->stride - s->pad + ky, ox = ix * s->stride - s->pad + kx;
      if( oy < 0 || oy >= s->oh || ox < 0 || ox >= s->ow ) continue;
      y[((size_t)o * s->oh + oy) * s->ow + ox] +=
          x[((size_t)c * s->h + iy) * s->w + ix]
          * weight[(((size_t)c * s->oc + o) * k + ky) * k + kx];
    }
  }
}
