/*
** test_safetensors.c - the safetensors container: parse, write, convert.
**
** Oracles: hand-built headers and byte-exact files, the CRC-32 check value
** and a bitwise CRC, a formula (and the compiler's _Float16 where it has
** one) for every half value, and a rejection case for each check st_parse
** and st_write make, each asserted with its message.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "safetensors.h"

/* ---- helpers ------------------------------------------------------------ */

static uint32_t float_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static float bits_float(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* A blob: 8-byte little-endian hlen, hlen header bytes, then data (zeros if
** data is NULL) of data_len bytes. Free with free(). */
static unsigned char *make_blob(const char *hdr, size_t hlen,
                                const unsigned char *data, size_t data_len,
                                size_t *n) {
  unsigned char *b = malloc(8 + hlen + data_len);
  size_t i;
  assert_non_null(b);
  for(i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
  memcpy(b + 8, hdr, hlen);
  if( data ) memcpy(b + 8 + hlen, data, data_len);
  else memset(b + 8 + hlen, 0, data_len);
  *n = 8 + hlen + data_len;
  return b;
}

static int is_zeroed(const st_file *f) {
  st_file z;
  memset(&z, 0, sizeof z);
  return memcmp(f, &z, sizeof z) == 0;
}

/* Parse blob and expect failure with code and needle in the message. */
static void expect_blob_reject(const unsigned char *blob, size_t n,
                               const st_limits *lim, int code,
                               const char *needle) {
  st_file f;
  anom_err e;
  int rc;
  memset(&f, 0xab, sizeof f);
  anom_err_clear(&e);
  rc = st_parse(&f, blob, n, lim, &e);
  if( rc != code || !strstr(e.msg, needle) ){
    print_error("want %d '%s', got %d '%s'\n", code, needle, rc, e.msg);
  }
  assert_int_equal(rc, code);
  assert_non_null(strstr(e.msg, needle));
  assert_int_equal(e.code, code);
  assert_true(is_zeroed(&f));
}

static void expect_reject(const char *hdr, size_t data_len,
                          const st_limits *lim, int code, const char *needle) {
  size_t n;
  unsigned char *b = make_blob(hdr, strlen(hdr), NULL, data_len, &n);
  expect_blob_reject(b, n, lim, code, needle);
  free(b);
}

/* Convert one 16-bit value of dtype dt through st_read_f32. */
static float conv16(st_dtype dt, uint16_t h) {
  unsigned char b[2];
  st_tensor t;
  anom_err e;
  float out = 12345.0f;
  b[0] = (unsigned char)(h & 0xff);
  b[1] = (unsigned char)(h >> 8);
  memset(&t, 0, sizeof t);
  t.name = "x";
  t.dtype = dt;
  t.ndim = 0;
  t.numel = 1;
  t.data = b;
  t.nbytes = 2;
  assert_int_equal(st_read_f32(&t, NULL, 0, &out, &e), ANOM_OK);
  return out;
}

/* ---- CRC-32 ------------------------------------------------------------- */

static uint32_t crc_bitwise(const unsigned char *p, size_t n) {
  uint32_t c = 0xffffffffu;
  size_t i;
  int k;
  for(i = 0; i < n; i++){
    c ^= p[i];
    for(k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0xedb88320u : c >> 1;
  }
  return c ^ 0xffffffffu;
}

static void test_crc32(void **state) {
  unsigned char buf[1000];
  uint32_t x = 12345;
  size_t i;
  (void)state;
  assert_int_equal(st_crc32(0, "123456789", 9), 0xcbf43926u);
  assert_int_equal(st_crc32(0, "The quick brown fox jumps over the lazy dog",
                            43), 0x414fa339u);
  assert_int_equal(st_crc32(0, NULL, 0), 0);
  assert_int_equal(st_crc32(0, "a", 1), 0xe8b7be43u);
  for(i = 0; i < sizeof buf; i++){
    x = x * 1103515245u + 12345u;
    buf[i] = (unsigned char)(x >> 16);
  }
  assert_int_equal(st_crc32(0, buf, sizeof buf), crc_bitwise(buf, sizeof buf));
  /* continuing from a previous crc is the crc of the concatenation */
  assert_int_equal(st_crc32(st_crc32(0, buf, 337), buf + 337, 663),
                   st_crc32(0, buf, sizeof buf));
}

/* ---- F16 / BF16 --------------------------------------------------------- */

static void test_f16_known(void **state) {
  float f;
  (void)state;
  assert_true(conv16(ST_F16, 0x3c00) == 1.0f);
  assert_true(conv16(ST_F16, 0xc000) == -2.0f);
  assert_true(conv16(ST_F16, 0x7bff) == 65504.0f);
  assert_true(conv16(ST_F16, 0x0001) == ldexpf(1.0f, -24));
  assert_true(conv16(ST_F16, 0x03ff) == ldexpf(1023.0f, -24));
  assert_true(conv16(ST_F16, 0x0400) == ldexpf(1.0f, -14));
  assert_true(conv16(ST_F16, 0x3555) == 0.333251953125f);
  assert_true(conv16(ST_F16, 0x3bff) == 0.99951171875f);
  assert_true(conv16(ST_F16, 0x7c00) == INFINITY);
  assert_true(conv16(ST_F16, 0xfc00) == -INFINITY);
  f = conv16(ST_F16, 0x7e00);
  assert_true(isnan(f));
  f = conv16(ST_F16, 0x8000);
  assert_true(f == 0.0f && signbit(f));
  assert_int_equal(float_bits(conv16(ST_F16, 0x0000)), 0);
  /* nan keeps sign and payload: 0xfd01 -> sign, all-ones exponent, man<<13 */
  assert_int_equal(float_bits(conv16(ST_F16, 0xfd01)), 0xffa02000u);
}

/* Every half value against ldexp, and against _Float16 where available. */
static void test_f16_exhaustive(void **state) {
  uint32_t h;
  (void)state;
  for(h = 0; h < 0x10000; h++){
    uint32_t ex = (h >> 10) & 0x1f, man = h & 0x3ff;
    float got = conv16(ST_F16, (uint16_t)h), want;
    if( ex == 31 ){
      uint32_t bits = (h & 0x8000u) << 16 | 0x7f800000u | man << 13;
      assert_int_equal(float_bits(got), bits);
      assert_true(man ? isnan(got) : isinf(got));
      continue;
    }
    want = ex == 0 ? (float)ldexp((double)man, -24)
                   : (float)ldexp((double)(1024 + man), (int)ex - 25);
    if( h & 0x8000 ) want = -want;
    assert_int_equal(float_bits(got), float_bits(want));
#ifdef __FLT16_MANT_DIG__
    {
      _Float16 hf;
      uint16_t hb = (uint16_t)h;
      memcpy(&hf, &hb, sizeof hf);
      assert_int_equal(float_bits(got), float_bits((float)hf));
    }
#endif
  }
}

static void test_bf16(void **state) {
  uint32_t h;
  float f;
  (void)state;
  assert_true(conv16(ST_BF16, 0x3f80) == 1.0f);
  assert_true(conv16(ST_BF16, 0xc000) == -2.0f);
  assert_true(conv16(ST_BF16, 0x3eab) == 0.333984375f);
  assert_true(conv16(ST_BF16, 0xc2f7) == -123.5f);
  assert_true(conv16(ST_BF16, 0x0001) == ldexpf(1.0f, -133));
  assert_true(conv16(ST_BF16, 0x7f80) == INFINITY);
  assert_true(conv16(ST_BF16, 0xff80) == -INFINITY);
  f = conv16(ST_BF16, 0x7fc0);
  assert_true(isnan(f));
  for(h = 0; h < 0x10000; h++){
    assert_int_equal(float_bits(conv16(ST_BF16, (uint16_t)h)), h << 16);
  }
}

/* ---- st_read_f32 -------------------------------------------------------- */

static void test_read_shape_check(void **state) {
  st_tensor t;
  anom_err e;
  float out[4];
  unsigned char b[16] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0,
                         0, 0, 0x40, 0x40, 0, 0, 0x80, 0x7f};
  int64_t want4[4] = {64, 1, 4, 4}, want22[2] = {2, 2}, want1[1] = {4};
  (void)state;
  memset(&t, 0, sizeof t);
  t.name = "x";
  t.dtype = ST_F32;
  t.ndim = 4;
  t.shape[0] = 64; t.shape[1] = 3; t.shape[2] = 4; t.shape[3] = 4;
  t.numel = 64 * 3 * 16;
  t.nbytes = (size_t)t.numel * 4;
  assert_int_equal(st_read_f32(&t, want4, 4, out, &e), ANOM_EFORMAT);
  assert_string_equal(e.msg,
                      "tensor 'x': expected shape [64, 1, 4, 4], found "
                      "[64, 3, 4, 4]");

  t.ndim = 1;
  t.shape[0] = 4;
  t.numel = 4;
  t.nbytes = 16;
  t.data = b;
  assert_int_equal(st_read_f32(&t, want22, 2, out, &e), ANOM_EFORMAT);
  assert_string_equal(e.msg, "tensor 'x': expected shape [2, 2], found [4]");
  assert_int_equal(st_read_f32(&t, want1, 0, out, &e), ANOM_EFORMAT);
  assert_string_equal(e.msg, "tensor 'x': expected shape [], found [4]");
  assert_int_equal(st_read_f32(&t, want1, 1, out, &e), ANOM_OK);
  assert_true(out[0] == 1.0f && out[1] == -2.0f && out[2] == 3.0f);
  assert_true(out[3] == INFINITY);

  assert_int_equal(st_read_f32(NULL, NULL, 0, out, &e), ANOM_EINVAL);
  assert_non_null(strstr(e.msg, "no tensor given"));
  assert_int_equal(st_read_f32(&t, want1, 9, out, &e), ANOM_EINVAL);
  assert_non_null(strstr(e.msg, "expected ndim 9 is outside 0..8"));
  assert_int_equal(st_read_f32(&t, NULL, 0, NULL, &e), ANOM_EINVAL);
  assert_non_null(strstr(e.msg, "inconsistent"));
  t.nbytes = 12;
  assert_int_equal(st_read_f32(&t, NULL, 0, out, &e), ANOM_EINVAL);
  assert_non_null(strstr(e.msg, "tensor 'x': numel 4, nbytes 12"));
}

/* ---- parsing: accepted files -------------------------------------------- */

/*
** Built byte by byte: an F16, a BF16, a scalar F32 and an empty F32 tensor,
** fields in unusual order, a 4-byte gap before the scalar, 4 unused bytes at
** the end, metadata last, and space padding after the JSON.
*/
static void test_parse_hand_built(void **state) {
  const char *hdr =
    "{\"h\":{\"dtype\":\"F16\",\"shape\":[2, 2],\"data_offsets\":[0,8]},"
    "\"b\":{\"data_offsets\":[8,12],\"shape\":[2],\"dtype\":\"BF16\"},"
    "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[16,20]},"
    "\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[20,20]},"
    "\"__metadata__\":{\"format\":\"pt\",\"note\":\"caf\xc3\xa9\"}}     ";
  const unsigned char data[24] = {
    0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00,  /* 1, -2, 65504, 2^-24 */
    0x80, 0x3f, 0xf7, 0xc2,                          /* 1, -123.5 */
    0xde, 0xad, 0xbe, 0xef,                          /* gap */
    0x00, 0x00, 0x60, 0x40,                          /* 3.5 */
    0x11, 0x22, 0x33, 0x44                           /* unused */
  };
  unsigned char *blob;
  size_t n;
  st_file f;
  anom_err e;
  const st_tensor *t;
  float out[4];
  int64_t sh[2] = {2, 2}, sz[2] = {0, 3};
  (void)state;

  blob = make_blob(hdr, strlen(hdr), data, sizeof data, &n);
  assert_int_equal(st_parse(&f, blob, n, NULL, &e), ANOM_OK);
  assert_int_equal(f.ntensors, 4);
  assert_string_equal(f.tensors[0].name, "h");
  assert_string_equal(f.tensors[1].name, "b");
  assert_string_equal(f.tensors[2].name, "s");
  assert_string_equal(f.tensors[3].name, "z");
  assert_ptr_equal(f.data, blob + 8 + strlen(hdr));
  assert_int_equal(f.data_len, 24);
  assert_int_equal(f.nmeta, 2);
  assert_string_equal(st_meta(&f, "format"), "pt");
  assert_string_equal(st_meta(&f, "note"), "caf\xc3\xa9");
  assert_null(st_meta(&f, "missing"));
  assert_null(st_find(&f, "missing"));
  assert_null(st_find(&f, "__metadata__"));

  t = st_find(&f, "h");
  assert_ptr_equal(t, &f.tensors[0]);
  assert_int_equal(t->dtype, ST_F16);
  assert_int_equal(t->ndim, 2);
  assert_int_equal(t->numel, 4);
  assert_int_equal(t->nbytes, 8);
  assert_ptr_equal(t->data, f.data);
  assert_int_equal(st_read_f32(t, sh, 2, out, &e), ANOM_OK);
  assert_true(out[0] == 1.0f && out[1] == -2.0f && out[2] == 65504.0f);
  assert_true(out[3] == ldexpf(1.0f, -24));

  t = st_find(&f, "b");
  assert_int_equal(t->dtype, ST_BF16);
  assert_ptr_equal(t->data, f.data + 8);
  assert_int_equal(st_read_f32(t, NULL, 0, out, &e), ANOM_OK);
  assert_true(out[0] == 1.0f && out[1] == -123.5f);

  t = st_find(&f, "s");
  assert_int_equal(t->ndim, 0);
  assert_int_equal(t->numel, 1);
  assert_int_equal(t->nbytes, 4);
  assert_int_equal(st_read_f32(t, sh, 0, out, &e), ANOM_OK);
  assert_true(out[0] == 3.5f);

  t = st_find(&f, "z");
  assert_int_equal(t->ndim, 2);
  assert_int_equal(t->shape[0], 0);
  assert_int_equal(t->shape[1], 3);
  assert_int_equal(t->numel, 0);
  assert_int_equal(t->nbytes, 0);
  assert_int_equal(st_read_f32(t, sz, 2, NULL, &e), ANOM_OK);

  st_free(&f);
  assert_true(is_zeroed(&f));
  st_free(&f);
  free(blob);
}

static void test_parse_edge_accepts(void **state) {
  st_file f;
  anom_err e;
  unsigned char *b;
  size_t n;
  const char *h;
  (void)state;

  /* no tensors at all */
  b = make_blob("{}", 2, NULL, 0, &n);
  assert_int_equal(st_parse(&f, b, n, NULL, &e), ANOM_OK);
  assert_int_equal(f.ntensors, 0);
  assert_int_equal(f.nmeta, 0);
  assert_int_equal(f.data_len, 0);
  st_free(&f);
  free(b);

  /* empty metadata, whitespace inside and around */
  h = " {\n\t\"__metadata__\" : { } } \r\n ";
  b = make_blob(h, strlen(h), NULL, 0, &n);
  assert_int_equal(st_parse(&f, b, n, NULL, &e), ANOM_OK);
  assert_int_equal(f.nmeta, 0);
  st_free(&f);
  free(b);

  /* empty tensors inside or at the end of another's bytes overlap nothing;
  ** 2.0 and 4e0 are exact integers */
  h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]},"
      "\"z\":{\"dtype\":\"F16\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
      "\"y\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},"
      "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4e0]}}";
  b = make_blob(h, strlen(h), NULL, 12, &n);
  /* 4e0 reads as the integer 4, so c as written is reversed */
  assert_int_equal(st_parse(&f, b, n, NULL, &e), ANOM_EFORMAT);
  assert_non_null(strstr(e.msg, "tensor 'c': data_offsets [8, 4] are reversed"));
  free(b);
  h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]},"
      "\"z\":{\"dtype\":\"F16\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
      "\"y\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},"
      "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12e0]}}";
  b = make_blob(h, strlen(h), NULL, 12, &n);
  assert_int_equal(st_parse(&f, b, n, NULL, &e), ANOM_OK);
  assert_int_equal(f.ntensors, 4);
  assert_int_equal(st_find(&f, "a")->shape[0], 2);
  assert_int_equal(st_find(&f, "c")->nbytes, 4);
  st_free(&f);
  free(b);

  /* a surrogate-pair escape becomes the UTF-8 of U+1F600 */
  h = "{\"\\ud83d\\ude00\":{\"dtype\":\"F32\",\"shape\":[],"
      "\"data_offsets\":[0,4]}}";
  b = make_blob(h, strlen(h), NULL, 4, &n);
  assert_int_equal(st_parse(&f, b, n, NULL, &e), ANOM_OK);
  assert_string_equal(f.tensors[0].name, "\xf0\x9f\x98\x80");
  st_free(&f);
  free(b);

  /* tensors listed out of offset order, exactly adjacent */
  h = "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
      "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  b = make_blob(h, strlen(h), NULL, 8, &n);
  assert_int_equal(st_parse(&f, b, n, NULL, &e), ANOM_OK);
  assert_string_equal(f.tensors[0].name, "b");
  st_free(&f);
  free(b);

  /* limits exactly reached are accepted */
  {
    st_limits lim;
    st_limits_default(&lim);
    assert_int_equal(lim.max_header_bytes, 16u << 20);
    assert_int_equal(lim.max_tensors, 100000);
    assert_int_equal(lim.max_dims, ST_MAX_DIMS);
    assert_int_equal(lim.max_dim, 1 << 30);
    h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,3],\"data_offsets\":[0,12]}}";
    lim.max_header_bytes = strlen(h);
    lim.max_tensors = 1;
    lim.max_dims = 2;
    lim.max_dim = 3;
    b = make_blob(h, strlen(h), NULL, 12, &n);
    assert_int_equal(st_parse(&f, b, n, &lim, &e), ANOM_OK);
    st_free(&f);
    free(b);
  }
}

/* The header may be the last thing in the buffer: nothing past it is read. */
static void test_parse_header_only(void **state) {
  const char *h = "{\"__metadata__\":{\"k\":\"v\"}}";
  size_t hl = strlen(h);
  unsigned char *b = malloc(8 + hl);
  st_file f;
  anom_err e;
  (void)state;
  assert_non_null(b);
  memset(b, 0, 8);
  b[0] = (unsigned char)hl;
  memcpy(b + 8, h, hl);
  assert_int_equal(st_parse(&f, b, 8 + hl, NULL, &e), ANOM_OK);
  assert_string_equal(st_meta(&f, "k"), "v");
  st_free(&f);
  /* truncated by one byte: invalid json, still no read past the end */
  b[0] = (unsigned char)(hl - 1);
  assert_int_equal(st_parse(&f, b, 8 + hl - 1, NULL, &e), ANOM_EFORMAT);
  assert_non_null(strstr(e.msg, "header is not valid json"));
  free(b);
}

/* ---- parsing: rejections ------------------------------------------------ */

static void test_reject_framing(void **state) {
  unsigned char b[120];
  st_limits lim;
  st_file f;
  anom_err e;
  (void)state;
  memset(b, ' ', sizeof b);
  memset(b, 0, 8);

  expect_blob_reject(b, 5, NULL, ANOM_EFORMAT,
                     "blob is 5 bytes, too short for the 8-byte header length");
  expect_blob_reject(NULL, 0, NULL, ANOM_EFORMAT, "blob is 0 bytes");
  expect_blob_reject(b, sizeof b, NULL, ANOM_EFORMAT,
                     "header length is 0, expected a json object");
  b[0] = 9999 & 0xff;
  b[1] = 9999 >> 8;
  expect_blob_reject(b, sizeof b, NULL, ANOM_EFORMAT,
                     "header length 9999 runs past the end of the blob "
                     "(120 bytes)");
  memset(b, 0xff, 8);
  expect_blob_reject(b, sizeof b, NULL, ANOM_EFORMAT,
                     "header length 18446744073709551615 runs past");
  memset(b, 0, 8);
  b[0] = 8;  /* exactly to the end: blob = 8 + 8 header bytes */
  memcpy(b + 8, "{}      ", 8);
  assert_int_equal(st_parse(&f, b, 16, NULL, &e), ANOM_OK);
  st_free(&f);
  b[0] = 9;
  expect_blob_reject(b, 16, NULL, ANOM_EFORMAT,
                     "header length 9 runs past the end of the blob (16 bytes)");

  st_limits_default(&lim);
  lim.max_header_bytes = 16;
  expect_reject("{\"__metadata__\":{}}", 0, &lim, ANOM_ETOOBIG,
                "header length 19 exceeds the limit of 16 bytes");

  /* bad arguments */
  assert_int_equal(st_parse(NULL, b, 16, NULL, &e), ANOM_EINVAL);
  assert_non_null(strstr(e.msg, "no st_file given"));
  expect_blob_reject(NULL, 16, NULL, ANOM_EINVAL, "blob is NULL");
  st_limits_default(&lim);
  lim.max_dims = 9;
  expect_reject("{}", 0, &lim, ANOM_EINVAL, "limits: max_dims 9 is outside 0..8");
  lim.max_dims = -1;
  expect_reject("{}", 0, &lim, ANOM_EINVAL, "limits: max_dims -1");
  st_limits_default(&lim);
  lim.max_dim = -1;
  expect_reject("{}", 0, &lim, ANOM_EINVAL, "must not be negative");
  /* NULL e is allowed */
  assert_int_equal(st_parse(&f, b, 3, NULL, NULL), ANOM_EFORMAT);
}

static void test_reject_header_text(void **state) {
  (void)state;
  expect_reject("[1,2]", 0, NULL, ANOM_EFORMAT,
                "header is an array, expected a json object");
  expect_reject("\"x\"", 0, NULL, ANOM_EFORMAT,
                "header is a string, expected a json object");
  expect_reject("42", 0, NULL, ANOM_EFORMAT,
                "header is a number, expected a json object");
  /* strict json syntax, with the position of the first error */
  expect_reject("{\"w\":", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: unexpected end at header byte 5");
  expect_reject("        ", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: unexpected end at header byte 8");
  expect_reject("{\"a\":1,}", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: expected a string key at header "
                "byte 7");
  expect_reject("{\"a\" 1}", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: expected ':' at header byte 5");
  expect_reject("{\"a\":1 \"b\":2}", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: expected ',' or '}' at header byte 7");
  expect_reject("[1 2]", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: expected ',' or ']' at header byte 3");
  expect_reject("{\"a\":01}", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: expected ',' or '}' at header byte 6");
  expect_reject("{\"a\":1.}", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: expected a digit at header byte 7");
  expect_reject("{\"a\":1e}", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: expected a digit at header byte 7");
  expect_reject("{\"a\":-}", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: expected a digit at header byte 6");
  expect_reject("{\"a\":+1}", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: unexpected character at header "
                "byte 5");
  expect_reject("{\"a\":tru}", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: unexpected character at header "
                "byte 5");
  expect_reject("{\"a\":\"x", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: unterminated string at header "
                "byte 7");
  expect_reject("{\"a\tb\":1}", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: raw control character in a string "
                "at header byte 3");
  expect_reject("{\"a\\x\":1}", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: bad escape in a string at header "
                "byte 4");
  expect_reject("{\"a\":\"\\u12\"}", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: expected 4 hex digits after \\u at "
                "header byte 10");
  expect_reject("{\"a\\u0000\":1}", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: \\u0000 in a string at header "
                "byte 3");
  expect_reject("{\"\\udc00\":1}", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: unpaired surrogate escape at "
                "header byte 2");
  expect_reject("{\"\\ud800\":1}", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: unpaired surrogate escape at "
                "header byte 8");
  expect_reject("{\"\\ud800\\u0041\":1}", 0, NULL, ANOM_EFORMAT,
                "header is not valid json: unpaired surrogate escape at "
                "header byte 8");
  expect_reject("{\"a\":12345678901234567890123456789012345678901}", 0, NULL,
                ANOM_EFORMAT,
                "header is not valid json: number longer than 40 characters "
                "at header byte 5");
  expect_reject("{\"a\":[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}", 0, NULL,
                ANOM_EFORMAT,
                "header is not valid json: nested deeper than 16 levels at "
                "header byte 20");
  /* 16 levels is syntax, then fails as a tensor entry */
  expect_reject("{\"a\":[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]}", 0, NULL,
                ANOM_EFORMAT, "tensor 'a' is an array");
  expect_reject("{} x", 0, NULL, ANOM_EFORMAT,
                "header has text after the json object at header byte 3, "
                "expected only space padding");
  expect_reject("{}{}", 0, NULL, ANOM_EFORMAT,
                "header has text after the json object at header byte 2");
  expect_reject("{\"w\x01\":1}", 0, NULL, ANOM_EFORMAT,
                "header has control byte 0x01 at header byte 3, expected "
                "json text");
  {
    /* a NUL inside the header */
    size_t n;
    unsigned char *b = make_blob("{\"a\0\":1}", 8, NULL, 0, &n);
    expect_blob_reject(b, n, NULL, ANOM_EFORMAT,
                       "header has control byte 0x00 at header byte 3");
    free(b);
  }
  expect_reject("{\"\xff\":1}", 0, NULL, ANOM_EFORMAT,
                "header is not valid utf-8 at header byte 2");
  expect_reject("{\"ab\xc0\x80\":1}", 0, NULL, ANOM_EFORMAT,
                "header is not valid utf-8 at header byte 4");      /* overlong */
  expect_reject("{\"\xed\xa0\x80\":1}", 0, NULL, ANOM_EFORMAT,
                "header is not valid utf-8 at header byte 2");      /* surrogate */
  expect_reject("{\"\xf4\x90\x80\x80\":1}", 0, NULL, ANOM_EFORMAT,
                "header is not valid utf-8");                      /* > U+10FFFF */
  expect_reject("{\"\xe2\x82\":1}", 0, NULL, ANOM_EFORMAT,
                "header is not valid utf-8");                      /* truncated */
}

#define T(body) "{\"w\":{" body "}}"
#define OK_DT "\"dtype\":\"F32\""
#define OK_SH "\"shape\":[1]"
#define OK_OF "\"data_offsets\":[0,4]"

static void test_reject_tensor_entries(void **state) {
  static const struct { const char *hdr; int code; const char *msg; } cases[] = {
    {"{\"w\":5}", ANOM_EFORMAT,
     "tensor 'w' is a number, expected an object with dtype, shape and "
     "data_offsets"},
    {"{\"w\":[1]}", ANOM_EFORMAT, "tensor 'w' is an array, expected an object"},
    {"{\"w\":null}", ANOM_EFORMAT, "tensor 'w' is null, expected an object"},
    {T(OK_SH "," OK_OF), ANOM_EFORMAT, "tensor 'w': missing field 'dtype'"},
    {T(OK_DT "," OK_OF), ANOM_EFORMAT, "tensor 'w': missing field 'shape'"},
    {T(OK_DT "," OK_SH), ANOM_EFORMAT,
     "tensor 'w': missing field 'data_offsets'"},
    {T(OK_DT "," OK_SH "," OK_OF ",\"foo\":1"), ANOM_EFORMAT,
     "tensor 'w': unknown field 'foo' (expected dtype, shape and "
     "data_offsets)"},
    {T(OK_DT "," OK_SH "," OK_OF "," OK_DT), ANOM_EFORMAT,
     "tensor 'w': field 'dtype' appears more than once"},
    {T("\"dtype\":32," OK_SH "," OK_OF), ANOM_EFORMAT,
     "tensor 'w': dtype is a number, expected a string such as \"F32\""},
    {T("\"dtype\":\"I64\"," OK_SH ",\"data_offsets\":[0,8]"), ANOM_EFORMAT,
     "tensor 'w': unsupported dtype 'I64' (F32, F16 and BF16 are read)"},
    {T("\"dtype\":\"f32\"," OK_SH "," OK_OF), ANOM_EFORMAT,
     "tensor 'w': unsupported dtype 'f32'"},
    {T(OK_DT ",\"shape\":\"4\"," OK_OF), ANOM_EFORMAT,
     "tensor 'w': shape is a string, expected an array of non-negative "
     "integers"},
    {T(OK_DT ",\"shape\":{}," OK_OF), ANOM_EFORMAT,
     "tensor 'w': shape is an object"},
    {T(OK_DT ",\"shape\":[-3]," OK_OF), ANOM_EFORMAT,
     "tensor 'w': shape[0] is -3, expected a non-negative integer"},
    {T(OK_DT ",\"shape\":[1,2.5]," OK_OF), ANOM_EFORMAT,
     "tensor 'w': shape[1] is 2.5, expected a non-negative integer"},
    {T(OK_DT ",\"shape\":[1.0000000000000002]," OK_OF), ANOM_EFORMAT,
     "tensor 'w': shape[0] is 1.0000000000000002, expected a non-negative "
     "integer"},
    {T(OK_DT ",\"shape\":[1,\"2\"]," OK_OF), ANOM_EFORMAT,
     "tensor 'w': shape[1] is a string, expected a non-negative integer"},
    {T(OK_DT ",\"shape\":[true]," OK_OF), ANOM_EFORMAT,
     "tensor 'w': shape[0] is a boolean"},
    {T(OK_DT ",\"shape\":[9007199254740992]," OK_OF), ANOM_EFORMAT,
     "tensor 'w': shape[0] is 9007199254740992, expected an integer below "
     "2^53"},
    {T(OK_DT ",\"shape\":[1e999]," OK_OF), ANOM_EFORMAT,
     "tensor 'w': shape[0] is inf, expected an integer below 2^53"},
    {T(OK_DT ",\"shape\":[1,1,1,1,1,1,1,1,1]," OK_OF), ANOM_ETOOBIG,
     "tensor 'w': shape has 9 dimensions, the limit is 8"},
    {T(OK_DT ",\"shape\":[2000000000]," OK_OF), ANOM_ETOOBIG,
     "tensor 'w': shape[0] is 2000000000, the limit is 1073741824"},
    {T(OK_DT ",\"shape\":[1073741824,1073741824,1073741824]," OK_OF),
     ANOM_ETOOBIG,
     "tensor 'w': shape [1073741824, 1073741824, 1073741824] has more "
     "elements than can be addressed"},
    {T(OK_DT "," OK_SH ",\"data_offsets\":\"x\""), ANOM_EFORMAT,
     "tensor 'w': data_offsets is a string, expected an array [begin, end]"},
    {T(OK_DT "," OK_SH ",\"data_offsets\":[0]"), ANOM_EFORMAT,
     "tensor 'w': data_offsets has 1 entries, expected 2 [begin, end]"},
    {T(OK_DT "," OK_SH ",\"data_offsets\":[0,4,8]"), ANOM_EFORMAT,
     "tensor 'w': data_offsets has 3 entries"},
    {T(OK_DT "," OK_SH ",\"data_offsets\":[0,-4]"), ANOM_EFORMAT,
     "tensor 'w': data_offsets[1] is -4, expected a non-negative integer"},
    {T(OK_DT "," OK_SH ",\"data_offsets\":[0.5,4]"), ANOM_EFORMAT,
     "tensor 'w': data_offsets[0] is 0.5, expected a non-negative integer"},
    {T(OK_DT "," OK_SH ",\"data_offsets\":[null,4]"), ANOM_EFORMAT,
     "tensor 'w': data_offsets[0] is null"},
    {T(OK_DT "," OK_SH ",\"data_offsets\":[0,1e20]"), ANOM_EFORMAT,
     "tensor 'w': data_offsets[1] is 1e+20, expected an integer below 2^53"},
    {T(OK_DT "," OK_SH ",\"data_offsets\":[8,4]"), ANOM_EFORMAT,
     "tensor 'w': data_offsets [8, 4] are reversed (begin after end)"},
    {T(OK_DT ",\"shape\":[50],\"data_offsets\":[0,200]"), ANOM_EFORMAT,
     "tensor 'w': data_offsets [0, 200] run past the end of the data section "
     "(120 bytes)"},
    {T(OK_DT ",\"shape\":[1],\"data_offsets\":[118,122]"), ANOM_EFORMAT,
     "tensor 'w': data_offsets [118, 122] run past the end"},
    {T(OK_DT ",\"shape\":[4,4],\"data_offsets\":[0,60]"), ANOM_EFORMAT,
     "tensor 'w': data_offsets [0, 60] hold 60 bytes, dtype F32 shape [4, 4] "
     "needs 64"},
    {T("\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[0,4]"), ANOM_EFORMAT,
     "tensor 'w': data_offsets [0, 4] hold 4 bytes, dtype F16 shape [] "
     "needs 2"},
    {T("\"dtype\":\"BF16\",\"shape\":[0,7],\"data_offsets\":[0,2]"),
     ANOM_EFORMAT,
     "tensor 'w': data_offsets [0, 2] hold 2 bytes, dtype BF16 shape [0, 7] "
     "needs 0"},
  };
  size_t i;
  (void)state;
  for(i = 0; i < sizeof cases / sizeof cases[0]; i++){
    expect_reject(cases[i].hdr, 120, NULL, cases[i].code, cases[i].msg);
  }
}

static void test_reject_across_tensors(void **state) {
  st_limits lim;
  (void)state;
  expect_reject("{\"w\":{" OK_DT "," OK_SH "," OK_OF "},"
                "\"w\":{" OK_DT "," OK_SH ",\"data_offsets\":[4,8]}}", 8, NULL,
                ANOM_EFORMAT, "tensor name 'w' appears more than once");
  expect_reject("{\"a\":{" OK_DT ",\"shape\":[16],\"data_offsets\":[0,64]},"
                "\"b\":{" OK_DT ",\"shape\":[16],\"data_offsets\":[32,96]}}",
                96, NULL, ANOM_EFORMAT,
                "tensors 'a' and 'b' overlap: bytes [0, 64] and [32, 96]");
  /* listed in the other order, the message still goes by offset */
  expect_reject("{\"b\":{" OK_DT ",\"shape\":[16],\"data_offsets\":[32,96]},"
                "\"a\":{" OK_DT ",\"shape\":[16],\"data_offsets\":[0,64]}}",
                96, NULL, ANOM_EFORMAT, "tensors 'a' and 'b' overlap");
  /* b sits inside a; c comes after b but still inside a */
  expect_reject("{\"a\":{" OK_DT ",\"shape\":[16],\"data_offsets\":[0,64]},"
                "\"b\":{" OK_DT ",\"shape\":[1],\"data_offsets\":[8,12]},"
                "\"c\":{" OK_DT ",\"shape\":[1],\"data_offsets\":[16,20]}}",
                64, NULL, ANOM_EFORMAT, "tensors 'a' and 'b' overlap");
  /* the overlap is with an earlier, longer range, not the neighbour */
  expect_reject("{\"a\":{" OK_DT ",\"shape\":[16],\"data_offsets\":[0,64]},"
                "\"b\":{" OK_DT ",\"shape\":[0],\"data_offsets\":[4,4]},"
                "\"c\":{" OK_DT ",\"shape\":[1],\"data_offsets\":[60,64]}}",
                64, NULL, ANOM_EFORMAT, "tensors 'a' and 'c' overlap");
  expect_reject("{\"a\":{" OK_DT "," OK_SH "," OK_OF "},"
                "\"b\":{" OK_DT "," OK_SH "," OK_OF "}}", 4, NULL,
                ANOM_EFORMAT, "tensors 'a' and 'b' overlap: bytes [0, 4] and "
                "[0, 4]");

  st_limits_default(&lim);
  lim.max_tensors = 1;
  expect_reject("{\"a\":{" OK_DT "," OK_SH "," OK_OF "},"
                "\"b\":{" OK_DT "," OK_SH ",\"data_offsets\":[4,8]}}", 8, &lim,
                ANOM_ETOOBIG, "header has 2 tensors, the limit is 1");
  st_limits_default(&lim);
  lim.max_dims = 2;
  expect_reject(T(OK_DT ",\"shape\":[1,1,1]," OK_OF), 4, &lim, ANOM_ETOOBIG,
                "tensor 'w': shape has 3 dimensions, the limit is 2");
  lim.max_dims = 0;
  expect_reject(T(OK_DT "," OK_SH "," OK_OF), 4, &lim, ANOM_ETOOBIG,
                "tensor 'w': shape has 1 dimensions, the limit is 0");
  st_limits_default(&lim);
  lim.max_dim = 3;
  expect_reject(T(OK_DT ",\"shape\":[3,4],\"data_offsets\":[0,48]"), 48, &lim,
                ANOM_ETOOBIG, "tensor 'w': shape[1] is 4, the limit is 3");
}

static void test_reject_metadata(void **state) {
  (void)state;
  expect_reject("{\"__metadata__\":[\"a\"]}", 0, NULL, ANOM_EFORMAT,
                "__metadata__ is an array, expected an object of strings");
  expect_reject("{\"__metadata__\":\"a\"}", 0, NULL, ANOM_EFORMAT,
                "__metadata__ is a string, expected an object of strings");
  expect_reject("{\"__metadata__\":{\"k\":1}}", 0, NULL, ANOM_EFORMAT,
                "__metadata__ key 'k' is a number, expected a string");
  expect_reject("{\"__metadata__\":{\"a\":\"1\",\"k\":{}}}", 0, NULL,
                ANOM_EFORMAT, "__metadata__ key 'k' is an object");
  expect_reject("{\"__metadata__\":{\"k\":null}}", 0, NULL, ANOM_EFORMAT,
                "__metadata__ key 'k' is null, expected a string");
  expect_reject("{\"__metadata__\":{\"k\":\"1\",\"j\":\"2\",\"k\":\"3\"}}", 0,
                NULL, ANOM_EFORMAT, "__metadata__ key 'k' appears more than once");
  expect_reject("{\"__metadata__\":{},\"__metadata__\":{}}", 0, NULL,
                ANOM_EFORMAT, "__metadata__ appears more than once");
}

/* ---- writing ------------------------------------------------------------ */

static void test_write_round_trip(void **state) {
  float w[6] = {1.0f, -2.0f, 0.0f, 0.0f, INFINITY, 1e-40f};
  float s[1] = {3.25f};
  float z[1] = {99.0f};
  st_out_tensor ts[4];
  st_meta_kv meta[2] = {{"format", "sqlite-anomaly"},
                        {"note", "q\"uote\\ \xc3\xa9 \x01"}};
  unsigned char *out = NULL;
  size_t nout = 0, hlen, i;
  st_file f;
  anom_err e;
  float back[6];
  int64_t sh23[2] = {2, 3};
  (void)state;
  w[2] = -0.0f;
  w[3] = bits_float(0x7fc01234u);  /* nan with a payload */
  memset(ts, 0, sizeof ts);
  ts[0].name = "netg.encoder1.main.initial-conv-1-64.weight";
  ts[0].ndim = 2; ts[0].shape[0] = 2; ts[0].shape[1] = 3; ts[0].data = w;
  ts[1].name = "scalar"; ts[1].ndim = 0; ts[1].data = s;
  ts[2].name = "empty"; ts[2].ndim = 2; ts[2].shape[0] = 0; ts[2].shape[1] = 3;
  ts[2].data = z;
  ts[3].name = "odd \"name\"\n\xe2\x82\xac"; ts[3].ndim = 1; ts[3].shape[0] = 1;
  ts[3].data = s;

  assert_int_equal(st_write(&out, &nout, ts, 4, meta, 2, &e), ANOM_OK);
  assert_non_null(out);
  hlen = 0;
  for(i = 0; i < 8; i++) hlen |= (size_t)out[i] << (8 * i);
  assert_int_equal(hlen % 8, 0);
  assert_int_equal(nout, 8 + hlen + 6 * 4 + 4 + 0 + 4);
  assert_memory_equal(out + 8, "{\"__metadata__\":{", 17);
  assert_true(out[8 + hlen - 1] == '}' || out[8 + hlen - 1] == ' ');

  assert_int_equal(st_parse(&f, out, nout, NULL, &e), ANOM_OK);
  assert_int_equal(f.ntensors, 4);
  for(i = 0; i < 4; i++) assert_string_equal(f.tensors[i].name, ts[i].name);
  assert_int_equal(f.data_len, 32);
  assert_ptr_equal(f.tensors[0].data, f.data);
  assert_ptr_equal(f.tensors[1].data, f.data + 24);
  assert_ptr_equal(f.tensors[2].data, f.data + 28);
  assert_ptr_equal(f.tensors[3].data, f.data + 28);
  assert_int_equal(f.tensors[0].dtype, ST_F32);
  assert_int_equal(st_read_f32(&f.tensors[0], sh23, 2, back, &e), ANOM_OK);
  for(i = 0; i < 6; i++) assert_int_equal(float_bits(back[i]), float_bits(w[i]));
  assert_int_equal(f.tensors[1].ndim, 0);
  assert_int_equal(f.tensors[1].numel, 1);
  assert_int_equal(st_read_f32(&f.tensors[1], NULL, 0, back, &e), ANOM_OK);
  assert_true(back[0] == 3.25f);
  assert_int_equal(f.tensors[2].numel, 0);
  assert_int_equal(f.tensors[2].shape[1], 3);
  assert_int_equal(f.nmeta, 2);
  assert_string_equal(f.meta[0].key, "format");
  assert_string_equal(st_meta(&f, "note"), meta[1].value);
  /* little-endian on disk, whatever the host */
  assert_int_equal(f.data[0], 0x00);
  assert_int_equal(f.data[3], 0x3f);
  assert_int_equal(f.data[7], 0xc0);
  st_free(&f);
  anom_free(out);

  /* nothing at all: "{}" padded to 8 */
  assert_int_equal(st_write(&out, &nout, NULL, 0, NULL, 0, &e), ANOM_OK);
  assert_int_equal(nout, 16);
  assert_memory_equal(out, "\x08\0\0\0\0\0\0\0{}      ", 16);
  anom_free(out);
}

/* The exact bytes of a small file, built by hand. */
static void test_write_exact_bytes(void **state) {
  static const char json[] =
    "{\"__metadata__\":{\"k\":\"v\"},"
    "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
    "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]}}";
  float w[2] = {1.0f, -2.0f}, s = 0.5f;
  st_out_tensor ts[2];
  st_meta_kv meta[1] = {{"k", "v"}};
  unsigned char want[256], *out;
  size_t jl = sizeof json - 1, padded = (jl + 7) / 8 * 8, nout;
  anom_err e;
  (void)state;
  assert_int_equal(jl, 132);
  assert_int_equal(padded, 136);
  memset(want, 0, sizeof want);
  want[0] = 136;
  memcpy(want + 8, json, jl);
  memset(want + 8 + jl, ' ', padded - jl);
  memcpy(want + 144, "\x00\x00\x80\x3f\x00\x00\x00\xc0\x00\x00\x00\x3f", 12);

  memset(ts, 0, sizeof ts);
  ts[0].name = "w"; ts[0].ndim = 1; ts[0].shape[0] = 2; ts[0].data = w;
  ts[1].name = "s"; ts[1].ndim = 0; ts[1].data = &s;
  assert_int_equal(st_write(&out, &nout, ts, 2, meta, 1, &e), ANOM_OK);
  assert_int_equal(nout, 156);
  assert_memory_equal(out, want, 156);
  anom_free(out);
}

/* The worked example of docs/model-format.md, byte for byte. */
static void test_docs_example(void **state) {
  static const char json[] =
    "{\"__metadata__\":{\"format\":\"sqlite-anomaly\",\"format_version\":\"1\","
    "\"method\":\"ganomaly\",\"width\":\"32\",\"height\":\"32\",\"channels\":\"1\","
    "\"fit\":\"resize\",\"hparams\":\"{\\\"nz\\\":100,\\\"ngf\\\":64,"
    "\\\"extralayers\\\":0}\","
    "\"calibration\":\"{\\\"n\\\":0,\\\"quantiles\\\":[],\\\"scales\\\":{}}\","
    "\"threshold\":\"null\",\"checksum\":\"crc32:332b058b\"},"
    "\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
    "\"a.bias\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]}}";
  static const unsigned char data[12] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00,
                                         0x00, 0xc0, 0x00, 0x00, 0x00, 0x3f};
  float w[2] = {1.0f, -2.0f}, b = 0.5f;
  char ck[20];
  st_out_tensor ts[2];
  st_meta_kv meta[11] = {
    {"format", "sqlite-anomaly"}, {"format_version", "1"},
    {"method", "ganomaly"}, {"width", "32"}, {"height", "32"},
    {"channels", "1"}, {"fit", "resize"},
    {"hparams", "{\"nz\":100,\"ngf\":64,\"extralayers\":0}"},
    {"calibration", "{\"n\":0,\"quantiles\":[],\"scales\":{}}"},
    {"threshold", "null"}, {"checksum", ck}};
  unsigned char *out;
  size_t nout;
  st_file f;
  anom_err e;
  (void)state;
  snprintf(ck, sizeof ck, "crc32:%08x", (unsigned)st_crc32(0, data, 12));
  assert_string_equal(ck, "crc32:332b058b");
  memset(ts, 0, sizeof ts);
  ts[0].name = "a.weight"; ts[0].ndim = 1; ts[0].shape[0] = 2; ts[0].data = w;
  ts[1].name = "a.bias"; ts[1].ndim = 0; ts[1].data = &b;
  assert_int_equal(st_write(&out, &nout, ts, 2, meta, 11, &e), ANOM_OK);
  assert_int_equal(sizeof json - 1, 418);
  assert_int_equal(nout, 444);
  assert_memory_equal(out, "\xa8\x01\0\0\0\0\0\0", 8);
  assert_memory_equal(out + 8, json, 418);
  assert_memory_equal(out + 8 + 418, "      ", 6);
  assert_memory_equal(out + 432, data, 12);
  assert_int_equal(st_parse(&f, out, nout, NULL, &e), ANOM_OK);
  assert_int_equal(st_crc32(0, f.data, f.data_len), 0x332b058bu);
  assert_string_equal(st_meta(&f, "checksum"), "crc32:332b058b");
  st_free(&f);
  anom_free(out);
}

static void expect_write_reject(const st_out_tensor *ts, int nt,
                                const st_meta_kv *meta, int nmeta, int code,
                                const char *needle) {
  unsigned char *out = (unsigned char *)&out;
  size_t nout = 77;
  anom_err e;
  int rc;
  anom_err_clear(&e);
  rc = st_write(&out, &nout, ts, nt, meta, nmeta, &e);
  if( rc != code || !strstr(e.msg, needle) ){
    print_error("want %d '%s', got %d '%s'\n", code, needle, rc, e.msg);
  }
  assert_int_equal(rc, code);
  assert_non_null(strstr(e.msg, needle));
  assert_null(out);
  assert_int_equal(nout, 0);
}

static void test_write_rejects(void **state) {
  float d[4] = {0};
  st_out_tensor ts[2];
  st_meta_kv meta[2] = {{"k", "v"}, {"k", "w"}};
  anom_err e;
  size_t nout;
  unsigned char *out;
  (void)state;
  memset(ts, 0, sizeof ts);
  ts[0].name = "a"; ts[0].ndim = 1; ts[0].shape[0] = 4; ts[0].data = d;
  ts[1] = ts[0];
  ts[1].name = "b";

  assert_int_equal(st_write(NULL, &nout, ts, 1, NULL, 0, &e), ANOM_EINVAL);
  assert_non_null(strstr(e.msg, "st_write: no output buffer given"));
  expect_write_reject(ts, -1, NULL, 0, ANOM_EINVAL,
                      "st_write: bad arguments: -1 tensors");
  expect_write_reject(NULL, 1, NULL, 0, ANOM_EINVAL,
                      "st_write: bad arguments: 1 tensors at NULL");
  expect_write_reject(ts, 1, NULL, 1, ANOM_EINVAL,
                      "1 metadata entries at NULL");

  ts[1].name = NULL;
  expect_write_reject(ts, 2, NULL, 0, ANOM_EINVAL,
                      "tensor 1: name is NULL, expected a non-empty string");
  ts[1].name = "";
  expect_write_reject(ts, 2, NULL, 0, ANOM_EINVAL,
                      "tensor 1: name is empty, expected a non-empty string");
  ts[1].name = "__metadata__";
  expect_write_reject(ts, 2, NULL, 0, ANOM_EINVAL,
                      "tensor 1: the name __metadata__ is reserved");
  ts[1].name = "b\xff";
  expect_write_reject(ts, 2, NULL, 0, ANOM_EINVAL,
                      "tensor 1: name is not valid utf-8");
  ts[1].name = "a";
  expect_write_reject(ts, 2, NULL, 0, ANOM_EINVAL,
                      "tensor name 'a' appears more than once");
  ts[1].name = "b";

  ts[1].ndim = 9;
  expect_write_reject(ts, 2, NULL, 0, ANOM_EINVAL,
                      "tensor 'b': ndim 9 is outside 0..8");
  ts[1].ndim = -1;
  expect_write_reject(ts, 2, NULL, 0, ANOM_EINVAL,
                      "tensor 'b': ndim -1 is outside 0..8");
  ts[1].ndim = 2;
  ts[1].shape[0] = 2; ts[1].shape[1] = -1;
  expect_write_reject(ts, 2, NULL, 0, ANOM_EINVAL,
                      "tensor 'b': shape[1] is -1, expected a non-negative "
                      "integer below 2^53");
  ts[1].shape[1] = (int64_t)1 << 53;
  expect_write_reject(ts, 2, NULL, 0, ANOM_EINVAL,
                      "tensor 'b': shape[1] is 9007199254740992");
  ts[1].shape[0] = (int64_t)1 << 40; ts[1].shape[1] = (int64_t)1 << 40;
  expect_write_reject(ts, 2, NULL, 0, ANOM_ETOOBIG,
                      "tensor 'b': shape [1099511627776, 1099511627776] has "
                      "more elements than can be written");
  ts[1].shape[0] = (int64_t)1 << 26; ts[1].shape[1] = (int64_t)1 << 26;
  expect_write_reject(ts, 2, NULL, 0, ANOM_ETOOBIG,
                      "has more elements than can be written");
  ts[1].shape[0] = 2; ts[1].shape[1] = 2;
  ts[1].data = NULL;
  expect_write_reject(ts, 2, NULL, 0, ANOM_EINVAL,
                      "tensor 'b': data is NULL for 4 elements");
  /* NULL data is fine for an empty tensor */
  ts[1].shape[0] = 0;
  assert_int_equal(st_write(&out, &nout, ts, 2, NULL, 0, &e), ANOM_OK);
  anom_free(out);

  expect_write_reject(ts, 2, meta, 2, ANOM_EINVAL,
                      "metadata key 'k' appears more than once");
  meta[1].key = NULL;
  expect_write_reject(ts, 2, meta, 2, ANOM_EINVAL, "metadata 1: key is NULL");
  meta[1].key = "j";
  meta[1].value = NULL;
  expect_write_reject(ts, 2, meta, 2, ANOM_EINVAL, "metadata 1: value is NULL");
  meta[1].value = "\xc3";
  expect_write_reject(ts, 2, meta, 2, ANOM_EINVAL,
                      "metadata 1: key or value is not valid utf-8");
  meta[1].value = "ok";
  assert_int_equal(st_write(&out, &nout, ts, 2, meta, 2, &e), ANOM_OK);
  anom_free(out);
}

/* ---- allocation failure ------------------------------------------------- */

static void test_alloc_failure(void **state) {
  float d[6] = {1, 2, 3, 4, 5, 6};
  st_out_tensor ts[3];
  st_meta_kv meta[3] = {{"a", "1"}, {"b", "2"}, {"c", "3"}};
  unsigned char *blob = NULL, *out;
  size_t n = 0, nout;
  st_file f;
  anom_err e;
  long i;
  int rc, failures = 0;
  (void)state;
  memset(ts, 0, sizeof ts);
  ts[0].name = "x"; ts[0].ndim = 2; ts[0].shape[0] = 2; ts[0].shape[1] = 3;
  ts[0].data = d;
  ts[1].name = "y"; ts[1].ndim = 0; ts[1].data = d;
  ts[2].name = "z"; ts[2].ndim = 1; ts[2].shape[0] = 0;

  for(i = 1; i < 100; i++){
    anom_alloc_fail_after(i);
    out = (unsigned char *)&out;
    rc = st_write(&out, &nout, ts, 3, meta, 3, &e);
    anom_alloc_fail_after(0);
    if( rc == ANOM_OK ){
      blob = out;
      n = nout;
      break;
    }
    assert_int_equal(rc, ANOM_ENOMEM);
    assert_non_null(strstr(e.msg, "out of memory"));
    assert_null(out);
    failures++;
  }
  assert_non_null(blob);
  assert_true(failures >= 2);

  failures = 0;
  for(i = 1; i < 100; i++){
    memset(&f, 0xab, sizeof f);
    anom_alloc_fail_after(i);
    rc = st_parse(&f, blob, n, NULL, &e);
    anom_alloc_fail_after(0);
    if( rc == ANOM_OK ) break;
    assert_int_equal(rc, ANOM_ENOMEM);
    assert_non_null(strstr(e.msg, "out of memory"));
    assert_true(is_zeroed(&f));
    failures++;
  }
  assert_int_equal(rc, ANOM_OK);
  /* header copy, metadata array and keys, 6 strings, tensors, names,
  ** ranges, 3 names */
  assert_int_equal(failures, 1 + 2 + 6 + 3 + 3);
  assert_int_equal(f.ntensors, 3);
  assert_string_equal(st_meta(&f, "c"), "3");
  st_free(&f);

  /*
  ** Again with cJSON's own allocations routed through anom_malloc (only in
  ** this test process: the hooks are global), so failures inside cJSON are
  ** injected too and must still come back as ENOMEM, not as a format error.
  */
  {
    cJSON_Hooks hooks = {anom_malloc, anom_free};
    int wfail = 0, pfail = 0;
    cJSON_InitHooks(&hooks);
    for(i = 1; i < 1000; i++){
      anom_alloc_fail_after(i);
      out = (unsigned char *)&out;
      rc = st_write(&out, &nout, ts, 3, meta, 3, &e);
      anom_alloc_fail_after(0);
      if( rc == ANOM_OK ) break;
      assert_int_equal(rc, ANOM_ENOMEM);
      assert_non_null(strstr(e.msg, "out of memory"));
      assert_null(out);
      wfail++;
    }
    assert_int_equal(rc, ANOM_OK);
    assert_int_equal(nout, n);
    assert_memory_equal(out, blob, n);
    anom_free(out);
    for(i = 1; i < 1000; i++){
      memset(&f, 0xab, sizeof f);
      anom_alloc_fail_after(i);
      rc = st_parse(&f, blob, n, NULL, &e);
      anom_alloc_fail_after(0);
      if( rc == ANOM_OK ) break;
      assert_int_equal(rc, ANOM_ENOMEM);
      assert_non_null(strstr(e.msg, "out of memory"));
      assert_true(is_zeroed(&f));
      pfail++;
    }
    cJSON_InitHooks(NULL);
    assert_int_equal(rc, ANOM_OK);
    st_free(&f);
    assert_true(wfail > 20);
    assert_true(pfail > failures + 20);
  }
  anom_free(blob);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_crc32),
    cmocka_unit_test(test_f16_known),
    cmocka_unit_test(test_f16_exhaustive),
    cmocka_unit_test(test_bf16),
    cmocka_unit_test(test_read_shape_check),
    cmocka_unit_test(test_parse_hand_built),
    cmocka_unit_test(test_parse_edge_accepts),
    cmocka_unit_test(test_parse_header_only),
    cmocka_unit_test(test_reject_framing),
    cmocka_unit_test(test_reject_header_text),
    cmocka_unit_test(test_reject_tensor_entries),
    cmocka_unit_test(test_reject_across_tensors),
    cmocka_unit_test(test_reject_metadata),
    cmocka_unit_test(test_write_round_trip),
    cmocka_unit_test(test_write_exact_bytes),
    cmocka_unit_test(test_docs_example),
    cmocka_unit_test(test_write_rejects),
    cmocka_unit_test(test_alloc_failure),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
