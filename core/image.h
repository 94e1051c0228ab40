/*
** image.h - image BLOBs in and out: decode, fit to a model's input, encode PNG.
**
** The way an image travels into a detector:
**
**   image_u8 im;
**   if( image_decode(&im, blob, nblob, max_pixels, &e) ) ...;   (header checked first)
**   image_to_tensor(x, &im, 32, 32, 1, IMAGE_FIT_RESIZE, &e);    x is (C, H, W) in [-1, 1]
**   image_free(&im);
**
** Accepted formats: PNG, JPEG, BMP, GIF (first frame) and PNM (binary
** PGM/PPM), decoded with stb_image compiled from Debian's header with only
** those formats (PNM by our own code, see docs/images.md). Before any pixel
** is decoded, the dimensions declared by the header are checked against
** max_pixels (a decompression-bomb guard), and a file cut short is refused
** rather than decoded into a partly grey image.
**
** Pixel buffers are interleaved (H, W, C) bytes; tensors are planar (C, H, W)
** floats. Channel conversion: grey -> RGB repeats the grey value; RGB -> grey
** is the ITU-R BT.601 luma 0.299 R + 0.587 G + 0.114 B; an alpha channel is
** dropped (grey+alpha -> grey, RGBA -> RGB).
*/
#ifndef ANOM_IMAGE_H
#define ANOM_IMAGE_H

#include "common.h"

typedef struct image_u8 {
  int w, h;            /* width and height in pixels */
  int c;               /* channels: 1 (grey) or 3 (RGB); alpha is dropped */
  unsigned char *px;   /* (H, W, C) bytes, owned; free with image_free */
} image_u8;

/* How an image is fitted to a model's input size. */
enum {
  IMAGE_FIT_RESIZE = 0, /* resample to exactly w x h (aspect not kept) */
  IMAGE_FIT_PAD = 1     /* centre it on a black (-1) canvas; resample down
                           first, keeping aspect, if it is larger */
};

/* The largest tensor side image_to_tensor makes. */
#define IMAGE_MAX_TENSOR_SIDE 16384

/* The default decode budget: 64 Mpixel. */
#define IMAGE_DEFAULT_MAX_PIXELS (64LL * 1024 * 1024)

/*
** Read only the header: format, width, height, channels in the file.
** Returns ANOM_EFORMAT for anything that is not one of the formats above,
** with a message naming what was found ("empty blob", "not an image ...").
*/
int image_probe(const void *buf, size_t n, int *w, int *h, int *c, anom_err *e);

/*
** Decode buf into im (c is 1 for grey or grey+alpha files, else 3).
** Refuses (ANOM_ETOOBIG) an image whose header declares more than max_pixels
** pixels, before decoding; refuses (ANOM_EFORMAT) unknown, corrupt and
** truncated files. On failure im is zeroed and nothing needs freeing.
*/
int image_decode(image_u8 *im, const void *buf, size_t n, long long max_pixels,
                 anom_err *e);

void image_free(image_u8 *im);

/*
** Convert, fit and scale an image to a tensor x of shape (c, h, w) with
** values in [-1, 1] (v / 127.5 - 1). c is 1 or 3. fit is IMAGE_FIT_*.
** Resampling uses stb_image_resize. x must hold c*h*w floats.
*/
int image_to_tensor(float *x, const image_u8 *im, int w, int h, int c, int fit,
                    anom_err *e);

/*
** Where an iw x ih image lands in a w x h tensor under fit: the rectangle
** (*ox, *oy, *dw, *dh) it is resampled into (the whole tensor for
** IMAGE_FIT_RESIZE). image_to_tensor uses it; anomaly maps are cut back out
** with it.
*/
void image_fit_rect(int iw, int ih, int w, int h, int fit, int *ox, int *oy,
                    int *dw, int *dh);

/*
** The inverse scaling: a (c, h, w) tensor in [-1, 1] to (h, w, c) bytes,
** clamped. px must hold h*w*c bytes.
*/
void image_from_tensor(unsigned char *px, const float *x, int w, int h, int c);

/*
** Encode (h, w, c) bytes, c in {1, 3, 4}, as a PNG in a new buffer
** (*out, *nout), freed by the caller with anom_free.
*/
int image_encode_png(unsigned char **out, size_t *nout, const unsigned char *px,
                     int w, int h, int c, anom_err *e);

/*
** Unpack a gzip file (RFC 1952; one member) into a new buffer (*out, *nout)
** of at most max_out bytes, freed with anom_free. Uses the inflate that
** stb_image carries for PNG; the size and CRC-32 in the trailer are checked.
*/
int image_gunzip(unsigned char **out, size_t *nout, const void *gz, size_t n,
                 size_t max_out, anom_err *e);

#endif /* ANOM_IMAGE_H */
