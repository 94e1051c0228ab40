/*
** montage.h - a contact sheet of scored images: one row per image with the
** input, the model's reconstruction and the anomaly map side by side, and
** the image's label and score written under them (in red when the score is
** over the model's threshold).
**
**   montage *mt;
**   if( montage_new(&mt, W, H, C, 64, &e) ) ...;           the model's input size
**   montage_add(mt, x, recon, map, lo, hi, score, flagged, "42", &e);   per image
**   montage_png(mt, &png, &npng, &e);                     PNG bytes, anom_free them
**   montage_free(mt);
**
** x and recon are (C, H, W) tensors in [-1, 1], map is (H, W) painted with
** the colour scale of heatmap.h over [lo, hi]. Tiles are the model's input
** enlarged by a whole factor to at least 96 pixels a side, or reduced to at
** most 256; each row is rendered when added, so a sheet holds only bytes.
*/
#ifndef ANOM_MONTAGE_H
#define ANOM_MONTAGE_H

#include "common.h"

typedef struct montage montage;

/* A sheet for images of the model's input shape, of at most max_rows rows. */
int montage_new(montage **out, int w, int h, int c, int max_rows, anom_err *e);

/* Append a row; ANOM_ETOOBIG when the sheet already has max_rows. label may
** be NULL or "" (the score alone is written). */
int montage_add(montage *mt, const float *x, const float *recon, const float *map,
                double lo, double hi, double score, int flagged, const char *label,
                anom_err *e);

int montage_rows(const montage *mt);

/* The sheet's width and height in pixels as it stands. */
void montage_size(const montage *mt, int *w, int *h);

/* The sheet as a PNG in a new buffer (*png, *npng), freed with anom_free. */
int montage_png(const montage *mt, unsigned char **png, size_t *npng, anom_err *e);

void montage_free(montage *mt);

#endif /* ANOM_MONTAGE_H */
