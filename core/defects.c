/*
** defects.c - the defect synthesiser of defects.h.
**
** U() is rng_uniform (in [0, 1)), B(n) rng_below(n), N() rng_normal.
** side = min(H, W) and S(u) = side (size_min + (size_max - size_min) u) is a
** size in pixels; px(s) = max(1, floor(s + 0.5)), at most the side it is
** measured along. Pixels are addressed by their integer coordinates
** (x, y), x the column; a value v written by a defect becomes
** clamp(v, -1, 1) rounded to float.
**
** Per image, in this order:
**   1. u = U(); unless u < p, nothing more is drawn or painted.
**   2. k = 1 + B(max) defects, each drawing its kind as the B(nk)-th kind
**      of the set (nk kinds, in the order block, line, noise, shift), then:
**
**   block   bw = px(S(U())) wide, bh = px(S(U())) high, at x0 = B(W - bw + 1),
**           y0 = B(H - bh + 1); one value per channel, v_c = 2 U() - 1. Every
**           pixel of the rectangle is set to v_c.
**   line    centre cx = U() (W - 1), cy = U() (H - 1), angle a = pi U(),
**           length L = S(U()), thickness t = 1 + B(1 + floor(L / 8)), then
**           v_c = 2 U() - 1 per channel. The segment runs from
**           (cx, cy) - L/2 (cos a, sin a) to (cx, cy) + L/2 (cos a, sin a);
**           a pixel within distance t/2 of it is set to v_c.
**   noise   centre cx = U() (W - 1), cy = U() (H - 1), semi-axes
**           rx = max(0.5, S(U()) / 2), ry = max(0.5, S(U()) / 2), strength
**           s = 0.2 + 0.8 U(). Each pixel with
**           ((x - cx) / rx)^2 + ((y - cy) / ry)^2 <= 1, in row-major order,
**           and each of its channels in turn: v += s N().
**   shift   the same ellipse draws (cx, cy, rx, ry), then a magnitude
**           d = 0.2 + 0.6 U() and a sign (negative when U() < 0.5); every
**           channel of every pixel inside: v += d.
**
** All geometry is computed in double exactly as written (tests/bench/
** reference/defectgan_ref.py repeats it in Python and must agree bit for
** bit). Loops run over the shape's bounding box, one pixel wider on each
** side than needed (so rounding cannot drop a pixel the shape's test
** accepts) and clipped to the image, so nothing outside it is touched.
*/
#include "defects.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rng.h"

static const char *const kind_names[4] = {"block", "line", "noise", "shift"};

void defect_opts_default(defect_opts *o) {
  o->p = 0.9;
  o->max = 3;
  o->size_min = 0.05;
  o->size_max = 0.3;
  o->kinds = DEFECT_ALL;
}

static float clampf(double v) {
  return (float)(v < -1.0 ? -1.0 : v > 1.0 ? 1.0 : v);
}

static int px(double s, int limit) {
  int v = s < 1.0 ? 1 : (int)floor(s + 0.5);
  return v > limit ? limit : v;
}

static int clampi(int v, int lo, int hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

/* A size in pixels from one draw. */
static double size_draw(const defect_opts *o, int side, rng *r) {
  return side * (o->size_min + (o->size_max - o->size_min) * rng_uniform(r));
}

static void paint_block(float *img, int c, int h, int w, const defect_opts *o,
                        int side, rng *r, uint8_t *mask) {
  int bw = px(size_draw(o, side, r), w);
  int bh = px(size_draw(o, side, r), h);
  int x0 = (int)rng_below(r, (uint64_t)(w - bw + 1));
  int y0 = (int)rng_below(r, (uint64_t)(h - bh + 1));
  for(int ch = 0; ch < c; ch++){
    float v = clampf(2.0 * rng_uniform(r) - 1.0);
    for(int y = y0; y < y0 + bh; y++)
      for(int x = x0; x < x0 + bw; x++) img[((size_t)ch * h + y) * w + x] = v;
  }
  if( mask )
    for(int y = y0; y < y0 + bh; y++) memset(mask + (size_t)y * w + x0, 1, (size_t)bw);
}

/* Squared distance of (px, py) to the segment (x0, y0)-(x1, y1). */
static double seg_dist2(double x, double y, double x0, double y0, double x1,
                        double y1) {
  double dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy, t = 0.0;
  if( len2 > 0.0 ){
    t = ((x - x0) * dx + (y - y0) * dy) / len2;
    t = t < 0.0 ? 0.0 : t > 1.0 ? 1.0 : t;
  }
  double ex = x - (x0 + t * dx), ey = y - (y0 + t * dy);
  return ex * ex + ey * ey;
}

static void paint_line(float *img, int c, int h, int w, const defect_opts *o,
                       int side, rng *r, uint8_t *mask) {
  double cx = rng_uniform(r) * (w - 1), cy = rng_uniform(r) * (h - 1);
  double a = M_PI * rng_uniform(r);
  double len = size_draw(o, side, r);
  int t = 1 + (int)rng_below(r, 1 + (uint64_t)floor(len / 8.0));
  double hx = 0.5 * len * cos(a), hy = 0.5 * len * sin(a), ht = 0.5 * t;
  double x0 = cx - hx, y0 = cy - hy, x1 = cx + hx, y1 = cy + hy;
  /* the box around both ends, widened by t/2, in pixels inside the image */
  int xa = clampi((int)floor(fmin(x0, x1) - ht) - 1, 0, w - 1);
  int xb = clampi((int)ceil(fmax(x0, x1) + ht) + 1, 0, w - 1);
  int ya = clampi((int)floor(fmin(y0, y1) - ht) - 1, 0, h - 1);
  int yb = clampi((int)ceil(fmax(y0, y1) + ht) + 1, 0, h - 1);
  for(int ch = 0; ch < c; ch++){
    float v = clampf(2.0 * rng_uniform(r) - 1.0);
    for(int y = ya; y <= yb; y++)
      for(int x = xa; x <= xb; x++){
        if( seg_dist2(x, y, x0, y0, x1, y1) > ht * ht ) continue;
        img[((size_t)ch * h + y) * w + x] = v;
        if( mask && ch == 0 ) mask[(size_t)y * w + x] = 1;
      }
  }
}

typedef struct ellipse { double cx, cy, rx, ry; } ellipse;

static ellipse ellipse_draw(const defect_opts *o, int h, int w, int side, rng *r) {
  ellipse e;
  e.cx = rng_uniform(r) * (w - 1);
  e.cy = rng_uniform(r) * (h - 1);
  e.rx = fmax(0.5, size_draw(o, side, r) / 2);
  e.ry = fmax(0.5, size_draw(o, side, r) / 2);
  return e;
}

static int inside(const ellipse *e, int x, int y) {
  double dx = (x - e->cx) / e->rx, dy = (y - e->cy) / e->ry;
  return dx * dx + dy * dy <= 1.0;
}

/* Add s N() (noise) or d (shift) to every channel inside the ellipse. */
static void paint_ellipse(float *img, int c, int h, int w, const ellipse *e,
                          int noise, double amount, rng *r, uint8_t *mask) {
  int xa = clampi((int)floor(e->cx - e->rx) - 1, 0, w - 1);
  int xb = clampi((int)ceil(e->cx + e->rx) + 1, 0, w - 1);
  int ya = clampi((int)floor(e->cy - e->ry) - 1, 0, h - 1);
  int yb = clampi((int)ceil(e->cy + e->ry) + 1, 0, h - 1);
  for(int y = ya; y <= yb; y++)
    for(int x = xa; x <= xb; x++){
      if( !inside(e, x, y) ) continue;
      for(int ch = 0; ch < c; ch++){
        float *p = &img[((size_t)ch * h + y) * w + x];
        *p = clampf((double)*p + (noise ? amount * rng_normal(r) : amount));
      }
      if( mask ) mask[(size_t)y * w + x] = 1;
    }
}

int defects_apply(float *img, int c, int h, int w, const defect_opts *o, rng *r,
                  uint8_t *mask) {
  unsigned kinds = o->kinds & DEFECT_ALL;
  if( c < 1 || h < 1 || w < 1 || o->max < 1 || !kinds
      || !(o->size_min >= 0 && o->size_min <= o->size_max && o->size_max <= 1) )
    return -1;
  if( !(rng_uniform(r) < o->p) ) return 0;
  int list[4], nk = 0;
  for(int k = 0; k < 4; k++)
    if( kinds & (1u << k) ) list[nk++] = 1 << k;
  int side = h < w ? h : w;
  int count = 1 + (int)rng_below(r, (uint64_t)o->max);
  for(int i = 0; i < count; i++){
    int kind = list[rng_below(r, (uint64_t)nk)];
    if( kind == DEFECT_BLOCK ){
      paint_block(img, c, h, w, o, side, r, mask);
    }else if( kind == DEFECT_LINE ){
      paint_line(img, c, h, w, o, side, r, mask);
    }else if( kind == DEFECT_NOISE ){
      ellipse e = ellipse_draw(o, h, w, side, r);
      double s = 0.2 + 0.8 * rng_uniform(r);
      paint_ellipse(img, c, h, w, &e, 1, s, r, mask);
    }else{
      ellipse e = ellipse_draw(o, h, w, side, r);
      double d = 0.2 + 0.6 * rng_uniform(r);
      if( rng_uniform(r) < 0.5 ) d = -d;
      paint_ellipse(img, c, h, w, &e, 0, d, r, mask);
    }
  }
  return count;
}

int defects_parse_kinds(const char *s, unsigned *kinds) {
  if( !s ) return -1;
  if( strcmp(s, "all") == 0 ){ *kinds = DEFECT_ALL; return 0; }
  unsigned set = 0;
  const char *p = s;
  for(;;){
    while( *p == ' ' ) p++;
    const char *end = p;
    while( *end && *end != ',' && *end != ' ' ) end++;
    size_t len = (size_t)(end - p);
    int k = 0;
    while( k < 4 && !(strlen(kind_names[k]) == len && strncmp(kind_names[k], p, len) == 0) )
      k++;
    if( k == 4 ) return -1;
    set |= 1u << k;
    while( *end == ' ' ) end++;
    if( *end == '\0' ) break;
    if( *end != ',' ) return -1;
    p = end + 1;
  }
  *kinds = set;
  return 0;
}

void defects_kinds_name(unsigned kinds, char *buf, size_t size) {
  if( !size ) return;
  buf[0] = '\0';
  if( (kinds & DEFECT_ALL) == DEFECT_ALL ){
    snprintf(buf, size, "all");
    return;
  }
  size_t len = 0;
  for(int k = 0; k < 4; k++){
    if( !(kinds & (1u << k)) ) continue;
    int m = snprintf(buf + len, size - len, "%s%s", len ? "," : "", kind_names[k]);
    if( m < 0 || (size_t)m >= size - len ) return;
    len += (size_t)m;
  }
}
