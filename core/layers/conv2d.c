/*
** conv2d.c - the shape of a convolution, how a batch is cut into gemm-sized
** chunks, the fused epilogue, and Conv2d forward and backward.
**
**   conv_shape s;
**   if( conv_shape_init(&s, c, h, w, oc, 4, 2, 1, 0) ) ...refuse the model;
**   work = anom_malloc(conv_work_floats(&s, n) * sizeof(float));
**   conv2d_forward(&s, n, out, in, weight, bias, work);
**
** A batch runs in chunks of conv_chunk(s, n) images, each one gemm over the
** chunk's column matrices side by side:
**   col (C*K*K, nb*OH*OW)   = im2col of each image, at column j*OH*OW
**   tmp (OC, nb*OH*OW)      = weight (OC, C*K*K) x col
**   out[j] (OC, OH*OW)      = tmp's columns of image j, + bias
** so that a batch of small images feeds BLAS one wide product instead of
** nb thin ones. One image alone skips tmp: the gemm writes the output. A
** 1x1 kernel with stride 1 and no padding on one image skips im2col: the
** image (C, H*W) is its own column matrix. conv2d_forward_fused ends the
** same pass with a per-channel scale and shift and an activation, which is
** how inference runs a convolution, its batch norm and its activation in
** one sweep over the output (see net.c). conv2d_forward_naive is the
** seven-loop definition both are tested against.
**
** conv2d_backward is the same per chunk in reverse, accumulating (+=):
**   dy (OC, nb*OH*OW)          = dout of the chunk side by side     (tmp)
**   dweight (OC, C*K*K)       += dy x col^T                 col = im2col(in)
**   dbias (OC)                += dout summed over positions
**   din[j] (C, H, W)          += col2im(weight^T x dy), image j's columns
** the column buffer serving first as col, then as the column gradient.
*/
#include "layers.h"

#include <limits.h>
#include <string.h>

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

/* Column matrices are cut so that a chunk's gemm is about this wide, and
** its buffers hold about this many floats (2 MiB, about a core's L2 cache:
** the columns im2col writes are still in cache when BLAS packs them),
** whatever the batch. */
#ifndef CHUNK_COLS
#define CHUNK_COLS 2048
#endif
#ifndef CHUNK_FLOATS
#define CHUNK_FLOATS ((size_t)1 << 19)
#endif

/* Floats of one image's column matrix and of its side buffer (conv: its
** output; transposed: its input), and its number of columns. */
static void per_image(const conv_shape *s, size_t *col, size_t *side, size_t *cols) {
  size_t kk = (size_t)s->k * s->k;
  if( s->transposed ){
    *cols = (size_t)s->h * s->w;
    *col = (size_t)s->oc * kk * *cols;
    *side = (size_t)s->c * *cols;
  }else{
    *cols = (size_t)s->oh * s->ow;
    *col = (size_t)s->c * kk * *cols;
    *side = (size_t)s->oc * *cols;
  }
}

int conv_chunk(const conv_shape *s, int n) {
  size_t col, side, cols;
  per_image(s, &col, &side, &cols);
  size_t nb = CHUNK_COLS / cols;
  if( nb * (col + side) > CHUNK_FLOATS ) nb = CHUNK_FLOATS / (col + side);
  if( nb > (size_t)n ) nb = (size_t)n;
  return nb < 1 ? 1 : (int)nb;
}

size_t conv_work_floats(const conv_shape *s, int n) {
  size_t col, side, cols;
  per_image(s, &col, &side, &cols);
  return (size_t)conv_chunk(s, n) * (col + side);
}

void conv_epilogue_apply(const conv_epilogue *ep, int oc, size_t hw, float *out,
                         const float *src, size_t ld) {
  for(int o = 0; o < oc; o++){
    const float *x = src + (size_t)o * ld;
    float *y = out + (size_t)o * hw;
    float sc = ep->scale ? ep->scale[o] : 1.0f, sh = ep->shift ? ep->shift[o] : 0.0f;
    float slope = ep->slope;
    /* one loop per activation, each simple enough for the compiler to
    ** vectorise; tanh and sigmoid reuse the activation functions */
    switch( ep->act ){
      case ACT_LEAKY_RELU:
        for(size_t i = 0; i < hw; i++){
          float v = x[i] * sc + sh;
          y[i] = v < 0.0f ? v * slope : v;
        }
        break;
      case ACT_RELU:
        for(size_t i = 0; i < hw; i++){
          float v = x[i] * sc + sh;
          y[i] = v < 0.0f ? 0.0f : v;
        }
        break;
      default:
        for(size_t i = 0; i < hw; i++) y[i] = x[i] * sc + sh;
        if( ep->act == ACT_TANH ) tanh_forward(y, y, hw);
        if( ep->act == ACT_SIGMOID ) sigmoid_forward(y, y, hw);
        break;
    }
  }
}

void conv2d_forward_fused(const conv_shape *s, int n, float *out, const float *in,
                          const float *weight, const conv_epilogue *ep, float *work) {
  int ckk = s->c * s->k * s->k, ohw = s->oh * s->ow, nb = conv_chunk(s, n);
  size_t in_img = (size_t)s->c * s->h * s->w, out_img = (size_t)s->oc * ohw;
  int pointwise = s->k == 1 && s->stride == 1 && s->pad == 0;
  float *col = work, *tmp = work + (size_t)nb * ckk * ohw;
  for(int i0 = 0; i0 < n; i0 += nb){
    int m = n - i0 < nb ? n - i0 : nb, ld = m * ohw;
    const float *b = col;
    if( m == 1 && pointwise ) b = in + i0 * in_img;
    else im2col(s, m, in + i0 * in_img, col, ld);
    if( m == 1 ){
      float *y = out + i0 * out_img;
      gemm(0, 0, s->oc, ohw, ckk, 1.0f, weight, ckk, b, ohw, 0.0f, y, ohw);
      conv_epilogue_apply(ep, s->oc, (size_t)ohw, y, y, (size_t)ohw);
      continue;
    }
    gemm(0, 0, s->oc, ld, ckk, 1.0f, weight, ckk, col, ld, 0.0f, tmp, ld);
    for(int j = 0; j < m; j++)
      conv_epilogue_apply(ep, s->oc, (size_t)ohw, out + (i0 + j) * out_img,
                          tmp + (size_t)j * ohw, (size_t)ld);
  }
}

void conv2d_forward(const conv_shape *s, int n, float *out, const float *in,
                    const float *weight, const float *bias, float *work) {
  conv_epilogue ep = { NULL, bias, ACT_NONE, 0.0f };
  conv2d_forward_fused(s, n, out, in, weight, &ep, work);
}

void conv_bias_backward(int n, int oc, size_t hw, float *dbias, const float *dout) {
  for(int i = 0; i < n; i++)
    for(int o = 0; o < oc; o++){
      const float *p = dout + ((size_t)i * oc + o) * hw;
      double acc = 0.0;
      for(size_t j = 0; j < hw; j++) acc += p[j];
      dbias[o] += (float)acc;
    }
}

void conv2d_backward(const conv_shape *s, int n, float *din, float *dweight,
                     float *dbias, const float *dout, const float *in,
                     const float *weight, float *work) {
  int ckk = s->c * s->k * s->k, ohw = s->oh * s->ow, nb = conv_chunk(s, n);
  size_t in_img = (size_t)s->c * s->h * s->w, out_img = (size_t)s->oc * ohw;
  int pointwise = s->k == 1 && s->stride == 1 && s->pad == 0;
  float *col = work, *dy = work + (size_t)nb * ckk * ohw;
  if( dbias )
    conv_bias_backward(n, s->oc, (size_t)ohw, dbias, dout);
  if( !dweight && !din ) return;
  for(int i0 = 0; i0 < n; i0 += nb){
    int m = n - i0 < nb ? n - i0 : nb, ld = m * ohw;
    /* the chunk's output gradient side by side (one image: dout itself) */
    const float *g = dout + i0 * out_img;
    if( m > 1 ){
      for(int j = 0; j < m; j++)
        for(int o = 0; o < s->oc; o++)
          memcpy(dy + (size_t)o * ld + (size_t)j * ohw,
                 dout + (i0 + j) * out_img + (size_t)o * ohw, (size_t)ohw * sizeof(float));
      g = dy;
    }
    if( dweight ){
      const float *b = col;
      if( m == 1 && pointwise ) b = in + i0 * in_img;
      else im2col(s, m, in + i0 * in_img, col, ld);
      gemm(0, 1, s->oc, ckk, ld, 1.0f, g, ld, b, ld, 1.0f, dweight, ckk);
    }
    if( din ){
      if( m == 1 && pointwise ){
        gemm(1, 0, ckk, ohw, s->oc, 1.0f, weight, ckk, g, ohw, 1.0f, din + i0 * in_img, ohw);
        continue;
      }
      gemm(1, 0, ckk, ld, s->oc, 1.0f, weight, ckk, g, ld, 0.0f, col, ld);
      col2im(s, m, col, ld, din + i0 * in_img);
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
