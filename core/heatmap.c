/*
** heatmap.c - smoothing, resampling and painting anomaly maps (heatmap.h).
*/
#include "heatmap.h"
#include "image.h"

#include <math.h>

#define MAX_RADIUS ((int)(3 * HEATMAP_MAX_SIGMA) + 1)

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

void heatmap_smooth(float *map, int w, int h, double sigma, float *tmp) {
  if( !(sigma > 0) ) return;
  if( sigma > HEATMAP_MAX_SIGMA ) sigma = HEATMAP_MAX_SIGMA;
  int r = (int)ceil(3 * sigma);
  float k[2 * MAX_RADIUS + 1];
  double sum = 0;
  for(int i = -r; i <= r; i++) sum += k[i + r] = (float)exp(-0.5 * i * i / (sigma * sigma));
  for(int i = 0; i <= 2 * r; i++) k[i] = (float)(k[i] / sum);
  /* rows into tmp, then columns back into map */
  for(int y = 0; y < h; y++){
    const float *row = map + (size_t)y * w;
    for(int x = 0; x < w; x++){
      float s = 0;
      for(int i = -r; i <= r; i++) s += k[i + r] * row[clampi(x + i, 0, w - 1)];
      tmp[(size_t)y * w + x] = s;
    }
  }
  for(int y = 0; y < h; y++){
    for(int x = 0; x < w; x++){
      float s = 0;
      for(int i = -r; i <= r; i++) s += k[i + r] * tmp[(size_t)clampi(y + i, 0, h - 1) * w + x];
      map[(size_t)y * w + x] = s;
    }
  }
}

/* Source coordinate of destination pixel d of n, over src pixels [o, o + m). */
static void axis(int d, int n, int o, int m, int *i0, int *i1, float *f) {
  double s = o + (d + 0.5) * m / (double)n - 0.5;
  if( s < o ) s = o;
  if( s > o + m - 1 ) s = o + m - 1;
  *i0 = (int)s;
  *i1 = *i0 + 1 < o + m ? *i0 + 1 : *i0;
  *f = (float)(s - *i0);
}

void heatmap_resample(float *out, int iw, int ih, const float *map, int w, int h,
                      int fit) {
  int ox, oy, dw, dh;
  image_fit_rect(iw, ih, w, h, fit, &ox, &oy, &dw, &dh);
  for(int y = 0; y < ih; y++){
    int y0, y1;
    float fy;
    axis(y, ih, oy, dh, &y0, &y1, &fy);
    const float *r0 = map + (size_t)y0 * w, *r1 = map + (size_t)y1 * w;
    float *o = out + (size_t)y * iw;
    for(int x = 0; x < iw; x++){
      int x0, x1;
      float fx;
      axis(x, iw, ox, dw, &x0, &x1, &fx);
      float top = r0[x0] + fx * (r0[x1] - r0[x0]);
      float bot = r1[x0] + fx * (r1[x1] - r1[x0]);
      o[x] = top + fy * (bot - top);
    }
  }
}

void heatmap_range(const float *map, size_t n, float *lo, float *hi) {
  float a = n ? map[0] : 0, b = a;
  for(size_t i = 1; i < n; i++){
    if( map[i] < a ) a = map[i];
    if( map[i] > b ) b = map[i];
  }
  *lo = a;
  *hi = b;
}

/* inferno at t = 0, 1/8, ..., 1 */
static const unsigned char scale_rgb[9][3] = {
  {0, 0, 4}, {31, 12, 72}, {85, 15, 109}, {136, 34, 106}, {186, 54, 85},
  {227, 89, 51}, {249, 140, 10}, {249, 201, 50}, {252, 255, 164}
};

void heatmap_color(double t, unsigned char rgb[3]) {
  if( !(t > 0) ) t = 0;
  if( t > 1 ) t = 1;
  double s = t * 8;
  int i = (int)s;
  if( i > 7 ) i = 7;
  double f = s - i;
  for(int c = 0; c < 3; c++)
    rgb[c] = (unsigned char)lrint(scale_rgb[i][c] + f * (scale_rgb[i + 1][c] - scale_rgb[i][c]));
}

void heatmap_paint(unsigned char *px, const float *map, size_t n, double lo,
                   double hi, int style, const unsigned char *base, int base_c,
                   double alpha) {
  double span = hi - lo;
  for(size_t i = 0; i < n; i++){
    double t = span > 0 ? (map[i] - lo) / span : 0;
    if( !(t > 0) ) t = 0;
    if( t > 1 ) t = 1;
    if( style == HEATMAP_GREY ){
      px[i] = (unsigned char)lrint(255 * t);
      continue;
    }
    unsigned char *o = px + 3 * i;
    heatmap_color(t, o);
    if( style == HEATMAP_OVERLAY ){
      double a = alpha * t;
      for(int c = 0; c < 3; c++){
        double b = base[i * base_c + (base_c == 3 ? c : 0)];
        o[c] = (unsigned char)lrint((1 - a) * b + a * o[c]);
      }
    }
  }
}
