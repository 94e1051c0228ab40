/*
** im2col.c - unfold one image into the column matrix of a convolution
** (im2col) and fold a column matrix back, summing overlaps (col2im).
**
**   im2col(&s, n, images, work, ld);    then one gemm against the weight
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
** with zero for positions outside the image (the zero padding). Rows of col
** are ld floats apart (ld >= n*gh*gw): the column matrices of the n images
** sit side by side in one matrix, image j at column j*gh*gw.
*/
#include "layers.h"

#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

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

/* The window positions where each tap lands inside the image, along one
** axis: [lo[t], hi[t]) for tap t of K (K <= KMAX) */
#define KMAX 16

static void tap_ranges(int k, int size, int grid, int stride, int pad, int *lo, int *hi) {
  for(int t = 0; t < k; t++) tap_range(t, size, grid, stride, pad, &lo[t], &hi[t]);
}

/* dst[0..n) = src[0], src[st], src[2 st], ...  Stride 2, the down-sampling
** convolutions' case, goes four at a time; no read passes src[(n-1) st]. */
static void copy_strided(float *dst, const float *src, int n, int st) {
  int i = 0;
  if( st == 1 ){
    memcpy(dst, src, (size_t)n * sizeof(float));
    return;
  }
#ifdef __SSE2__
  if( st == 2 ){
    for(; i + 4 <= n; i += 4){
      __m128 a = _mm_loadu_ps(src + 2 * i);       /* 2i .. 2i+3 */
      __m128 b = _mm_loadu_ps(src + 2 * i + 3);   /* 2i+3 .. 2i+6 */
      _mm_storeu_ps(dst + i, _mm_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 2, 0)));
    }
  }
#endif
  for(; i < n; i++) dst[i] = src[(size_t)i * st];
}

/*
** Small grids with several channels go through a table: for every tap r and
** window position q, where in a channel's plane the tap reads (or -1 in the
** padding). It is the same for every channel, so it is built once a call on
** the stack and turns the per-row bookkeeping of tiny rows (8 positions at
** 8x8) into one lookup per element.
*/
#define TAB_MAX 4096

/* row[q] = plane[t[q]], or 0 where t[q] < 0 */
static void gather_row_plain(float *row, const float *plane, const int *t, int np) {
  for(int q = 0; q < np; q++){
    int o = t[q];
    float v = plane[o < 0 ? 0 : o];
    row[q] = o < 0 ? 0.0f : v;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
/* The same with AVX2's masked gathers, eight at a time: lanes in the
** padding are neither loaded nor left stale (they take the zero source). */
__attribute__((target("avx2")))
static void gather_row_avx2(float *row, const float *plane, const int *t, int np) {
  int q = 0;
  __m256 zero = _mm256_setzero_ps();
  __m256i none = _mm256_set1_epi32(-1);
  for(; q + 8 <= np; q += 8){
    __m256i idx = _mm256_loadu_si256((const __m256i *)(t + q));
    __m256 inside = _mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, none));
    _mm256_storeu_ps(row + q, _mm256_mask_i32gather_ps(zero, plane, idx, inside, 4));
  }
  gather_row_plain(row + q, plane, t + q, np - q);
}

/* plane[t[q]] += row[q] where t[q] >= 0, sixteen at a time with AVX-512's
** gather and scatter. One tap's positions land on distinct pixels, so the
** lanes of one scatter never collide. */
__attribute__((target("avx512f")))
static void scatter_add_row_avx512(float *plane, const float *row, const int *t, int np) {
  int q = 0;
  __m512i none = _mm512_set1_epi32(-1);
  for(; q + 16 <= np; q += 16){
    __m512i idx = _mm512_loadu_si512(t + q);
    __mmask16 inside = _mm512_cmpgt_epi32_mask(idx, none);
    __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), inside, idx, plane, 4);
    v = _mm512_add_ps(v, _mm512_loadu_ps(row + q));
    _mm512_mask_i32scatter_ps(plane, inside, idx, v, 4);
  }
  for(; q < np; q++)
    if( t[q] >= 0 ) plane[t[q]] += row[q];
}

static void gather_row(float *row, const float *plane, const int *t, int np) {
  if( __builtin_cpu_supports("avx2") ) gather_row_avx2(row, plane, t, np);
  else gather_row_plain(row, plane, t, np);
}
#else
static void gather_row(float *row, const float *plane, const int *t, int np) {
  gather_row_plain(row, plane, t, np);
}
#endif

/* tab (K*K, gh*gw) of plane offsets, or 0 when the grid is too big for it. */
static int tap_table(const conv_shape *s, const col_geom *g, int *tab) {
  int k = s->k, st = s->stride, pad = s->pad, np = g->gh * g->gw;
  if( g->ich < 4 || (long long)k * k * np > TAB_MAX ) return 0;
  for(int ky = 0; ky < k; ky++)
  for(int kx = 0; kx < k; kx++){
    int *t = tab + (ky * k + kx) * np;
    for(int gy = 0; gy < g->gh; gy++)
    for(int gx = 0; gx < g->gw; gx++){
      int iy = gy * st - pad + ky, ix = gx * st - pad + kx;
      *t++ = iy < 0 || iy >= g->ih || ix < 0 || ix >= g->iw ? -1 : iy * g->iw + ix;
    }
  }
  return 1;
}

/* The tap ranges of kernel offset t along one axis: from the table of
** ranges when the kernel fits it (KMAX taps), else worked out here. */
static void tap_of(int t, const int *lo, const int *hi, int k, int size, int grid,
                   int stride, int pad, int *l, int *h) {
  if( k <= KMAX ){ *l = lo[t]; *h = hi[t]; }
  else tap_range(t, size, grid, stride, pad, l, h);
}

/* One image by table: im (ich, ih, iw) -> col, rows ld apart. */
static void im2col_table(const col_geom *g, int kk, const int *tab, const float *im,
                         float *col, size_t ld) {
  int np = g->gh * g->gw;
  for(int ch = 0; ch < g->ich; ch++){
    const float *plane = im + (size_t)ch * g->ih * g->iw;
    for(int r = 0; r < kk; r++)
      gather_row(col + ((size_t)ch * kk + r) * ld, plane, tab + r * np, np);
  }
}

/* One image row by row: im (ich, ih, iw) -> col, rows ld apart. */
static void im2col_rows(const conv_shape *s, const col_geom *g, const float *im,
                        float *col, size_t ld) {
  int k = s->k, st = s->stride, pad = s->pad;
  int ylo[KMAX], yhi[KMAX], xlo[KMAX], xhi[KMAX];
  if( k <= KMAX ){
    tap_ranges(k, g->ih, g->gh, st, pad, ylo, yhi);
    tap_ranges(k, g->iw, g->gw, st, pad, xlo, xhi);
  }
  for(int ch = 0; ch < g->ich; ch++){
    const float *plane = im + (size_t)ch * g->ih * g->iw;
    for(int ky = 0; ky < k; ky++){
      float *rows = col + ((size_t)ch * k + ky) * k * ld; /* tap (ky, 0) */
      int y0, y1;
      tap_of(ky, ylo, yhi, k, g->ih, g->gh, st, pad, &y0, &y1);
      for(int gy = 0; gy < g->gh; gy++){
        size_t at = (size_t)gy * g->gw;
        if( gy < y0 || gy >= y1 ){
          for(int kx = 0; kx < k; kx++) memset(rows + kx * ld + at, 0, (size_t)g->gw * sizeof(float));
          continue;
        }
        const float *src = plane + (size_t)(gy * st - pad + ky) * g->iw;
        for(int kx = 0; kx < k; kx++){
          float *dst = rows + kx * ld + at;
          int lo, hi;
          tap_of(kx, xlo, xhi, k, g->iw, g->gw, st, pad, &lo, &hi);
          for(int gx = 0; gx < lo; gx++) dst[gx] = 0.0f;
          if( hi > lo ) copy_strided(dst + lo, src + (lo * st - pad + kx), hi - lo, st);
          for(int gx = hi < lo ? lo : hi; gx < g->gw; gx++) dst[gx] = 0.0f;
        }
      }
    }
  }
}

/* n images (ich, ih, iw) -> their columns side by side, rows ld apart; the
** tap table, when the grid takes one, is built once for all of them */
void im2col(const conv_shape *s, int n, const float *im, float *col, size_t ld) {
  col_geom g = col_geom_of(s);
  size_t img = (size_t)g.ich * g.ih * g.iw, np = (size_t)g.gh * g.gw;
  int tab[TAB_MAX], by_table = tap_table(s, &g, tab);
  for(int j = 0; j < n; j++){
    if( by_table ) im2col_table(&g, s->k * s->k, tab, im + j * img, col + j * np, ld);
    else im2col_rows(s, &g, im + j * img, col + j * np, ld);
  }
}

/* One image's columns (rows ld apart) added into im row by row. */
static void col2im_rows(const conv_shape *s, const col_geom *g, const float *col,
                        size_t ld, float *im) {
  int k = s->k, st = s->stride, pad = s->pad;
  for(int ch = 0; ch < g->ich; ch++){
    float *plane = im + (size_t)ch * g->ih * g->iw;
    for(int ky = 0; ky < k; ky++){
      int ylo, yhi;
      tap_range(ky, g->ih, g->gh, st, pad, &ylo, &yhi);
      for(int kx = 0; kx < k; kx++){
        int xlo, xhi;
        tap_range(kx, g->iw, g->gw, st, pad, &xlo, &xhi);
        const float *row = col + (((size_t)ch * k + ky) * k + kx) * ld;
        for(int gy = ylo; gy < yhi; gy++){
          const float *src = row + (size_t)gy * g->gw;
          float *dst = plane + (size_t)(gy * st - pad + ky) * g->iw;
          for(int gx = xlo; gx < xhi; gx++) dst[gx * st - pad + kx] += src[gx];
        }
      }
    }
  }
}

/* n images' columns side by side (rows ld apart) added into the n images
** (ich, ih, iw); padding taps dropped. With AVX-512, small grids scatter
** through the tap table, built once for all of them. */
void col2im(const conv_shape *s, int n, const float *col, size_t ld, float *im) {
  col_geom g = col_geom_of(s);
  size_t img = (size_t)g.ich * g.ih * g.iw, np = (size_t)g.gh * g.gw;
#if defined(__x86_64__) && defined(__GNUC__)
  int tab[TAB_MAX];
  if( __builtin_cpu_supports("avx512f") && tap_table(s, &g, tab) ){
    int kk = s->k * s->k;
    for(int j = 0; j < n; j++)
      for(int ch = 0; ch < g.ich; ch++){
        float *plane = im + j * img + (size_t)ch * g.ih * g.iw;
        for(int r = 0; r < kk; r++)
          scatter_add_row_avx512(plane, col + j * np + ((size_t)ch * kk + r) * ld,
                                 tab + r * (int)np, (int)np);
      }
    return;
  }
#endif
  for(int j = 0; j < n; j++) col2im_rows(s, &g, col + j * np, ld, im + j * img);
}
