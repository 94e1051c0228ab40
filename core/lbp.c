/*
** lbp.c - local binary patterns, Hamming maps, box smoothing and the
** top-fraction mean of lbp.h.
**
** lbp_codes works out the P offsets once (dy_p = -R sin(2 pi p / P),
** dx_p = R cos(2 pi p / P), both rounded to 5 decimals as skimage does, so
** that cos(pi / 2) counts as 0), then for every pixel (y, x) and point p
** reads the four pixels around (y + dy_p, x + dx_p) (floor and ceil of each
** coordinate, clamped into the image) and interpolates. The numpy oracle in
** tests/bench/reference/defectgan_ref.py computes the same expressions and
** must agree bit for bit.
**
** lbp_top_mean selects the k largest values with an in-place quickselect
** (median of three), then sums them.
*/
#include "lbp.h"

#include <math.h>

void lbp_grey(float *grey, const float *img, int c, int h, int w) {
  size_t hw = (size_t)h * w;
  if( c == 3 ){
    for(size_t i = 0; i < hw; i++)
      grey[i] = (float)(0.299 * img[i] + 0.587 * img[hw + i] + 0.114 * img[2 * hw + i]);
    return;
  }
  for(size_t i = 0; i < hw; i++){
    double s = 0.0;
    for(int k = 0; k < c; k++) s += img[(size_t)k * hw + i];
    grey[i] = (float)(c > 0 ? s / c : 0.0);
  }
}

static int clampi(int v, int hi) {
  return v < 0 ? 0 : v > hi ? hi : v;
}

void lbp_codes(uint32_t *codes, const float *grey, int h, int w, int points,
               double radius) {
  double dy[LBP_MAX_POINTS], dx[LBP_MAX_POINTS];
  if( points < 1 ) points = 1;
  if( points > LBP_MAX_POINTS ) points = LBP_MAX_POINTS;
  for(int p = 0; p < points; p++){
    double a = 2.0 * M_PI * p / points;
    dy[p] = rint(-radius * sin(a) * 1e5) / 1e5;
    dx[p] = rint(radius * cos(a) * 1e5) / 1e5;
  }
  for(int y = 0; y < h; y++)
    for(int x = 0; x < w; x++){
      double centre = grey[(size_t)y * w + x];
      uint32_t code = 0;
      for(int p = 0; p < points; p++){
        double ry = y + dy[p], rx = x + dx[p];
        double fy = floor(ry), fx = floor(rx);
        double dr = ry - fy, dc = rx - fx;
        int y0 = clampi((int)fy, h - 1), y1 = clampi((int)ceil(ry), h - 1);
        int x0 = clampi((int)fx, w - 1), x1 = clampi((int)ceil(rx), w - 1);
        double tl = grey[(size_t)y0 * w + x0], tr = grey[(size_t)y0 * w + x1];
        double bl = grey[(size_t)y1 * w + x0], br = grey[(size_t)y1 * w + x1];
        double top = tl + dc * (tr - tl), bottom = bl + dc * (br - bl);
        double v = top + dr * (bottom - top);
        if( v >= centre ) code |= (uint32_t)1 << p;
      }
      codes[(size_t)y * w + x] = code;
    }
}

void lbp_hamming(float *map, const uint32_t *a, const uint32_t *b, size_t count) {
  for(size_t i = 0; i < count; i++){
    uint32_t d = a[i] ^ b[i];
    int bits = 0;
    while( d ){ d &= d - 1; bits++; }
    map[i] = (float)bits;
  }
}

void lbp_box(float *out, const float *in, int h, int w, int window) {
  int half = window / 2;
  double area = (double)window * window;
  for(int y = 0; y < h; y++)
    for(int x = 0; x < w; x++){
      double s = 0.0;
      for(int j = -half; j <= half; j++){
        const float *row = in + (size_t)clampi(y + j, h - 1) * w;
        for(int i = -half; i <= half; i++) s += row[clampi(x + i, w - 1)];
      }
      out[(size_t)y * w + x] = (float)(s / area);
    }
}

static void swapf(float *a, float *b) {
  float t = *a;
  *a = *b;
  *b = t;
}

/* Rearrange v so that v[k] holds the value it would hold sorted ascending,
** everything before it <= it and everything after >= it. */
static void select_kth(float *v, size_t count, size_t k) {
  size_t lo = 0, hi = count - 1;
  while( hi > lo ){
    size_t mid = lo + (hi - lo) / 2;
    if( v[mid] < v[lo] ) swapf(&v[mid], &v[lo]);
    if( v[hi] < v[lo] ) swapf(&v[hi], &v[lo]);
    if( v[hi] < v[mid] ) swapf(&v[hi], &v[mid]);
    float pivot = v[mid];
    size_t i = lo, j = hi;
    while( i <= j ){
      while( v[i] < pivot ) i++;
      while( v[j] > pivot ) j--;
      if( i <= j ){
        swapf(&v[i], &v[j]);
        i++;
        if( j == 0 ) break;
        j--;
      }
    }
    /* now v[lo..j] <= pivot <= v[i..hi], and j < i */
    if( k <= j ) hi = j;
    else if( k >= i ) lo = i;
    else return;
  }
}

double lbp_top_mean(float *v, size_t count, double top) {
  if( !count ) return 0.0;
  double want = ceil(top * (double)count);
  size_t k = want < 1.0 ? 1 : want >= (double)count ? count : (size_t)want;
  select_kth(v, count, count - k);
  double s = 0.0;
  for(size_t i = count - k; i < count; i++) s += v[i];
  return s / (double)k;
}
