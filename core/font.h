/*
** font.h - a small built-in 5x7 bitmap font for writing labels into pictures.
**
** Every printable ASCII character (32..126) has a glyph 5 pixels wide and 7
** high, drawn in a cell FONT_ADVANCE x FONT_LINE pixels (at scale 1) so that
** strings laid out by those steps keep a one-pixel gap between characters and
** two between lines. Only glyph pixels are written (no background), so text
** goes over whatever is already in the image.
**
**   unsigned char red[3] = {200, 0, 0};
**   int tw = font_text_width("AUROC 0.9790", 2);      12 * 6 * 2 = 144
**   font_draw(px, w, h, 3, (w - tw) / 2, 10, "AUROC 0.9790", 2, red);
**
** No allocation and no state: the glyphs are constant data in font.c.
*/
#ifndef ANOM_FONT_H
#define ANOM_FONT_H

#define FONT_ADVANCE 6   /* pixels per character at scale 1 (5-pixel glyph + 1 gap) */
#define FONT_LINE 9      /* pixels per line at scale 1 (7-pixel glyph + 2) */

/*
** Width in pixels of s drawn at scale (>= 1): strlen(s) * FONT_ADVANCE * scale
** (0 for "", for NULL and for scale < 1; INT_MAX if it would not fit an int).
*/
int font_text_width(const char *s, int scale);

/*
** Draw s into an (h, w, c) interleaved byte image (c = 1, 3 or 4) with the
** glyph cell's top-left at (x, y) (may be negative or beyond the image:
** clipped, never writes outside), each glyph pixel a scale x scale block of
** color[0..c). Bytes outside 32..126 draw as '?'. Draws nothing when scale
** < 1, w, h or c < 1, or px, s or color is NULL.
*/
void font_draw(unsigned char *px, int w, int h, int c, int x, int y, const char *s,
               int scale, const unsigned char *color);

#endif /* ANOM_FONT_H */
