/*
** im2col.c - unfold one image into the column matrix of a convolution
** (im2col) and fold a column matrix back, summing overlaps (col2im).
**
**   im2col(&s, in_image, work);    then one gemm against the weight
**
** Both functions serve both conv shapes. They see a convolution as an
** "image" side (ich, ih, iw) the K x K window slides over and a "grid"
** (gh, gw) of window positions, one column each:
**
**   Conv2d:          image = input  (C, H, W),    grid = (OH, OW)
**   ConvTranspose2d: image = output (OC, OH, OW), grid = (H, W)
**
** because a transposed conv is the adjoint of the Conv2d from its output
** back to its input. Either way, for col of shape (ich*K*K, gh*gw):
**
**   col[(ch*K + ky)*K + kx, gy*gw + gx] == im[ch, gy*stride - pad + ky,
**                                             gx*stride - pad + kx]
**
** with zero for positions outside the image (the zero padding).
*/
#include "layers.h"

typedef struct col_geom {
  int ich, ih, iw; /* image side: channels, height, width */
  int gh, gw;      /* window positions down and across */
} col_geom;

static col_geom col_geom_of(const conv_shape *s) {
  col_geom g;
  if( s->transposed ){
    g.ich = s->oc; g.ih = s->oh; g.iw = s->ow; g.gh = s->h; g.gw = s->w;
  }else{
    g.ich = s->c; g.ih = s->h; g.iw = s->w; g.gh = s->oh; g.gw = s->ow;
  }
  return g;
}

/*
** The window positions g in [*lo, *hi) of a grid of `grid` whose kernel tap
** `off` lands inside an image of `size`: 0 <= g*stride - pad + off < size.
*/
static void tap_range(int off, int size, int grid, int stride, int pad,
                      int *lo, int *hi) {
  int first = pad - off, end = size + pad - off;
  int l = first <= 0 ? 0 : (first + stride - 1) / stride;
  int h = end <= 0 ? 0 : (end + stride - 1) / stride;
  if( h > grid ) h = grid;
  if( l > h ) l = h;
  *lo = l;
  *hi = h;
}

/* im (ich, ih, iw) -> col (ich*K*K, gh*gw) */
void im2col(const conv_shape *s, const float *im, float *col) {
  col_geom g = col_geom_of(s);
  int k = s->k, st = s->stride, pad = s->pad;
  for(int ch = 0; ch < g.ich; ch++){
    const float *plane = im + (size_t)ch * g.ih * g.iw;
    for(int ky = 0; ky < k; ky++){
      int ylo, yhi;
      tap_range(ky, g.ih, g.gh, st, pad, &ylo, &yhi);
      for(int kx = 0; kx < k; kx++){
        int xlo, xhi;
        tap_range(kx, g.iw, g.gw, st, pad, &xlo, &xhi);
        float *row = col + (((size_t)ch * k + ky) * k + kx) * g.gh * g.gw;
        for(int gy = 0; gy < g.gh; gy++){
          float *dst = row + (size_t)gy * g.gw;
          if( gy < ylo || gy >= yhi ){
            for(int gx = 0; gx < g.gw; gx++) dst[gx] = 0.0f;
            continue;
          }
          const float *src = plane + (size_t)(gy * st - pad + ky) * g.iw;
          for(int gx = 0; gx < xlo; gx++) dst[gx] = 0.0f;
          for(int gx = xlo; gx < xhi; gx++) dst[gx] = src[gx * st - pad + kx];
          for(int gx = xhi; gx < g.gw; gx++) dst[gx] = 0.0f;
        }
      }
    }
  }
}

/* col (ich*K*K, gh*gw) added into im (ich, ih, iw); padding taps dropped */
void col2im(const conv_shape *s, const float *col, float *im) {
  col_geom g = col_geom_of(s);
  int k = s->k, st = s->stride, pad = s->pad;
  for(int ch = 0; ch < g.ich; ch++){
    float *plane = im + (size_t)ch * g.ih * g.iw;
    for(int ky = 0; ky < k; ky++){
      int ylo, yhi;
      tap_range(ky, g.ih, g.gh, st, pad, &ylo, &yhi);
      for(int kx = 0; kx < k; kx++){
        int xlo, xhi;
        tap_range(kx, g.iw, g.gw, st, pad, &xlo, &xhi);
        const float *row = col + (((size_t)ch * k + ky) * k + kx) * g.gh * g.gw;
        for(int gy = ylo; gy < yhi; gy++){
          const float *src = row + (size_t)gy * g.gw;
          float *dst = plane + (size_t)(gy * st - pad + ky) * g.iw;
          for(int gx = xlo; gx < xhi; gx++) dst[gx * st - pad + kx] += src[gx];
        }
      }
    }
  }
}
