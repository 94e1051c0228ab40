/*
** heatmap.h - a detector's per-pixel anomaly map made into a picture.
**
** A map comes from model_map() at the model's input size (H, W). It is
** smoothed there, cut back out of the input tensor and resampled onto the
** original image, then painted with a colour scale: the model's calibrated
** one (maps of different images compare) or the image's own range.
**
**   model_map(m, 1, x, work, map, &r, NULL, NULL, &e);
**   heatmap_smooth(map, W, H, HEATMAP_SIGMA, tmp);            tmp: W*H floats
**   heatmap_resample(big, im.w, im.h, map, W, H, m->fit);     big: im.w*im.h floats
**   heatmap_paint(rgb, big, n, lo, hi, HEATMAP_HEAT, NULL, 0, 0);
**
** The colour scale runs from black through purple, red and orange to pale
** yellow, with lightness rising steadily: nine colours sampled from the
** "inferno" map of matplotlib (Smith and van der Walt), linearly
** interpolated.
*/
#ifndef ANOM_HEATMAP_H
#define ANOM_HEATMAP_H

#include "common.h"

/* The default smoothing: a Gaussian of this sigma, in model input pixels. */
#define HEATMAP_SIGMA 1.0
/* The largest sigma heatmap_smooth takes. */
#define HEATMAP_MAX_SIGMA 16.0

enum {
  HEATMAP_HEAT = 0,     /* RGB: the colour scale */
  HEATMAP_GREY = 1,     /* one channel: black (low) to white (high) */
  HEATMAP_OVERLAY = 2   /* RGB: the colour scale over the image, weighted by
                           the normalised value */
};

/*
** Smooth the (h, w) map in place with a Gaussian of sigma pixels (0: leave it
** as it is; at most HEATMAP_MAX_SIGMA), edges repeated. tmp holds w*h floats.
*/
void heatmap_smooth(float *map, int w, int h, double sigma, float *tmp);

/*
** The part of the (h, w) map that an iw x ih image occupied in the tensor
** under fit (image_fit_rect), resampled bilinearly onto (ih, iw) in out.
*/
void heatmap_resample(float *out, int iw, int ih, const float *map, int w, int h,
                      int fit);

/* The smallest and largest of map[0..n). */
void heatmap_range(const float *map, size_t n, float *lo, float *hi);

/* The colour of t in [0, 1] (clamped) on the scale. */
void heatmap_color(double t, unsigned char rgb[3]);

/*
** Paint n map values into px with the scale's range [lo, hi] (values are
** clamped to it; a range of zero width paints everything at its low end).
** HEATMAP_GREY writes one byte a pixel, the others three. HEATMAP_OVERLAY
** blends each colour over base (n pixels of base_c = 1 or 3 bytes) with
** weight alpha * t, so that normal regions show the image.
*/
void heatmap_paint(unsigned char *px, const float *map, size_t n, double lo,
                   double hi, int style, const unsigned char *base, int base_c,
                   double alpha);

#endif /* ANOM_HEATMAP_H */
