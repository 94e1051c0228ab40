/*
** fuzz_image.c - libFuzzer harness for the image decoder (core/image.c).
**
**   make fuzz FUZZ=image                      build and run it for FUZZ_SECONDS
**   ./build-fuzz/fuzz_image crash-file        replay one input
**
** Each input is an image BLOB: probed, decoded with a 4 Mpixel budget, fitted
** to a 32x32 grey and a 64x64 RGB tensor, both resized and padded, then
** written back as a PNG and decoded again. Beyond what the sanitizers catch,
** it checks what the API promises and traps when a promise is broken:
**
**   - a decoded image agrees with its probe (width and height) and has
**     1 or 3 channels and pixels;
**   - a failed decode leaves the image zeroed and sets a message;
**   - every tensor value is in [-1, 1];
**   - our PNG of a decoded image decodes to the very same pixels.
*/
#include "core/common.h"
#include "core/image.h"

#include "tests/fuzz/fuzz.h"

#include <stdint.h>
#include <string.h>

#define FUZZ_MAX_PIXELS (1LL << 22)
/* the PNG round trip is skipped above this, to keep the runs fast */
#define FUZZ_ROUND_TRIP_PIXELS (1 << 16)

static void fit_tensor(const image_u8 *im, int side, int c, int fit) {
  size_t n = (size_t)c * side * side;
  float *x = anom_malloc(n * sizeof(float));
  if( !x ) return;
  anom_err e;
  anom_err_clear(&e);
  if( image_to_tensor(x, im, side, side, c, fit, &e) == ANOM_OK ){
    for(size_t i = 0; i < n; i++)
      fuzz_check(x[i] >= -1.0f && x[i] <= 1.0f, "tensor value outside [-1, 1]", NULL);
  }else{
    fuzz_check(e.msg[0] != 0, "image_to_tensor failed without a message", NULL);
  }
  anom_free(x);
}

/* Our PNG of im must decode to the same pixels. */
static void round_trip(const image_u8 *im) {
  unsigned char *png = NULL;
  size_t npng = 0;
  anom_err e;
  anom_err_clear(&e);
  if( image_encode_png(&png, &npng, im->px, im->w, im->h, im->c, &e) ){
    fuzz_check(e.code == ANOM_ENOMEM, "image_encode_png refused a decoded image", NULL);
    return;
  }
  image_u8 back;
  int rc = image_decode(&back, png, npng, FUZZ_MAX_PIXELS, &e);
  fuzz_check(rc == ANOM_OK, "our own PNG does not decode", NULL);
  fuzz_check(back.w == im->w && back.h == im->h && back.c == im->c,
        "our own PNG decodes to another shape", NULL);
  fuzz_check(memcmp(back.px, im->px, (size_t)im->w * im->h * im->c) == 0,
        "our own PNG decodes to other pixels", NULL);
  image_free(&back);
  anom_free(png);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  anom_err e;
  int w, h, c;
  anom_err_clear(&e);
  int prc = image_probe(data, size, &w, &h, &c, &e);
  if( prc ) fuzz_check(e.msg[0] != 0, "image_probe failed without a message", NULL);

  image_u8 im;
  anom_err_clear(&e);
  if( image_decode(&im, data, size, FUZZ_MAX_PIXELS, &e) ){
    fuzz_check(e.msg[0] != 0, "image_decode failed without a message", NULL);
    fuzz_check(im.px == NULL && im.w == 0 && im.h == 0 && im.c == 0,
          "a failed decode left the image set", NULL);
    return 0;
  }
  fuzz_check(prc == ANOM_OK, "image_decode accepted what image_probe refused", NULL);
  fuzz_check(im.w == w && im.h == h, "decoded size differs from the probe's", NULL);
  fuzz_check(im.c == 1 || im.c == 3, "decoded channels not 1 or 3", NULL);
  fuzz_check(im.px != NULL, "decoded image has no pixels", NULL);

  fit_tensor(&im, 32, 1, IMAGE_FIT_RESIZE);
  fit_tensor(&im, 32, 1, IMAGE_FIT_PAD);
  fit_tensor(&im, 64, 3, IMAGE_FIT_RESIZE);
  fit_tensor(&im, 64, 3, IMAGE_FIT_PAD);
  if( (long long)im.w * im.h <= FUZZ_ROUND_TRIP_PIXELS ) round_trip(&im);
  image_free(&im);
  return 0;
}
