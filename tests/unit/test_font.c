/*
** test_font.c - the built-in 5x7 bitmap font (core/font.c).
**
** Width arithmetic; the exact pixels of '1', 'A', '.' and '-' at scale 1 and
** of '1' and '-' at scale 2 against patterns drawn by hand here (and 'A' at
** scale 2 against its scale-1 pattern blown up 2x2); the advance between
** characters; clipping: text drawn partly outside an image must equal the
** matching crop of the same text drawn in a larger image, never touch the
** guard bytes around the image, and text entirely outside changes nothing;
** channels 1, 3 and 4 write the colour into exactly the glyph pixels and
** leave the rest alone; bytes outside 32..126 draw as '?'; every printable
** glyph but space sets pixels, stays inside its 5x7 cell and differs from
** every other glyph.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "core/font.h"

#define GUARD 64
#define GUARD_BYTE 0xA5

/* Render s at (x, y) into a fresh w x h grey image (0 = off, 1 = on). */
static void render(unsigned char *img, int w, int h, int x, int y, const char *s,
                   int scale) {
  unsigned char on = 1;
  memset(img, 0, (size_t)w * h);
  font_draw(img, w, h, 1, x, y, s, scale, &on);
}

/* Compare a rendered grey image with rows of '#' (on) and '.' (off). */
static void expect_pattern(const unsigned char *img, int w, int h,
                           const char *const *rows) {
  for(int y = 0; y < h; y++){
    assert_int_equal((int)strlen(rows[y]), w);
    for(int x = 0; x < w; x++){
      int want = rows[y][x] == '#';
      if( img[y * w + x] != want )
        fprintf(stderr, "pixel (%d, %d): got %d, want %d\n", x, y, img[y * w + x], want);
      assert_int_equal(img[y * w + x], want);
    }
  }
}

static void test_width(void **state) {
  (void)state;
  assert_int_equal(font_text_width("", 1), 0);
  assert_int_equal(font_text_width("", 5), 0);
  assert_int_equal(font_text_width("A", 1), 6);
  assert_int_equal(font_text_width("A", 1), FONT_ADVANCE);
  assert_int_equal(font_text_width("hello", 2), 60);
  assert_int_equal(font_text_width("0.9790", 3), 108);
  assert_int_equal(font_text_width("\x01\xff", 1), 12);  /* every byte counts */
  assert_int_equal(font_text_width(NULL, 1), 0);
  assert_int_equal(font_text_width("abc", 0), 0);
  assert_int_equal(font_text_width("abc", -2), 0);
  assert_int_equal(font_text_width("ab", INT_MAX / 12), (INT_MAX / 12) * 12);
  assert_int_equal(font_text_width("abc", INT_MAX / 12), INT_MAX);  /* saturates */
  assert_int_equal(FONT_LINE, 9);
}

/* Each glyph in a 7 x 9 window, drawn at (1, 1): a blank frame shows that
** nothing lands outside the 5x7 glyph. */
static void test_glyphs_scale1(void **state) {
  (void)state;
  unsigned char img[9 * 7];
  static const char *const one[] = {
    ".......",
    "...#...",
    "..##...",
    "...#...",
    "...#...",
    "...#...",
    "...#...",
    "..###..",
    ".......",
  };
  render(img, 7, 9, 1, 1, "1", 1);
  expect_pattern(img, 7, 9, one);
  static const char *const a[] = {
    ".......",
    "..###..",
    ".#...#.",
    ".#...#.",
    ".#####.",
    ".#...#.",
    ".#...#.",
    ".#...#.",
    ".......",
  };
  render(img, 7, 9, 1, 1, "A", 1);
  expect_pattern(img, 7, 9, a);
  static const char *const dot[] = {
    ".......",
    ".......",
    ".......",
    ".......",
    ".......",
    ".......",
    "..##...",
    "..##...",
    ".......",
  };
  render(img, 7, 9, 1, 1, ".", 1);
  expect_pattern(img, 7, 9, dot);
  static const char *const dash[] = {
    ".......",
    ".......",
    ".......",
    ".......",
    ".#####.",
    ".......",
    ".......",
    ".......",
    ".......",
  };
  render(img, 7, 9, 1, 1, "-", 1);
  expect_pattern(img, 7, 9, dash);

  /* the advance: "-1." puts each glyph FONT_ADVANCE further right */
  unsigned char row[9 * 19];
  static const char *const seq[] = {
    "...................",
    ".........#.........",
    "........##.........",
    ".........#.........",
    ".#####...#.........",
    ".........#.........",
    ".........#....##...",
    "........###...##...",
    "...................",
  };
  render(row, 19, 9, 1, 1, "-1.", 1);
  expect_pattern(row, 19, 9, seq);
}

static void test_glyphs_scale2(void **state) {
  (void)state;
  unsigned char img[16 * 12];
  static const char *const one[] = {
    "............",
    "......##....",
    "......##....",
    "....####....",
    "....####....",
    "......##....",
    "......##....",
    "......##....",
    "......##....",
    "......##....",
    "......##....",
    "......##....",
    "......##....",
    "....######..",
    "....######..",
    "............",
  };
  render(img, 12, 16, 2, 1, "1", 2);
  expect_pattern(img, 12, 16, one);
  static const char *const dash[] = {
    "............",
    "............",
    "............",
    "............",
    "............",
    "............",
    "............",
    "..##########",
    "..##########",
    "............",
    "............",
    "............",
    "............",
    "............",
    "............",
    "............",
  };
  render(img, 12, 16, 2, 1, "-", 2);
  expect_pattern(img, 12, 16, dash);

  /* 'A' at scale 3: every pixel of the scale-1 glyph becomes a 3x3 block */
  unsigned char small[7 * 5], big[21 * 15];
  render(small, 5, 7, 0, 0, "A", 1);
  render(big, 15, 21, 0, 0, "A", 3);
  for(int y = 0; y < 21; y++)
    for(int x = 0; x < 15; x++)
      assert_int_equal(big[y * 15 + x], small[(y / 3) * 5 + x / 3]);
  assert_int_equal(small[0], 0);
  assert_int_equal(small[1], 1);
}

/* An image of w x h x c bytes with GUARD guard bytes either side. */
typedef struct guarded {
  unsigned char buf[GUARD + 40 * 30 * 4 + GUARD];
  unsigned char *px;
} guarded;

static void guarded_init(guarded *g, size_t n, unsigned char fill) {
  memset(g->buf, GUARD_BYTE, sizeof(g->buf));
  g->px = g->buf + GUARD;
  memset(g->px, fill, n);
}

static void guarded_check(const guarded *g, size_t n) {
  for(size_t i = 0; i < GUARD; i++) assert_int_equal(g->buf[i], GUARD_BYTE);
  for(size_t i = GUARD + n; i < sizeof(g->buf); i++) assert_int_equal(g->buf[i], GUARD_BYTE);
}

static void test_clipping(void **state) {
  (void)state;
  const int w = 13, h = 11;
  const char *text = "Ag?1|";
  unsigned char colour[3] = {200, 30, 9};
  /* reference: the text drawn whole into a 104 x 64 canvas at (40, 25),
  ** large enough for every (i - x, j - y) below */
  enum { RW = 104, RH = 64, OX = 40, OY = 25 };
  for(int scale = 1; scale <= 2; scale++){
    static unsigned char ref[RH * RW];
    render(ref, RW, RH, OX, OY, text, scale);
    for(int y = -25; y <= 14; y++)
      for(int x = -40; x <= 16; x++){
        guarded g;
        size_t n = (size_t)w * h * 3;
        guarded_init(&g, n, 0);
        font_draw(g.px, w, h, 3, x, y, text, scale, colour);
        guarded_check(&g, n);
        /* image pixel (i, j) is text pixel (i - x, j - y), i.e. ref pixel
        ** (OX + i - x, OY + j - y) */
        for(int j = 0; j < h; j++)
          for(int i = 0; i < w; i++){
            int on = ref[(OY + j - y) * RW + OX + i - x];
            const unsigned char *p = g.px + ((size_t)j * w + i) * 3;
            for(int k = 0; k < 3; k++) assert_int_equal(p[k], on ? colour[k] : 0);
          }
      }
  }

  /* entirely outside: nothing changes, inside or out */
  static const int outside[][2] = {
    {-30, 0}, {13, 0}, {0, -7}, {0, 11}, {-60, -60}, {100, 100}, {INT_MIN, 0},
    {0, INT_MIN}, {INT_MAX, INT_MAX}, {INT_MAX, 0}, {0, INT_MAX}, {-5, 0}};
  for(size_t t = 0; t < sizeof(outside) / sizeof(outside[0]); t++){
    guarded g;
    size_t n = (size_t)w * h * 3;
    guarded_init(&g, n, 17);
    /* "Ag?1|" is 30 wide: at x = -30 it ends at the left edge; "|" alone at
    ** x = -5 has its one column at -3 */
    font_draw(g.px, w, h, 3, outside[t][0], outside[t][1],
              outside[t][0] == -5 ? "|" : text, 1, colour);
    guarded_check(&g, n);
    for(size_t i = 0; i < n; i++) assert_int_equal(g.px[i], 17);
  }
  /* just inside at each edge: something is drawn ("MMMMM" is 30 wide with
  ** its last column at 28, and 'M' is set in every corner of its 5x7) */
  static const int inside[][2] = {{-28, 0}, {12, 0}, {0, -6}, {0, 10}};
  for(size_t t = 0; t < sizeof(inside) / sizeof(inside[0]); t++){
    guarded g;
    size_t n = (size_t)w * h;
    guarded_init(&g, n, 0);
    unsigned char on = 1;
    font_draw(g.px, w, h, 1, inside[t][0], inside[t][1], "MMMMM", 1, &on);
    guarded_check(&g, n);
    int count = 0;
    for(size_t i = 0; i < n; i++) count += g.px[i];
    assert_true(count > 0);
  }

  /* huge scales and offsets clip without overflow: "#" at scale INT_MAX from
  ** (0, 0) is the one block of its top-left pixel... which is off in '#' (row
  ** 0 is ".#.#."), so the image stays blank; '|' (column 2) stays blank too,
  ** while 'M' (top-left on) fills everything. */
  {
    guarded g;
    size_t n = (size_t)w * h * 4;
    unsigned char c4[4] = {1, 2, 3, 4};
    guarded_init(&g, n, 0);
    font_draw(g.px, w, h, 4, 0, 0, "#|", INT_MAX, c4);
    guarded_check(&g, n);
    for(size_t i = 0; i < n; i++) assert_int_equal(g.px[i], 0);
    font_draw(g.px, w, h, 4, 0, 0, "M", INT_MAX, c4);
    guarded_check(&g, n);
    for(size_t i = 0; i < n; i++) assert_int_equal(g.px[i], c4[i % 4]);
    guarded_init(&g, n, 0);
    font_draw(g.px, w, h, 4, INT_MIN, INT_MIN, "MMMM", INT_MAX, c4);
    guarded_check(&g, n);
    font_draw(g.px, w, h, 4, -3, -2, "MMMM", 1 << 20, c4);
    guarded_check(&g, n);
  }

  /* bad arguments draw nothing */
  {
    guarded g;
    size_t n = (size_t)w * h;
    unsigned char on = 1;
    guarded_init(&g, n, 0);
    font_draw(g.px, w, h, 1, 0, 0, "M", 0, &on);
    font_draw(g.px, w, h, 1, 0, 0, "M", -1, &on);
    font_draw(g.px, w, h, 1, 0, 0, NULL, 1, &on);
    font_draw(g.px, w, h, 1, 0, 0, "M", 1, NULL);
    font_draw(g.px, 0, h, 1, 0, 0, "M", 1, &on);
    font_draw(g.px, w, 0, 1, 0, 0, "M", 1, &on);
    font_draw(g.px, w, h, 0, 0, 0, "M", 1, &on);
    font_draw(NULL, w, h, 1, 0, 0, "M", 1, &on);
    guarded_check(&g, n);
    for(size_t i = 0; i < n; i++) assert_int_equal(g.px[i], 0);
  }
}

static void test_channels(void **state) {
  (void)state;
  const int w = 40, h = 30;
  const char *text = "Roc 0.97";
  static unsigned char mask[30 * 40];
  render(mask, w, h, 2, 3, text, 1);
  int count = 0;
  for(int i = 0; i < w * h; i++) count += mask[i];
  assert_true(count > 50);
  static const int cs[] = {1, 3, 4};
  const unsigned char colour[4] = {250, 128, 1, 77};
  for(size_t t = 0; t < 3; t++){
    int c = cs[t];
    guarded g;
    size_t n = (size_t)w * h * c;
    guarded_init(&g, n, 9);
    font_draw(g.px, w, h, c, 2, 3, text, 1, colour);
    guarded_check(&g, n);
    for(int i = 0; i < w * h; i++)
      for(int k = 0; k < c; k++)
        assert_int_equal(g.px[(size_t)i * c + k], mask[i] ? colour[k] : 9);
  }
}

static void test_unprintable(void **state) {
  (void)state;
  unsigned char want[9 * 8], got[9 * 8];
  render(want, 8, 9, 1, 1, "?", 1);
  const char *odd[] = {"\x7f", "\x80", "\xc8", "\xff", "\x01", "\x1f", "\t", "\n"};
  for(size_t t = 0; t < sizeof(odd) / sizeof(odd[0]); t++){
    render(got, 8, 9, 1, 1, odd[t], 1);
    assert_memory_equal(got, want, sizeof(want));
  }
  /* in a string too, and at scale 2 */
  unsigned char a[18 * 40], b[18 * 40];
  render(a, 40, 18, 0, 0, "x?y", 2);
  render(b, 40, 18, 0, 0, "x\xe9y", 2);
  assert_memory_equal(a, b, sizeof(a));
  /* '~' (126) is a glyph of its own, not '?' */
  render(got, 8, 9, 1, 1, "~", 1);
  assert_memory_not_equal(got, want, sizeof(want));
}

static void test_all_glyphs(void **state) {
  (void)state;
  enum { W = 11, H = 13, X = 3, Y = 3 };
  static unsigned char imgs[95][H * W];
  for(int ch = 32; ch <= 126; ch++){
    char s[2] = {(char)ch, 0};
    unsigned char *img = imgs[ch - 32];
    render(img, W, H, X, Y, s, 1);
    int count = 0;
    for(int y = 0; y < H; y++)
      for(int x = 0; x < W; x++){
        if( !img[y * W + x] ) continue;
        count++;
        if( x < X || x >= X + 5 || y < Y || y >= Y + 7 )
          fprintf(stderr, "'%c' sets (%d, %d) outside its cell\n", ch, x - X, y - Y);
        assert_true(x >= X && x < X + 5 && y >= Y && y < Y + 7);
      }
    if( ch == ' ' ) assert_int_equal(count, 0);
    else{
      if( count == 0 ) fprintf(stderr, "'%c' draws nothing\n", ch);
      assert_true(count > 0);
    }
  }
  /* no two characters share a glyph */
  for(int i = 0; i < 95; i++)
    for(int j = i + 1; j < 95; j++){
      if( memcmp(imgs[i], imgs[j], sizeof(imgs[i])) == 0 )
        fprintf(stderr, "'%c' and '%c' look the same\n", i + 32, j + 32);
      assert_memory_not_equal(imgs[i], imgs[j], sizeof(imgs[i]));
    }
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_width),
    cmocka_unit_test(test_glyphs_scale1),
    cmocka_unit_test(test_glyphs_scale2),
    cmocka_unit_test(test_clipping),
    cmocka_unit_test(test_channels),
    cmocka_unit_test(test_unprintable),
    cmocka_unit_test(test_all_glyphs),
  };
  return cmocka_run_group_tests_name("font", tests, NULL, NULL);
}
