/*
** conv_transpose2d.c - ConvTranspose2d forward and backward (output_padding 0).
**
**   conv_shape s;
**   conv_shape_init(&s, c, h, w, oc, 4, 2, 1, 1);          transposed = 1
**   work = anom_malloc(conv_work_floats(&s, n) * sizeof(float));
**   conv_transpose2d_forward(&s, n, out, in, weight, bias, work);
**
** The weight is PyTorch's (C, OC, K, K), i.e. row-major (C, OC*K*K). A
** batch runs in chunks of conv_chunk(s, n) images (see conv2d.c); per chunk
** one gemm builds the column matrices of all its images and col2im scatters
** each, with no zero-stuffed input:
**   x (C, nb*H*W)          = the chunk's inputs side by side      (side buffer)
**   col (OC*K*K, nb*H*W)   = weight^T (OC*K*K, C) x x
**   out[j] (OC, OH, OW)    = 0, then col2im(image j's columns), + bias
** One image alone reads its input in place. A 1x1 kernel with stride 1 and
** no padding on one image writes the gemm straight into the output.
** conv_transpose2d_forward_fused ends with conv2d.c's epilogue (scale, shift,
** activation). conv_transpose2d_forward_naive is the scatter definition
** they are tested against.
**
** conv_transpose2d_backward runs the adjoint, accumulating (+=): the
** forward's col2im turns into im2col of the output gradient, so per chunk
**   colgrad (OC*K*K, nb*H*W) = im2col(dout[j]) side by side   (in work)
**   dweight (C, OC*K*K)     += x (C, nb*H*W) x colgrad^T
**   din[j] (C, H*W)         += image j's columns of weight (C, OC*K*K) x colgrad
**   dbias (OC)              += dout summed over positions
*/
#include "layers.h"

#include <string.h>

/* side (C, m*hw) = the images in[0..m) (C, hw) side by side */
static void gather(float *side, const float *in, int m, int c, size_t hw) {
  size_t ld = (size_t)m * hw;
  for(int j = 0; j < m; j++)
    for(int ch = 0; ch < c; ch++)
      memcpy(side + (size_t)ch * ld + (size_t)j * hw, in + ((size_t)j * c + ch) * hw,
             hw * sizeof(float));
}

void conv_transpose2d_forward_fused(const conv_shape *s, int n, float *out,
                                    const float *in, const float *weight,
                                    const conv_epilogue *ep, float *work) {
  int okk = s->oc * s->k * s->k, hw = s->h * s->w, nb = conv_chunk(s, n);
  size_t in_img = (size_t)s->c * hw, ohw = (size_t)s->oh * s->ow;
  size_t out_img = (size_t)s->oc * ohw;
  int pointwise = s->k == 1 && s->stride == 1 && s->pad == 0;
  float *col = work, *side = work + (size_t)nb * okk * hw;
  for(int i0 = 0; i0 < n; i0 += nb){
    int m = n - i0 < nb ? n - i0 : nb, ld = m * hw;
    const float *x = in + i0 * in_img;
    if( m > 1 ){
      gather(side, x, m, s->c, (size_t)hw);
      x = side;
    }
    if( m == 1 && pointwise ){
      float *y = out + i0 * out_img;
      gemm(1, 0, okk, hw, s->c, 1.0f, weight, okk, x, hw, 0.0f, y, hw);
      conv_epilogue_apply(ep, s->oc, ohw, y, y, ohw);
      continue;
    }
    gemm(1, 0, okk, ld, s->c, 1.0f, weight, okk, x, ld, 0.0f, col, ld);
    float *y = out + i0 * out_img;
    memset(y, 0, (size_t)m * out_img * sizeof(float));
    col2im(s, m, col, ld, y);
    for(int j = 0; j < m; j++)
      conv_epilogue_apply(ep, s->oc, ohw, y + j * out_img, y + j * out_img, ohw);
  }
}

void conv_transpose2d_forward(const conv_shape *s, int n, float *out,
                              const float *in, const float *weight,
                              const float *bias, float *work) {
  conv_epilogue ep = { NULL, bias, ACT_NONE, 0.0f };
  conv_transpose2d_forward_fused(s, n, out, in, weight, &ep, work);
}

void conv_transpose2d_backward(const conv_shape *s, int n, float *din,
                               float *dweight, float *dbias, const float *dout,
                               const float *in, const float *weight,
                               float *work) {
  int okk = s->oc * s->k * s->k, hw = s->h * s->w, nb = conv_chunk(s, n);
  size_t in_img = (size_t)s->c * hw, out_img = (size_t)s->oc * s->oh * s->ow;
  int pointwise = s->k == 1 && s->stride == 1 && s->pad == 0;
  float *col = work, *side = work + (size_t)nb * okk * hw;
  if( dbias )
    conv_bias_backward(n, s->oc, (size_t)s->oh * s->ow, dbias, dout);
  if( !din && !dweight ) return;
  for(int i0 = 0; i0 < n; i0 += nb){
    int m = n - i0 < nb ? n - i0 : nb, ld = m * hw;
    const float *colgrad = dout + i0 * out_img; /* one pointwise image: dout itself */
    if( !(m == 1 && pointwise) ){
      im2col(s, m, dout + i0 * out_img, col, ld);
      colgrad = col;
    }
    if( dweight ){
      const float *x = in + i0 * in_img;
      if( m > 1 ){
        gather(side, x, m, s->c, (size_t)hw);
        x = side;
      }
      gemm(0, 1, s->c, okk, ld, 1.0f, x, ld, colgrad, ld, 1.0f, dweight, okk);
    }
    if( din ){
      if( m == 1 ){
        gemm(0, 0, s->c, hw, okk, 1.0f, weight, okk, colgrad, hw, 1.0f, din + i0 * in_img, hw);
        continue;
      }
      gemm(0, 0, s->c, ld, okk, 1.0f, weight, okk, colgrad, ld, 0.0f, side, ld);
      for(int j = 0; j < m; j++)
        for(int ch = 0; ch < s->c; ch++){
          float *d = din + (i0 + j) * in_img + (size_t)ch * hw;
          const float *g = side + (size_t)ch * ld + (size_t)j * hw;
          for(int p = 0; p < hw; p++) d[p] += g[p];
        }
    }
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
