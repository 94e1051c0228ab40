/*
** defects.h - a seeded synthesiser of surface defects, the C(x~|x) of
** DefectGAN (Zhao et al., PRICAI 2018): random blocks, lines (scratches),
** blobs of noise and intensity shifts painted onto a clean image, so that an
** encoder-decoder can learn to repair them.
**
**   defect_opts o;
**   defect_opts_default(&o);              p 0.9, 1..3 defects, sizes 5-30%
**   o.kinds = DEFECT_BLOCK | DEFECT_LINE;
**   rng r;
**   rng_seed(&r, 7);
**   int k = defects_apply(img, c, h, w, &o, &r, mask);   in place
**
** img is one image (C, H, W) with values in [-1, 1]. Every value a defect
** writes is clamped to [-1, 1]; pixels no defect touches are left as they
** are, and nothing outside the image is written. The draws come from r
** only, in the order documented in defects.c, so a seed fixes the result.
*/
#ifndef ANOM_DEFECTS_H
#define ANOM_DEFECTS_H

#include <stddef.h>
#include <stdint.h>

struct rng;

enum {
  DEFECT_BLOCK = 1,   /* a filled rectangle */
  DEFECT_LINE = 2,    /* a straight scratch, 1 or more pixels thick */
  DEFECT_NOISE = 4,   /* an ellipse of added Gaussian noise */
  DEFECT_SHIFT = 8,   /* an ellipse brightened or darkened */
  DEFECT_ALL = 15
};

typedef struct defect_opts {
  double p;                  /* probability an image gets defects, [0, 1] */
  int max;                   /* an image gets 1 to max defects, max >= 1 */
  double size_min, size_max; /* sizes, as fractions of min(H, W), in [0, 1] */
  unsigned kinds;            /* a non-empty set of DEFECT_* bits */
} defect_opts;

/* p 0.9, max 3, sizes 0.05 to 0.3, every kind. */
void defect_opts_default(defect_opts *o);

/*
** Paint defects onto img (C, H, W) in place, drawing from r. Returns the
** number of defects painted (0 when the image drew none). When mask (H * W
** bytes) is not NULL, each pixel a defect covers is set to 1 (the others
** are left alone). Invalid options (max < 1, no kind, sizes outside [0, 1]
** or size_min > size_max) paint nothing and return -1.
*/
int defects_apply(float *img, int c, int h, int w, const defect_opts *o,
                  struct rng *r, uint8_t *mask);

/*
** "all" or a comma-separated list of the kind names block, line, noise,
** shift (spaces around the names allowed, repeats harmless) into *kinds.
** Returns 0, or -1 for an empty list or an unknown name.
*/
int defects_parse_kinds(const char *s, unsigned *kinds);

/* The inverse: "all", or the names of the set bits joined by commas in the
** order above ("block,noise"). buf holds at least 32 bytes. */
void defects_kinds_name(unsigned kinds, char *buf, size_t size);

#endif /* ANOM_DEFECTS_H */
