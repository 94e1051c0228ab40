/*
** jpeg_decode.c - would libjpeg-turbo's scaled decode pay off for large
** JPEGs? Times three ways from a JPEG BLOB to a 64x64 tensor (fit resize):
**
**   stb     our path: image_decode (stb_image) + image_to_tensor
**   full    libjpeg-turbo decode at full size + the same image_to_tensor
**   scaled  libjpeg-turbo decode at 1/2, 1/4 or 1/8 inside the IDCT (the
**           smallest scale that keeps the short side at least 2x the model
**           side, so the resize still averages) + image_to_tensor
**
** The test JPEGs are made here, in memory: grey and colour images of
** 640x480, 1600x1200 and 4000x3000 (smooth gradients, a ripple and noise),
** encoded by libjpeg at quality 90 (colour with the default 4:2:0 chroma).
** A grey JPEG goes to a 1-channel tensor, a colour one to a 3-channel one.
** Each time is the best of several runs (noise on a shared machine only
** adds). The tensors of full and scaled are compared with stb's.
**
**   cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -I. -Icore \
**      -I/usr/include/stb -o build/bench/jpeg_decode tests/bench/jpeg_decode.c \
**      core/image.c core/common.c core/safetensors.c -ljpeg -lcjson -lm
**   build/bench/jpeg_decode [--quick]       one JSON line on stdout
**
** --quick: the 640x480 images only, one run each (for valgrind).
**
** The libjpeg decoder has its own error manager: errors and corrupt-data
** warnings longjmp back and become ANOM_EFORMAT (a file cut short is refused,
** as image_decode does); nothing exits. A self-check decodes a truncated and
** a scribbled-on JPEG and reports whether both were refused.
** libjpeg allocates its own working memory (freed by jpeg_destroy_*); the
** pixels and tensors go through anom_*.
*/
#include "common.h"
#include "image.h"

#include <math.h>
#include <setjmp.h>
#include <stdio.h>   /* before jpeglib.h, which uses FILE */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jpeglib.h>

#define SIDE 64        /* model input side */
#define MIN_SHORT 128  /* scaled decode keeps at least this on the short side */
#define QUALITY 90

/* LIBJPEG_TURBO_VERSION is a bare token sequence (2.1.5): quote it. */
#define STR_(x) #x
#define STR(x) STR_(x)

/* ---------------------------------------------------------------------------
** libjpeg error handling: longjmp back to the caller's setjmp.
*/
typedef struct jerr_mgr {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
} jerr_mgr;

static void jerr_exit(j_common_ptr cinfo) {
  jerr_mgr *j = (jerr_mgr *)cinfo->err;
  longjmp(j->jump, 1);
}

/* Warnings (level -1) are corrupt or truncated data: fatal here. Trace
** messages (level >= 0) are dropped. */
static void jerr_message(j_common_ptr cinfo, int level) {
  if( level < 0 ) jerr_exit(cinfo);
}

static void jerr_init(jerr_mgr *j) {
  jpeg_std_error(&j->pub);
  j->pub.error_exit = jerr_exit;
  j->pub.emit_message = jerr_message;
}

/* ---------------------------------------------------------------------------
** Test images and their encoding.
*/

/* A small xorshift generator; the state is the caller's. */
static uint32_t xorshift(uint32_t *s) {
  uint32_t x = *s;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return *s = x;
}

static unsigned char clamp_byte(float v) {
  if( v <= 0.0f ) return 0;
  if( v >= 255.0f ) return 255;
  return (unsigned char)(v + 0.5f);
}

/* (h, w, c) bytes: per channel a gradient in its own direction, a ripple
** whose wavelength is a fixed fraction of the width, and +-12 noise. */
static unsigned char *make_pixels(int w, int h, int c) {
  unsigned char *px = anom_malloc((size_t)w * h * c);
  uint32_t s = 2463534242u;
  int x, y, k;
  if( !px ) return NULL;
  for(y = 0; y < h; y++){
    for(x = 0; x < w; x++){
      float u = (float)x / w, v = (float)y / h;
      float ripple = 30.0f * sinf(6.2831853f * (9.0f * u + 5.0f * v * v));
      for(k = 0; k < c; k++){
        float grad = k == 0 ? 200.0f * u : k == 1 ? 200.0f * v
                                                   : 100.0f * (u + v);
        float noise = (float)(xorshift(&s) % 25u) - 12.0f;
        px[((size_t)y * w + x) * c + k] = clamp_byte(20.0f + grad + ripple +
                                                     noise);
      }
    }
  }
  return px;
}

/* Encode to a malloc'd (libjpeg's jpeg_mem_dest) buffer; free() it. */
static int encode_jpeg(unsigned char **out, unsigned long *nout,
                       const unsigned char *px, int w, int h, int c,
                       anom_err *e) {
  struct jpeg_compress_struct cinfo;
  jerr_mgr jerr;
  JSAMPROW row;
  *out = NULL;
  *nout = 0;
  jerr_init(&jerr);
  cinfo.err = &jerr.pub;
  if( setjmp(jerr.jump) ){
    char msg[JMSG_LENGTH_MAX];
    cinfo.err->format_message((j_common_ptr)&cinfo, msg);
    jpeg_destroy_compress(&cinfo);
    free(*out);
    *out = NULL;
    return anom_fail(e, ANOM_EINVAL, "libjpeg encode: %s", msg);
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, out, nout);
  cinfo.image_width = (JDIMENSION)w;
  cinfo.image_height = (JDIMENSION)h;
  cinfo.input_components = c;
  cinfo.in_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, QUALITY, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while( cinfo.next_scanline < cinfo.image_height ){
    row = (JSAMPROW)(px + (size_t)cinfo.next_scanline * w * c);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return ANOM_OK;
}

/* ---------------------------------------------------------------------------
** libjpeg-turbo decode at 1/denom scale (denom 1, 2, 4 or 8) into im, as
** grey (c 1) or RGB (c 3), under the same pixel budget as image_decode.
*/
static int turbo_decode(image_u8 *im, const unsigned char *buf, size_t n,
                        int denom, int c, long long max_pixels, anom_err *e) {
  struct jpeg_decompress_struct cinfo;
  jerr_mgr jerr;
  unsigned char *volatile px = NULL;
  size_t stride;
  memset(im, 0, sizeof(*im));
  jerr_init(&jerr);
  cinfo.err = &jerr.pub;
  if( setjmp(jerr.jump) ){
    char msg[JMSG_LENGTH_MAX];
    cinfo.err->format_message((j_common_ptr)&cinfo, msg);
    jpeg_destroy_decompress(&cinfo);
    anom_free(px);
    return anom_fail(e, ANOM_EFORMAT, "corrupt JPEG file: %s", msg);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, buf, (unsigned long)n);
  jpeg_read_header(&cinfo, TRUE);
  if( (long long)cinfo.image_width * cinfo.image_height > max_pixels ){
    jpeg_destroy_decompress(&cinfo);
    return anom_fail(e, ANOM_ETOOBIG, "image is %ux%u, over the pixel limit",
                     cinfo.image_width, cinfo.image_height);
  }
  cinfo.out_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
  cinfo.scale_num = 1;
  cinfo.scale_denom = (unsigned)denom;
  jpeg_start_decompress(&cinfo);
  if( cinfo.output_components != c ){
    jpeg_destroy_decompress(&cinfo);
    return anom_fail(e, ANOM_EFORMAT, "libjpeg gave %d channels, wanted %d",
                     cinfo.output_components, c);
  }
  stride = (size_t)cinfo.output_width * c;
  px = anom_malloc(stride * cinfo.output_height);
  if( !px ){
    jpeg_destroy_decompress(&cinfo);
    return anom_fail(e, ANOM_ENOMEM, "out of memory decoding a %ux%u JPEG",
                     cinfo.output_width, cinfo.output_height);
  }
  while( cinfo.output_scanline < cinfo.output_height ){
    JSAMPROW rows[8];
    int i, nrows = (int)(cinfo.output_height - cinfo.output_scanline);
    if( nrows > 8 ) nrows = 8;
    for(i = 0; i < nrows; i++){
      rows[i] = px + (size_t)(cinfo.output_scanline + i) * stride;
    }
    jpeg_read_scanlines(&cinfo, rows, (JDIMENSION)nrows);
  }
  jpeg_finish_decompress(&cinfo);
  im->w = (int)cinfo.output_width;
  im->h = (int)cinfo.output_height;
  im->c = c;
  im->px = px;
  jpeg_destroy_decompress(&cinfo);
  return ANOM_OK;
}

/* The largest denominator in {1, 2, 4, 8} whose output keeps the short side
** at least MIN_SHORT pixels (libjpeg rounds the scaled size up). */
static int pick_denom(int w, int h) {
  int s = w < h ? w : h, d;
  for(d = 8; d > 1; d /= 2){
    if( (s + d - 1) / d >= MIN_SHORT ) return d;
  }
  return 1;
}

/* ---------------------------------------------------------------------------
** The three paths, each from the BLOB to a tensor.
*/
enum { PATH_STB = 0, PATH_FULL = 1, PATH_SCALED = 2, NPATH = 3 };
static const char *path_names[NPATH] = {"stb", "turbo_full", "turbo_scaled"};

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* Run one path; *decode_ms is the decode part of the time. */
static int run_path(int path, float *x, const unsigned char *jpg, size_t n,
                    int c, int denom, double *decode_ms, anom_err *e) {
  image_u8 im;
  double t0 = now_ms();
  int rc;
  if( path == PATH_STB ){
    rc = image_decode(&im, jpg, n, IMAGE_DEFAULT_MAX_PIXELS, e);
  }else{
    rc = turbo_decode(&im, jpg, n, path == PATH_FULL ? 1 : denom, c,
                      IMAGE_DEFAULT_MAX_PIXELS, e);
  }
  if( rc ) return rc;
  *decode_ms = now_ms() - t0;
  if( im.c != c ){
    image_free(&im);
    return anom_fail(e, ANOM_EFORMAT, "decoded %d channels, wanted %d", im.c, c);
  }
  rc = image_to_tensor(x, &im, SIDE, SIDE, c, IMAGE_FIT_RESIZE, e);
  image_free(&im);
  return rc;
}

static void tensor_diff(const float *a, const float *b, size_t n, double *maxd,
                        double *meand) {
  double m = 0.0, s = 0.0;
  size_t i;
  for(i = 0; i < n; i++){
    double d = fabs((double)a[i] - (double)b[i]);
    if( d > m ) m = d;
    s += d;
  }
  *maxd = m;
  *meand = s / (double)n;
}

/* Refuse a truncated and a scribbled-on copy of jpg, without exiting. */
static int corrupt_refused(const unsigned char *jpg, size_t n, int c) {
  unsigned char *bad = anom_malloc(n);
  image_u8 im;
  anom_err e;
  int refused = 1;
  size_t i;
  if( !bad ) return 0;
  memcpy(bad, jpg, n);
  if( turbo_decode(&im, bad, n / 2, 1, c, IMAGE_DEFAULT_MAX_PIXELS, &e) ==
      ANOM_OK ){
    image_free(&im);
    refused = 0;
  }
  for(i = n / 3; i < n / 3 + 64; i++) bad[i] = 0xFF;  /* markers mid-scan */
  if( turbo_decode(&im, bad, n, 1, c, IMAGE_DEFAULT_MAX_PIXELS, &e) ==
      ANOM_OK ){
    image_free(&im);
    refused = 0;
  }
  anom_free(bad);
  return refused;
}

int main(int argc, char **argv) {
  static const int sizes[3][2] = {{640, 480}, {1600, 1200}, {4000, 3000}};
  static const int reps_for[3] = {15, 7, 5};
  int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
  int nsizes = quick ? 1 : 3, si, ci, first = 1, refused = -1;
  anom_err e;
  float *x[NPATH] = {NULL, NULL, NULL};
  int p, rc = 1;

  for(p = 0; p < NPATH; p++){
    x[p] = anom_malloc(sizeof(float) * 3 * SIDE * SIDE);
    if( !x[p] ){
      fprintf(stderr, "jpeg_decode: out of memory\n");
      goto done;
    }
  }
  printf("{\"bench\": \"jpeg_decode\", \"libjpeg_turbo\": \"%s\", "
         "\"tensor\": %d, \"fit\": \"resize\", \"quality\": %d, "
         "\"min_short_side\": %d, \"images\": [",
         STR(LIBJPEG_TURBO_VERSION), SIDE, QUALITY, MIN_SHORT);
  for(si = 0; si < nsizes; si++){
    for(ci = 0; ci < 2; ci++){
      int w = sizes[si][0], h = sizes[si][1], c = ci ? 3 : 1;
      int denom = pick_denom(w, h), reps = quick ? 1 : reps_for[si], r;
      double best[NPATH], best_dec[NPATH], maxd[NPATH], meand[NPATH];
      unsigned char *px = make_pixels(w, h, c), *jpg = NULL;
      unsigned long njpg = 0;
      if( !px ){
        fprintf(stderr, "jpeg_decode: out of memory\n");
        goto done;
      }
      rc = encode_jpeg(&jpg, &njpg, px, w, h, c, &e);
      anom_free(px);
      if( rc ){
        fprintf(stderr, "jpeg_decode: %s\n", e.msg);
        goto done;
      }
      if( refused != 0 ) refused = corrupt_refused(jpg, njpg, c);
      for(p = 0; p < NPATH; p++) best[p] = best_dec[p] = 1e30;
      /* Interleave the paths so that a noisy spell hits them alike. */
      for(r = 0; r < reps; r++){
        for(p = 0; p < NPATH; p++){
          double dec = 0.0, t0 = now_ms(), t;
          rc = run_path(p, x[p], jpg, njpg, c, denom, &dec, &e);
          t = now_ms() - t0;
          if( rc ){
            fprintf(stderr, "jpeg_decode: %s %dx%d: %s\n", path_names[p], w, h,
                    e.msg);
            free(jpg);
            goto done;
          }
          if( t < best[p] ) best[p] = t;
          if( dec < best_dec[p] ) best_dec[p] = dec;
        }
      }
      free(jpg);
      for(p = 1; p < NPATH; p++){
        tensor_diff(x[PATH_STB], x[p], (size_t)c * SIDE * SIDE, &maxd[p],
                    &meand[p]);
      }
      printf("%s\n {\"kind\": \"%s\", \"w\": %d, \"h\": %d, \"jpeg_bytes\": %lu, "
             "\"runs\": %d, \"scale\": \"1/%d\", \"scaled_w\": %d, "
             "\"scaled_h\": %d, \"ms\": {\"stb\": %.3f, \"turbo_full\": %.3f, "
             "\"turbo_scaled\": %.3f}, \"decode_ms\": {\"stb\": %.3f, "
             "\"turbo_full\": %.3f, \"turbo_scaled\": %.3f}, "
             "\"speedup_scaled_vs_stb\": %.2f, \"speedup_full_vs_stb\": %.2f, "
             "\"maxdiff_full\": %.5f, \"maxdiff_scaled\": %.5f, "
             "\"meandiff_full\": %.5f, \"meandiff_scaled\": %.5f}",
             first ? "" : ",", c == 1 ? "grey" : "colour", w, h, njpg, reps,
             denom, (w + denom - 1) / denom, (h + denom - 1) / denom,
             best[PATH_STB], best[PATH_FULL], best[PATH_SCALED],
             best_dec[PATH_STB], best_dec[PATH_FULL], best_dec[PATH_SCALED],
             best[PATH_STB] / best[PATH_SCALED], best[PATH_STB] / best[PATH_FULL],
             maxd[PATH_FULL], maxd[PATH_SCALED], meand[PATH_FULL],
             meand[PATH_SCALED]);
      first = 0;
    }
  }
  printf("],\n \"diff_units\": \"tensor [-1, 1]; 1/127.5 = one 8-bit level\", "
         "\"corrupt_refused\": %s}\n", refused == 1 ? "true" : "false");
  rc = 0;

done:
  for(p = 0; p < NPATH; p++) anom_free(x[p]);
  return rc;
}
