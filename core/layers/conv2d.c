/*
** conv2d.c - the shape of a convolution, and Conv2d forward.
**
**   conv_shape s;
**   if( conv_shape_init(&s, c, h, w, oc, 4, 2, 1, 0) ) ...refuse the model;
**   work = anom_malloc(conv_work_floats(&s) * sizeof(float));
**   conv2d_forward(&s, n, out, in, weight, bias, work);
**
** conv2d_forward runs per image im2col + one gemm:
**   out (OC, OH*OW) = weight (OC, C*K*K) x col (C*K*K, OH*OW)
** A 1x1 kernel with stride 1 and no padding skips im2col: the image
** (C, H*W) is its own column matrix. conv2d_forward_naive is the seven-loop
** definition it is tested against.
**
** conv2d_backward is the same per image in reverse, accumulating (+=):
**   dweight (OC, C*K*K) += dout (OC, OH*OW) x col^T    col = im2col(in)
**   dbias (OC)          += dout summed over positions
**   din (C, H, W)       += col2im(weight^T (C*K*K, OC) x dout)
** one work buffer serving first as col, then as the column gradient.
*/
#include "layers.h"

#include <limits.h>

/* *acc *= f, or return 1 when the product passes INT_MAX (both >= 0). */
static int mul_int(long long *acc, long long f) {
  if( f != 0 && *acc > INT_MAX / f ) return 1;
  *acc *= f;
  return 0;
}

/* 1 when c1*c2*...*c5 passes INT_MAX. */
static int over_int(long long c1, long long c2, long long c3, long long c4,
                    long long c5) {
  long long p = c1;
  return mul_int(&p, c2) || mul_int(&p, c3) || mul_int(&p, c4)
      || mul_int(&p, c5);
}

/* The output extent along one axis, or -1 when it is empty or too big. */
static int out_extent(int in, int k, int stride, int pad, int transposed) {
  long long o;
  if( transposed ){
    o = (long long)(in - 1) * stride - 2LL * pad + k;
  }else{
    long long span = (long long)in + 2LL * pad - k;
    if( span < 0 ) return -1; /* kernel larger than the padded input */
    o = span / stride + 1;
  }
  return o >= 1 && o <= INT_MAX ? (int)o : -1;
}

int conv_shape_init(conv_shape *s, int c, int h, int w, int oc, int k,
                    int stride, int pad, int transposed) {
  conv_shape t = {0};
  *s = t;
  if( c < 1 || h < 1 || w < 1 || oc < 1 || k < 1 || stride < 1 || pad < 0 )
    return -1;
  t.c = c; t.h = h; t.w = w; t.oc = oc;
  t.k = k; t.stride = stride; t.pad = pad;
  t.transposed = transposed != 0;
  t.oh = out_extent(h, k, stride, pad, t.transposed);
  t.ow = out_extent(w, k, stride, pad, t.transposed);
  if( t.oh < 0 || t.ow < 0 ) return -1;
  /* Every size handed to BLAS or used as an int index must fit in int. */
  if( t.transposed ? over_int(oc, k, k, h, w) : over_int(c, k, k, t.oh, t.ow) )
    return -1;
  if( over_int(c, h, w, 1, 1) || over_int(oc, t.oh, t.ow, 1, 1)
      || over_int(c, oc, k, k, 1) )
    return -1;
  *s = t;
  return 0;
}

size_t conv_work_floats(const conv_shape *s) {
  size_t kk = (size_t)s->k * s->k;
  if( s->transposed ) return (size_t)s->oc * kk * s->h * s->w;
  return (size_t)s->c * kk * s->oh * s->ow;
}

/* out (OC, HW) += bias (OC) */
static void add_bias(float *out, const float *bias, int oc, size_t hw) {
  for(int o = 0; o < oc; o++){
    float *p = out + (size_t)o * hw;
    for(size_t i = 0; i < hw; i++) p[i] += bias[o];
  }
}

void conv2d_forward(const conv_shape *s, int n, float *out, const float *in,
                    const float *weight, const float *bias, float *work) {
  int ckk = s->c * s->k * s->k, ohw = s->oh * s->ow;
  size_t in_img = (size_t)s->c * s->h * s->w, out_img = (size_t)s->oc * ohw;
  int pointwise = s->k == 1 && s->stride == 1 && s->pad == 0;
  for(int i = 0; i < n; i++){
    const float *x = in + i * in_img;
    float *y = out + i * out_img;
    const float *col = x;
    if( !pointwise ){
      im2col(s, x, work);
      col = work;
    }
    gemm(0, 0, s->oc, ohw, ckk, 1.0f, weight, ckk, col, ohw, 0.0f, y, ohw);
    if( bias ) add_bias(y, bias, s->oc, (size_t)ohw);
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

void conv2d_backward(const conv_shape *s, int n, float *din, float *dweight,
                     float *dbias, const float *dout, const float *in,
                     const float *weight, float *work) {
  int ckk = s->c * s->k * s->k, ohw = s->oh * s->ow;
  size_t in_img = (size_t)s->c * s->h * s->w, out_img = (size_t)s->oc * ohw;
  int pointwise = s->k == 1 && s->stride == 1 && s->pad == 0;
  for(int i = 0; i < n; i++){
    const float *dy = dout + i * out_img;
    if( dbias ) add_bias_grad(dbias, dy, s->oc, (size_t)ohw);
    if( dweight ){
      const float *col = in + i * in_img;
      if( !pointwise ){
        im2col(s, col, work);
        col = work;
      }
      gemm(0, 1, s->oc, ckk, ohw, 1.0f, dy, ohw, col, ohw, 1.0f, dweight, ckk);
    }
    if( din ){
      float *dx = din + i * in_img;
      if( pointwise ){
        gemm(1, 0, ckk, ohw, s->oc, 1.0f, weight, ckk, dy, ohw, 1.0f, dx, ohw);
      }else{
        gemm(1, 0, ckk, ohw, s->oc, 1.0f, weight, ckk, dy, ohw, 0.0f, work,
             ohw);
        col2im(s, work, dx);
      }
    }
  }
}

/* out[o, oy, ox] = bias[o] + sum_{c, ky, kx} w[o, c, ky, kx] * in[c, iy, ix],
** iy = oy*stride - pad + ky, ix = ox*stride - pad + kx, zero outside. */
void conv2d_forward_naive(const conv_shape *s, int n, float *out,
                          const float *in, const float *weight,
                          const float *bias) {
  int k = s->k;
  for(int i = 0; i < n; i++){
    const float *x = in + (size_t)i * s->c * s->h * s->w;
    float *y = out + (size_t)i * s->oc * s->oh * s->ow;
    for(int o = 0; o < s->oc; o++)
    for(int oy = 0; oy < s->oh; oy++)
    for(int ox = 0; ox < s->ow; ox++){
      double acc = bias ? bias[o] : 0.0;
      for(int c = 0; c < s->c; c++)
      for(int ky = 0; ky < k; ky++)
      for(int kx = 0; kx < k; kx++){
        int iy = oy * s->stride - s->pad + ky, ix = ox * s->stride - s->pad + kx;
        if( iy < 0 || iy >= s->h || ix < 0 || ix >= s->w ) continue;
        acc += (double)weight[(((size_t)o * s->c + c) * k + ky) * k + kx]
             * x[((size_t)c * s->h + iy) * s->w + ix];
      }
      y[((size_t)o * s->oh + oy) * s->ow + ox] = (float)acc;
    }
  }
}
