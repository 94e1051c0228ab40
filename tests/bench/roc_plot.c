/*
** roc_plot.c - ROC curves of one or more scorers drawn into one PNG, each
** with its AUROC, for the benchmark reports.
**
**   roc_plot OUT.png "TITLE" NAME1 FILE1 [NAME2 FILE2 ...]      (1 to 10 curves)
**
** Each FILE holds one "score,label" pair a line: score a float (not NaN),
** label 0 (normal) or 1 (anomalous, the positive class); spaces around
** either are allowed, empty lines are skipped and any other line is an error.
** For example:
**
**   0.1,0
**   0.35,0
**   0.4,1
**   0.8,1
**
** The ROC curve runs the threshold down through every distinct score: each
** step adds the positives and negatives at that score at once, so a tie of
** both moves diagonally. The AUROC is the trapezoid area under those points,
** which is the Mann-Whitney P(positive > negative) + 0.5 P(tie). A file
** must hold both classes.
**
** The picture (PNG_W x PNG_H, white): the plot square with axes 0..1, a
** light-grey grid and tick labels every 0.2, the chance diagonal dashed in
** grey, each curve a 2-pixel line in its colour from PALETTE, a legend in
** the lower right with "NAME 0.9790" per curve, axis titles and TITLE at the
** top, written with the built-in font of core/font.h. On stdout, one line a
** curve:
**
**   NAME auroc=0.9790 n=2000 positives=1000
**
** Exits 0 on success; 1 with a message on stderr on any error (2 for a bad
** command line), writing nothing on stdout.
*/
#include "common.h"
#include "font.h"
#include "image.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CURVES 10
#define LINE_MAX_LEN 512      /* longest line a score file may have */
#define NAME_SHOWN 40         /* characters of a name the legend shows */

/* The picture. */
#define PNG_W 560
#define PNG_H 520
#define PLOT_L 90             /* left edge of the plot square */
#define PLOT_T 50             /* top edge */
#define PLOT_S 420            /* its side: 1.0 is PLOT_S pixels */

typedef unsigned char rgb[3];

/* Ten colours told apart easily (matplotlib's "tab10"). */
static const rgb PALETTE[MAX_CURVES] = {
  {31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189},
  {140, 86, 75}, {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
static const rgb WHITE = {255, 255, 255};
static const rgb BLACK = {0, 0, 0};
static const rgb GRID = {225, 225, 225};
static const rgb CHANCE = {150, 150, 150};
static const rgb FRAME = {110, 110, 110};

typedef struct pair {
  double score;
  int label;
} pair;

typedef struct curve {
  const char *name;
  pair *p;              /* the file's pairs, sorted by score descending */
  size_t n, npos;
  double *fpr, *tpr;    /* the ROC points from (0, 0) to (1, 1) */
  size_t npts;
  double auroc;
} curve;

static void curve_free(curve *cv) {
  anom_free(cv->p);
  anom_free(cv->fpr);
  anom_free(cv->tpr);
  memset(cv, 0, sizeof(*cv));
}

/* ---------------------------------------------------------------- reading */

static char *skip_space(char *s) {
  while( *s == ' ' || *s == '\t' ) s++;
  return s;
}

/* Parse "score,label" (surrounding spaces allowed) into *out: 0 on success. */
static int parse_line(char *s, pair *out) {
  s = skip_space(s);
  char *end;
  double v = strtod(s, &end);
  if( end == s || isnan(v) ) return 1;
  s = skip_space(end);
  if( *s != ',' ) return 1;
  s = skip_space(s + 1);
  if( *s != '0' && *s != '1' ) return 1;
  int label = *s - '0';
  s = skip_space(s + 1);
  if( *s ) return 1;
  out->score = v;
  out->label = label;
  return 0;
}

static int read_pairs(curve *cv, const char *path, anom_err *e) {
  FILE *f = fopen(path, "r");
  if( !f ) return anom_fail(e, ANOM_EINVAL, "cannot open %s: %s", path, strerror(errno));
  char line[LINE_MAX_LEN];
  size_t cap = 0, lineno = 0;
  int rc = ANOM_OK;
  while( fgets(line, sizeof(line), f) ){
    lineno++;
    size_t len = strlen(line);
    if( len == sizeof(line) - 1 && line[len - 1] != '\n' && !feof(f) ){
      rc = anom_fail(e, ANOM_EINVAL, "%s:%zu: line longer than %d bytes", path, lineno,
                     LINE_MAX_LEN - 2);
      break;
    }
    while( len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
                       line[len - 1] == ' ' || line[len - 1] == '\t') )
      line[--len] = 0;
    if( *skip_space(line) == 0 ) continue;
    pair pr;
    if( parse_line(line, &pr) ){
      rc = anom_fail(e, ANOM_EINVAL,
                     "%s:%zu: expected 'score,label' with a number and 0 or 1, found '%.60s'",
                     path, lineno, line);
      break;
    }
    if( cv->n == cap ){
      size_t ncap = cap ? 2 * cap : 1024, bytes;
      pair *np = NULL;
      if( !anom_mul_size(ncap, sizeof(pair), &bytes) ) np = anom_realloc(cv->p, bytes);
      if( !np ){
        rc = anom_fail(e, ANOM_ENOMEM, "%s: out of memory at line %zu", path, lineno);
        break;
      }
      cv->p = np;
      cap = ncap;
    }
    cv->p[cv->n++] = pr;
    cv->npos += (size_t)pr.label;
  }
  if( rc == ANOM_OK && ferror(f) ) rc = anom_fail(e, ANOM_EINVAL, "%s: read error", path);
  fclose(f);
  return rc;
}

/* ---------------------------------------------------------------- ROC */

static int by_score_desc(const void *a, const void *b) {
  double x = ((const pair *)a)->score, y = ((const pair *)b)->score;
  return x > y ? -1 : x < y ? 1 : 0;
}

/* The ROC points and AUROC of cv's pairs. */
static int compute_roc(curve *cv, const char *path, anom_err *e) {
  size_t npos = cv->npos, nneg = cv->n - cv->npos;
  if( npos == 0 || nneg == 0 )
    return anom_fail(e, ANOM_EINVAL,
                     "%s: needs both classes, found %zu positives and %zu negatives",
                     path, npos, nneg);
  qsort(cv->p, cv->n, sizeof(pair), by_score_desc);
  cv->fpr = anom_malloc((cv->n + 1) * sizeof(double));
  cv->tpr = anom_malloc((cv->n + 1) * sizeof(double));
  if( !cv->fpr || !cv->tpr ) return anom_fail(e, ANOM_ENOMEM, "%s: out of memory", path);
  size_t tp = 0, fp = 0, k = 0;
  double area2 = 0.0;   /* twice the area, in units of one positive x one negative */
  cv->fpr[k] = 0.0;
  cv->tpr[k++] = 0.0;
  for(size_t i = 0; i < cv->n;){
    size_t tp0 = tp, fp0 = fp;
    double s = cv->p[i].score;
    for(; i < cv->n && cv->p[i].score == s; i++){
      if( cv->p[i].label ) tp++;
      else fp++;
    }
    area2 += (double)(fp - fp0) * (double)(tp + tp0);
    cv->fpr[k] = (double)fp / (double)nneg;
    cv->tpr[k++] = (double)tp / (double)npos;
  }
  cv->npts = k;
  cv->auroc = area2 / (2.0 * (double)npos * (double)nneg);
  return ANOM_OK;
}

/* ---------------------------------------------------------------- drawing */

typedef struct canvas {
  unsigned char *px;    /* (PNG_H, PNG_W, 3) */
  int w, h;
} canvas;

static void put(canvas *cv, int x, int y, const unsigned char *col) {
  if( x < 0 || y < 0 || x >= cv->w || y >= cv->h ) return;
  memcpy(cv->px + ((size_t)y * cv->w + x) * 3, col, 3);
}

/* Fill [x0, x1] x [y0, y1], corners included. */
static void fill_rect(canvas *cv, int x0, int y0, int x1, int y1, const unsigned char *col) {
  for(int y = y0; y <= y1; y++)
    for(int x = x0; x <= x1; x++) put(cv, x, y, col);
}

/*
** A line from (x0, y0) to (x1, y1) by Bresenham, each point a thick x thick
** square (down and right of it); with dash > 0, dash points on and dash off.
*/
static void line(canvas *cv, int x0, int y0, int x1, int y1, int thick, int dash,
                 const unsigned char *col) {
  int dx = abs(x1 - x0), dy = -abs(y1 - y0);
  int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
  int err = dx + dy;
  for(int step = 0;; step++){
    if( dash <= 0 || step % (2 * dash) < dash )
      fill_rect(cv, x0, y0, x0 + thick - 1, y0 + thick - 1, col);
    if( x0 == x1 && y0 == y1 ) break;
    int e2 = 2 * err;
    if( e2 >= dy ){ err += dy; x0 += sx; }
    if( e2 <= dx ){ err += dx; y0 += sy; }
  }
}

static void text(canvas *cv, int x, int y, const char *s, int scale, const unsigned char *col) {
  font_draw(cv->px, cv->w, cv->h, 3, x, y, s, scale, col);
}

/* s at scale 1 turned a quarter left, reading upwards, in the box
** [x, x + 7) x [y, y + its width): the text's first letter at the bottom. */
static int text_up(canvas *cv, int x, int y, const char *s, const unsigned char *col,
                   anom_err *e) {
  int tw = font_text_width(s, 1), th = 7;
  if( tw == 0 ) return ANOM_OK;
  unsigned char *mask = anom_calloc((size_t)tw * th, 1);
  if( !mask ) return anom_fail(e, ANOM_ENOMEM, "out of memory for a label");
  const unsigned char on = 1;
  font_draw(mask, tw, th, 1, 0, 0, s, 1, &on);
  for(int ty = 0; ty < th; ty++)
    for(int tx = 0; tx < tw; tx++)
      if( mask[(size_t)ty * tw + tx] ) put(cv, x + ty, y + tw - 1 - tx, col);
  anom_free(mask);
  return ANOM_OK;
}

static int px_x(double f) { return PLOT_L + (int)lround(f * PLOT_S); }
static int px_y(double t) { return PLOT_T + PLOT_S - (int)lround(t * PLOT_S); }

static int draw(canvas *cv, const char *title, const curve *curves, int ncurves,
                anom_err *e) {
  const int right = PLOT_L + PLOT_S, bottom = PLOT_T + PLOT_S;
  fill_rect(cv, 0, 0, cv->w - 1, cv->h - 1, WHITE);

  /* grid, ticks and their labels every 0.2 */
  for(int k = 0; k <= 5; k++){
    int gx = px_x(k / 5.0), gy = px_y(k / 5.0);
    if( k > 0 && k < 5 ){
      line(cv, gx, PLOT_T, gx, bottom, 1, 0, GRID);
      line(cv, PLOT_L, gy, right, gy, 1, 0, GRID);
    }
    line(cv, gx, bottom, gx, bottom + 4, 1, 0, BLACK);
    line(cv, PLOT_L - 4, gy, PLOT_L, gy, 1, 0, BLACK);
    char lab[16];
    snprintf(lab, sizeof(lab), "%g", k / 5.0);
    int lw = font_text_width(lab, 1);
    text(cv, gx - lw / 2, bottom + 9, lab, 1, BLACK);
    text(cv, PLOT_L - 8 - lw, gy - 3, lab, 1, BLACK);
  }
  /* chance */
  line(cv, PLOT_L, bottom, right, PLOT_T, 1, 4, CHANCE);

  /* the frame, under the curves so that a perfect curve shows on the axes */
  line(cv, PLOT_L, PLOT_T, right, PLOT_T, 1, 0, BLACK);
  line(cv, PLOT_L, bottom, right, bottom, 1, 0, BLACK);
  line(cv, PLOT_L, PLOT_T, PLOT_L, bottom, 1, 0, BLACK);
  line(cv, right, PLOT_T, right, bottom, 1, 0, BLACK);

  /* curves, the first drawn first */
  for(int c = 0; c < ncurves; c++){
    const curve *cu = &curves[c];
    int x0 = px_x(cu->fpr[0]), y0 = px_y(cu->tpr[0]);
    for(size_t i = 1; i < cu->npts; i++){
      int x1 = px_x(cu->fpr[i]), y1 = px_y(cu->tpr[i]);
      if( x1 == x0 && y1 == y0 ) continue;
      line(cv, x0, y0, x1, y1, 2, 0, PALETTE[c]);
      x0 = x1;
      y0 = y1;
    }
  }

  /* legend: a white box in the lower right, one row a curve */
  char labels[MAX_CURVES][NAME_SHOWN + 16];
  int lw = 0;
  for(int c = 0; c < ncurves; c++){
    snprintf(labels[c], sizeof(labels[c]), "%.*s %.4f", NAME_SHOWN, curves[c].name,
             curves[c].auroc);
    int w = font_text_width(labels[c], 1);
    if( w > lw ) lw = w;
  }
  const int row = 14, sample = 18;
  int bw = 8 + sample + 6 + lw + 6, bh = 6 + ncurves * row;
  int bx = right - 10 - bw, by = bottom - 10 - bh;
  if( bx < PLOT_L + 2 ) bx = PLOT_L + 2;
  fill_rect(cv, bx, by, bx + bw, by + bh, WHITE);
  line(cv, bx, by, bx + bw, by, 1, 0, FRAME);
  line(cv, bx, by + bh, bx + bw, by + bh, 1, 0, FRAME);
  line(cv, bx, by, bx, by + bh, 1, 0, FRAME);
  line(cv, bx + bw, by, bx + bw, by + bh, 1, 0, FRAME);
  for(int c = 0; c < ncurves; c++){
    int ry = by + 6 + c * row;
    line(cv, bx + 8, ry + 3, bx + 8 + sample, ry + 3, 2, 0, PALETTE[c]);
    text(cv, bx + 8 + sample + 6, ry, labels[c], 1, PALETTE[c]);
  }

  /* axis titles and the title */
  const char *xt = "false positive rate", *yt = "true positive rate";
  text(cv, PLOT_L + (PLOT_S - font_text_width(xt, 1)) / 2, bottom + 26, xt, 1, BLACK);
  int rc = text_up(cv, PLOT_L - 50, PLOT_T + (PLOT_S - font_text_width(yt, 1)) / 2, yt,
                   BLACK, e);
  if( rc ) return rc;
  int scale = font_text_width(title, 2) <= cv->w - 16 ? 2 : 1;
  int tw = font_text_width(title, scale);
  text(cv, tw <= cv->w - 16 ? (cv->w - tw) / 2 : 8, (PLOT_T - 7 * scale) / 2, title, scale,
       BLACK);
  return ANOM_OK;
}

static int write_png(const char *path, const canvas *cv, anom_err *e) {
  unsigned char *png = NULL;
  size_t npng = 0;
  int rc = image_encode_png(&png, &npng, cv->px, cv->w, cv->h, 3, e);
  if( rc ) return rc;
  FILE *f = fopen(path, "wb");
  if( !f ){
    rc = anom_fail(e, ANOM_EINVAL, "cannot create %s: %s", path, strerror(errno));
  }else{
    size_t wrote = fwrite(png, 1, npng, f);
    if( fclose(f) != 0 || wrote != npng )
      rc = anom_fail(e, ANOM_EINVAL, "cannot write %s: %s", path, strerror(errno));
  }
  anom_free(png);
  return rc;
}

int main(int argc, char **argv) {
  if( argc < 5 || (argc - 3) % 2 != 0 || (argc - 3) / 2 > MAX_CURVES ){
    fprintf(stderr,
            "usage: roc_plot OUT.png \"TITLE\" NAME1 FILE1 [NAME2 FILE2 ...]  (1 to %d curves;\n"
            "       each FILE one 'score,label' a line, label 0 normal or 1 anomalous)\n",
            MAX_CURVES);
    return 2;
  }
  const char *out = argv[1], *title = argv[2];
  int ncurves = (argc - 3) / 2;
  curve curves[MAX_CURVES];
  memset(curves, 0, sizeof(curves));
  anom_err e;
  anom_err_clear(&e);
  int rc = ANOM_OK;
  for(int c = 0; c < ncurves && rc == ANOM_OK; c++){
    curves[c].name = argv[3 + 2 * c];
    const char *path = argv[4 + 2 * c];
    rc = read_pairs(&curves[c], path, &e);
    if( rc == ANOM_OK ) rc = compute_roc(&curves[c], path, &e);
  }
  canvas cv = {NULL, PNG_W, PNG_H};
  if( rc == ANOM_OK ){
    cv.px = anom_malloc((size_t)PNG_W * PNG_H * 3);
    if( !cv.px ) rc = anom_fail(&e, ANOM_ENOMEM, "out of memory for the picture");
  }
  if( rc == ANOM_OK ) rc = draw(&cv, title, curves, ncurves, &e);
  if( rc == ANOM_OK ) rc = write_png(out, &cv, &e);
  if( rc == ANOM_OK )
    for(int c = 0; c < ncurves; c++)
      printf("%s auroc=%.4f n=%zu positives=%zu\n", curves[c].name, curves[c].auroc,
             curves[c].n, curves[c].npos);
  anom_free(cv.px);
  for(int c = 0; c < ncurves; c++) curve_free(&curves[c]);
  if( rc ){
    fprintf(stderr, "roc_plot: %s\n", e.msg);
    return 1;
  }
  return 0;
}
