/*
** test_image.c - image decode, fit and encode (core/image.c).
**
** Every image is made here: PNGs with image_encode_png, BMP files with a
** test-local copy of stb_image_write, PGM/PPM and GIF files written byte by
** byte. The one JPEG is a byte array below: stb_image_write's JPEG writer
** shifts signed ints past their range, which the sanitized build refuses. The PNG writer is also checked as a container: chunk CRCs,
** and the zlib stream inflated by a test-local stb_image with its Adler-32.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/image.h"

/* Test-local stb: a BMP/PNG writer for fixtures and a zlib inflater
** to check our PNG writer. Static here, separate from core/image.c. */
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_NO_GIF
#define STBI_NO_STDIO
#define stbi_set_unpremultiply_on_load_thread stbi__unpremultiply_on_load_thread
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#endif
#include <stb_image.h>
#include <stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

/* ------------------------------------------------------------------------
** Helpers.
*/

/* A growable byte buffer, the sink of stb_image_write. */
typedef struct bytes {
  unsigned char *p;
  size_t n, cap;
} bytes;

static void bytes_put(bytes *b, const void *data, size_t n) {
  if( b->n + n > b->cap ){
    b->cap = (b->n + n) * 2;
    b->p = realloc(b->p, b->cap);
    assert_non_null(b->p);
  }
  memcpy(b->p + b->n, data, n);
  b->n += n;
}

static void stbw_sink(void *ctx, void *data, int size) {
  bytes_put(ctx, data, (size_t)size);
}

/* Pseudo-random bytes, reproducible. */
static void fill_random(unsigned char *p, size_t n, uint32_t seed) {
  for(size_t i = 0; i < n; i++){
    seed = seed * 1664525u + 1013904223u;
    p[i] = (unsigned char)(seed >> 24);
  }
}

static bytes encode_stb(const char *fmt, const unsigned char *px, int w, int h,
                        int c) {
  bytes b = {0};
  int ok = 0;
  if( strcmp(fmt, "bmp") == 0 ) ok = stbi_write_bmp_to_func(stbw_sink, &b, w, h, c, px);
  else ok = stbi_write_png_to_func(stbw_sink, &b, w, h, c, px, 0);
  assert_true(ok);
  return b;
}

static uint32_t rd_be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static void wr_be32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

/* CRC-32 as PNG uses it, bit by bit: an oracle independent of image.c. */
static uint32_t crc32_bits(const unsigned char *d, size_t n) {
  uint32_t crc = 0xffffffffu;
  for(size_t i = 0; i < n; i++){
    crc ^= d[i];
    for(int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

static uint32_t adler32_slow(const unsigned char *d, size_t n) {
  uint32_t a = 1, b = 0;
  for(size_t i = 0; i < n; i++){
    a = (a + d[i]) % 65521;
    b = (b + a) % 65521;
  }
  return b << 16 | a;
}

/* Check a PNG from image_encode_png as a container: signature, IHDR, chunk
** CRCs, one zlib stream inflating to (w*c+1)*h filtered bytes whose Adler-32
** matches, filter types 0..4, IEND last. */
static void check_png_container(const unsigned char *png, size_t n, int w,
                                int h, int c) {
  static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', 13, 10, 26, 10};
  bytes z = {0};
  size_t p = 8;
  int saw_iend = 0;
  assert_true(n > 8);
  assert_memory_equal(png, sig, 8);
  assert_int_equal(rd_be32(png + 8), 13);
  assert_memory_equal(png + 12, "IHDR", 4);
  assert_int_equal(rd_be32(png + 16), (uint32_t)w);
  assert_int_equal(rd_be32(png + 20), (uint32_t)h);
  assert_int_equal(png[24], 8);
  assert_int_equal(png[25], c == 1 ? 0 : c == 3 ? 2 : 6);
  while( p < n ){
    assert_true(n - p >= 12);
    uint32_t len = rd_be32(png + p);
    assert_true(n - p - 12 >= len);
    assert_int_equal(crc32_bits(png + p + 4, 4 + len), rd_be32(png + p + 8 + len));
    if( memcmp(png + p + 4, "IDAT", 4) == 0 ) bytes_put(&z, png + p + 8, len);
    if( memcmp(png + p + 4, "IEND", 4) == 0 ){
      saw_iend = 1;
      assert_int_equal(p + 12, n);
    }
    p += 12 + len;
  }
  assert_true(saw_iend);
  assert_true(z.n >= 6);
  assert_int_equal((z.p[0] * 256 + z.p[1]) % 31, 0);
  size_t raw = ((size_t)w * c + 1) * h;
  int outlen = 0;
  char *inflated = stbi_zlib_decode_malloc_guesssize_headerflag(
      (const char *)z.p, (int)z.n, (int)raw, &outlen, 1);
  assert_non_null(inflated);
  assert_int_equal(outlen, (int)raw);
  assert_int_equal(adler32_slow((unsigned char *)inflated, raw), rd_be32(z.p + z.n - 4));
  for(int j = 0; j < h; j++) assert_in_range((unsigned char)inflated[(size_t)j * (w * c + 1)], 0, 4);
  STBI_FREE(inflated);
  free(z.p);
}

static void decode_ok(image_u8 *im, const void *buf, size_t n) {
  anom_err e = {0};
  int rc = image_decode(im, buf, n, IMAGE_DEFAULT_MAX_PIXELS, &e);
  if( rc ) fprintf(stderr, "decode: %s\n", e.msg);
  assert_int_equal(rc, ANOM_OK);
}

/* Decode must fail with code and a message containing want; im zeroed. */
static void decode_fails(const void *buf, size_t n, long long max_pixels,
                         int code, const char *want) {
  anom_err e = {0};
  image_u8 im = {5, 5, 5, (unsigned char *)"x"};
  int rc = image_decode(&im, buf, n, max_pixels, &e);
  if( rc != code || !strstr(e.msg, want) ){
    fprintf(stderr, "expected %d \"%s\", got %d \"%s\"\n", code, want, rc, e.msg);
  }
  assert_int_equal(rc, code);
  assert_int_equal(e.code, code);
  assert_non_null(strstr(e.msg, want));
  assert_null(im.px);
  assert_int_equal(im.w, 0);
  assert_int_equal(im.h, 0);
  assert_int_equal(im.c, 0);
}

static float scaled(unsigned char v) { return v / 127.5f - 1.0f; }

/* A hand-made 2x2 GIF89a: palette {red, blue}, pixels 0 1 / 1 0. The LZW
** codes (min code size 2: clear 4, end 5) are 4 0 1 1 in 3 bits, then 0 5 in
** 4 bits (the code size grows once entry 7 is added), packed LSB first. */
static const unsigned char gif_2x2[] = {
    'G', 'I', 'F', '8', '9', 'a',
    2, 0, 2, 0, 0x80, 0, 0,              /* screen 2x2, 2-entry global table */
    255, 0, 0, 0, 0, 255,                /* red, blue */
    0x2c, 0, 0, 0, 0, 2, 0, 2, 0, 0,     /* image at 0,0 2x2 */
    2, 3, 0x44, 0x02, 0x05, 0,           /* LZW: min size 2, one 3-byte block */
    0x3b};

/* The JPEG fixture: jpeg_pixel() at 24x16, written by stb_image_write 1.16
** at quality 95 (baseline, no chroma subsampling, 768 bytes). */
enum { JPEG_W = 24, JPEG_H = 16 };
static const unsigned char jpeg_24x16[] = {
    0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01,
    0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x84,
    0x00, 0x02, 0x01, 0x01, 0x01, 0x01, 0x01, 0x02, 0x01, 0x01, 0x01, 0x02,
    0x02, 0x02, 0x02, 0x02, 0x04, 0x03, 0x02, 0x02, 0x02, 0x02, 0x05, 0x04,
    0x04, 0x03, 0x04, 0x06, 0x05, 0x06, 0x06, 0x06, 0x05, 0x06, 0x06, 0x06,
    0x07, 0x09, 0x08, 0x06, 0x07, 0x09, 0x07, 0x06, 0x06, 0x08, 0x0b, 0x08,
    0x09, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x06, 0x08, 0x0b, 0x0c, 0x0b, 0x0a,
    0x0c, 0x09, 0x0a, 0x0a, 0x0a, 0x01, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
    0x05, 0x03, 0x03, 0x05, 0x0a, 0x07, 0x06, 0x07, 0x0a, 0x0a, 0x0a, 0x0a,
    0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a,
    0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a,
    0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a,
    0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0xff, 0xc0,
    0x00, 0x11, 0x08, 0x00, 0x10, 0x00, 0x18, 0x03, 0x01, 0x11, 0x00, 0x02,
    0x11, 0x01, 0x03, 0x11, 0x01, 0xff, 0xc4, 0x01, 0xa2, 0x00, 0x00, 0x01,
    0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09,
    0x0a, 0x0b, 0x10, 0x00, 0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05,
    0x05, 0x04, 0x04, 0x00, 0x00, 0x01, 0x7d, 0x01, 0x02, 0x03, 0x00, 0x04,
    0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22,
    0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15,
    0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17,
    0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36,
    0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a,
    0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66,
    0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a,
    0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8,
    0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2,
    0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5,
    0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7,
    0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9,
    0xfa, 0x01, 0x00, 0x03, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05,
    0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x11, 0x00, 0x02, 0x01, 0x02, 0x04,
    0x04, 0x03, 0x04, 0x07, 0x05, 0x04, 0x04, 0x00, 0x01, 0x02, 0x77, 0x00,
    0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51,
    0x07, 0x61, 0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1,
    0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1, 0x0a,
    0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26, 0x27,
    0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45,
    0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59,
    0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75,
    0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88,
    0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2,
    0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5,
    0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8,
    0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5,
    0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00,
    0x02, 0x11, 0x03, 0x11, 0x00, 0x3f, 0x00, 0xf8, 0x9b, 0xc3, 0x9f, 0x01,
    0x7e, 0xef, 0xfa, 0x17, 0xfe, 0x3b, 0x5f, 0xdc, 0xd9, 0xff, 0x00, 0x19,
    0x6f, 0xef, 0x1f, 0x25, 0xc3, 0x1c, 0x59, 0xf0, 0xfb, 0xc7, 0x7d, 0xe1,
    0xcf, 0x80, 0xbf, 0x77, 0xfd, 0x0b, 0xff, 0x00, 0x1d, 0xaf, 0xc5, 0x33,
    0xfe, 0x32, 0xdf, 0xde, 0x3f, 0xa2, 0xb8, 0x63, 0x8b, 0x3e, 0x1f, 0x78,
    0xef, 0xbc, 0x39, 0xf0, 0x17, 0xee, 0xff, 0x00, 0xa1, 0x7f, 0xe3, 0xb5,
    0xf8, 0x9e, 0x7f, 0xc6, 0x5b, 0xfb, 0xc7, 0xf4, 0x5f, 0x0c, 0x71, 0x67,
    0xc3, 0xef, 0x1e, 0xb5, 0xe1, 0xcf, 0x80, 0xbf, 0x77, 0xfd, 0x0b, 0xff,
    0x00, 0x1d, 0xaf, 0xa7, 0xcf, 0xf8, 0xcb, 0x7f, 0x78, 0xff, 0x00, 0x14,
    0x78, 0x63, 0x8b, 0x3e, 0x1f, 0x78, 0xef, 0xbc, 0x39, 0xf0, 0x17, 0xee,
    0xff, 0x00, 0xa1, 0x7f, 0xe3, 0xb5, 0xf8, 0xa6, 0x7f, 0xc6, 0x5b, 0xfb,
    0xc7, 0xf4, 0x5f, 0x0c, 0x71, 0x67, 0xc3, 0xef, 0x1d, 0xf7, 0x87, 0x3e,
    0x02, 0xfd, 0xdf, 0xf4, 0x2f, 0xfc, 0x76, 0xbf, 0x14, 0xcf, 0xf8, 0xcb,
    0x7f, 0x78, 0xfe, 0x8a, 0xe1, 0x8e, 0x2c, 0xf8, 0x7d, 0xe3, 0xff, 0xd9,
};

static unsigned char jpeg_pixel(int x, int y, int k) {
  return (unsigned char)(k == 0 ? 8 * x + 30 : k == 1 ? 12 * y + 20 : 200 - 4 * x - 3 * y);
}

/* ------------------------------------------------------------------------
** Round trips.
*/

static void test_png_roundtrip_grey(void **state) {
  (void)state;
  enum { W = 37, H = 23 };
  unsigned char px[W * H];
  fill_random(px, sizeof(px), 1);
  unsigned char *png;
  size_t n;
  anom_err e = {0};
  assert_int_equal(image_encode_png(&png, &n, px, W, H, 1, &e), ANOM_OK);
  check_png_container(png, n, W, H, 1);

  int w, h, c;
  assert_int_equal(image_probe(png, n, &w, &h, &c, &e), ANOM_OK);
  assert_int_equal(w, W);
  assert_int_equal(h, H);
  assert_int_equal(c, 1);

  image_u8 im;
  decode_ok(&im, png, n);
  assert_int_equal(im.w, W);
  assert_int_equal(im.h, H);
  assert_int_equal(im.c, 1);
  assert_memory_equal(im.px, px, sizeof(px));
  image_free(&im);
  assert_null(im.px);
  anom_free(png);
}

static void test_png_roundtrip_rgb(void **state) {
  (void)state;
  enum { W = 41, H = 29 };
  unsigned char px[W * H * 3];
  fill_random(px, sizeof(px), 2);
  unsigned char *png;
  size_t n;
  anom_err e = {0};
  assert_int_equal(image_encode_png(&png, &n, px, W, H, 3, &e), ANOM_OK);
  check_png_container(png, n, W, H, 3);
  image_u8 im;
  decode_ok(&im, png, n);
  assert_int_equal(im.w, W);
  assert_int_equal(im.h, H);
  assert_int_equal(im.c, 3);
  assert_memory_equal(im.px, px, sizeof(px));
  image_free(&im);
  anom_free(png);
}

/* A large, repetitive image: long matches, distances up to the 32K window,
** and a file much smaller than the pixels. */
static void test_png_compresses(void **state) {
  (void)state;
  enum { W = 300, H = 300 };
  unsigned char *px = malloc(W * H * 3);
  for(int y = 0; y < H; y++)
    for(int x = 0; x < W; x++)
      for(int k = 0; k < 3; k++)
        px[(y * W + x) * 3 + k] = (unsigned char)((x / 7) * 31 + (y / 5) * 17 + k * 80 + (x * y % 3));
  unsigned char *png;
  size_t n;
  anom_err e = {0};
  assert_int_equal(image_encode_png(&png, &n, px, W, H, 3, &e), ANOM_OK);
  check_png_container(png, n, W, H, 3);
  assert_true(n < (size_t)W * H * 3 / 4);
  image_u8 im;
  decode_ok(&im, png, n);
  assert_memory_equal(im.px, px, (size_t)W * H * 3);
  image_free(&im);
  anom_free(png);

  /* a constant image is tiny */
  memset(px, 200, (size_t)W * H);
  assert_int_equal(image_encode_png(&png, &n, px, W, H, 1, &e), ANOM_OK);
  check_png_container(png, n, W, H, 1);
  assert_true(n < 1500);
  decode_ok(&im, png, n);
  for(int i = 0; i < W * H; i++) assert_int_equal(im.px[i], 200);
  image_free(&im);
  anom_free(png);

  /* 1x1 and a single row */
  unsigned char one = 7;
  assert_int_equal(image_encode_png(&png, &n, &one, 1, 1, 1, &e), ANOM_OK);
  check_png_container(png, n, 1, 1, 1);
  decode_ok(&im, png, n);
  assert_int_equal(im.px[0], 7);
  image_free(&im);
  anom_free(png);
  free(px);
}

static void test_png_rgba_drops_alpha(void **state) {
  (void)state;
  enum { W = 5, H = 4 };
  unsigned char px[W * H * 4], rgb[W * H * 3];
  fill_random(px, sizeof(px), 3);
  for(int i = 0; i < W * H; i++) memcpy(rgb + 3 * i, px + 4 * i, 3);
  unsigned char *png;
  size_t n;
  anom_err e = {0};
  assert_int_equal(image_encode_png(&png, &n, px, W, H, 4, &e), ANOM_OK);
  check_png_container(png, n, W, H, 4);
  int w, h, c;
  assert_int_equal(image_probe(png, n, &w, &h, &c, &e), ANOM_OK);
  assert_int_equal(c, 4);
  image_u8 im;
  decode_ok(&im, png, n);
  assert_int_equal(im.c, 3);
  assert_memory_equal(im.px, rgb, sizeof(rgb));
  image_free(&im);
  anom_free(png);
}

/* grey+alpha (written by stb_image_write) decodes to grey, alpha dropped */
static void test_png_grey_alpha(void **state) {
  (void)state;
  enum { W = 6, H = 3 };
  unsigned char px[W * H * 2], grey[W * H];
  fill_random(px, sizeof(px), 4);
  for(int i = 0; i < W * H; i++) grey[i] = px[2 * i];
  bytes b = encode_stb("png", px, W, H, 2);
  int w, h, c;
  anom_err e = {0};
  assert_int_equal(image_probe(b.p, b.n, &w, &h, &c, &e), ANOM_OK);
  assert_int_equal(c, 2);
  image_u8 im;
  decode_ok(&im, b.p, b.n);
  assert_int_equal(im.c, 1);
  assert_memory_equal(im.px, grey, sizeof(grey));
  image_free(&im);
  free(b.p);
}

/* Made with Python's zlib: a 16-bit grey 3x2 PNG with samples
** 0 258 32768 / 65535 1000 65534, and a 2x2 palette PNG (colours
** (10,20,30) and (200,100,50), indices 0 1 / 1 0, tRNS making colour 1
** transparent). */
static const unsigned char png16_3x2[79] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d,
    0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x02,
    0x10, 0x00, 0x00, 0x00, 0x00, 0xe8, 0x8f, 0xe5, 0x85, 0x00, 0x00, 0x00,
    0x16, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x60, 0x60, 0x60, 0x64,
    0x6a, 0x60, 0x60, 0xf8, 0xff, 0x9f, 0xf9, 0xc5, 0xff, 0x7f, 0x00, 0x15,
    0x62, 0x05, 0x6a, 0xe5, 0xc5, 0xf4, 0xf0, 0x00, 0x00, 0x00, 0x00, 0x49,
    0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
};

static const unsigned char png_palette_2x2[101] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d,
    0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02,
    0x08, 0x03, 0x00, 0x00, 0x00, 0x45, 0x68, 0xfd, 0x16, 0x00, 0x00, 0x00,
    0x06, 0x50, 0x4c, 0x54, 0x45, 0x0a, 0x14, 0x1e, 0xc8, 0x64, 0x32, 0x77,
    0xa0, 0xb3, 0x9c, 0x00, 0x00, 0x00, 0x02, 0x74, 0x52, 0x4e, 0x53, 0xff,
    0x00, 0xe5, 0xb7, 0x30, 0x4a, 0x00, 0x00, 0x00, 0x0c, 0x49, 0x44, 0x41,
    0x54, 0x78, 0xda, 0x63, 0x60, 0x60, 0x04, 0x42, 0x00, 0x00, 0x0c, 0x00,
    0x03, 0x15, 0x9e, 0x18, 0xfc, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
};


static void test_png_16bit_and_palette(void **state) {
  (void)state;
  image_u8 im;
  int w, h, c;
  anom_err e = {0};
  /* v * 255 / 65535 rounded: 1.004 -> 1, 127.502 -> 128, 3.89 -> 4,
  ** 254.996 -> 255 (keeping the high byte would give 3 for 1000) */
  decode_ok(&im, png16_3x2, sizeof(png16_3x2));
  assert_int_equal(im.w, 3);
  assert_int_equal(im.h, 2);
  assert_int_equal(im.c, 1);
  static const unsigned char want16[6] = {0, 1, 128, 255, 4, 255};
  assert_memory_equal(im.px, want16, 6);
  image_free(&im);

  assert_int_equal(image_probe(png_palette_2x2, sizeof(png_palette_2x2), &w, &h, &c, &e), ANOM_OK);
  assert_int_equal(c, 3);
  decode_ok(&im, png_palette_2x2, sizeof(png_palette_2x2));
  assert_int_equal(im.c, 3);
  static const unsigned char wantp[12] = {10, 20, 30, 200, 100, 50, 200, 100, 50, 10, 20, 30};
  assert_memory_equal(im.px, wantp, 12);
  image_free(&im);
}

static void test_jpeg_decode(void **state) {
  (void)state;
  enum { W = JPEG_W, H = JPEG_H };
  assert_int_equal(sizeof(jpeg_24x16), 768);
  int w, h, c;
  anom_err e = {0};
  assert_int_equal(image_probe(jpeg_24x16, sizeof(jpeg_24x16), &w, &h, &c, &e), ANOM_OK);
  assert_int_equal(w, W);
  assert_int_equal(h, H);
  assert_int_equal(c, 3);
  image_u8 im;
  decode_ok(&im, jpeg_24x16, sizeof(jpeg_24x16));
  assert_int_equal(im.w, W);
  assert_int_equal(im.h, H);
  assert_int_equal(im.c, 3);
  double sum = 0;
  int worst = 0;
  for(int y = 0; y < H; y++)
    for(int x = 0; x < W; x++)
      for(int k = 0; k < 3; k++){
        int d = abs((int)im.px[(y * W + x) * 3 + k] - jpeg_pixel(x, y, k));
        sum += d;
        if( d > worst ) worst = d;
      }
  assert_true(sum / (W * H * 3) < 2.0);
  assert_true(worst <= 8);

  /* bytes after EOI are allowed and change nothing */
  bytes t = {0};
  bytes_put(&t, jpeg_24x16, sizeof(jpeg_24x16));
  bytes_put(&t, "trailing junk", 13);
  image_u8 im2;
  decode_ok(&im2, t.p, t.n);
  assert_memory_equal(im2.px, im.px, (size_t)W * H * 3);
  image_free(&im2);
  image_free(&im);
  free(t.p);
}

static void test_bmp_exact(void **state) {
  (void)state;
  enum { W = 13, H = 7 }; /* 39-byte rows, padded to 40 */
  unsigned char px[W * H * 3];
  fill_random(px, sizeof(px), 5);
  bytes b = encode_stb("bmp", px, W, H, 3);
  image_u8 im;
  decode_ok(&im, b.p, b.n);
  assert_int_equal(im.w, W);
  assert_int_equal(im.h, H);
  assert_int_equal(im.c, 3);
  assert_memory_equal(im.px, px, sizeof(px));
  image_free(&im);

  /* the same picture stored top-down (negative height, rows reversed) */
  uint32_t off = b.p[10] | b.p[11] << 8 | b.p[12] << 16 | (uint32_t)b.p[13] << 24;
  size_t stride = 40;
  assert_int_equal(off + stride * H, b.n);
  bytes td = {0};
  bytes_put(&td, b.p, b.n);
  for(int y = 0; y < H; y++) memcpy(td.p + off + y * stride, b.p + off + (H - 1 - y) * stride, stride);
  int32_t negh = -H;
  memcpy(td.p + 22, &negh, 4); /* little-endian host, as BMP */
  int w, h, c;
  anom_err e = {0};
  assert_int_equal(image_probe(td.p, td.n, &w, &h, &c, &e), ANOM_OK);
  assert_int_equal(w, W);
  assert_int_equal(h, H);
  decode_ok(&im, td.p, td.n);
  assert_int_equal(im.h, H);
  assert_memory_equal(im.px, px, sizeof(px));
  image_free(&im);
  free(td.p);
  free(b.p);
}

static void test_pnm_exact(void **state) {
  (void)state;
  image_u8 im;
  int w, h, c;
  anom_err e = {0};

  static const unsigned char pgm[] = "P5\n# made by hand\n3 2\n255\n"
                                     "\x00\x01\x02\xfd\xfe\xff";
  assert_int_equal(image_probe(pgm, sizeof(pgm) - 1, &w, &h, &c, &e), ANOM_OK);
  assert_int_equal(w, 3);
  assert_int_equal(h, 2);
  assert_int_equal(c, 1);
  decode_ok(&im, pgm, sizeof(pgm) - 1);
  assert_int_equal(im.c, 1);
  assert_memory_equal(im.px, "\x00\x01\x02\xfd\xfe\xff", 6);
  image_free(&im);

  static const unsigned char ppm[] = "P6 2 1 255\n\x0a\x14\x1e\xc8\x64\x32";
  decode_ok(&im, ppm, sizeof(ppm) - 1);
  assert_int_equal(im.w, 2);
  assert_int_equal(im.h, 1);
  assert_int_equal(im.c, 3);
  assert_memory_equal(im.px, "\x0a\x14\x1e\xc8\x64\x32", 6);
  image_free(&im);

  /* 16-bit big-endian samples: 0x0102 = 258 -> 258*255/65535 = 1.004 -> 1 */
  static const unsigned char p16[] = "P5 3 1 65535\n\x01\x02\xff\xff\x80\x00";
  decode_ok(&im, p16, sizeof(p16) - 1);
  assert_int_equal(im.px[0], 1);
  assert_int_equal(im.px[1], 255);
  assert_int_equal(im.px[2], 128); /* 32768 * 255 / 65535 = 127.5019 */
  image_free(&im);

  /* maxval 1000: 0, 500, 1000 and an out-of-range 1001 (clamped) */
  static const unsigned char p1000[] = "P5 4 1 1000\n\x00\x00\x01\xf4\x03\xe8\x03\xe9";
  decode_ok(&im, p1000, sizeof(p1000) - 1);
  assert_memory_equal(im.px, "\x00\x80\xff\xff", 4); /* 127.5 rounds up to 128 */
  image_free(&im);

  /* maxval 15: v * 17 */
  static const unsigned char p15[] = "P5 3 1 15\n\x00\x07\x0f";
  decode_ok(&im, p15, sizeof(p15) - 1);
  assert_memory_equal(im.px, "\x00\x77\xff", 3);
  image_free(&im);

  /* trailing bytes (a second image) are ignored */
  static const unsigned char two[] = "P5 1 1 255\n\x2aP5 1 1 255\n\x2b";
  decode_ok(&im, two, sizeof(two) - 1);
  assert_int_equal(im.px[0], 0x2a);
  image_free(&im);
}

static void test_gif_first_frame(void **state) {
  (void)state;
  image_u8 im;
  int w, h, c;
  anom_err e = {0};
  assert_int_equal(sizeof(gif_2x2), 36);
  assert_int_equal(image_probe(gif_2x2, sizeof(gif_2x2), &w, &h, &c, &e), ANOM_OK);
  assert_int_equal(w, 2);
  assert_int_equal(h, 2);
  decode_ok(&im, gif_2x2, sizeof(gif_2x2));
  assert_int_equal(im.w, 2);
  assert_int_equal(im.h, 2);
  assert_int_equal(im.c, 3);
  static const unsigned char want[12] = {255, 0, 0, 0, 0, 255, 0, 0, 255, 255, 0, 0};
  assert_memory_equal(im.px, want, 12);
  image_free(&im);

  /* two frames: the second (pixels 1 0 / 0 1) is not decoded */
  static const unsigned char frame2[] = {0x2c, 0, 0, 0, 0, 2, 0, 2, 0, 0,
                                         2, 3, 0x0c, 0x10, 0x05, 0};
  bytes anim = {0};
  bytes_put(&anim, gif_2x2, sizeof(gif_2x2) - 1);
  bytes_put(&anim, frame2, sizeof(frame2));
  bytes_put(&anim, "\x3b", 1);
  decode_ok(&im, anim.p, anim.n);
  assert_memory_equal(im.px, want, 12);
  image_free(&im);
  free(anim.p);
}

/* ------------------------------------------------------------------------
** Tensors.
*/

static void test_grey_to_rgb_repeats(void **state) {
  (void)state;
  enum { W = 9, H = 4 };
  unsigned char px[W * H];
  fill_random(px, sizeof(px), 6);
  image_u8 im = {W, H, 1, px};
  float x[3 * W * H];
  anom_err e = {0};
  assert_int_equal(image_to_tensor(x, &im, W, H, 3, IMAGE_FIT_RESIZE, &e), ANOM_OK);
  for(int k = 0; k < 3; k++)
    for(int i = 0; i < W * H; i++) assert_true(x[k * W * H + i] == scaled(px[i]));
}

static void test_rgb_to_grey_luma(void **state) {
  (void)state;
  /* 0.299 R + 0.587 G + 0.114 B, rounded:
  ** red 76.245 -> 76, green 149.685 -> 150, blue 29.07 -> 29,
  ** white 255, (100,150,200) 140.75 -> 141, (10,20,30) 18.15 -> 18,
  ** (128,128,128) 128 */
  unsigned char px[] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255,
                        100, 150, 200, 10, 20, 30, 128, 128, 128};
  const unsigned char want[] = {76, 150, 29, 255, 141, 18, 128};
  image_u8 im = {7, 1, 3, px};
  float x[7];
  anom_err e = {0};
  assert_int_equal(image_to_tensor(x, &im, 7, 1, 1, IMAGE_FIT_RESIZE, &e), ANOM_OK);
  for(int i = 0; i < 7; i++) assert_true(x[i] == scaled(want[i]));
}

static void test_resize_same_size_is_copy(void **state) {
  (void)state;
  enum { W = 19, H = 11 };
  unsigned char px[W * H * 3];
  fill_random(px, sizeof(px), 7);
  image_u8 im = {W, H, 3, px};
  float x[3 * W * H];
  anom_err e = {0};
  for(int fit = 0; fit < 2; fit++){
    assert_int_equal(image_to_tensor(x, &im, W, H, 3, fit, &e), ANOM_OK);
    for(int k = 0; k < 3; k++)
      for(int y = 0; y < H; y++)
        for(int i = 0; i < W; i++)
          assert_true(x[k * W * H + y * W + i] == scaled(px[(y * W + i) * 3 + k]));
  }
  /* and back: from_tensor inverts to_tensor exactly */
  unsigned char back[W * H * 3];
  image_from_tensor(back, x, W, H, 3);
  assert_memory_equal(back, px, sizeof(px));
}

static void test_resize_constant_stays_constant(void **state) {
  (void)state;
  enum { W = 50, H = 30 };
  unsigned char px[W * H * 3];
  for(int i = 0; i < W * H; i++){
    px[3 * i] = 200;
    px[3 * i + 1] = 100;
    px[3 * i + 2] = 7;
  }
  image_u8 im = {W, H, 3, px};
  const int sizes[][2] = {{32, 32}, {80, 71}, {1, 1}, {50, 3}, {3, 30}};
  for(size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++){
    int w = sizes[s][0], h = sizes[s][1];
    float *x = malloc(sizeof(float) * 3 * w * h);
    anom_err e = {0};
    assert_int_equal(image_to_tensor(x, &im, w, h, 3, IMAGE_FIT_RESIZE, &e), ANOM_OK);
    for(int i = 0; i < w * h; i++){
      assert_true(x[i] == scaled(200));
      assert_true(x[w * h + i] == scaled(100));
      assert_true(x[2 * w * h + i] == scaled(7));
    }
    free(x);
  }
}

/* A ramp resampled to half size: the filters are symmetric and reproduce a
** straight line, so away from the clamped edges output i (centred on input
** 2i + 0.5) is 4 (2i + 0.5) = 8i + 2, give or take rounding. And a 7 -> 5
** reduction, which stb's triangle filter cannot do. */
static void test_resize_gradient(void **state) {
  (void)state;
  enum { W = 64, H = 4 };
  unsigned char px[W * H];
  for(int y = 0; y < H; y++)
    for(int i = 0; i < W; i++) px[y * W + i] = (unsigned char)(4 * i);
  image_u8 im = {W, H, 1, px};
  float x[32 * 2];
  anom_err e = {0};
  assert_int_equal(image_to_tensor(x, &im, 32, 2, 1, IMAGE_FIT_RESIZE, &e), ANOM_OK);
  for(int i = 1; i < 32; i++) assert_true(x[i] > x[i - 1]);
  for(int i = 3; i < 29; i++){
    float v = (x[i] + 1.0f) * 127.5f;
    assert_true(fabsf(v - (8 * i + 2)) <= 0.51f);
    assert_true(x[32 + i] == x[i]);
  }

  unsigned char seven[7 * 7];
  fill_random(seven, sizeof(seven), 13);
  image_u8 s7 = {7, 7, 1, seven};
  float y[5 * 5];
  assert_int_equal(image_to_tensor(y, &s7, 5, 5, 1, IMAGE_FIT_RESIZE, &e), ANOM_OK);
  for(int i = 0; i < 25; i++) assert_true(y[i] >= -1.0f && y[i] <= 1.0f);
}

static void test_pad_centres(void **state) {
  (void)state;
  enum { S = 28, T = 32 };
  unsigned char px[S * S];
  for(int y = 0; y < S; y++)
    for(int i = 0; i < S; i++) px[y * S + i] = (unsigned char)((7 * y + 13 * i + 1) % 256);
  image_u8 im = {S, S, 1, px};
  float x[T * T];
  anom_err e = {0};
  assert_int_equal(image_to_tensor(x, &im, T, T, 1, IMAGE_FIT_PAD, &e), ANOM_OK);
  for(int y = 0; y < T; y++)
    for(int i = 0; i < T; i++){
      int inside = y >= 2 && y < 30 && i >= 2 && i < 30;
      float want = inside ? scaled(px[(y - 2) * S + (i - 2)]) : -1.0f;
      assert_true(x[y * T + i] == want);
    }

  /* odd margins round down: 27x25 in 32x32 starts at (2, 3) */
  image_u8 odd = {27, 25, 1, px};
  assert_int_equal(image_to_tensor(x, &odd, T, T, 1, IMAGE_FIT_PAD, &e), ANOM_OK);
  for(int y = 0; y < T; y++)
    for(int i = 0; i < T; i++){
      int inside = y >= 3 && y < 28 && i >= 2 && i < 29;
      float want = inside ? scaled(px[(y - 3) * 27 + (i - 2)]) : -1.0f;
      assert_true(x[y * T + i] == want);
    }
}

static void test_pad_downscales_keeping_aspect(void **state) {
  (void)state;
  enum { T = 32 };
  /* 64x32, left half 50, right half 250 -> 32x16 at rows 8..23 */
  unsigned char px[64 * 32 * 3];
  for(int y = 0; y < 32; y++)
    for(int i = 0; i < 64; i++) memset(px + (y * 64 + i) * 3, i < 32 ? 50 : 250, 3);
  image_u8 im = {64, 32, 3, px};
  float x[3 * T * T];
  anom_err e = {0};
  assert_int_equal(image_to_tensor(x, &im, T, T, 3, IMAGE_FIT_PAD, &e), ANOM_OK);
  for(int k = 0; k < 3; k++)
    for(int y = 0; y < T; y++)
      for(int i = 0; i < T; i++){
        float v = x[k * T * T + y * T + i];
        /* the reducing filter reaches 4 input pixels either side */
        if( y < 8 || y >= 24 ) assert_true(v == -1.0f);
        else if( i < 14 ) assert_true(v == scaled(50));
        else if( i > 17 ) assert_true(v == scaled(250));
      }

  /* 30x90 (height binds): 11x32 at columns 10..20 (30*32/90 = 10.67) */
  unsigned char tall[30 * 90];
  memset(tall, 9, sizeof(tall));
  image_u8 t = {30, 90, 1, tall};
  assert_int_equal(image_to_tensor(x, &t, T, T, 1, IMAGE_FIT_PAD, &e), ANOM_OK);
  for(int y = 0; y < T; y++)
    for(int i = 0; i < T; i++)
      assert_true(x[y * T + i] == (i >= 10 && i <= 20 ? scaled(9) : -1.0f));

  /* wider only: 40x10 -> 32x8 at rows 12..19 */
  unsigned char wide[40 * 10];
  memset(wide, 77, sizeof(wide));
  image_u8 wd = {40, 10, 1, wide};
  assert_int_equal(image_to_tensor(x, &wd, T, T, 3, IMAGE_FIT_PAD, &e), ANOM_OK);
  for(int k = 0; k < 3; k++)
    for(int y = 0; y < T; y++)
      for(int i = 0; i < T; i++)
        assert_true(x[k * T * T + y * T + i] == (y >= 12 && y < 20 ? scaled(77) : -1.0f));
}

static void test_from_tensor(void **state) {
  (void)state;
  /* planes R = {-1, 1}, G = {0, 2}, B = {-2, NaN}; 0 -> 127.5 -> 128 */
  const float x[6] = {-1.0f, 1.0f, 0.0f, 2.0f, -2.0f, NAN};
  unsigned char px[6];
  image_from_tensor(px, x, 2, 1, 3);
  const unsigned char want[6] = {0, 128, 0, 255, 255, 0};
  assert_memory_equal(px, want, 6);
  const float y[3] = {-0.99f, 0.004f, 0.996f};
  image_from_tensor(px, y, 3, 1, 1);
  assert_int_equal(px[0], 1);   /* 1.275 */
  assert_int_equal(px[1], 128); /* 128.01 */
  assert_int_equal(px[2], 254); /* 254.49 */
}

/* ------------------------------------------------------------------------
** Errors.
*/

static void test_error_not_an_image(void **state) {
  (void)state;
  anom_err e = {0};
  int w = 1, h = 1, c = 1;
  decode_fails(NULL, 10, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT, "empty blob");
  decode_fails("", 0, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT, "empty blob");
  assert_int_equal(image_probe("", 0, &w, &h, &c, &e), ANOM_EFORMAT);
  assert_string_equal(e.msg, "empty blob");
  assert_int_equal(w, 0);
  decode_fails("hello", 5, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "not a supported image (PNG, JPEG, BMP, GIF, PNM)");
  decode_fails("hello", 5, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "found bytes 68 65 6c 6c 6f");
  decode_fails("RIFF\x10\0\0\0WEBPVP8 ", 16, IMAGE_DEFAULT_MAX_PIXELS,
               ANOM_EFORMAT, "found WebP");
  decode_fails("P2\n2 1\n255\n0 0\n", 15, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "plain (ASCII) PNM");
  decode_fails("II*\0\x08\0\0\0", 8, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "found TIFF");
  /* over INT_MAX bytes: refused before a byte is read */
  decode_fails("hello", (size_t)INT_MAX + 1, IMAGE_DEFAULT_MAX_PIXELS,
               ANOM_ETOOBIG, "over the decoder's limit of 2147483647 bytes");
}

static void test_error_truncated_png(void **state) {
  (void)state;
  enum { W = 20, H = 20 };
  unsigned char px[W * H * 3];
  fill_random(px, sizeof(px), 8);
  unsigned char *png;
  size_t n;
  anom_err e = {0};
  assert_int_equal(image_encode_png(&png, &n, px, W, H, 3, &e), ANOM_OK);
  decode_fails(png, n / 2, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated PNG file (no IEND chunk");
  decode_fails(png, n - 12, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated PNG file (no IEND chunk");
  decode_fails(png, n - 1, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated PNG file (no IEND chunk");
  decode_fails(png, 20, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated PNG file (20 bytes");
  /* the header alone is still enough to probe */
  int w, h, c;
  assert_int_equal(image_probe(png, 40, &w, &h, &c, &e), ANOM_OK);
  assert_int_equal(w, W);
  anom_free(png);
}

static void test_error_truncated_jpeg(void **state) {
  (void)state;
  const unsigned char *j = jpeg_24x16;
  size_t n = sizeof(jpeg_24x16);
  decode_fails(j, n * 6 / 10, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated JPEG file (no EOI marker)");
  decode_fails(j, n - 2, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated JPEG file (no EOI marker)");
  decode_fails(j, n - 1, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated JPEG file (no EOI marker)");

  /* an FF D9 inside an APPn segment (as in an EXIF thumbnail) is not the
  ** EOI: insert one after SOI, then cut the file */
  static const unsigned char app1[] = {0xff, 0xe1, 0x00, 0x08, 0xff, 0xd8, 0xff, 0xd9, 0x00, 0x00};
  bytes t = {0};
  bytes_put(&t, j, 2);
  bytes_put(&t, app1, sizeof(app1));
  bytes_put(&t, j + 2, n - 2);
  image_u8 im;
  decode_ok(&im, t.p, t.n);
  assert_int_equal(im.w, JPEG_W);
  image_free(&im);
  decode_fails(t.p, t.n / 2, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated JPEG file (no EOI marker)");
  free(t.p);

  /* Two scans with stuffed bytes, a restart marker, fill bytes and a
  ** segment between them: the walk reaches EOI (the decoder then refuses
  ** the made-up scan data), and finds no EOI when it is cut off. */
  static const unsigned char scans[] = {
      0xff, 0xd8,
      0xff, 0xc0, 0x00, 0x0b, 8, 0x00, 0x02, 0x00, 0x02, 1, 1, 0x11, 0, /* SOF0 2x2 */
      0xff, 0xda, 0x00, 0x08, 1, 1, 0x00, 0, 63, 0,                     /* SOS */
      0x12, 0xff, 0x00, 0x34, 0xff, 0xd0, 0x56, 0xff, 0xff,
      0xff, 0xfe, 0x00, 0x03, 0x00,                                     /* a comment */
      0xff, 0xda, 0x00, 0x08, 1, 1, 0x00, 0, 63, 0,                     /* SOS */
      0x78, 0xff, 0x00, 0x9a,
      0xff, 0xd9};
  decode_fails(scans, sizeof(scans), IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "corrupt JPEG file: ");
  decode_fails(scans, sizeof(scans) - 2, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated JPEG file (no EOI marker)");
  decode_fails(scans, 40, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated JPEG file (no EOI marker)");

  /* A Huffman table whose code counts add up to more than 256: stb_image
  ** 2.27 would write past its tables; refused before it runs. */
  bytes d = {0};
  bytes_put(&d, j, n);
  size_t dht = 2;
  while( !(d.p[dht] == 0xff && d.p[dht + 1] == 0xc4) ) dht++;
  assert_true(dht < 400);
  d.p[dht + 5 + 14] = 200; /* counts of 15- and 16-bit codes */
  d.p[dht + 5 + 15] = 200;
  char want[128];
  snprintf(want, sizeof(want), "corrupt JPEG file: Huffman table at byte %zu has", dht + 4);
  decode_fails(d.p, d.n, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT, want);
  decode_fails(d.p, d.n, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT, "codes, at most 256");
  free(d.p);

  /* SOI then EOI: complete, but no frame */
  decode_fails("\xff\xd8\xff\xd9", 4, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "corrupt JPEG file: ");
}

static void test_error_truncated_bmp(void **state) {
  (void)state;
  enum { W = 13, H = 7 };
  unsigned char px[W * H * 3];
  fill_random(px, sizeof(px), 10);
  bytes b = encode_stb("bmp", px, W, H, 3);
  /* 54-byte header + 7 rows of 40 bytes */
  assert_int_equal(b.n, 54 + 7 * 40);
  decode_fails(b.p, b.n - 1, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated BMP file (header says 334 bytes, found 333)");
  decode_fails(b.p, b.n / 2, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated BMP file");
  decode_fails(b.p, 30, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT, "BMP file");
  /* compression 0x80000000 and up: stb 2.27 reads it as a negative int and
  ** would decode the short file as uncompressed (a fuzzing find), and RLE */
  unsigned char *h = malloc(b.n);
  memcpy(h, b.p, b.n);
  h[30] = 0; h[31] = 0; h[32] = 0; h[33] = 0x80;
  decode_fails(h, 60, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "unsupported BMP compression 2147483648 (RLE and embedded JPEG or PNG are refused)");
  h[33] = 0; h[30] = 1;
  decode_fails(h, b.n, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT, "corrupt BMP file: BMP RLE");
  free(h);
  free(b.p);
}

static void test_error_truncated_pnm(void **state) {
  (void)state;
  static const unsigned char pgm[] = "P5\n3 2\n255\n\x01\x02\x03\x04\x05\x06";
  size_t n = sizeof(pgm) - 1;
  decode_fails(pgm, n - 1, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated PNM file (pixel data needs 6 bytes after the header, found 5)");
  decode_fails(pgm, 11, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated PNM file (pixel data needs 6 bytes after the header, found 0)");
  decode_fails(pgm, 10, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated PNM file (no pixel data after the header)");
  decode_fails(pgm, 5, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated PNM file (header cut short before the height)");
  /* 16-bit samples need two bytes each */
  static const unsigned char p16[] = "P5 2 1 65535\n\x01\x02\x03";
  decode_fails(p16, sizeof(p16) - 1, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "needs 4 bytes after the header, found 3");
  static const unsigned char ppm[] = "P6 2 1 255\n\x01\x02\x03\x04\x05";
  decode_fails(ppm, sizeof(ppm) - 1, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "needs 6 bytes after the header, found 5");
}

static void test_error_truncated_gif(void **state) {
  (void)state;
  size_t n = sizeof(gif_2x2);
  decode_fails(gif_2x2, n - 1, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated GIF file (no trailer)");
  decode_fails(gif_2x2, n - 4, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated GIF file (no trailer)");
  decode_fails(gif_2x2, 15, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "truncated GIF file (no trailer)");
  /* an unknown block */
  unsigned char bad[sizeof(gif_2x2)];
  memcpy(bad, gif_2x2, n);
  bad[19] = 0x99;
  decode_fails(bad, n, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "corrupt GIF file: unknown block 0x99 at byte 19");
  memcpy(bad, gif_2x2, n);
  bad[29] = 13; /* LZW minimum code size */
  decode_fails(bad, n, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "corrupt GIF file: LZW code size 13 at byte 29, at most 12");
}

/* A PNG header claiming 100000x100000 grey, with a correct IHDR CRC, an
** empty IDAT and IEND: refused before any allocation at all. */
static void test_error_too_many_pixels(void **state) {
  (void)state;
  unsigned char png[8 + 25 + 12 + 12] = {0x89, 'P', 'N', 'G', 13, 10, 26, 10};
  unsigned char *p = png + 8;
  wr_be32(p, 13);
  memcpy(p + 4, "IHDR", 4);
  wr_be32(p + 8, 100000);
  wr_be32(p + 12, 100000);
  p[16] = 8; /* depth */
  p[17] = 0; /* grey */
  p[18] = p[19] = p[20] = 0;
  wr_be32(p + 21, crc32_bits(p + 4, 17));
  p += 25;
  wr_be32(p, 0);
  memcpy(p + 4, "IDAT", 4);
  wr_be32(p + 8, crc32_bits(p + 4, 4));
  p += 12;
  wr_be32(p, 0);
  memcpy(p + 4, "IEND", 4);
  wr_be32(p + 8, crc32_bits(p + 4, 4));
  assert_int_equal(crc32_bits((const unsigned char *)"IEND", 4), 0xae426082u);

  int w, h, c;
  anom_err e = {0};
  anom_alloc_fail_after(1); /* any allocation would fail */
  assert_int_equal(image_probe(png, sizeof(png), &w, &h, &c, &e), ANOM_OK);
  assert_int_equal(w, 100000);
  assert_int_equal(h, 100000);
  assert_int_equal(c, 1);
  decode_fails(png, sizeof(png), IMAGE_DEFAULT_MAX_PIXELS, ANOM_ETOOBIG,
               "image is 100000x100000 (9536.7 Mpixel), over the 64.0 Mpixel limit");
  anom_alloc_fail_after(0);

  /* the limit is inclusive */
  unsigned char px[28 * 28] = {0};
  unsigned char *enc;
  size_t n;
  assert_int_equal(image_encode_png(&enc, &n, px, 28, 28, 1, &e), ANOM_OK);
  decode_fails(enc, n, 28 * 28 - 1, ANOM_ETOOBIG,
               "image is 28x28 (0.0 Mpixel), over the 0.0 Mpixel limit");
  image_u8 im;
  assert_int_equal(image_decode(&im, enc, n, 28 * 28, &e), ANOM_OK);
  image_free(&im);
  decode_fails(enc, n, 0, ANOM_EINVAL, "max_pixels must be at least 1, got 0");
  anom_free(enc);

  /* GIF 65535x65535, BMP with a side over 2^24 */
  unsigned char gif[sizeof(gif_2x2)];
  memcpy(gif, gif_2x2, sizeof(gif));
  gif[6] = gif[7] = gif[8] = gif[9] = 0xff;
  decode_fails(gif, sizeof(gif), IMAGE_DEFAULT_MAX_PIXELS, ANOM_ETOOBIG,
               "image is 65535x65535");
  bytes b = encode_stb("bmp", px, 4, 4, 1);
  wr_be32(b.p + 18, 0); /* width (little-endian) = 0x20000000 */
  b.p[21] = 0x20;
  decode_fails(b.p, b.n, IMAGE_DEFAULT_MAX_PIXELS, ANOM_ETOOBIG,
               "image is 536870912x4, over the limit of 16777216 pixels a side");
  free(b.p);
}

static void test_error_corrupt(void **state) {
  (void)state;
  unsigned char px[16 * 16];
  fill_random(px, sizeof(px), 11);
  unsigned char *png;
  size_t n;
  anom_err e = {0};
  assert_int_equal(image_encode_png(&png, &n, px, 16, 16, 1, &e), ANOM_OK);
  /* IDAT data starts at 33 + 8: break the zlib header */
  png[41] = 0x00;
  png[42] = 0x00;
  decode_fails(png, n, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT, "corrupt PNG file: ");
  /* an IHDR that is not first */
  memcpy(png + 12, "ABCD", 4);
  decode_fails(png, n, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "corrupt PNG file: the first chunk is not a 13-byte IHDR");
  memcpy(png + 12, "IHDR", 4);
  png[25] = 5; /* colour type */
  decode_fails(png, n, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "corrupt PNG file: colour type 5");
  anom_free(png);

  decode_fails("P5 3 2 0\n123456", 15, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "corrupt PNM file: maxval 0, expected 1..65535");
  decode_fails("P5 3 2 70000\n123456", 19, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "corrupt PNM file: maxval 70000");
  decode_fails("P5 x 2 255\n123456", 17, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "corrupt PNM file: expected the width at byte 3");
  decode_fails("P5 0 2 255\n123456", 17, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "corrupt PNM file: header says 0x2");
  decode_fails("P5 3 2 255x123456", 17, IMAGE_DEFAULT_MAX_PIXELS, ANOM_EFORMAT,
               "expected whitespace after maxval");
  decode_fails("BM\0\0\0\0\0\0\0\0\0\0\0\0\x07\0\0\0", 18, IMAGE_DEFAULT_MAX_PIXELS,
               ANOM_EFORMAT, "corrupt BMP file: ");
}

static void test_error_bad_arguments(void **state) {
  (void)state;
  unsigned char px[4 * 4 * 3] = {0};
  float x[3 * 16];
  anom_err e = {0};
  image_u8 im = {4, 4, 3, px};
  struct {
    float *x;
    image_u8 im;
    int w, h, c, fit;
    const char *want;
  } cases[] = {
      {NULL, {4, 4, 3, px}, 4, 4, 3, 0, "no output tensor"},
      {x, {4, 4, 3, NULL}, 4, 4, 3, 0, "image has no pixels"},
      {x, {0, 4, 3, px}, 4, 4, 3, 0, "image size 0x4 is not positive"},
      {x, {4, 4, 2, px}, 4, 4, 3, 0, "image channels must be 1 or 3, got 2"},
      {x, {4, 4, 3, px}, 0, 4, 3, 0, "tensor size must be 1..16384 a side, got 0x4"},
      {x, {4, 4, 3, px}, 4, 16385, 3, 0, "tensor size must be 1..16384 a side, got 4x16385"},
      {x, {4, 4, 3, px}, 4, 4, 2, 0, "tensor channels must be 1 or 3, got 2"},
      {x, {4, 4, 3, px}, 4, 4, 4, 0, "tensor channels must be 1 or 3, got 4"},
      {x, {4, 4, 3, px}, 4, 4, 3, 2, "fit must be IMAGE_FIT_RESIZE (0) or IMAGE_FIT_PAD (1), got 2"},
  };
  for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
    int rc = image_to_tensor(cases[i].x, &cases[i].im, cases[i].w, cases[i].h,
                             cases[i].c, cases[i].fit, &e);
    assert_int_equal(rc, ANOM_EINVAL);
    assert_non_null(strstr(e.msg, cases[i].want));
  }
  assert_int_equal(image_to_tensor(x, NULL, 4, 4, 3, 0, &e), ANOM_EINVAL);
  assert_non_null(strstr(e.msg, "image has no pixels"));
  assert_int_equal(image_to_tensor(x, &im, 4, 4, 3, 0, NULL), ANOM_OK);

  unsigned char *out = (unsigned char *)"x";
  size_t n = 9;
  assert_int_equal(image_encode_png(&out, &n, px, 4, 4, 2, &e), ANOM_EINVAL);
  assert_string_equal(e.msg, "PNG channels must be 1, 3 or 4, got 2");
  assert_null(out);
  assert_int_equal(n, 0);
  assert_int_equal(image_encode_png(&out, &n, px, 0, 4, 3, &e), ANOM_EINVAL);
  assert_string_equal(e.msg, "PNG size must be positive, got 0x4");
  assert_int_equal(image_encode_png(&out, &n, NULL, 4, 4, 3, &e), ANOM_EINVAL);
  assert_int_equal(image_encode_png(&out, &n, px, 100000, 100000, 3, &e), ANOM_ETOOBIG);
  assert_non_null(strstr(e.msg, "over the PNG writer's limit"));

  assert_int_equal(image_decode(NULL, px, 4, 100, &e), ANOM_EINVAL);
  image_free(NULL);
  image_from_tensor(NULL, x, 4, 4, 3); /* no-op */
}

/* ------------------------------------------------------------------------
** Allocation failure: fail the 1st, 2nd, ... allocation until the call
** succeeds; each failure must be a clean ANOM_ENOMEM (ASan checks leaks).
*/

typedef int (*op_fn)(const void *arg);

static int fail_each_allocation(op_fn op, const void *arg) {
  int i;
  for(i = 1; i < 1000; i++){
    anom_alloc_fail_after(i);
    int rc = op(arg);
    anom_alloc_fail_after(0);
    if( rc == ANOM_OK ) break;
    assert_int_equal(rc, ANOM_ENOMEM);
  }
  assert_true(i < 1000);
  return i - 1; /* allocations that were failed */
}

typedef struct blob {
  const unsigned char *p;
  size_t n;
} blob;

static int op_decode(const void *arg) {
  const blob *b = arg;
  image_u8 im;
  anom_err e = {0};
  int rc = image_decode(&im, b->p, b->n, IMAGE_DEFAULT_MAX_PIXELS, &e);
  if( rc ){
    assert_null(im.px);
    if( rc == ANOM_ENOMEM ) assert_non_null(strstr(e.msg, "out of memory"));
    else fprintf(stderr, "unexpected: %s\n", e.msg);
  }
  image_free(&im);
  return rc;
}

static int op_probe(const void *arg) {
  const blob *b = arg;
  int w, h, c;
  anom_err e = {0};
  return image_probe(b->p, b->n, &w, &h, &c, &e);
}

typedef struct fit_case {
  const image_u8 *im;
  int w, h, c, fit;
} fit_case;

static int op_to_tensor(const void *arg) {
  const fit_case *f = arg;
  float *x = malloc(sizeof(float) * f->w * f->h * f->c);
  anom_err e = {0};
  int rc = image_to_tensor(x, f->im, f->w, f->h, f->c, f->fit, &e);
  if( rc == ANOM_ENOMEM ) assert_non_null(strstr(e.msg, "out of memory"));
  free(x);
  return rc;
}

static int op_encode(const void *arg) {
  const image_u8 *im = arg;
  unsigned char *out;
  size_t n;
  anom_err e = {0};
  int rc = image_encode_png(&out, &n, im->px, im->w, im->h, im->c, &e);
  if( rc ){
    assert_null(out);
    assert_non_null(strstr(e.msg, "out of memory"));
  }
  anom_free(out);
  return rc;
}

static void test_allocation_failures(void **state) {
  (void)state;
  enum { W = 24, H = 20 };
  unsigned char px[W * H * 4];
  fill_random(px, sizeof(px), 12);
  anom_err e = {0};

  unsigned char *png_grey, *png_rgb, *png_rgba;
  size_t n_grey, n_rgb, n_rgba;
  assert_int_equal(image_encode_png(&png_grey, &n_grey, px, W, H, 1, &e), ANOM_OK);
  assert_int_equal(image_encode_png(&png_rgb, &n_rgb, px, W, H, 3, &e), ANOM_OK);
  assert_int_equal(image_encode_png(&png_rgba, &n_rgba, px, W, H, 4, &e), ANOM_OK);
  bytes bmp = encode_stb("bmp", px, W, H, 3);
  static const unsigned char pgm[] = "P5 2 2 1000\n\x00\x01\x00\x02\x00\x03\x00\x04";

  const blob blobs[] = {{png_grey, n_grey}, {png_rgb, n_rgb}, {png_rgba, n_rgba},
                        {jpeg_24x16, sizeof(jpeg_24x16)},      {bmp.p, bmp.n},   {gif_2x2, sizeof(gif_2x2)},
                        {pgm, sizeof(pgm) - 1},
                        {png16_3x2, sizeof(png16_3x2)},
                        {png_palette_2x2, sizeof(png_palette_2x2)}};
  for(size_t i = 0; i < sizeof(blobs) / sizeof(blobs[0]); i++){
    int failed = fail_each_allocation(op_decode, &blobs[i]);
    assert_true(failed >= 1);
  }
  assert_true(fail_each_allocation(op_probe, &blobs[3]) >= 1); /* JPEG header */

  image_u8 rgb = {W, H, 3, px}, grey = {W, H, 1, px};
  const fit_case fits[] = {{&rgb, 32, 32, 1, IMAGE_FIT_RESIZE},
                           {&rgb, 16, 16, 3, IMAGE_FIT_PAD},
                           {&grey, 16, 16, 3, IMAGE_FIT_PAD},
                           {&grey, 40, 10, 1, IMAGE_FIT_RESIZE},
                           {&rgb, W, H, 1, IMAGE_FIT_RESIZE}};
  for(size_t i = 0; i < sizeof(fits) / sizeof(fits[0]); i++){
    assert_true(fail_each_allocation(op_to_tensor, &fits[i]) >= 1);
  }
  const fit_case copy = {&rgb, W, H, 3, IMAGE_FIT_RESIZE};
  assert_int_equal(fail_each_allocation(op_to_tensor, &copy), 0);

  image_u8 rgba = {W, H, 4, px};
  assert_true(fail_each_allocation(op_encode, &rgba) >= 3);

  anom_free(png_grey);
  anom_free(png_rgb);
  anom_free(png_rgba);
  free(bmp.p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_png_roundtrip_grey),
      cmocka_unit_test(test_png_roundtrip_rgb),
      cmocka_unit_test(test_png_compresses),
      cmocka_unit_test(test_png_rgba_drops_alpha),
      cmocka_unit_test(test_png_grey_alpha),
      cmocka_unit_test(test_png_16bit_and_palette),
      cmocka_unit_test(test_jpeg_decode),
      cmocka_unit_test(test_bmp_exact),
      cmocka_unit_test(test_pnm_exact),
      cmocka_unit_test(test_gif_first_frame),
      cmocka_unit_test(test_grey_to_rgb_repeats),
      cmocka_unit_test(test_rgb_to_grey_luma),
      cmocka_unit_test(test_resize_same_size_is_copy),
      cmocka_unit_test(test_resize_constant_stays_constant),
      cmocka_unit_test(test_resize_gradient),
      cmocka_unit_test(test_pad_centres),
      cmocka_unit_test(test_pad_downscales_keeping_aspect),
      cmocka_unit_test(test_from_tensor),
      cmocka_unit_test(test_error_not_an_image),
      cmocka_unit_test(test_error_truncated_png),
      cmocka_unit_test(test_error_truncated_jpeg),
      cmocka_unit_test(test_error_truncated_bmp),
      cmocka_unit_test(test_error_truncated_pnm),
      cmocka_unit_test(test_error_truncated_gif),
      cmocka_unit_test(test_error_too_many_pixels),
      cmocka_unit_test(test_error_corrupt),
      cmocka_unit_test(test_error_bad_arguments),
      cmocka_unit_test(test_allocation_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
