/*
** montage.c - contact sheets of scored images (montage.h).
**
** Layout, in pixels (g = GAP, L = a text line at the sheet's text scale):
**
**   g | image | g | repair | g | map | g        header: the column names
**     tile_w      tile_w       tile_w          rows: tile_h of pictures,
**                                                    then L of label and score
*/
#include "montage.h"
#include "font.h"
#include "heatmap.h"
#include "image.h"

#include <stdio.h>
#include <string.h>

#define GAP 4
#define TILE_MIN 96
#define TILE_MAX 256
#define LABEL_MAX 64

static const unsigned char BACKGROUND[3] = {36, 36, 40};
static const unsigned char TEXT[3] = {232, 232, 232};
static const unsigned char FLAGGED[3] = {255, 96, 96};

typedef struct montage_row {
  unsigned char *px;          /* 3 tiles, each (tile_h, tile_w, 3) */
  char text[LABEL_MAX + 40];
  int flagged;
} montage_row;

struct montage {
  int w, h, c;                /* the model's input */
  int tile_w, tile_h, scale;  /* tiles, and the text scale */
  int nrows, max_rows;
  unsigned char *scratch;     /* (h, w, 3) bytes */
  montage_row *rows;
};

int montage_new(montage **out, int w, int h, int c, int max_rows, anom_err *e) {
  *out = NULL;
  if( w < 1 || h < 1 || (c != 1 && c != 3) || max_rows < 1 )
    return anom_fail(e, ANOM_EINVAL, "montage: bad shape %dx%dx%d or row limit %d",
                     w, h, c, max_rows);
  montage *mt = anom_calloc(1, sizeof(*mt));
  if( !mt ) return anom_fail(e, ANOM_ENOMEM, "out of memory for a montage");
  int side = w > h ? w : h, up = 1, down = 1;
  if( side < TILE_MIN ) up = (TILE_MIN + side - 1) / side;
  else if( side > TILE_MAX ) down = (side + TILE_MAX - 1) / TILE_MAX;
  mt->w = w;
  mt->h = h;
  mt->c = c;
  mt->tile_w = w * up / down > 0 ? w * up / down : 1;
  mt->tile_h = h * up / down > 0 ? h * up / down : 1;
  mt->scale = mt->tile_w >= 160 ? 2 : 1;
  mt->max_rows = max_rows;
  mt->scratch = anom_malloc((size_t)w * h * 3);
  mt->rows = anom_calloc((size_t)max_rows, sizeof(*mt->rows));
  if( !mt->scratch || !mt->rows ){
    montage_free(mt);
    return anom_fail(e, ANOM_ENOMEM, "out of memory for a montage");
  }
  *out = mt;
  return ANOM_OK;
}

void montage_free(montage *mt) {
  if( !mt ) return;
  for(int i = 0; mt->rows && i < mt->nrows; i++) anom_free(mt->rows[i].px);
  anom_free(mt->rows);
  anom_free(mt->scratch);
  anom_free(mt);
}

int montage_rows(const montage *mt) { return mt->nrows; }

/* Nearest-neighbour copy of (h, w, c) bytes src onto tile k of a row. */
static void put_tile(const montage *mt, unsigned char *row, int k,
                     const unsigned char *src, int c) {
  unsigned char *t = row + (size_t)k * mt->tile_w * mt->tile_h * 3;
  for(int y = 0; y < mt->tile_h; y++){
    int sy = (int)((long long)y * mt->h / mt->tile_h);
    for(int x = 0; x < mt->tile_w; x++){
      int sx = (int)((long long)x * mt->w / mt->tile_w);
      const unsigned char *s = src + ((size_t)sy * mt->w + sx) * c;
      unsigned char *d = t + ((size_t)y * mt->tile_w + x) * 3;
      for(int ch = 0; ch < 3; ch++) d[ch] = s[c == 3 ? ch : 0];
    }
  }
}

int montage_add(montage *mt, const float *x, const float *recon, const float *map,
                double lo, double hi, double score, int flagged, const char *label,
                anom_err *e) {
  if( mt->nrows == mt->max_rows )
    return anom_fail(e, ANOM_ETOOBIG, "a montage holds at most %d rows", mt->max_rows);
  montage_row *r = &mt->rows[mt->nrows];
  r->px = anom_malloc((size_t)3 * mt->tile_w * mt->tile_h * 3);
  if( !r->px ) return anom_fail(e, ANOM_ENOMEM, "out of memory for a montage row");
  image_from_tensor(mt->scratch, x, mt->w, mt->h, mt->c);
  put_tile(mt, r->px, 0, mt->scratch, mt->c);
  image_from_tensor(mt->scratch, recon, mt->w, mt->h, mt->c);
  put_tile(mt, r->px, 1, mt->scratch, mt->c);
  heatmap_paint(mt->scratch, map, (size_t)mt->w * mt->h, lo, hi, HEATMAP_HEAT, NULL, 0, 0);
  put_tile(mt, r->px, 2, mt->scratch, 3);
  char lab[LABEL_MAX + 1] = "";
  if( label ) snprintf(lab, sizeof(lab), "%s", label);
  snprintf(r->text, sizeof(r->text), "%s%s%.4g", lab, lab[0] ? "  " : "", score);
  r->flagged = flagged;
  mt->nrows++;
  return ANOM_OK;
}

static int line_h(const montage *mt) { return FONT_LINE * mt->scale; }

void montage_size(const montage *mt, int *w, int *h) {
  int row_h = mt->tile_h + line_h(mt) + GAP;
  *w = 3 * mt->tile_w + 4 * GAP;
  *h = GAP + line_h(mt) + mt->nrows * row_h + GAP;
}

/* Draw s at (x, y), cut to fit the sheet's width. */
static void text(unsigned char *px, int w, int h, int x, int y, const char *s,
                 int scale, const unsigned char *color) {
  char buf[LABEL_MAX + 40];
  int fit = (w - x) / (FONT_ADVANCE * scale);
  snprintf(buf, sizeof(buf), "%s", s);
  if( fit < 0 ) fit = 0;
  if( (size_t)fit < strlen(buf) ) buf[fit] = 0;
  font_draw(px, w, h, 3, x, y, buf, scale, color);
}

int montage_png(const montage *mt, unsigned char **png, size_t *npng, anom_err *e) {
  int w, h;
  montage_size(mt, &w, &h);
  unsigned char *px = anom_malloc((size_t)w * h * 3);
  if( !px ) return anom_fail(e, ANOM_ENOMEM, "out of memory for a %dx%d montage", w, h);
  for(size_t i = 0; i < (size_t)w * h; i++) memcpy(px + 3 * i, BACKGROUND, 3);
  static const char *const heads[3] = {"image", "repair", "map"};
  for(int k = 0; k < 3; k++)
    text(px, w, h, GAP + k * (mt->tile_w + GAP), GAP, heads[k], mt->scale, TEXT);
  int y = GAP + line_h(mt);
  for(int i = 0; i < mt->nrows; i++){
    const montage_row *r = &mt->rows[i];
    for(int k = 0; k < 3; k++){
      const unsigned char *t = r->px + (size_t)k * mt->tile_w * mt->tile_h * 3;
      int x0 = GAP + k * (mt->tile_w + GAP);
      for(int ty = 0; ty < mt->tile_h; ty++)
        memcpy(px + ((size_t)(y + ty) * w + x0) * 3, t + (size_t)ty * mt->tile_w * 3,
               (size_t)mt->tile_w * 3);
    }
    y += mt->tile_h + 1;
    text(px, w, h, GAP, y, r->text, mt->scale, r->flagged ? FLAGGED : TEXT);
    y += line_h(mt) + GAP - 1;
  }
  int rc = image_encode_png(png, npng, px, w, h, 3, e);
  anom_free(px);
  return rc;
}
