/*
** test_heatmap.c - anomaly maps into pictures: smoothing, resampling onto
** the original image, the colour scale, painting (core/heatmap.c), the
** geometry shared with image_to_tensor (image_fit_rect), contact sheets
** (core/montage.c), the streaming pixel AUROC (core/metrics.c) and
** model_map's default, the reconstruction residual.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/heatmap.h"
#include "core/image.h"
#include "core/metrics.h"
#include "core/model.h"
#include "core/montage.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/train.h"

#include "golden.h"
#include "detector_test.h"

static void test_smooth(void **state) {
  (void)state;
  enum { W = 21, H = 17 };
  float map[W * H], tmp[W * H];
  /* a constant stays constant, edges included */
  for(int i = 0; i < W * H; i++) map[i] = 2.5f;
  heatmap_smooth(map, W, H, 2.0, tmp);
  for(int i = 0; i < W * H; i++) assert_true(fabsf(map[i] - 2.5f) < 1e-6f);
  /* an impulse far from the edges: the kernel, summing to 1, symmetric,
  ** with exp(-1/2) between the centre and one sigma out */
  memset(map, 0, sizeof(map));
  map[8 * W + 10] = 1;
  heatmap_smooth(map, W, H, 1.0, tmp);
  double sum = 0;
  for(int i = 0; i < W * H; i++) sum += map[i];
  assert_true(fabs(sum - 1) < 1e-6);
  assert_true(fabsf(map[8 * W + 9] - map[8 * W + 11]) < 1e-9f);
  assert_true(fabsf(map[7 * W + 10] - map[9 * W + 11 - 1]) < 1e-9f);
  assert_true(fabs(map[8 * W + 11] / map[8 * W + 10] - exp(-0.5)) < 1e-6);
  assert_true(map[8 * W + 10] > map[8 * W + 11] && map[8 * W + 14] < 1e-4f);
  /* sigma 0 leaves the map alone */
  float before[W * H];
  memcpy(before, map, sizeof(map));
  heatmap_smooth(map, W, H, 0, tmp);
  assert_memory_equal(before, map, sizeof(map));
}

static void test_fit_rect(void **state) {
  (void)state;
  int ox, oy, dw, dh;
  image_fit_rect(300, 200, 64, 64, IMAGE_FIT_RESIZE, &ox, &oy, &dw, &dh);
  assert_true(ox == 0 && oy == 0 && dw == 64 && dh == 64);
  image_fit_rect(16, 8, 32, 32, IMAGE_FIT_PAD, &ox, &oy, &dw, &dh);   /* smaller: centred */
  assert_true(ox == 8 && oy == 12 && dw == 16 && dh == 8);
  image_fit_rect(300, 200, 64, 64, IMAGE_FIT_PAD, &ox, &oy, &dw, &dh); /* width binds */
  assert_true(ox == 0 && dw == 64 && dh == 43 && oy == 10);
  image_fit_rect(100, 400, 32, 32, IMAGE_FIT_PAD, &ox, &oy, &dw, &dh); /* height binds */
  assert_true(oy == 0 && dh == 32 && dw == 8 && ox == 12);
  /* image_to_tensor puts a white image exactly there, -1 elsewhere */
  image_u8 im = {300, 200, 1, malloc(300 * 200)};
  memset(im.px, 255, 300 * 200);
  float x[64 * 64];
  anom_err e;
  assert_int_equal(image_to_tensor(x, &im, 64, 64, 1, IMAGE_FIT_PAD, &e), ANOM_OK);
  image_fit_rect(300, 200, 64, 64, IMAGE_FIT_PAD, &ox, &oy, &dw, &dh);
  for(int y = 0; y < 64; y++)
    for(int xx = 0; xx < 64; xx++){
      int in = xx >= ox && xx < ox + dw && y >= oy && y < oy + dh;
      assert_true(in ? x[y * 64 + xx] > 0.99f : x[y * 64 + xx] == -1.0f);
    }
  free(im.px);
}

static void test_resample(void **state) {
  (void)state;
  enum { S = 8 };
  float map[S * S], out[40 * 40];
  for(int i = 0; i < S * S; i++) map[i] = (float)(i * 7 % 13);
  /* same size: the identity */
  heatmap_resample(out, S, S, map, S, S, IMAGE_FIT_RESIZE);
  assert_memory_equal(out, map, sizeof(map));
  /* padding: the image's rectangle cut back out, exactly */
  heatmap_resample(out, 4, 2, map, S, S, IMAGE_FIT_PAD);   /* at (2, 3) */
  for(int y = 0; y < 2; y++)
    for(int x = 0; x < 4; x++) assert_true(out[y * 4 + x] == map[(3 + y) * S + 2 + x]);
  /* a ramp in x enlarged 5x stays a ramp: linear inside, clamped at the edges */
  for(int y = 0; y < S; y++)
    for(int x = 0; x < S; x++) map[y * S + x] = (float)x;
  heatmap_resample(out, 40, 40, map, S, S, IMAGE_FIT_RESIZE);
  for(int y = 0; y < 40; y++)
    for(int x = 0; x < 40; x++){
      double want = (x + 0.5) / 5 - 0.5;
      want = want < 0 ? 0 : want > S - 1 ? S - 1 : want;
      assert_true(fabs(out[y * 40 + x] - want) < 1e-5);
    }
}

static void test_colours(void **state) {
  (void)state;
  unsigned char c[3];
  heatmap_color(0, c);
  assert_true(c[0] == 0 && c[1] == 0 && c[2] == 4);
  heatmap_color(-3, c);
  assert_true(c[0] == 0 && c[1] == 0 && c[2] == 4);
  heatmap_color(1, c);
  assert_true(c[0] == 252 && c[1] == 255 && c[2] == 164);
  heatmap_color(NAN, c);
  assert_true(c[0] == 0 && c[2] == 4);
  heatmap_color(0.5, c);
  assert_true(c[0] == 186 && c[1] == 54 && c[2] == 85);
  heatmap_color(0.5625, c);           /* half way between two anchors */
  assert_true(c[0] == 206 && c[1] == 72 && c[2] == 68);   /* lrint: halves to even */
  /* lightness rises all the way */
  double prev = -1;
  for(int i = 0; i <= 64; i++){
    heatmap_color(i / 64.0, c);
    double l = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
    assert_true(l > prev);
    prev = l;
  }
  /* painting: the range clamps; grey is one byte; overlay blends by alpha t */
  float v[4] = {-1, 0, 0.5f, 2};
  unsigned char g[4], rgb[12], base[4] = {10, 20, 30, 40};
  heatmap_paint(g, v, 4, 0, 1, HEATMAP_GREY, NULL, 0, 0);
  assert_true(g[0] == 0 && g[1] == 0 && g[2] == 128 && g[3] == 255);
  heatmap_paint(g, v, 4, 3, 3, HEATMAP_GREY, NULL, 0, 0);   /* zero width: all low */
  assert_true(g[0] == 0 && g[3] == 0);
  heatmap_paint(rgb, v, 4, 0, 1, HEATMAP_OVERLAY, base, 1, 1.0);
  assert_true(rgb[0] == 10 && rgb[1] == 10 && rgb[2] == 10);      /* t = 0: the image */
  assert_true(rgb[9] == 252 && rgb[10] == 255 && rgb[11] == 164); /* t = 1, alpha 1 */
  assert_true(rgb[6] == 108 && rgb[7] == 42 && rgb[8] == 58);      /* (30 + colour) / 2 */
}

/* The histogram AUROC against the exact one. */
static void test_auroc_hist(void **state) {
  (void)state;
  enum { N = 20000 };
  double *s = malloc(N * sizeof(double));
  int *y = malloc(N * sizeof(int));
  uint32_t seed = 7;
  auroc_hist h;
  anom_err e;
  assert_int_equal(auroc_hist_init(&h, &e), ANOM_OK);
  for(int i = 0; i < N; i++){
    seed = seed * 1664525u + 1013904223u;
    y[i] = (seed >> 9) % 5 == 0;
    seed = seed * 1664525u + 1013904223u;
    double u = (seed >> 8) / 16777216.0;
    s[i] = (u - 0.5) * 3 + y[i] * 0.8;    /* negatives and positives of both signs */
    auroc_hist_add(&h, (float)s[i], y[i]);
  }
  double exact, approx;
  assert_int_equal(auroc(s, y, N, &exact, &e), ANOM_OK);
  assert_int_equal(auroc_hist_result(&h, &approx, &e), ANOM_OK);
  printf("# exact %.6f, histogram %.6f\n", exact, approx);
  assert_true(fabs(exact - approx) < 1e-3 && exact > 0.6);
  auroc_hist_free(&h);
  /* ties are half: every value equal gives 0.5; a clean split gives 1 */
  assert_int_equal(auroc_hist_init(&h, &e), ANOM_OK);
  for(int i = 0; i < 10; i++) auroc_hist_add(&h, 0.25f, i & 1);
  assert_int_equal(auroc_hist_result(&h, &approx, &e), ANOM_OK);
  assert_true(approx == 0.5);
  auroc_hist_free(&h);
  assert_int_equal(auroc_hist_init(&h, &e), ANOM_OK);
  for(int i = 0; i < 10; i++) auroc_hist_add(&h, i < 5 ? -0.001f * i : 1000.0f + i, i >= 5);
  assert_int_equal(auroc_hist_result(&h, &approx, &e), ANOM_OK);
  assert_true(approx == 1.0);
  auroc_hist_free(&h);
  /* one class only */
  assert_int_equal(auroc_hist_init(&h, &e), ANOM_OK);
  auroc_hist_add(&h, 1, 0);
  assert_int_equal(auroc_hist_result(&h, &approx, &e), ANOM_EINVAL);
  assert_string_equal(e.msg, "both classes are needed, found 1 normal and 0 anomalous values");
  auroc_hist_free(&h);
  free(s);
  free(y);
}

static void test_montage(void **state) {
  (void)state;
  enum { S = 16 };
  float x[S * S], rec[S * S], map[S * S];
  for(int i = 0; i < S * S; i++){
    x[i] = 1.0f;               /* white input */
    rec[i] = -1.0f;            /* black repair */
    map[i] = (float)(i % S) / (S - 1);
  }
  montage *mt;
  anom_err e;
  assert_int_equal(montage_new(&mt, S, S, 1, 2, &e), ANOM_OK);
  assert_int_equal(montage_add(mt, x, rec, map, 0, 1, 0.5, 0, "ok", &e), ANOM_OK);
  assert_int_equal(montage_add(mt, x, rec, map, 0, 1, 9.25, 1, "bad", &e), ANOM_OK);
  assert_int_equal(montage_add(mt, x, rec, map, 0, 1, 1, 0, NULL, &e), ANOM_ETOOBIG);
  assert_string_equal(e.msg, "a montage holds at most 2 rows");
  /* 16-pixel inputs make 96-pixel tiles (x6) */
  int w, h;
  montage_size(mt, &w, &h);
  assert_int_equal(w, 3 * 96 + 16);
  assert_int_equal(h, 4 + 9 + 2 * (96 + 9 + 4) + 4);
  unsigned char *png;
  size_t npng;
  assert_int_equal(montage_png(mt, &png, &npng, &e), ANOM_OK);
  image_u8 im;
  assert_int_equal(image_decode(&im, png, npng, 1 << 20, &e), ANOM_OK);
  assert_true(im.w == w && im.h == h && im.c == 3);
  /* row 1: the input tile white, the repair black, the map dark to light
  ** left to right; row 2's label in the flagged red */
  const unsigned char *p = im.px + ((size_t)13 * w + 4) * 3;
  assert_true(p[0] == 255 && p[1] == 255 && p[2] == 255);
  p = im.px + ((size_t)13 * w + 4 + 96 + 4) * 3;
  assert_true(p[0] == 0 && p[1] == 0 && p[2] == 0);
  const unsigned char *l = im.px + ((size_t)50 * w + 4 + 2 * 100) * 3;
  const unsigned char *r = im.px + ((size_t)50 * w + 4 + 2 * 100 + 95) * 3;
  assert_true(l[0] == 0 && l[2] == 4 && r[0] == 252 && r[1] == 255);
  int red = 0, y2 = 13 + 109 + 96 + 1;
  for(int yy = y2; yy < y2 + 9; yy++)
    for(int xx = 0; xx < 100; xx++){
      const unsigned char *q = im.px + ((size_t)yy * w + xx) * 3;
      red += q[0] == 255 && q[1] == 96 && q[2] == 96;
    }
  assert_true(red > 20);
  image_free(&im);
  anom_free(png);
  montage_free(mt);
  /* bad shapes; every allocation failing in turn */
  assert_int_equal(montage_new(&mt, 0, S, 1, 2, &e), ANOM_EINVAL);
  assert_int_equal(montage_new(&mt, S, S, 2, 2, &e), ANOM_EINVAL);
  for(long k = 0; k < 12; k++){
    anom_alloc_fail_after(k);
    int rc = montage_new(&mt, S, S, 1, 4, &e);
    if( rc == ANOM_OK ){
      rc = montage_add(mt, x, rec, map, 0, 1, 0.5, 0, "a", &e);
      if( rc == ANOM_OK && (rc = montage_png(mt, &png, &npng, &e)) == ANOM_OK ) anom_free(png);
      montage_free(mt);
    }
    assert_true(rc == ANOM_OK || rc == ANOM_ENOMEM);
  }
  anom_alloc_fail_after(-1);
}

/* model_map's default: the mean over channels of |x - x_hat| of score(). */
static void test_model_map_residual(void **state) {
  (void)state;
  anom_model *m = load_model_file("tests/data/tiny64rgb-ganomaly.safetensors");
  int n = 2;
  size_t hw = (size_t)m->width * m->height, img = 3 * hw;
  float *x = malloc(n * img * sizeof(float)), *rec = malloc(n * img * sizeof(float));
  float *map = malloc(n * hw * sizeof(float)), *work = work_for(m, n);
  for(size_t i = 0; i < n * img; i++) x[i] = (float)sin(0.11 * (double)i);
  score_result r[2], r2[2];
  anom_err e;
  assert_int_equal(model_score(m, n, x, work, r, rec, NULL, &e), ANOM_OK);
  assert_int_equal(model_map(m, n, x, work, map, r2, NULL, NULL, &e), ANOM_OK);
  for(int i = 0; i < n; i++){
    assert_true(r[i].score == r2[i].score);
    for(size_t p = 0; p < hw; p++){
      float want = 0;
      for(int c = 0; c < 3; c++)
        want += fabsf(x[i * img + c * hw + p] - rec[i * img + c * hw + p]);
      assert_true(fabsf(map[i * hw + p] - want / 3) < 1e-6f);
    }
  }
  cJSON *bad = cJSON_CreateArray();
  assert_int_equal(model_map(m, n, x, work, map, r2, NULL, bad, &e), ANOM_EINVAL);
  cJSON_Delete(bad);
  free(x); free(rec); free(map); free(work);
  model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_smooth),
    cmocka_unit_test(test_fit_rect),
    cmocka_unit_test(test_resample),
    cmocka_unit_test(test_colours),
    cmocka_unit_test(test_auroc_hist),
    cmocka_unit_test(test_montage),
    cmocka_unit_test(test_model_map_residual),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
