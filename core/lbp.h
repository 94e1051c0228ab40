/*
** lbp.h - local binary patterns and the maps DefectGAN scores with.
**
** The LBP code of a pixel compares it with P points on a circle of radius R
** around it: bit p is set when the point's value is >= the pixel's.
**
**   lbp_grey(g, img, c, h, w);                  (C, H, W) -> grey (H, W)
**   lbp_codes(ca, g, h, w, 8, 1.0);             one code per pixel
**   lbp_hamming(ham, ca, cb, h * w);            bits that differ
**   lbp_box(map, ham, h, w, 3);                 mean over a 3x3 window
**   double s = lbp_top_mean(map, h * w, 0.01);  mean of the top 1% (reorders map)
**
** No allocation anywhere: every buffer is the caller's.
*/
#ifndef ANOM_LBP_H
#define ANOM_LBP_H

#include <stddef.h>
#include <stdint.h>

/* Most points a code holds. */
#define LBP_MAX_POINTS 32

/*
** Grey (H, W) of img (C, H, W): C == 3 gives the luma
** 0.299 R + 0.587 G + 0.114 B, any other C the mean of the channels (C == 1
** copies). Computed in double, rounded once to float.
*/
void lbp_grey(float *grey, const float *img, int c, int h, int w);

/*
** codes (H, W) of grey (H, W) with points P in [1, LBP_MAX_POINTS] and
** radius R > 0, as skimage.feature.local_binary_pattern(method='default'):
** point p sits at (y - R sin(2 pi p / P), x + R cos(2 pi p / P)), each
** offset rounded to 5 decimals (so p = 0 is the right-hand neighbour and
** p = P/4 the one above), its value is bilinear in the four pixels around
** it, and bit p of the code is set when that value >= the centre's. Points
** outside the image read the nearest edge pixel (skimage reads 0 there).
** The interpolation is written as
**   top = tl + dc (tr - tl), bottom = bl + dc (br - bl),
**   v = top + dr (bottom - top)
** in double, so a flat neighbourhood interpolates to exactly its value.
*/
void lbp_codes(uint32_t *codes, const float *grey, int h, int w, int points,
               double radius);

/* map[i] = number of bits in which a[i] and b[i] differ. */
void lbp_hamming(float *map, const uint32_t *a, const uint32_t *b, size_t count);

/*
** out (H, W) = the mean of in over the window x window square centred on
** each pixel (window odd), pixels outside the image replicating the edge.
** Sums in double. out must not alias in.
*/
void lbp_box(float *out, const float *in, int h, int w, int window);

/*
** The mean of the k = ceil(top * count) largest values of v (k at least 1,
** at most count; top in (0, 1]), summed in double. Reorders v. count 0
** gives 0.
*/
double lbp_top_mean(float *v, size_t count, double top);

#endif /* ANOM_LBP_H */
