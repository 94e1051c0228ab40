/*
** test_lbp.c - DefectGAN's building blocks without networks: the LBP codes,
** Hamming map, box smoothing and top-fraction mean (core/lbp.c), and the
** defect synthesiser (core/defects.c).
**
** LBP: codes of hand-made 3x3 patches worked out on paper (a flat patch, one
** bright neighbour, horizontal and vertical ramps, a bright corner that only
** the interpolated diagonal sees, either side of its threshold), then every
** function against the numpy oracle of tests/bench/reference/defectgan_ref.py
** (golden-defectgan-lbp.safetensors) bit for bit, for six (P, R) settings on
** continuous, tied, 1x1 and 2x3 images and the luma of an RGB image.
** Synthesiser: the images of golden-defectgan-defects.safetensors (the same
** draws replayed in Python) bit for bit, then its promises on many seeds:
** deterministic, values in [-1, 1], nothing written outside the image or the
** mask, every kind changing pixels, p = 0 changing nothing.
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

#include "core/defects.h"
#include "core/lbp.h"
#include "core/model.h"
#include "core/rng.h"
#include "core/safetensors.h"

#include "golden.h"

/* The code of the centre of a 3x3 patch (row-major). */
static uint32_t centre_code(const float p[9], int points, double radius) {
  uint32_t codes[9];
  lbp_codes(codes, p, 3, 3, points, radius);
  return codes[4];
}

static void test_lbp_patches(void **state) {
  (void)state;
  uint32_t codes[9];
  /* flat: every point equals the centre (the interpolation is exact on a
  ** flat neighbourhood, edges replicate), so every bit is set */
  float flat[9];
  for(int i = 0; i < 9; i++) flat[i] = 0.3f;
  lbp_codes(codes, flat, 3, 3, 8, 1.0);
  for(int i = 0; i < 9; i++) assert_int_equal(codes[i], 255);
  lbp_codes(codes, flat, 3, 3, 16, 2.5);
  for(int i = 0; i < 9; i++) assert_int_equal(codes[i], 65535);

  /* one bright neighbour above a 0.5 centre on a dark ground: only bit 2
  ** (p = 2 is the point above, offset (-1, 0)). The diagonals p = 1 and 3
  ** interpolate 0.70711 * 0.29289 * 1 + 0.29289^2 * 0.5 = 0.25 < 0.5. */
  float bright[9] = {0, 1, 0,
                     0, 0.5f, 0,
                     0, 0, 0};
  lbp_codes(codes, bright, 3, 3, 8, 1.0);
  assert_int_equal(codes[4], 1u << 2);
  /* the bright pixel itself: only its replicated self above it is >= 1 */
  assert_int_equal(codes[1], 1u << 2);
  /* a dark corner pixel: everything around is >= 0 */
  assert_int_equal(codes[0], 255);

  /* horizontal ramp 0 1 2: right (bit 0), up and down (equal: bits 2, 6),
  ** up-right and down-right (1.70711: bits 1, 7) -> 1+2+4+64+128 */
  float hramp[9] = {0, 1, 2, 0, 1, 2, 0, 1, 2};
  assert_int_equal(centre_code(hramp, 8, 1.0), 199);
  /* P = 4: right, up, left, down -> right, up (equal), down (equal) */
  assert_int_equal(centre_code(hramp, 4, 1.0), 1 + 2 + 8);
  /* vertical ramp (0 on top): right, left equal (bits 0, 4), down (6),
  ** down-left and down-right at 1.70711 (5, 7) */
  float vramp[9] = {0, 0, 0, 1, 1, 1, 2, 2, 2};
  assert_int_equal(centre_code(vramp, 8, 1.0), 1 + 16 + 32 + 64 + 128);

  /* a bright top-right corner seen only by the diagonal p = 1 at offset
  ** (-0.70711, 0.70711): dr = 0.29289, dc = 0.70711, so
  **   v = dc (1 - dr) * 1 + (1 - dc) dr * c = 0.50000455 + 0.08578455 c
  ** and bit 1 is set exactly when v >= c, i.e. c <= 0.546922. */
  float corner[9] = {0, 0, 1, 0, 0, 0, 0, 0, 0};
  const double dc = 0.70711, dr = 1 - 0.70711;
  static const float centres[] = {0.54f, 0.5469f, 0.5470f, 0.555f, 0.1f};
  for(size_t k = 0; k < sizeof(centres) / sizeof(centres[0]); k++){
    corner[4] = centres[k];
    double v = dc * (1 - dr) + (1 - dc) * dr * centres[k];
    uint32_t want = v >= centres[k] ? 2u : 0u;
    assert_int_equal(centre_code(corner, 8, 1.0), want);
  }
  corner[4] = 0.54f;
  assert_int_equal(centre_code(corner, 8, 1.0), 2);
  corner[4] = 0.555f;
  assert_int_equal(centre_code(corner, 8, 1.0), 0);

  /* a 1x1 image: every point reads the pixel itself */
  float one = -0.7f;
  uint32_t c1;
  lbp_codes(&c1, &one, 1, 1, 8, 1.0);
  assert_int_equal(c1, 255);
  lbp_codes(&c1, &one, 1, 1, 32, 3.0);
  assert_true(c1 == 0xFFFFFFFFu);
}

static void test_hamming_box_top(void **state) {
  (void)state;
  uint32_t a[4] = {0xB, 0, 255, 0xFFFFFFFFu}, b[4] = {0x6, 0, 0, 0};
  float ham[4];
  lbp_hamming(ham, a, b, 4);
  assert_true(ham[0] == 3 && ham[1] == 0 && ham[2] == 8 && ham[3] == 32);

  /* box 3x3 of a 9 in the middle: every window holds it once */
  float in[9] = {0}, out[9];
  in[4] = 9;
  lbp_box(out, in, 3, 3, 3);
  for(int i = 0; i < 9; i++) assert_true(out[i] == 1.0f);
  /* a 9 in the corner: replicated into 4, 2 or 1 cells of the windows near it */
  memset(in, 0, sizeof(in));
  in[0] = 9;
  lbp_box(out, in, 3, 3, 3);
  static const float want[9] = {4, 2, 0, 2, 1, 0, 0, 0, 0};
  for(int i = 0; i < 9; i++) assert_true(out[i] == want[i]);
  /* window 1 copies; window 5 on 3x3: the corner counted 9 times at (0,0) */
  lbp_box(out, in, 3, 3, 1);
  assert_memory_equal(out, in, sizeof(in));
  lbp_box(out, in, 3, 3, 5);
  assert_true(fabsf(out[0] - 81.0f / 25) < 1e-6f);
  assert_true(fabsf(out[8] - 9.0f / 25) < 1e-6f);

  /* top means of 1..100 shuffled */
  float v[100];
  rng r;
  rng_seed(&r, 5);
  int idx[100];
  for(int i = 0; i < 100; i++) idx[i] = i;
  rng_shuffle(&r, idx, 100);
  static const double tops[][2] = {{0.05, 98}, {0.01, 100}, {1, 50.5}, {1e-4, 100},
                                   {0.011, 99.5}, {0.5, 75.5}};
  for(size_t k = 0; k < sizeof(tops) / sizeof(tops[0]); k++){
    for(int i = 0; i < 100; i++) v[i] = (float)(idx[i] + 1);
    assert_true(lbp_top_mean(v, 100, tops[k][0]) == tops[k][1]);
  }
  assert_true(lbp_top_mean(v, 0, 0.5) == 0);

  /* the quickselect against a full sort, on values with many repeats */
  for(int trial = 0; trial < 200; trial++){
    size_t n = 1 + rng_below(&r, 300);
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    int levels = 1 + (int)rng_below(&r, 12);
    for(size_t i = 0; i < n; i++) x[i] = (float)rng_below(&r, (uint64_t)levels) / 9.0f;
    double top = rng_uniform(&r);
    if( top < 1e-4 ) top = 1e-4;
    /* reference: insertion sort, descending, sum the first k */
    memcpy(y, x, n * sizeof(float));
    for(size_t i = 1; i < n; i++)
      for(size_t j = i; j > 0 && y[j] > y[j - 1]; j--){ float t = y[j]; y[j] = y[j - 1]; y[j - 1] = t; }
    size_t kk = (size_t)ceil(top * (double)n);
    if( kk < 1 ) kk = 1;
    if( kk > n ) kk = n;
    double s = 0;
    for(size_t i = 0; i < kk; i++) s += y[i];
    double got = lbp_top_mean(x, n, top);
    assert_true(fabs(got - s / (double)kk) <= 1e-12);
    free(x);
    free(y);
  }
}

static st_file load_golden(const char *path, unsigned char **buf) {
  size_t n;
  *buf = slurp(path, &n);
  st_file g;
  anom_err e;
  assert_int_equal(st_parse(&g, *buf, n, NULL, &e), ANOM_OK);
  return g;
}

/* Every function against the numpy oracle, bit for bit. */
static void test_lbp_golden(void **state) {
  (void)state;
  unsigned char *buf;
  st_file g = load_golden("tests/data/golden-defectgan-lbp.safetensors", &buf);
  static const struct { const char *name; int h, w; } imgs[] = {
    {"g1", 13, 17}, {"g2", 13, 17}, {"g3", 1, 1}, {"g4", 2, 3}, {"rgb_grey", 9, 11}};
  static const struct { int p; double r; const char *tag; } set[] = {
    {8, 1.0, "P8R1"}, {4, 1.0, "P4R1"}, {16, 2.0, "P16R2"}, {8, 2.5, "P8R2.5"},
    {12, 1.5, "P12R1.5"}, {24, 3.0, "P24R3"}};
  /* the luma */
  float *rgb = golden(&g, "rgb", NULL), *grey_gold = golden(&g, "rgb_grey", NULL);
  float grey[99];
  lbp_grey(grey, rgb, 3, 9, 11);
  assert_memory_equal(grey, grey_gold, sizeof(grey));
  /* 1 channel copies */
  lbp_grey(grey, grey_gold, 1, 9, 11);
  assert_memory_equal(grey, grey_gold, sizeof(grey));
  int checked = 0;
  for(size_t i = 0; i < sizeof(imgs) / sizeof(imgs[0]); i++){
    float *im = golden(&g, imgs[i].name, NULL);
    size_t hw = (size_t)imgs[i].h * imgs[i].w;
    uint32_t *codes = malloc(hw * sizeof(uint32_t));
    for(size_t s = 0; s < sizeof(set) / sizeof(set[0]); s++){
      char name[64];
      snprintf(name, sizeof(name), "codes.%s.%s", imgs[i].name, set[s].tag);
      float *want = golden(&g, name, NULL);
      lbp_codes(codes, im, imgs[i].h, imgs[i].w, set[s].p, set[s].r);
      for(size_t k = 0; k < hw; k++){
        if( (float)codes[k] != want[k] )
          fprintf(stderr, "%s[%zu]: ours %u, oracle %.0f\n", name, k, codes[k], want[k]);
        assert_true((float)codes[k] == want[k]);
      }
      checked += (int)hw;
      free(want);
    }
    free(codes);
    free(im);
  }
  /* Hamming map, boxes, top means */
  float *g1 = golden(&g, "g1", NULL), *g2 = golden(&g, "g2", NULL);
  uint32_t ca[221], cb[221];
  float ham[221], box[221];
  lbp_codes(ca, g1, 13, 17, 8, 1.0);
  lbp_codes(cb, g2, 13, 17, 8, 1.0);
  lbp_hamming(ham, ca, cb, 221);
  float *ham_gold = golden(&g, "ham", NULL);
  assert_memory_equal(ham, ham_gold, sizeof(ham));
  for(int win = 1; win <= 5; win += 2){
    char name[16];
    snprintf(name, sizeof(name), "box%d", win);
    float *want = golden(&g, name, NULL);
    lbp_box(box, ham, 13, 17, win);
    assert_memory_equal(box, want, sizeof(box));
    free(want);
  }
  int64_t ntop;
  float *tops = golden(&g, "tops", &ntop), *means = golden(&g, "top_mean", NULL);
  float *box3 = golden(&g, "box3", NULL);
  for(int64_t k = 0; k < ntop; k++){
    memcpy(box, box3, sizeof(box));
    double got = lbp_top_mean(box, 221, tops[k]);
    assert_true(fabs(got - means[k]) <= 1e-6 * fmax(1, fabs(means[k])));
  }
  printf("# LBP against the numpy oracle: %d codes, Hamming map, 3 boxes, %d top means "
         "bit for bit\n", checked, (int)ntop);
  free(rgb); free(grey_gold); free(g1); free(g2); free(ham_gold); free(tops); free(means);
  free(box3);
  st_free(&g);
  free(buf);
}

/* ---- the synthesiser ------------------------------------------------------ */

static void test_defects_golden(void **state) {
  (void)state;
  unsigned char *buf;
  st_file g = load_golden("tests/data/golden-defectgan-defects.safetensors", &buf);
  static const char *const cases[] = {"all", "block", "line", "noise", "shift", "rgb", "p05"};
  int images = 0, drawn = 0;
  for(size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++){
    char name[64];
    /* the case's options: JSON metadata under its name */
    const char *js = st_meta(&g, cases[k]);
    assert_non_null(js);
    cJSON *o = cJSON_Parse(js);
    assert_non_null(o);
    defect_opts d;
    d.p = cJSON_GetObjectItem(o, "p")->valuedouble;
    d.max = cJSON_GetObjectItem(o, "max")->valueint;
    d.size_min = cJSON_GetObjectItem(o, "size_min")->valuedouble;
    d.size_max = cJSON_GetObjectItem(o, "size_max")->valuedouble;
    assert_int_equal(defects_parse_kinds(cJSON_GetObjectItem(o, "kinds")->valuestring,
                                         &d.kinds), 0);
    const cJSON *shape = cJSON_GetObjectItem(o, "shape");
    int c = cJSON_GetArrayItem(shape, 0)->valueint, h = cJSON_GetArrayItem(shape, 1)->valueint;
    int w = cJSON_GetArrayItem(shape, 2)->valueint;
    rng r;
    rng_seed(&r, (uint64_t)cJSON_GetObjectItem(o, "seed")->valuedouble);
    cJSON_Delete(o);
    int64_t numel;
    snprintf(name, sizeof(name), "%s.clean", cases[k]);
    float *x = golden(&g, name, &numel);
    snprintf(name, sizeof(name), "%s.defects", cases[k]);
    float *want = golden(&g, name, NULL);
    snprintf(name, sizeof(name), "%s.mask", cases[k]);
    float *mask_gold = golden(&g, name, NULL);
    snprintf(name, sizeof(name), "%s.count", cases[k]);
    float *count = golden(&g, name, NULL);
    size_t img = (size_t)c * h * w, hw = (size_t)h * w;
    int n = (int)(numel / (int64_t)img);
    uint8_t *mask = malloc(hw);
    for(int i = 0; i < n; i++){
      memset(mask, 0, hw);
      int got = defects_apply(x + i * img, c, h, w, &d, &r, mask);
      assert_int_equal(got, (int)count[i]);
      for(size_t j = 0; j < img; j++){
        if( x[i * img + j] != want[i * img + j] )
          fprintf(stderr, "%s image %d [%zu]: ours %.9g, reference %.9g\n", cases[k], i, j,
                  x[i * img + j], want[i * img + j]);
        assert_true(x[i * img + j] == want[i * img + j]);
      }
      for(size_t j = 0; j < hw; j++) assert_int_equal(mask[j], (int)mask_gold[i * hw + j]);
      images++;
      drawn += got;
    }
    free(mask); free(x); free(want); free(mask_gold); free(count);
  }
  printf("# synthesiser against the Python replay: %d images, %d defects, bit for bit\n",
         images, drawn);
  st_free(&g);
  free(buf);
}

#define GUARD 64
#define SENTINEL 12345.0f

/* A (C, H, W) image inside a buffer with GUARD sentinels either side. */
static float *guarded(int c, int h, int w, float value) {
  size_t img = (size_t)c * h * w;
  float *b = malloc((img + 2 * GUARD) * sizeof(float));
  for(size_t i = 0; i < img + 2 * GUARD; i++) b[i] = SENTINEL;
  for(size_t i = 0; i < img; i++) b[GUARD + i] = value;
  return b;
}

static void check_guard(const float *b, size_t img) {
  for(int i = 0; i < GUARD; i++){
    assert_true(b[i] == SENTINEL);
    assert_true(b[GUARD + img + i] == SENTINEL);
  }
}

static void test_defects_properties(void **state) {
  (void)state;
  defect_opts o;
  defect_opts_default(&o);
  assert_true(o.p == 0.9 && o.max == 3 && o.size_min == 0.05 && o.size_max == 0.3
              && o.kinds == DEFECT_ALL);
  static const int shapes[][3] = {{1, 32, 32}, {3, 16, 16}, {1, 7, 29}, {3, 1, 1}, {1, 64, 5}};
  int changed_images = 0, images = 0;
  for(size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++){
    int c = shapes[s][0], h = shapes[s][1], w = shapes[s][2];
    size_t img = (size_t)c * h * w, hw = (size_t)h * w;
    for(uint64_t seed = 1; seed <= 60; seed++){
      defect_opts d = o;
      d.p = 1;
      d.max = 5;
      d.size_max = seed % 2 ? 1.0 : 0.3;
      /* values at the edges of the range, so shifts and noise must clamp */
      float base = seed % 3 == 0 ? 1.0f : seed % 3 == 1 ? -1.0f : 0.25f;
      float *a = guarded(c, h, w, base), *b = guarded(c, h, w, base);
      uint8_t *mask = calloc(hw + 2 * GUARD, 1), *mask2 = calloc(hw, 1);
      memset(mask, 7, GUARD);
      memset(mask + GUARD + hw, 7, GUARD);
      rng r1, r2;
      rng_seed(&r1, seed);
      rng_seed(&r2, seed);
      int k1 = defects_apply(a + GUARD, c, h, w, &d, &r1, mask + GUARD);
      int k2 = defects_apply(b + GUARD, c, h, w, &d, &r2, mask2);
      /* deterministic, the rngs left in the same state */
      assert_int_equal(k1, k2);
      assert_memory_equal(a, b, (img + 2 * GUARD) * sizeof(float));
      assert_memory_equal(mask + GUARD, mask2, hw);
      assert_true(rng_next(&r1) == rng_next(&r2));
      assert_true(k1 >= 1 && k1 <= 5);
      check_guard(a, img);
      for(int i = 0; i < GUARD; i++){
        assert_int_equal(mask[i], 7);
        assert_int_equal(mask[GUARD + hw + i], 7);
      }
      int changed = 0;
      for(size_t i = 0; i < img; i++){
        float v = a[GUARD + i];
        assert_true(v >= -1.0f && v <= 1.0f);
        if( v != base ){
          changed = 1;
          assert_int_equal(mask[GUARD + i % hw], 1);   /* only inside the mask */
        }
      }
      changed_images += changed;
      images++;
      free(a); free(b); free(mask); free(mask2);
    }
  }
  /* a defect can repaint a pixel with its own value (a shift clamped at the
  ** edge, a block of the same grey) but not often */
  printf("# synthesiser: %d of %d images changed\n", changed_images, images);
  assert_true(changed_images >= images * 9 / 10);

  /* another seed, another image */
  {
    float a[256], b[256];
    for(int i = 0; i < 256; i++) a[i] = b[i] = 0;
    defect_opts d = o;
    d.p = 1;
    rng r1, r2;
    rng_seed(&r1, 1);
    rng_seed(&r2, 2);
    defects_apply(a, 1, 16, 16, &d, &r1, NULL);
    defects_apply(b, 1, 16, 16, &d, &r2, NULL);
    assert_true(memcmp(a, b, sizeof(a)) != 0);
  }

  /* each kind alone changes pixels of a 0 image, every time */
  static const unsigned kinds[] = {DEFECT_BLOCK, DEFECT_LINE, DEFECT_NOISE, DEFECT_SHIFT};
  for(int k = 0; k < 4; k++){
    int min_changed = 1 << 30;
    for(uint64_t seed = 1; seed <= 50; seed++){
      float x[32 * 32] = {0};
      defect_opts d = o;
      d.p = 1;
      d.kinds = kinds[k];
      rng r;
      rng_seed(&r, seed);
      assert_true(defects_apply(x, 1, 32, 32, &d, &r, NULL) >= 1);
      int changed = 0;
      for(int i = 0; i < 32 * 32; i++) changed += x[i] != 0;
      if( changed < min_changed ) min_changed = changed;
    }
    assert_true(min_changed >= 1);
  }

  /* p = 0: nothing changes, one draw per image; p = 1: always something */
  {
    float x[3 * 8 * 8], keep[3 * 8 * 8];
    for(int i = 0; i < 3 * 64; i++) keep[i] = x[i] = (float)sin(i);
    defect_opts d = o;
    d.p = 0;
    rng r, q;
    rng_seed(&r, 9);
    rng_seed(&q, 9);
    uint8_t mask[64] = {0};
    for(int t = 0; t < 100; t++){
      assert_int_equal(defects_apply(x, 3, 8, 8, &d, &r, mask), 0);
      rng_uniform(&q);
    }
    assert_memory_equal(x, keep, sizeof(x));
    for(int i = 0; i < 64; i++) assert_int_equal(mask[i], 0);
    assert_true(rng_next(&r) == rng_next(&q));
    d.p = 1;
    for(int t = 0; t < 100; t++) assert_true(defects_apply(x, 3, 8, 8, &d, &r, NULL) >= 1);
  }

  /* invalid options paint nothing and draw nothing */
  {
    float x[16] = {0};
    rng r, q;
    rng_seed(&r, 3);
    rng_seed(&q, 3);
    defect_opts bad[4] = {o, o, o, o};
    bad[0].max = 0;
    bad[1].kinds = 0;
    bad[2].size_min = 0.5; bad[2].size_max = 0.4;
    bad[3].size_max = 1.5;
    for(int k = 0; k < 4; k++)
      assert_int_equal(defects_apply(x, 1, 4, 4, &bad[k], &r, NULL), -1);
    for(int i = 0; i < 16; i++) assert_true(x[i] == 0);
    assert_true(rng_next(&r) == rng_next(&q));
  }
}

static void test_defect_kinds(void **state) {
  (void)state;
  static const struct { const char *s; int rc; unsigned kinds; } cases[] = {
    {"all", 0, DEFECT_ALL}, {"block", 0, DEFECT_BLOCK}, {"block,line", 0, 3},
    {" noise , shift ", 0, 12}, {"shift,block,block", 0, 9},
    {"line,noise,shift,block", 0, 15}, {"", -1, 0}, {"blocks", -1, 0},
    {"block,,line", -1, 0}, {"all,block", -1, 0}, {"block line", -1, 0},
    {"Block", -1, 0}, {"block,", -1, 0}};
  for(size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++){
    unsigned kinds = 99;
    int rc = defects_parse_kinds(cases[k].s, &kinds);
    if( rc != cases[k].rc ) fprintf(stderr, "'%s': rc %d\n", cases[k].s, rc);
    assert_int_equal(rc, cases[k].rc);
    if( rc == 0 ) assert_int_equal(kinds, cases[k].kinds);
    else assert_int_equal(kinds, 99);
  }
  assert_int_equal(defects_parse_kinds(NULL, NULL), -1);
  char buf[32];
  defects_kinds_name(DEFECT_ALL, buf, sizeof(buf));
  assert_string_equal(buf, "all");
  defects_kinds_name(DEFECT_BLOCK | DEFECT_NOISE, buf, sizeof(buf));
  assert_string_equal(buf, "block,noise");
  defects_kinds_name(DEFECT_SHIFT, buf, sizeof(buf));
  assert_string_equal(buf, "shift");
  /* every set survives the round trip */
  for(unsigned s = 1; s <= 15; s++){
    unsigned back;
    defects_kinds_name(s, buf, sizeof(buf));
    assert_int_equal(defects_parse_kinds(buf, &back), 0);
    assert_int_equal(back, s);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_lbp_patches),
    cmocka_unit_test(test_hamming_box_top),
    cmocka_unit_test(test_lbp_golden),
    cmocka_unit_test(test_defects_golden),
    cmocka_unit_test(test_defects_properties),
    cmocka_unit_test(test_defect_kinds),
  };
  return cmocka_run_group_tests_name("lbp", tests, NULL, NULL);
}
