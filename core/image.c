/*
** image.c - image BLOBs in and out: probe, decode, fit to a tensor, encode PNG.
**
** See image.h for the API. The pieces, in file order:
**
**   stb configuration   stb_image (PNG, JPEG, BMP, GIF) and stb_image_resize
**                       compiled here, static, allocating through anom_*.
**   format sniffing     magic bytes -> one of the accepted formats, or a
**                       message naming what was found instead.
**   headers             dimensions and channels from the header alone; PNG
**                       and PNM headers are read here, JPEG, GIF and BMP by
**                       stb's per-format info readers.
**   completeness        a file cut short is refused: JPEG needs its EOI
**                       marker, PNG its IEND chunk, GIF its trailer, BMP and
**                       PNM as many pixel bytes as the header promises.
**   PNM                 binary PGM/PPM (P5/P6, 8 or 16 bit, any maxval) is
**                       decoded here: stb_image 2.27 reads 16-bit samples in
**                       host byte order and ignores maxval.
**   tensors             channel conversion, resampling, padding, scaling.
**   PNG writer          filtered rows, a fixed-Huffman deflate stream and
**                       CRC'd chunks. It is written here rather than taken
**                       from stb_image_write, whose deflate asserts on a
**                       failed allocation and leaks on another.
**   gzip                image_gunzip, on stb_image's inflate.
*/
#include "image.h"
#include "safetensors.h"   /* st_crc32, for gzip trailers */

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------
** stb configuration. Only the formats we accept, memory input only, every
** allocation through anom_*, every symbol static to this file.
*/
#define IMAGE_MAX_SIDE (1 << 24) /* per-side sanity limit, in pixels */

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_MAX_DIMENSIONS IMAGE_MAX_SIDE
/* See stb_malloc below. */
static void *stb_malloc(size_t n);
static void *stb_realloc(void *p, size_t n);
#define STBI_MALLOC(sz) stb_malloc(sz)
#define STBI_REALLOC(p, sz) stb_realloc((p), (sz))
#define STBI_FREE(p) anom_free(p)

/* stb_image 2.27 declares stbi_set_unpremultiply_on_load_thread but defines
** it as stbi__unpremultiply_on_load_thread; with STB_IMAGE_STATIC that is a
** "declared static but never defined" warning. Give both the same name. */
#define stbi_set_unpremultiply_on_load_thread stbi__unpremultiply_on_load_thread

#define STB_IMAGE_RESIZE_STATIC
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#define STBIR_MALLOC(sz, ctx) ((void)(ctx), anom_malloc(sz))
#define STBIR_FREE(p, ctx) ((void)(ctx), anom_free(p))

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wtype-limits"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#endif
#include <stb_image.h>
#include <stb_image_resize.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

/*
** stb_image's allocations. Zeroed, because a JPEG scan may use a Huffman
** table the file never defined, and stb 2.27 then reads the table as it was
** allocated. A failure records stb's "outofmem" reason here, because some
** of its callers (the PNG inflater's first buffer) fail without one.
*/
static void *stb_malloc(size_t n) {
  void *p = anom_calloc(1, n);
  if( !p ) stbi__g_failure_reason = "outofmem";
  return p;
}

static void *stb_realloc(void *p, size_t n) {
  void *q = anom_realloc(p, n);
  if( !q ) stbi__g_failure_reason = "outofmem";
  return q;
}

/* ---------------------------------------------------------------------------
** Format sniffing.
*/
enum { FMT_NONE = 0, FMT_PNG, FMT_JPEG, FMT_BMP, FMT_GIF, FMT_PNM };

static const char *const fmt_names[] = {"unknown", "PNG", "JPEG",
                                         "BMP",     "GIF", "PNM"};

static int is_pnm_space(unsigned char ch) {
  return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\v' || ch == '\f' ||
         ch == '\r';
}

static int sniff(const unsigned char *b, size_t n) {
  static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G',
                                           0x0d, 0x0a, 0x1a, 0x0a};
  if( n >= 8 && memcmp(b, png_sig, 8) == 0 ) return FMT_PNG;
  if( n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff ) return FMT_JPEG;
  if( n >= 2 && b[0] == 'B' && b[1] == 'M' ) return FMT_BMP;
  if( n >= 6 && (memcmp(b, "GIF87a", 6) == 0 || memcmp(b, "GIF89a", 6) == 0) )
    return FMT_GIF;
  if( n >= 3 && b[0] == 'P' && (b[1] == '5' || b[1] == '6') &&
      is_pnm_space(b[2]) )
    return FMT_PNM;
  return FMT_NONE;
}

/* Name a few formats we do not accept, so the message says what it found. */
static const char *name_unsupported(const unsigned char *b, size_t n) {
  if( n >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0 )
    return "WebP";
  if( n >= 4 && (memcmp(b, "II*\0", 4) == 0 || memcmp(b, "MM\0*", 4) == 0) )
    return "TIFF";
  if( n >= 12 && memcmp(b + 4, "ftyp", 4) == 0 )
    return "an ISO media file (HEIC, AVIF or video)";
  if( n >= 12 && memcmp(b, "\0\0\0\x0cjP  ", 8) == 0 ) return "JPEG 2000";
  if( n >= 2 && b[0] == 0xff && b[1] == 0x0a ) return "JPEG XL";
  if( n >= 12 && memcmp(b, "\0\0\0\x0cJXL ", 8) == 0 ) return "JPEG XL";
  if( n >= 4 && memcmp(b, "8BPS", 4) == 0 ) return "Photoshop PSD";
  if( n >= 4 && memcmp(b, "qoif", 4) == 0 ) return "QOI";
  if( n >= 2 && b[0] == '#' && b[1] == '?' ) return "Radiance HDR";
  if( n >= 3 && b[0] == 'P' && b[1] >= '1' && b[1] <= '4' && is_pnm_space(b[2]) )
    return "plain (ASCII) PNM; only binary P5/P6 is accepted";
  if( n >= 3 && b[0] == 'P' && b[1] == '7' && is_pnm_space(b[2]) ) return "PAM";
  return NULL;
}

static int fail_unsupported(const unsigned char *b, size_t n, anom_err *e) {
  const char *what = name_unsupported(b, n);
  char hex[3 * 8 + 1];
  size_t i, k = n < 8 ? n : 8, len = 0;
  if( what ){
    return anom_fail(e, ANOM_EFORMAT,
                     "not a supported image (PNG, JPEG, BMP, GIF, PNM): found %s",
                     what);
  }
  hex[0] = 0;
  for(i = 0; i < k; i++){
    len += (size_t)snprintf(hex + len, sizeof(hex) - len, "%s%02x",
                            i ? " " : "", b[i]);
  }
  return anom_fail(e, ANOM_EFORMAT,
                   "not a supported image (PNG, JPEG, BMP, GIF, PNM): found "
                   "bytes %s%s",
                   hex, n > k ? " ..." : "");
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint32_t le32(const unsigned char *p) {
  return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}
static unsigned le16(const unsigned char *p) { return (unsigned)p[1] << 8 | p[0]; }

/* ---------------------------------------------------------------------------
** Headers read here.
*/

/* PNG: the IHDR chunk, which must come first. */
static int png_header(const unsigned char *b, size_t n, long long *w,
                      long long *h, int *c, anom_err *e) {
  uint32_t x, y;
  if( n < 8 + 8 + 13 + 4 ){
    return anom_fail(e, ANOM_EFORMAT,
                     "truncated PNG file (%zu bytes, the header alone needs 33)",
                     n);
  }
  if( be32(b + 8) != 13 || memcmp(b + 12, "IHDR", 4) != 0 ){
    return anom_fail(e, ANOM_EFORMAT,
                     "corrupt PNG file: the first chunk is not a 13-byte IHDR");
  }
  x = be32(b + 16);
  y = be32(b + 20);
  if( x > 0x7fffffffu || y > 0x7fffffffu ){
    return anom_fail(e, ANOM_EFORMAT,
                     "corrupt PNG file: IHDR size %ux%u is over 2^31-1", x, y);
  }
  switch( b[25] ){
    case 0: *c = 1; break; /* grey */
    case 2: *c = 3; break; /* RGB */
    case 3: *c = 3; break; /* palette */
    case 4: *c = 2; break; /* grey + alpha */
    case 6: *c = 4; break; /* RGBA */
    default:
      return anom_fail(e, ANOM_EFORMAT,
                       "corrupt PNG file: colour type %d, expected 0, 2, 3, 4 "
                       "or 6",
                       b[25]);
  }
  *w = x;
  *h = y;
  return ANOM_OK;
}

/* PNM (binary P5/P6): "P5" ws width ws height ws maxval one-ws data, where
** ws may hold '#' comments running to the end of a line. */
typedef struct pnm_info {
  long long w, h;
  int c;       /* 1 (P5) or 3 (P6) */
  int maxval;  /* 1..65535; samples are 2 bytes big-endian when > 255 */
  size_t off;  /* where the samples start */
} pnm_info;

/* Read one header number at *i; 0 ok, 1 cut short, 2 not a number. */
static int pnm_number(const unsigned char *b, size_t n, size_t *i,
                      long long *out) {
  long long v = 0;
  for(;;){
    while( *i < n && is_pnm_space(b[*i]) ) (*i)++;
    if( *i < n && b[*i] == '#' ){
      while( *i < n && b[*i] != '\n' && b[*i] != '\r' ) (*i)++;
      continue;
    }
    break;
  }
  if( *i >= n ) return 1;
  if( b[*i] < '0' || b[*i] > '9' ) return 2;
  while( *i < n && b[*i] >= '0' && b[*i] <= '9' ){
    if( v < (1LL << 40) ) v = v * 10 + (b[*i] - '0');
    (*i)++;
  }
  *out = v;
  return 0;
}

static int pnm_header(const unsigned char *b, size_t n, pnm_info *p,
                      anom_err *e) {
  static const char *const what[3] = {"width", "height", "maxval"};
  long long v[3];
  size_t i = 2;
  int k;
  p->c = b[1] == '6' ? 3 : 1;
  for(k = 0; k < 3; k++){
    int rc = pnm_number(b, n, &i, &v[k]);
    if( rc == 1 ){
      return anom_fail(e, ANOM_EFORMAT,
                       "truncated PNM file (header cut short before the %s)",
                       what[k]);
    }
    if( rc == 2 ){
      return anom_fail(e, ANOM_EFORMAT,
                       "corrupt PNM file: expected the %s at byte %zu, found "
                       "0x%02x",
                       what[k], i, b[i]);
    }
  }
  if( v[2] < 1 || v[2] > 65535 ){
    return anom_fail(e, ANOM_EFORMAT,
                     "corrupt PNM file: maxval %lld, expected 1..65535", v[2]);
  }
  if( i >= n ){
    return anom_fail(e, ANOM_EFORMAT,
                     "truncated PNM file (no pixel data after the header)");
  }
  if( !is_pnm_space(b[i]) ){
    return anom_fail(e, ANOM_EFORMAT,
                     "corrupt PNM file: expected whitespace after maxval, "
                     "found 0x%02x",
                     b[i]);
  }
  p->w = v[0];
  p->h = v[1];
  p->maxval = (int)v[2];
  p->off = i + 1;
  return ANOM_OK;
}

/*
** JPEG: walk the marker segments and the entropy-coded data after each SOS
** to EOI (FF D9); *eoi says whether it was found (bytes after it are
** allowed). Thumbnails inside APPn segments are skipped by length, so their
** own EOI does not count. The walk also checks each Huffman table (DHT)
** before stb sees it: stb_image 2.27 writes past its tables when the 16
** code counts of one add up to more than 256.
*/
static int jpeg_dht_check(const unsigned char *s, size_t len, size_t avail,
                          size_t at, anom_err *e) {
  size_t p = 0;
  /* tables cut off by the end of the blob are checked too: stb reads zeros
  ** past the end, so the counts that are there are the ones it adds up */
  while( p < len && p < avail ){
    unsigned total = 0;
    size_t i;
    for(i = 1; i <= 16 && p + i < avail; i++) total += s[p + i];
    if( total > 256 ){
      return anom_fail(e, ANOM_EFORMAT,
                       "corrupt JPEG file: Huffman table at byte %zu has %u "
                       "codes, at most 256",
                       at + p, total);
    }
    p += 17 + total;
  }
  if( avail >= len && p != len ){
    return anom_fail(e, ANOM_EFORMAT,
                     "corrupt JPEG file: Huffman table segment at byte %zu "
                     "does not add up",
                     at);
  }
  return ANOM_OK;
}

static int jpeg_walk(const unsigned char *b, size_t n, int *eoi, anom_err *e) {
  size_t p = 2;
  *eoi = 0;
  while( p < n ){
    unsigned m;
    size_t len;
    if( b[p] != 0xff ){ /* stray bytes between segments: skip, as decoders do */
      p++;
      continue;
    }
    while( p < n && b[p] == 0xff ) p++; /* fill bytes */
    if( p >= n ) break;
    m = b[p++];
    if( m == 0xd9 ){
      *eoi = 1;
      break;
    }
    if( m == 0x00 || m == 0x01 || (m >= 0xd0 && m <= 0xd8) ) continue;
    if( n - p < 2 ) break;
    len = (size_t)b[p] << 8 | b[p + 1];
    if( len < 2 ){
      return anom_fail(e, ANOM_EFORMAT,
                       "corrupt JPEG file: segment 0x%02x at byte %zu has "
                       "length %zu",
                       m, p - 2, len);
    }
    if( m == 0xc4 ){
      int rc = jpeg_dht_check(b + p + 2, len - 2, n - p - 2, p + 2, e);
      if( rc ) return rc;
    }
    if( n - p < len ) break;
    p += len;
    if( m == 0xda ){ /* start of scan: entropy-coded data up to a marker */
      while( p < n ){
        const unsigned char *ff = memchr(b + p, 0xff, n - p);
        unsigned q;
        if( !ff || (size_t)(ff - b) + 1 >= n ){
          p = n;
          break;
        }
        p = (size_t)(ff - b);
        q = b[p + 1];
        if( q == 0x00 || (q >= 0xd0 && q <= 0xd7) ){
          p += 2; /* stuffed byte or restart marker */
        }else if( q == 0xff ){
          p += 1;
        }else{
          break; /* a marker: back to the segment loop */
        }
      }
    }
  }
  return ANOM_OK;
}

/* ---------------------------------------------------------------------------
** Probe: format, width, height and channels from the header. Sizes are
** range-checked here (1 .. IMAGE_MAX_SIDE per side).
*/
typedef struct probe_out {
  int fmt;
  int w, h, c;
  pnm_info pnm; /* when fmt == FMT_PNM */
  int jpeg_eoi; /* when fmt == FMT_JPEG: the walk reached EOI */
} probe_out;

static int stb_reason_code(const char *reason) {
  if( reason && strcmp(reason, "outofmem") == 0 ) return ANOM_ENOMEM;
  if( reason && strcmp(reason, "too large") == 0 ) return ANOM_ETOOBIG;
  return ANOM_EFORMAT;
}

/* stb keeps its last failure reason per thread; clear it before each call
** so that a path failing without one is not blamed on an older reason. */
static void stb_clear_reason(void) { stbi__g_failure_reason = NULL; }

static int stb_fail(int fmt, const char *what, anom_err *e) {
  const char *reason = stbi_failure_reason();
  int code = stb_reason_code(reason);
  if( !reason || !reason[0] ) reason = "no reason given";
  if( code == ANOM_ENOMEM ){
    return anom_fail(e, code, "out of memory %s the %s image", what,
                     fmt_names[fmt]);
  }
  if( code == ANOM_ETOOBIG ){
    return anom_fail(e, code, "%s image too large for the decoder (%s)",
                     fmt_names[fmt], reason);
  }
  return anom_fail(e, code, "corrupt %s file: %s", fmt_names[fmt], reason);
}

static int probe_impl(const void *buf, size_t n, probe_out *o, anom_err *e) {
  const unsigned char *b = buf;
  long long w = 0, h = 0;
  int c = 0, rc;
  memset(o, 0, sizeof(*o));
  if( !buf || n == 0 ) return anom_fail(e, ANOM_EFORMAT, "empty blob");
  if( n > (size_t)INT_MAX ){
    return anom_fail(e, ANOM_ETOOBIG,
                     "blob is %zu bytes, over the decoder's limit of %d bytes",
                     n, INT_MAX);
  }
  o->fmt = sniff(b, n);
  switch( o->fmt ){
    case FMT_NONE: return fail_unsupported(b, n, e);
    case FMT_PNG:
      rc = png_header(b, n, &w, &h, &c, e);
      if( rc ) return rc;
      break;
    case FMT_PNM:
      rc = pnm_header(b, n, &o->pnm, e);
      if( rc ) return rc;
      w = o->pnm.w;
      h = o->pnm.h;
      c = o->pnm.c;
      break;
    default: {
      stbi__context s;
      int x = 0, y = 0, ok = 0;
      if( o->fmt == FMT_JPEG ){
        rc = jpeg_walk(b, n, &o->jpeg_eoi, e);
        if( rc ) return rc;
      }
      stb_clear_reason();
      stbi__start_mem(&s, b, (int)n);
      if( o->fmt == FMT_JPEG ) ok = stbi__jpeg_info(&s, &x, &y, &c);
      else if( o->fmt == FMT_GIF ) ok = stbi__gif_info(&s, &x, &y, &c);
      else ok = stbi__bmp_info(&s, &x, &y, &c);
      if( !ok ) return stb_fail(o->fmt, "reading the header of", e);
      w = x;
      h = y;
      if( o->fmt == FMT_BMP ){
        /* stb passes the height on as stored; negative means top-down */
        if( n >= 26 && le32(b + 14) != 12 ) h = (int32_t)le32(b + 22);
        if( h < 0 ) h = -h;
      }
      break;
    }
  }
  if( w < 1 || h < 1 ){
    return anom_fail(e, ANOM_EFORMAT, "corrupt %s file: header says %lldx%lld",
                     fmt_names[o->fmt], w, h);
  }
  if( w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE ){
    return anom_fail(e, ANOM_ETOOBIG,
                     "image is %lldx%lld, over the limit of %d pixels a side",
                     w, h, IMAGE_MAX_SIDE);
  }
  o->w = (int)w;
  o->h = (int)h;
  o->c = c;
  return ANOM_OK;
}

int image_probe(const void *buf, size_t n, int *w, int *h, int *c,
                anom_err *e) {
  probe_out o;
  int rc = probe_impl(buf, n, &o, e);
  if( w ) *w = rc ? 0 : o.w;
  if( h ) *h = rc ? 0 : o.h;
  if( c ) *c = rc ? 0 : o.c;
  return rc;
}

/* ---------------------------------------------------------------------------
** Completeness: refuse a file cut short instead of letting the decoder fill
** the missing part with grey.
*/

/* PNG: walk the chunks to a whole IEND. */
static int png_complete(const unsigned char *b, size_t n, anom_err *e) {
  size_t p = 8;
  for(;;){
    uint32_t len;
    if( n - p < 12 ) break;
    len = be32(b + p);
    if( len > 0x7fffffffu ){
      return anom_fail(e, ANOM_EFORMAT,
                       "corrupt PNG file: chunk at byte %zu has length %u", p,
                       len);
    }
    if( n - p - 12 < len ) break;
    if( memcmp(b + p + 4, "IEND", 4) == 0 ) return ANOM_OK;
    p += 12 + (size_t)len;
  }
  return anom_fail(e, ANOM_EFORMAT,
                   "truncated PNG file (no IEND chunk; the data stops inside "
                   "the chunk at byte %zu)",
                   p);
}

/* GIF: walk the blocks to the trailer byte 0x3B. */
static int gif_skip_subblocks(const unsigned char *b, size_t n, size_t *p) {
  for(;;){
    size_t len;
    if( *p >= n ) return 1;
    len = b[(*p)++];
    if( len == 0 ) return 0;
    if( n - *p < len ) return 1;
    *p += len;
  }
}

static int gif_complete(const unsigned char *b, size_t n, anom_err *e) {
  size_t p = 13;
  if( n < 13 ) goto truncated;
  if( b[10] & 0x80 ) p += (size_t)3 << ((b[10] & 7) + 1);
  for(;;){
    unsigned blk;
    if( p >= n ) goto truncated;
    blk = b[p++];
    if( blk == 0x3b ) return ANOM_OK;
    if( blk == 0x21 ){ /* extension: label, sub-blocks */
      if( p >= n ) goto truncated;
      p++;
      if( gif_skip_subblocks(b, n, &p) ) goto truncated;
    }else if( blk == 0x2c ){ /* image: descriptor, local table, LZW data */
      unsigned flags;
      if( n - p < 10 ) goto truncated;
      flags = b[p + 8];
      p += 9;
      if( flags & 0x80 ) p += (size_t)3 << ((flags & 7) + 1);
      if( p >= n ) goto truncated;
      if( b[p] > 12 ){ /* stb fails on these without saying why */
        return anom_fail(e, ANOM_EFORMAT,
                         "corrupt GIF file: LZW code size %d at byte %zu, at "
                         "most 12",
                         b[p], p);
      }
      p++; /* LZW minimum code size */
      if( gif_skip_subblocks(b, n, &p) ) goto truncated;
    }else{
      return anom_fail(e, ANOM_EFORMAT,
                       "corrupt GIF file: unknown block 0x%02x at byte %zu", blk,
                       p - 1);
    }
  }
truncated:
  return anom_fail(e, ANOM_EFORMAT, "truncated GIF file (no trailer)");
}

/* BMP: the uncompressed pixel rows the header promises must be present. */
static int bmp_complete(const unsigned char *b, size_t n, long long w,
                        long long h, anom_err *e) {
  uint32_t off, hsz, comp = 0;
  unsigned bpp;
  unsigned long long stride, need;
  if( n < 26 ) goto truncated_header;
  off = le32(b + 10);
  hsz = le32(b + 14);
  if( hsz == 12 ){
    bpp = le16(b + 24);
  }else{
    if( n < 34 ) goto truncated_header;
    bpp = le16(b + 28);
    comp = le32(b + 30);
  }
  /* Only uncompressed (0) and bit-field (3) BMPs are read. Refused here, not
  ** left to stb_image 2.27: it reads the field as a signed int, refusing 1,
  ** 2 and 4..INT_MAX but decoding 0x80000000 and above as uncompressed, with
  ** zeros past the end of a short file (found by tests/fuzz/fuzz_image.c). */
  if( comp != 0 && comp != 3 ){
    return anom_fail(e, ANOM_EFORMAT, "unsupported BMP compression %u (RLE and "
                     "embedded JPEG or PNG are refused)", (unsigned)comp);
  }
  stride = ((unsigned long long)w * bpp + 31) / 32 * 4;
  need = (unsigned long long)off + stride * (unsigned long long)h;
  if( need > n ){
    return anom_fail(e, ANOM_EFORMAT,
                     "truncated BMP file (header says %llu bytes, found %zu)",
                     need, n);
  }
  return ANOM_OK;
truncated_header:
  return anom_fail(e, ANOM_EFORMAT,
                   "truncated BMP file (%zu bytes, header cut short)", n);
}

static int pnm_complete(const pnm_info *p, size_t n, anom_err *e) {
  unsigned long long need =
      (unsigned long long)p->w * (unsigned long long)p->h * (unsigned)p->c *
      (p->maxval > 255 ? 2u : 1u);
  if( n - p->off < need ){
    return anom_fail(e, ANOM_EFORMAT,
                     "truncated PNM file (pixel data needs %llu bytes after "
                     "the header, found %zu)",
                     need, n - p->off);
  }
  return ANOM_OK;
}

/* ---------------------------------------------------------------------------
** Decode.
*/

/* PNM samples -> bytes, scaled from 0..maxval to 0..255 with rounding. */
static int pnm_decode(image_u8 *im, const unsigned char *b, const pnm_info *p,
                      anom_err *e) {
  size_t count = (size_t)p->w * (size_t)p->h * (size_t)p->c, i;
  unsigned maxv = (unsigned)p->maxval;
  const unsigned char *src = b + p->off;
  unsigned char *px = anom_malloc(count);
  if( !px ){
    return anom_fail(e, ANOM_ENOMEM, "out of memory decoding a %lldx%lld PNM",
                     p->w, p->h);
  }
  for(i = 0; i < count; i++){
    unsigned v = maxv > 255 ? (unsigned)src[2 * i] << 8 | src[2 * i + 1]
                            : src[i];
    if( v > maxv ) v = maxv;
    px[i] = maxv == 255 ? (unsigned char)v
                        : (unsigned char)((v * 510u + maxv) / (2u * maxv));
  }
  im->w = (int)p->w;
  im->h = (int)p->h;
  im->c = p->c;
  im->px = px;
  return ANOM_OK;
}

/*
** Decode with the format's own stb loader. stbi_load_from_memory would try
** the formats in turn and, when an allocation fails inside the JPEG test,
** report "unknown image type" instead of running out of memory; and its
** 16-to-8-bit step leaks the 16-bit buffer when its allocation fails. So
** the loader is called directly and 16-bit samples are narrowed here (with
** rounding, where stb keeps the high byte).
*/
static int stb_decode(image_u8 *im, const unsigned char *buf, size_t n,
                      const probe_out *o, int want, anom_err *e) {
  stbi__context s;
  stbi__result_info ri;
  void *r = NULL;
  unsigned char *px;
  int x = 0, y = 0, fc = 0;
  stb_clear_reason();
  stbi__start_mem(&s, buf, (int)n);
  memset(&ri, 0, sizeof(ri));
  ri.bits_per_channel = 8;
  ri.channel_order = STBI_ORDER_RGB;
  switch( o->fmt ){
    case FMT_PNG: r = stbi__png_load(&s, &x, &y, &fc, want, &ri); break;
    case FMT_JPEG: r = stbi__jpeg_load(&s, &x, &y, &fc, want, &ri); break;
    case FMT_GIF: r = stbi__gif_load(&s, &x, &y, &fc, want, &ri); break;
    default: r = stbi__bmp_load(&s, &x, &y, &fc, want, &ri); break;
  }
  if( !r ) return stb_fail(o->fmt, "decoding", e);
  if( x != o->w || y != o->h ){
    anom_free(r);
    return anom_fail(e, ANOM_EFORMAT,
                     "corrupt %s file: header says %dx%d, decoded %dx%d",
                     fmt_names[o->fmt], o->w, o->h, x, y);
  }
  if( ri.bits_per_channel == 16 ){
    size_t count = (size_t)x * (size_t)y * (size_t)want, i;
    const uint16_t *wide = r;
    px = anom_malloc(count);
    if( !px ){
      anom_free(r);
      return anom_fail(e, ANOM_ENOMEM, "out of memory decoding the %s image",
                       fmt_names[o->fmt]);
    }
    for(i = 0; i < count; i++){
      px[i] = (unsigned char)(((uint32_t)wide[i] * 255u + 32767u) / 65535u);
    }
    anom_free(r);
  }else{
    px = r;
  }
  im->w = x;
  im->h = y;
  im->c = want;
  im->px = px;
  return ANOM_OK;
}

int image_decode(image_u8 *im, const void *buf, size_t n, long long max_pixels,
                 anom_err *e) {
  probe_out o;
  long long npix;
  int rc, want;
  if( !im ) return anom_fail(e, ANOM_EINVAL, "image_decode: no output image");
  memset(im, 0, sizeof(*im));
  if( max_pixels < 1 ){
    return anom_fail(e, ANOM_EINVAL, "max_pixels must be at least 1, got %lld",
                     max_pixels);
  }
  rc = probe_impl(buf, n, &o, e);
  if( rc ) return rc;
  npix = (long long)o.w * o.h;
  if( npix > max_pixels ){
    return anom_fail(e, ANOM_ETOOBIG,
                     "image is %dx%d (%.1f Mpixel), over the %.1f Mpixel limit",
                     o.w, o.h, (double)npix / 1048576.0,
                     (double)max_pixels / 1048576.0);
  }
  switch( o.fmt ){
    case FMT_PNG: rc = png_complete(buf, n, e); break;
    case FMT_JPEG:
      rc = o.jpeg_eoi ? ANOM_OK
                      : anom_fail(e, ANOM_EFORMAT,
                                  "truncated JPEG file (no EOI marker)");
      break;
    case FMT_GIF: rc = gif_complete(buf, n, e); break;
    case FMT_BMP: rc = bmp_complete(buf, n, o.w, o.h, e); break;
    default: rc = pnm_complete(&o.pnm, n, e); break;
  }
  if( rc ) return rc;
  if( o.fmt == FMT_PNM ) return pnm_decode(im, buf, &o.pnm, e);

  want = (o.c == 1 || o.c == 2) ? 1 : 3;
  return stb_decode(im, buf, n, &o, want, e);
}

void image_free(image_u8 *im) {
  if( !im ) return;
  anom_free(im->px);
  memset(im, 0, sizeof(*im));
}

/* ---------------------------------------------------------------------------
** Tensors.
*/

/* BT.601 luma, computed in float and rounded to the nearest byte. */
static unsigned char luma(const unsigned char *rgb) {
  float y = 0.299f * rgb[0] + 0.587f * rgb[1] + 0.114f * rgb[2] + 0.5f;
  return y >= 255.0f ? 255 : (unsigned char)y;
}

void image_fit_rect(int iw, int ih, int w, int h, int fit, int *ox, int *oy,
                    int *dw, int *dh) {
  int rw, rh;
  if( fit != IMAGE_FIT_PAD ){
    rw = w;
    rh = h;
  }else if( iw <= w && ih <= h ){
    rw = iw;
    rh = ih;
  }else if( (long long)iw * h >= (long long)ih * w ){ /* width binds */
    rw = w;
    rh = (int)(((long long)ih * w * 2 + iw) / (2LL * iw));
  }else{ /* height binds */
    rh = h;
    rw = (int)(((long long)iw * h * 2 + ih) / (2LL * ih));
  }
  if( rw < 1 ) rw = 1;
  if( rh < 1 ) rh = 1;
  if( rw > w ) rw = w;
  if( rh > h ) rh = h;
  *dw = rw;
  *dh = rh;
  *ox = (w - rw) / 2;
  *oy = (h - rh) / 2;
}

int image_to_tensor(float *x, const image_u8 *im, int w, int h, int c, int fit,
                    anom_err *e) {
  unsigned char *grey = NULL, *sized = NULL;
  const unsigned char *src;
  size_t npix, nbytes;
  int k, dw, dh, ox, oy, ch, i, j, rc = ANOM_OK;
  float *plane;

  if( !x ) return anom_fail(e, ANOM_EINVAL, "image_to_tensor: no output tensor");
  if( !im || !im->px ) return anom_fail(e, ANOM_EINVAL, "image has no pixels");
  if( im->w < 1 || im->h < 1 ){
    return anom_fail(e, ANOM_EINVAL, "image size %dx%d is not positive", im->w,
                     im->h);
  }
  if( im->c != 1 && im->c != 3 ){
    return anom_fail(e, ANOM_EINVAL, "image channels must be 1 or 3, got %d",
                     im->c);
  }
  if( w < 1 || w > IMAGE_MAX_TENSOR_SIDE || h < 1 || h > IMAGE_MAX_TENSOR_SIDE ){
    return anom_fail(e, ANOM_EINVAL,
                     "tensor size must be 1..%d a side, got %dx%d",
                     IMAGE_MAX_TENSOR_SIDE, w, h);
  }
  if( c != 1 && c != 3 ){
    return anom_fail(e, ANOM_EINVAL, "tensor channels must be 1 or 3, got %d",
                     c);
  }
  if( fit != IMAGE_FIT_RESIZE && fit != IMAGE_FIT_PAD ){
    return anom_fail(e, ANOM_EINVAL,
                     "fit must be IMAGE_FIT_RESIZE (0) or IMAGE_FIT_PAD (1), "
                     "got %d",
                     fit);
  }
  if( anom_mul_size((size_t)im->w, (size_t)im->h, &npix) ){
    return anom_fail(e, ANOM_ETOOBIG, "image %dx%d is too large", im->w, im->h);
  }

  /* Work on k channels: RGB -> grey is converted first (a third of the
  ** resampling), grey -> RGB last (the planes are copies). */
  k = im->c < c ? im->c : c;
  src = im->px;
  if( im->c == 3 && c == 1 ){
    size_t p;
    grey = anom_malloc(npix);
    if( !grey ){
      rc = anom_fail(e, ANOM_ENOMEM, "out of memory converting a %dx%d image",
                     im->w, im->h);
      goto done;
    }
    for(p = 0; p < npix; p++) grey[p] = luma(im->px + 3 * p);
    src = grey;
  }

  /* Geometry: the size the image is resampled to and where it goes. */
  image_fit_rect(im->w, im->h, w, h, fit, &ox, &oy, &dw, &dh);

  /* Resample with stb's default filters, chosen per axis: Mitchell-Netravali
  ** when reducing, Catmull-Rom when enlarging. (Its triangle filter trips
  ** an internal assertion on reductions between 1/2 and 1, e.g. 7 -> 5.) */
  if( dw != im->w || dh != im->h ){
    nbytes = (size_t)dw * (size_t)dh * (size_t)k;
    sized = anom_malloc(nbytes);
    if( !sized ||
        !stbir_resize_uint8_generic(src, im->w, im->h, 0, sized, dw, dh, 0, k,
                                    STBIR_ALPHA_CHANNEL_NONE, 0,
                                    STBIR_EDGE_CLAMP, STBIR_FILTER_DEFAULT,
                                    STBIR_COLORSPACE_LINEAR, NULL) ){
      rc = anom_fail(e, ANOM_ENOMEM,
                     "out of memory resampling a %dx%d image to %dx%d", im->w,
                     im->h, dw, dh);
      goto done;
    }
    src = sized;
  }

  /* Planar (C, H, W) floats in [-1, 1]; the pad border is -1. */
  for(ch = 0; ch < c; ch++){
    int sc = k == 1 ? 0 : ch;
    plane = x + (size_t)ch * h * w;
    if( dw != w || dh != h ){
      for(i = 0; i < w * h; i++) plane[i] = -1.0f;
    }
    for(j = 0; j < dh; j++){
      const unsigned char *row = src + (size_t)j * dw * k;
      float *out = plane + (size_t)(oy + j) * w + ox;
      for(i = 0; i < dw; i++) out[i] = row[(size_t)i * k + sc] / 127.5f - 1.0f;
    }
  }

done:
  anom_free(grey);
  anom_free(sized);
  return rc;
}

void image_from_tensor(unsigned char *px, const float *x, int w, int h, int c) {
  size_t plane, p;
  int ch;
  if( !px || !x || w < 1 || h < 1 || c < 1 ) return;
  plane = (size_t)w * (size_t)h;
  for(ch = 0; ch < c; ch++){
    for(p = 0; p < plane; p++){
      float v = (x[(size_t)ch * plane + p] + 1.0f) * 127.5f;
      unsigned char q;
      if( v >= 255.0f ) q = 255;
      else if( v > 0.0f ) q = (unsigned char)(int)(v + 0.5f);
      else q = 0; /* also NaN */
      px[p * c + ch] = q;
    }
  }
}

/* ---------------------------------------------------------------------------
** PNG writer.
*/
#define PNG_MAX_RAW (1u << 28) /* filtered bytes; a 9000x9000 RGB image */

typedef struct bitbuf {
  unsigned char *p;
  size_t n, cap;
  uint32_t acc;
  int nacc;
  int overflow;
} bitbuf;

static void bits_put(bitbuf *b, uint32_t v, int nbits) {
  b->acc |= v << b->nacc;
  b->nacc += nbits;
  while( b->nacc >= 8 ){
    if( b->n < b->cap ) b->p[b->n++] = (unsigned char)b->acc;
    else b->overflow = 1;
    b->acc >>= 8;
    b->nacc -= 8;
  }
}

/* Huffman codes go most significant bit first into an LSB-first stream. */
static void bits_put_rev(bitbuf *b, uint32_t code, int len) {
  uint32_t r = 0;
  int i;
  for(i = 0; i < len; i++) r |= ((code >> i) & 1u) << (len - 1 - i);
  bits_put(b, r, len);
}

/* The fixed literal/length code of RFC 1951, 3.2.6. */
static void put_litlen(bitbuf *b, int sym) {
  if( sym < 144 ) bits_put_rev(b, 0x30u + sym, 8);
  else if( sym < 256 ) bits_put_rev(b, 0x190u + (sym - 144), 9);
  else if( sym < 280 ) bits_put_rev(b, (uint32_t)(sym - 256), 7);
  else bits_put_rev(b, 0xc0u + (sym - 280), 8);
}

static const unsigned short len_base[29] = {
    3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
    31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const unsigned char len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1,
                                            1, 1, 2, 2, 2, 2, 3, 3, 3, 3,
                                            4, 4, 4, 4, 5, 5, 5, 5, 0};
static const unsigned short dist_base[30] = {
    1,    2,    3,    4,    5,    7,     9,     13,    17,  25,
    33,   49,   65,   97,   129,  193,   257,   385,   513, 769,
    1025, 1537, 2049, 3073, 4097, 6145,  8193, 12289, 16385, 24577};
static const unsigned char dist_extra[30] = {0, 0, 0, 0, 1, 1, 2,  2,  3,  3,
                                             4, 4, 5, 5, 6, 6, 7,  7,  8,  8,
                                             9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

static void put_match(bitbuf *b, int len, int dist) {
  int i = 28, j = 29;
  while( len_base[i] > len ) i--;
  put_litlen(b, 257 + i);
  if( len_extra[i] ) bits_put(b, (uint32_t)(len - len_base[i]), len_extra[i]);
  while( dist_base[j] > dist ) j--;
  bits_put_rev(b, (uint32_t)j, 5);
  if( dist_extra[j] ) bits_put(b, (uint32_t)(dist - dist_base[j]), dist_extra[j]);
}

#define LZ_WINDOW 32768
#define LZ_HASH_BITS 15
#define LZ_MAX_CHAIN 48

static uint32_t lz_hash(const unsigned char *p) {
  uint32_t v = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
  return (v * 2654435761u) >> (32 - LZ_HASH_BITS);
}

/* One fixed-Huffman block with greedy LZ77 matching. head and prev hold
** position + 1 (0 = none); prev is indexed modulo the window. */
static void deflate_fixed(bitbuf *b, const unsigned char *d, size_t n,
                          uint32_t *head, uint32_t *prev) {
  size_t i = 0;
  memset(head, 0, sizeof(uint32_t) << LZ_HASH_BITS);
  bits_put(b, 1, 1); /* BFINAL */
  bits_put(b, 1, 2); /* BTYPE = fixed Huffman */
  while( i < n ){
    size_t best = 0, dist = 0;
    if( n - i >= 3 ){
      uint32_t hsh = lz_hash(d + i), cand = head[hsh];
      size_t maxlen = n - i < 258 ? n - i : 258;
      int chain = LZ_MAX_CHAIN;
      while( cand && chain-- > 0 ){
        size_t pos = cand - 1, len = 0;
        uint32_t next;
        if( i - pos > LZ_WINDOW ) break;
        while( len < maxlen && d[pos + len] == d[i + len] ) len++;
        if( len > best ){
          best = len;
          dist = i - pos;
          if( len == maxlen ) break;
        }
        next = prev[pos & (LZ_WINDOW - 1)];
        if( next >= cand ) break;
        cand = next;
      }
      prev[i & (LZ_WINDOW - 1)] = head[hsh];
      head[hsh] = (uint32_t)(i + 1);
    }
    if( best >= 3 ){
      size_t k;
      put_match(b, (int)best, (int)dist);
      for(k = 1; k < best; k++){
        if( n - (i + k) >= 3 ){
          uint32_t hsh = lz_hash(d + i + k);
          prev[(i + k) & (LZ_WINDOW - 1)] = head[hsh];
          head[hsh] = (uint32_t)(i + k + 1);
        }
      }
      i += best;
    }else{
      put_litlen(b, d[i]);
      i++;
    }
  }
  put_litlen(b, 256);
  if( b->nacc ) bits_put(b, 0, 8 - b->nacc);
}

/* Stored blocks; used when the fixed-Huffman stream would be larger. */
static size_t deflate_stored(unsigned char *o, const unsigned char *d,
                             size_t n) {
  size_t p = 0, i = 0;
  do{
    size_t blk = n - i < 65535 ? n - i : 65535;
    o[p++] = i + blk == n ? 1 : 0;
    o[p++] = (unsigned char)blk;
    o[p++] = (unsigned char)(blk >> 8);
    o[p++] = (unsigned char)~blk;
    o[p++] = (unsigned char)(~blk >> 8);
    memcpy(o + p, d + i, blk);
    p += blk;
    i += blk;
  }while( i < n );
  return p;
}

static uint32_t adler32(const unsigned char *d, size_t n) {
  uint32_t s1 = 1, s2 = 0;
  while( n ){
    size_t k = n < 5552 ? n : 5552, i;
    for(i = 0; i < k; i++){
      s1 += d[i];
      s2 += s1;
    }
    s1 %= 65521;
    s2 %= 65521;
    d += k;
    n -= k;
  }
  return s2 << 16 | s1;
}

static uint32_t crc32_update(const uint32_t *tab, uint32_t crc,
                             const unsigned char *d, size_t n) {
  size_t i;
  for(i = 0; i < n; i++) crc = tab[(crc ^ d[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

static void put_be32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

/* Close a chunk whose 4-byte length and type start at p (data len bytes). */
static void png_chunk_crc(const uint32_t *tab, unsigned char *p, size_t len) {
  uint32_t crc = crc32_update(tab, 0xffffffffu, p + 4, 4 + len) ^ 0xffffffffu;
  put_be32(p, (uint32_t)len);
  put_be32(p + 8 + len, crc);
}

static int paeth(int a, int b, int c) {
  int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
  if( pa <= pb && pa <= pc ) return a;
  return pb <= pc ? b : c;
}

/* Filter one row with the filter whose output has the smallest sum of
** absolute (signed) values, the usual heuristic. */
static void png_filter_row(unsigned char *out, const unsigned char *row,
                           const unsigned char *up, size_t len, int bpp,
                           unsigned char *tmp) {
  long best_sum = -1;
  int f;
  for(f = 0; f < 5; f++){
    long sum = 0;
    size_t i;
    for(i = 0; i < len; i++){
      int a = i >= (size_t)bpp ? row[i - bpp] : 0;
      int b = up ? up[i] : 0;
      int c = (up && i >= (size_t)bpp) ? up[i - bpp] : 0;
      int pred = f == 0 ? 0 : f == 1 ? a : f == 2 ? b : f == 3 ? (a + b) / 2
                                                               : paeth(a, b, c);
      unsigned char v = (unsigned char)(row[i] - pred);
      tmp[i] = v;
      sum += v < 128 ? v : 256 - v;
    }
    if( best_sum < 0 || sum < best_sum ){
      best_sum = sum;
      out[0] = (unsigned char)f;
      memcpy(out + 1, tmp, len);
    }
  }
}

int image_encode_png(unsigned char **out, size_t *nout, const unsigned char *px,
                     int w, int h, int c, anom_err *e) {
  static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a,
                                       0x0a};
  uint32_t tab[256];
  unsigned char *filt = NULL, *png = NULL, *z;
  uint32_t *hash = NULL;
  size_t row, raw, zcap, zlen, total, stored;
  bitbuf bb;
  int j, rc = ANOM_OK;

  if( out ) *out = NULL;
  if( nout ) *nout = 0;
  if( !out || !nout || !px ){
    return anom_fail(e, ANOM_EINVAL, "image_encode_png: missing argument");
  }
  if( c != 1 && c != 3 && c != 4 ){
    return anom_fail(e, ANOM_EINVAL, "PNG channels must be 1, 3 or 4, got %d",
                     c);
  }
  if( w < 1 || h < 1 ){
    return anom_fail(e, ANOM_EINVAL, "PNG size must be positive, got %dx%d", w,
                     h);
  }
  row = (size_t)w * (size_t)c;
  if( row >= PNG_MAX_RAW || anom_mul_size(row + 1, (size_t)h, &raw) ||
      raw > PNG_MAX_RAW ){
    return anom_fail(e, ANOM_ETOOBIG,
                     "image %dx%dx%d is over the PNG writer's limit of %u bytes",
                     w, h, c, PNG_MAX_RAW);
  }
  /* Fixed Huffman spends at most 9 bits on a literal and 31 on a match of
  ** 3 or more bytes, so 11 bits a byte bounds it; stored blocks add 5 bytes
  ** per 65535. */
  zcap = raw + raw / 2 + 64;
  stored = raw + 5 * (raw / 65535 + 1);
  if( zcap < stored ) zcap = stored;
  total = 8 + (12 + 13) + (12 + 2 + zcap + 4) + 12;

  filt = anom_malloc(raw);
  hash = anom_malloc(sizeof(uint32_t) * ((1u << LZ_HASH_BITS) + LZ_WINDOW));
  png = anom_malloc(total);
  if( !filt || !hash || !png ){
    rc = anom_fail(e, ANOM_ENOMEM, "out of memory encoding a %dx%d PNG", w, h);
    goto fail;
  }

  for(j = 0; j < h; j++){
    const unsigned char *r = px + (size_t)j * row;
    png_filter_row(filt + (size_t)j * (row + 1), r, j ? r - row : NULL, row, c,
                   png /* scratch: the output is written later */);
  }

  /* zlib stream: header, deflate data, Adler-32, inside the IDAT chunk. */
  z = png + 8 + 25 + 8;
  z[0] = 0x78; /* deflate, 32K window */
  z[1] = 0x01; /* no dictionary, fastest; (0x78 << 8 | 0x01) % 31 == 0 */
  memset(&bb, 0, sizeof(bb));
  bb.p = z + 2;
  bb.cap = zcap;
  deflate_fixed(&bb, filt, raw, hash, hash + (1u << LZ_HASH_BITS));
  zlen = bb.n;
  if( bb.overflow || zlen > stored ) zlen = deflate_stored(z + 2, filt, raw);
  put_be32(z + 2 + zlen, adler32(filt, raw));
  zlen += 6;

  for(j = 0; j < 256; j++){
    uint32_t v = (uint32_t)j;
    int k;
    for(k = 0; k < 8; k++) v = (v & 1) ? 0xedb88320u ^ (v >> 1) : v >> 1;
    tab[j] = v;
  }
  memcpy(png, sig, 8);
  memcpy(png + 12, "IHDR", 4);
  put_be32(png + 16, (uint32_t)w);
  put_be32(png + 20, (uint32_t)h);
  png[24] = 8;                                  /* bit depth */
  png[25] = c == 1 ? 0 : c == 3 ? 2 : 6;        /* colour type */
  png[26] = png[27] = png[28] = 0;              /* deflate, filters, no interlace */
  png_chunk_crc(tab, png + 8, 13);
  memcpy(png + 33 + 4, "IDAT", 4);
  png_chunk_crc(tab, png + 33, zlen);
  total = 33 + 12 + zlen;
  memcpy(png + total + 4, "IEND", 4);
  png_chunk_crc(tab, png + total, 0);
  total += 12;

  { /* give back the slack; keeping the bigger buffer is fine too */
    unsigned char *shrunk = anom_realloc(png, total);
    if( shrunk ) png = shrunk;
  }
  *out = png;
  *nout = total;
  png = NULL;

fail:
  anom_free(filt);
  anom_free(hash);
  anom_free(png);
  return rc;
}

/* ---- gzip ------------------------------------------------------------- */

int image_gunzip(unsigned char **out, size_t *nout, const void *gz, size_t n,
                 size_t max_out, anom_err *e) {
  const unsigned char *p = gz;
  *out = NULL;
  *nout = 0;
  if( n < 18 || p[0] != 0x1f || p[1] != 0x8b || p[2] != 8 )
    return anom_fail(e, ANOM_EFORMAT, "not a gzip file");
  if( n > INT_MAX ) return anom_fail(e, ANOM_ETOOBIG, "gzip file over 2 GiB");
  int flags = p[3];
  size_t pos = 10;
  if( flags & 4 ){                                   /* FEXTRA */
    size_t xlen = (size_t)p[pos] | (size_t)p[pos + 1] << 8;
    pos += 2 + xlen;
  }
  for(int f = 8; f <= 16; f <<= 1){                  /* FNAME, FCOMMENT */
    if( !(flags & f) ) continue;
    while( pos < n && p[pos] ) pos++;
    pos++;
  }
  if( flags & 2 ) pos += 2;                          /* FHCRC */
  if( pos + 8 > n ) return anom_fail(e, ANOM_EFORMAT, "gzip header cut short");
  const unsigned char *t = p + n - 8;
  uint32_t crc = (uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 | (uint32_t)t[3] << 24;
  uint32_t size = (uint32_t)t[4] | (uint32_t)t[5] << 8 | (uint32_t)t[6] << 16 | (uint32_t)t[7] << 24;
  if( size > max_out || size > INT_MAX - 1 )
    return anom_fail(e, ANOM_ETOOBIG, "gzip file unpacks to %u bytes, over the "
                     "limit of %zu", (unsigned)size, max_out);
  unsigned char *buf = anom_malloc((size_t)size + 1);
  if( !buf ) return anom_fail(e, ANOM_ENOMEM, "out of memory for %u bytes", (unsigned)size);
  /* a fixed-size output buffer: stb's inflate cannot grow past it; the
  ** trailer stays in the input, as the bit reader looks a few bytes ahead */
  int got = stbi_zlib_decode_noheader_buffer((char *)buf, (int)size + 1,
                                             (const char *)p + pos, (int)(n - pos));
  if( got < 0 || (uint32_t)got != size || st_crc32(0, buf, size) != crc ){
    anom_free(buf);
    return anom_fail(e, ANOM_EFORMAT, "corrupt gzip file (%s)",
                     got < 0 ? "bad deflate data" : "size or CRC-32 mismatch");
  }
  *out = buf;
  *nout = size;
  return ANOM_OK;
}
