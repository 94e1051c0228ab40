/*
** safetensors.c - parse, validate and write the safetensors container that
** holds models (layout and API in safetensors.h).
**
** Parsing never trusts the blob: the 8-byte header length is checked against
** the blob and the limit; the header bytes must be UTF-8 and strict JSON
** (a small syntax pass that allocates nothing gives exact error positions,
** so a failure of cJSON afterwards can only be out of memory); the JSON,
** parsed by cJSON from a NUL-terminated copy, must be an object whose
** entries are checked one by one: fields, dtype, shape, data_offsets. JSON
** numbers arrive as doubles, so a shape entry or offset is accepted only when
** it is an exact non-negative integer below 2^53. Names are then checked for
** duplicates (cJSON keeps repeated keys) and byte ranges for overlap, each by
** sorting, so a header with many tensors costs n log n, not n^2.
**
** Tensor bytes are little-endian. They are read and written a byte at a
** time into integers, which is correct on any host byte order and compiles
** to plain loads and stores on a little-endian one.
**
** Writing builds the header with cJSON (shape and offsets inserted as raw
** decimal integers so they never print in exponent form), pads it with
** spaces to a multiple of 8 bytes and appends the F32 data contiguously.
*/
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Names in messages are cut to 160 bytes so the rest of the message fits. */
#define NAME "%.160s"

/* 2^53: every integer up to here is exact as a JSON number (a double). */
#define ST_EXACT_MAX 9007199254740992.0

static const char ST_META_KEY[] = "__metadata__";

/* ---- small helpers ------------------------------------------------------ */

static size_t dtype_size(st_dtype d) { return d == ST_F32 ? 4 : 2; }

static const char *dtype_name(st_dtype d) {
  return d == ST_F32 ? "F32" : d == ST_F16 ? "F16" : "BF16";
}

static int dtype_parse(const char *s, st_dtype *out) {
  if( strcmp(s, "F32") == 0 ){ *out = ST_F32; return 0; }
  if( strcmp(s, "F16") == 0 ){ *out = ST_F16; return 0; }
  if( strcmp(s, "BF16") == 0 ){ *out = ST_BF16; return 0; }
  return 1;
}

/* "an object", "a number", ... for messages about a JSON value. */
static const char *json_kind(const cJSON *j) {
  if( cJSON_IsObject(j) ) return "an object";
  if( cJSON_IsArray(j) ) return "an array";
  if( cJSON_IsString(j) ) return "a string";
  if( cJSON_IsNumber(j) ) return "a number";
  if( cJSON_IsBool(j) ) return "a boolean";
  if( cJSON_IsNull(j) ) return "null";
  return "an unknown json value";
}

/* Write "[a, b, c]" (or "[]") into buf. */
static void shape_str(char *buf, size_t cap, const int64_t *shape, int ndim) {
  size_t k = 0;
  int i;
  k += (size_t)snprintf(buf, cap, "[");
  for(i = 0; i < ndim && k < cap; i++){
    k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "",
                          (long long)shape[i]);
  }
  if( k < cap ) snprintf(buf + k, cap - k, "]");
}

/* The shortest of %.15g / %.17g that reads back as d, for messages. */
static void double_str(char *buf, size_t cap, double d) {
  snprintf(buf, cap, "%.15g", d);
  if( strtod(buf, NULL) != d ) snprintf(buf, cap, "%.17g", d);
}

static uint64_t load_le64(const unsigned char *p) {
  uint64_t v = 0;
  int i;
  for(i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static uint32_t load_le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static uint16_t load_le16(const unsigned char *p) {
  return (uint16_t)(p[0] | p[1] << 8);
}

static void store_le64(unsigned char *p, uint64_t v) {
  int i;
  for(i = 0; i < 8; i++){ p[i] = (unsigned char)(v & 0xff); v >>= 8; }
}

static void store_le32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v & 0xff);
  p[1] = (unsigned char)(v >> 8 & 0xff);
  p[2] = (unsigned char)(v >> 16 & 0xff);
  p[3] = (unsigned char)(v >> 24 & 0xff);
}

static float bits_to_float(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/*
** IEEE half -> float, exact. Normal halves rebias the exponent (15 -> 127);
** subnormals (exponent 0, value man * 2^-24) are normalised by shifting the
** mantissa until its implicit bit appears; inf and nan keep sign and payload.
*/
static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t ex = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if( ex == 0 ){
    if( man == 0 ){
      bits = sign;
    }else{
      uint32_t s = 0;
      while( (man & 0x400u) == 0 ){ man <<= 1; s++; }
      bits = sign | (113u - s) << 23 | (man & 0x3ffu) << 13;
    }
  }else if( ex == 31 ){
    bits = sign | 0x7f800000u | man << 13;
  }else{
    bits = sign | (ex + 112u) << 23 | man << 13;
  }
  return bits_to_float(bits);
}

/* bfloat16 is the top half of a float. */
static float bf16_to_float(uint16_t h) {
  return bits_to_float((uint32_t)h << 16);
}

/*
** 0 if s[0..n) is well-formed UTF-8: no overlong forms, no surrogates, no
** code point past U+10FFFF. Otherwise 1, with the offset of the bad byte.
*/
static int utf8_check(const unsigned char *s, size_t n, size_t *bad) {
  size_t i = 0;
  while( i < n ){
    unsigned c = s[i];
    size_t len, k;
    uint32_t cp, lo;
    if( c < 0x80 ){ i++; continue; }
    if( c >= 0xc2 && c <= 0xdf ){ len = 2; cp = c & 0x1f; lo = 0x80; }
    else if( (c & 0xf0) == 0xe0 ){ len = 3; cp = c & 0x0f; lo = 0x800; }
    else if( c >= 0xf0 && c <= 0xf4 ){ len = 4; cp = c & 0x07; lo = 0x10000; }
    else goto bad_byte;
    if( n - i < len ) goto bad_byte;
    for(k = 1; k < len; k++){
      if( (s[i + k] & 0xc0) != 0x80 ) goto bad_byte;
      cp = cp << 6 | (s[i + k] & 0x3f);
    }
    if( cp < lo || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ){
      goto bad_byte;
    }
    i += len;
  }
  return 0;
bad_byte:
  if( bad ) *bad = i;
  return 1;
}

static char *str_dup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = anom_malloc(n);
  if( d ) memcpy(d, s, n);
  return d;
}

static int cmp_str_ptr(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
** The first string that appears twice among strs[0..n) (sorted in place),
** or NULL.
*/
static const char *find_duplicate(const char **strs, size_t n) {
  size_t i;
  if( n < 2 ) return NULL;
  qsort(strs, n, sizeof *strs, cmp_str_ptr);
  for(i = 1; i < n; i++){
    if( strcmp(strs[i - 1], strs[i]) == 0 ) return strs[i];
  }
  return NULL;
}

/* ---- CRC-32 ------------------------------------------------------------- */

/* crc_table[i]: i run through 8 rounds of the reflected polynomial 0xEDB88320. */
static const uint32_t crc_table[256] = {
  0x00000000u, 0x77073096u, 0xee0e612cu, 0x990951bau, 0x076dc419u, 0x706af48fu,
  0xe963a535u, 0x9e6495a3u, 0x0edb8832u, 0x79dcb8a4u, 0xe0d5e91eu, 0x97d2d988u,
  0x09b64c2bu, 0x7eb17cbdu, 0xe7b82d07u, 0x90bf1d91u, 0x1db71064u, 0x6ab020f2u,
  0xf3b97148u, 0x84be41deu, 0x1adad47du, 0x6ddde4ebu, 0xf4d4b551u, 0x83d385c7u,
  0x136c9856u, 0x646ba8c0u, 0xfd62f97au, 0x8a65c9ecu, 0x14015c4fu, 0x63066cd9u,
  0xfa0f3d63u, 0x8d080df5u, 0x3b6e20c8u, 0x4c69105eu, 0xd56041e4u, 0xa2677172u,
  0x3c03e4d1u, 0x4b04d447u, 0xd20d85fdu, 0xa50ab56bu, 0x35b5a8fau, 0x42b2986cu,
  0xdbbbc9d6u, 0xacbcf940u, 0x32d86ce3u, 0x45df5c75u, 0xdcd60dcfu, 0xabd13d59u,
  0x26d930acu, 0x51de003au, 0xc8d75180u, 0xbfd06116u, 0x21b4f4b5u, 0x56b3c423u,
  0xcfba9599u, 0xb8bda50fu, 0x2802b89eu, 0x5f058808u, 0xc60cd9b2u, 0xb10be924u,
  0x2f6f7c87u, 0x58684c11u, 0xc1611dabu, 0xb6662d3du, 0x76dc4190u, 0x01db7106u,
  0x98d220bcu, 0xefd5102au, 0x71b18589u, 0x06b6b51fu, 0x9fbfe4a5u, 0xe8b8d433u,
  0x7807c9a2u, 0x0f00f934u, 0x9609a88eu, 0xe10e9818u, 0x7f6a0dbbu, 0x086d3d2du,
  0x91646c97u, 0xe6635c01u, 0x6b6b51f4u, 0x1c6c6162u, 0x856530d8u, 0xf262004eu,
  0x6c0695edu, 0x1b01a57bu, 0x8208f4c1u, 0xf50fc457u, 0x65b0d9c6u, 0x12b7e950u,
  0x8bbeb8eau, 0xfcb9887cu, 0x62dd1ddfu, 0x15da2d49u, 0x8cd37cf3u, 0xfbd44c65u,
  0x4db26158u, 0x3ab551ceu, 0xa3bc0074u, 0xd4bb30e2u, 0x4adfa541u, 0x3dd895d7u,
  0xa4d1c46du, 0xd3d6f4fbu, 0x4369e96au, 0x346ed9fcu, 0xad678846u, 0xda60b8d0u,
  0x44042d73u, 0x33031de5u, 0xaa0a4c5fu, 0xdd0d7cc9u, 0x5005713cu, 0x270241aau,
  0xbe0b1010u, 0xc90c2086u, 0x5768b525u, 0x206f85b3u, 0xb966d409u, 0xce61e49fu,
  0x5edef90eu, 0x29d9c998u, 0xb0d09822u, 0xc7d7a8b4u, 0x59b33d17u, 0x2eb40d81u,
  0xb7bd5c3bu, 0xc0ba6cadu, 0xedb88320u, 0x9abfb3b6u, 0x03b6e20cu, 0x74b1d29au,
  0xead54739u, 0x9dd277afu, 0x04db2615u, 0x73dc1683u, 0xe3630b12u, 0x94643b84u,
  0x0d6d6a3eu, 0x7a6a5aa8u, 0xe40ecf0bu, 0x9309ff9du, 0x0a00ae27u, 0x7d079eb1u,
  0xf00f9344u, 0x8708a3d2u, 0x1e01f268u, 0x6906c2feu, 0xf762575du, 0x806567cbu,
  0x196c3671u, 0x6e6b06e7u, 0xfed41b76u, 0x89d32be0u, 0x10da7a5au, 0x67dd4accu,
  0xf9b9df6fu, 0x8ebeeff9u, 0x17b7be43u, 0x60b08ed5u, 0xd6d6a3e8u, 0xa1d1937eu,
  0x38d8c2c4u, 0x4fdff252u, 0xd1bb67f1u, 0xa6bc5767u, 0x3fb506ddu, 0x48b2364bu,
  0xd80d2bdau, 0xaf0a1b4cu, 0x36034af6u, 0x41047a60u, 0xdf60efc3u, 0xa867df55u,
  0x316e8eefu, 0x4669be79u, 0xcb61b38cu, 0xbc66831au, 0x256fd2a0u, 0x5268e236u,
  0xcc0c7795u, 0xbb0b4703u, 0x220216b9u, 0x5505262fu, 0xc5ba3bbeu, 0xb2bd0b28u,
  0x2bb45a92u, 0x5cb36a04u, 0xc2d7ffa7u, 0xb5d0cf31u, 0x2cd99e8bu, 0x5bdeae1du,
  0x9b64c2b0u, 0xec63f226u, 0x756aa39cu, 0x026d930au, 0x9c0906a9u, 0xeb0e363fu,
  0x72076785u, 0x05005713u, 0x95bf4a82u, 0xe2b87a14u, 0x7bb12baeu, 0x0cb61b38u,
  0x92d28e9bu, 0xe5d5be0du, 0x7cdcefb7u, 0x0bdbdf21u, 0x86d3d2d4u, 0xf1d4e242u,
  0x68ddb3f8u, 0x1fda836eu, 0x81be16cdu, 0xf6b9265bu, 0x6fb077e1u, 0x18b74777u,
  0x88085ae6u, 0xff0f6a70u, 0x66063bcau, 0x11010b5cu, 0x8f659effu, 0xf862ae69u,
  0x616bffd3u, 0x166ccf45u, 0xa00ae278u, 0xd70dd2eeu, 0x4e048354u, 0x3903b3c2u,
  0xa7672661u, 0xd06016f7u, 0x4969474du, 0x3e6e77dbu, 0xaed16a4au, 0xd9d65adcu,
  0x40df0b66u, 0x37d83bf0u, 0xa9bcae53u, 0xdebb9ec5u, 0x47b2cf7fu, 0x30b5ffe9u,
  0xbdbdf21cu, 0xcabac28au, 0x53b39330u, 0x24b4a3a6u, 0xbad03605u, 0xcdd70693u,
  0x54de5729u, 0x23d967bfu, 0xb3667a2eu, 0xc4614ab8u, 0x5d681b02u, 0x2a6f2b94u,
  0xb40bbe37u, 0xc30c8ea1u, 0x5a05df1bu, 0x2d02ef8du,
};

uint32_t st_crc32(uint32_t crc, const void *buf, size_t n) {
  const unsigned char *p = buf;
  size_t i;
  crc ^= 0xffffffffu;
  for(i = 0; i < n; i++) crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

/* ---- parsing ------------------------------------------------------------ */

void st_limits_default(st_limits *l) {
  l->max_header_bytes = (size_t)16 << 20;
  l->max_tensors = 100000;
  l->max_dims = ST_MAX_DIMS;
  l->max_dim = (int64_t)1 << 30;
}

/* A tensor's byte range in the data section, for the overlap check. */
typedef struct st_range {
  uint64_t begin, end;
  const char *name;
} st_range;

static int cmp_range(const void *a, const void *b) {
  const st_range *x = a, *y = b;
  if( x->begin != y->begin ) return x->begin < y->begin ? -1 : 1;
  if( x->end != y->end ) return x->end < y->end ? -1 : 1;
  return 0;
}

/*
** Read j as an exact non-negative integer below 2^53 into *out. what names
** the value in messages, e.g. "shape[1]", for tensor name.
*/
static int json_uint(const cJSON *j, const char *name, const char *what,
                     uint64_t *out, anom_err *e) {
  char num[40];
  double d;
  if( !cJSON_IsNumber(j) ){
    return anom_fail(e, ANOM_EFORMAT,
                     "tensor '" NAME "': %s is %s, expected a non-negative "
                     "integer", name, what, json_kind(j));
  }
  d = j->valuedouble;
  double_str(num, sizeof num, d);
  if( !(d >= 0) ){
    return anom_fail(e, ANOM_EFORMAT,
                     "tensor '" NAME "': %s is %s, expected a non-negative "
                     "integer", name, what, num);
  }
  if( !(d < ST_EXACT_MAX) ){
    return anom_fail(e, ANOM_EFORMAT,
                     "tensor '" NAME "': %s is %s, expected an integer below "
                     "2^53", name, what, num);
  }
  if( (double)(uint64_t)d != d ){
    return anom_fail(e, ANOM_EFORMAT,
                     "tensor '" NAME "': %s is %s, expected a non-negative "
                     "integer", name, what, num);
  }
  *out = (uint64_t)d;
  return ANOM_OK;
}

/* Fill t (already holding its name) from the header entry j. */
static int parse_tensor(st_tensor *t, st_range *r, const cJSON *j,
                        const unsigned char *data, size_t data_len,
                        const st_limits *lim, anom_err *e) {
  const char *nm = t->name;
  const cJSON *c, *jdtype = NULL, *jshape = NULL, *joff = NULL;
  uint64_t off[2], need;
  size_t numel = 1, nbytes;
  int ndim, i, zero = 0, ovf = 0, rc;
  char have[8 * 24 + 4];

  if( !cJSON_IsObject(j) ){
    return anom_fail(e, ANOM_EFORMAT,
                     "tensor '" NAME "' is %s, expected an object with dtype, "
                     "shape and data_offsets", nm, json_kind(j));
  }
  for(c = j->child; c; c = c->next){
    const cJSON **slot;
    const char *k = c->string ? c->string : "";
    if( strcmp(k, "dtype") == 0 ) slot = &jdtype;
    else if( strcmp(k, "shape") == 0 ) slot = &jshape;
    else if( strcmp(k, "data_offsets") == 0 ) slot = &joff;
    else{
      return anom_fail(e, ANOM_EFORMAT,
                       "tensor '" NAME "': unknown field '" NAME "' (expected "
                       "dtype, shape and data_offsets)", nm, k);
    }
    if( *slot ){
      return anom_fail(e, ANOM_EFORMAT,
                       "tensor '" NAME "': field '%s' appears more than once",
                       nm, k);
    }
    *slot = c;
  }
  if( !jdtype || !jshape || !joff ){
    return anom_fail(e, ANOM_EFORMAT, "tensor '" NAME "': missing field '%s'",
                     nm, !jdtype ? "dtype" : !jshape ? "shape"
                                                     : "data_offsets");
  }

  /* dtype */
  if( !cJSON_IsString(jdtype) || !jdtype->valuestring ){
    return anom_fail(e, ANOM_EFORMAT,
                     "tensor '" NAME "': dtype is %s, expected a string such "
                     "as \"F32\"", nm, json_kind(jdtype));
  }
  if( dtype_parse(jdtype->valuestring, &t->dtype) ){
    return anom_fail(e, ANOM_EFORMAT,
                     "tensor '" NAME "': unsupported dtype '%.40s' (F32, F16 "
                     "and BF16 are read)", nm, jdtype->valuestring);
  }

  /* shape */
  if( !cJSON_IsArray(jshape) ){
    return anom_fail(e, ANOM_EFORMAT,
                     "tensor '" NAME "': shape is %s, expected an array of "
                     "non-negative integers", nm, json_kind(jshape));
  }
  ndim = 0;
  for(c = jshape->child; c; c = c->next){
    if( ndim == lim->max_dims ){
      return anom_fail(e, ANOM_ETOOBIG,
                       "tensor '" NAME "': shape has %d dimensions, the limit "
                       "is %d", nm, cJSON_GetArraySize(jshape), lim->max_dims);
    }
    {
      char what[24];
      uint64_t v;
      snprintf(what, sizeof what, "shape[%d]", ndim);
      if( (rc = json_uint(c, nm, what, &v, e)) != ANOM_OK ) return rc;
      if( v > (uint64_t)lim->max_dim ){
        return anom_fail(e, ANOM_ETOOBIG,
                         "tensor '" NAME "': shape[%d] is %llu, the limit is "
                         "%lld", nm, ndim, (unsigned long long)v,
                         (long long)lim->max_dim);
      }
      t->shape[ndim++] = (int64_t)v;
      if( v == 0 ) zero = 1;
    }
  }
  t->ndim = ndim;
  shape_str(have, sizeof have, t->shape, ndim);
  /* A zero anywhere makes the tensor empty, whatever the other dims are. */
  if( zero ){
    numel = 0;
  }else{
    for(i = 0; i < ndim && !ovf; i++){
      ovf = anom_mul_size(numel, (size_t)t->shape[i], &numel);
    }
  }
  if( ovf || anom_mul_size(numel, dtype_size(t->dtype), &nbytes) ||
      (uint64_t)numel > (uint64_t)INT64_MAX ){
    return anom_fail(e, ANOM_ETOOBIG,
                     "tensor '" NAME "': shape %s has more elements than can "
                     "be addressed", nm, have);
  }
  t->numel = (int64_t)numel;
  t->nbytes = nbytes;

  /* data_offsets */
  if( !cJSON_IsArray(joff) ){
    return anom_fail(e, ANOM_EFORMAT,
                     "tensor '" NAME "': data_offsets is %s, expected an "
                     "array [begin, end]", nm, json_kind(joff));
  }
  if( cJSON_GetArraySize(joff) != 2 ){
    return anom_fail(e, ANOM_EFORMAT,
                     "tensor '" NAME "': data_offsets has %d entries, expected "
                     "2 [begin, end]", nm, cJSON_GetArraySize(joff));
  }
  if( (rc = json_uint(joff->child, nm, "data_offsets[0]", &off[0], e)) ||
      (rc = json_uint(joff->child->next, nm, "data_offsets[1]", &off[1], e)) ){
    return rc;
  }
  if( off[0] > off[1] ){
    return anom_fail(e, ANOM_EFORMAT,
                     "tensor '" NAME "': data_offsets [%llu, %llu] are "
                     "reversed (begin after end)", nm,
                     (unsigned long long)off[0], (unsigned long long)off[1]);
  }
  if( off[1] > (uint64_t)data_len ){
    return anom_fail(e, ANOM_EFORMAT,
                     "tensor '" NAME "': data_offsets [%llu, %llu] run past "
                     "the end of the data section (%zu bytes)", nm,
                     (unsigned long long)off[0], (unsigned long long)off[1],
                     data_len);
  }
  need = (uint64_t)nbytes;
  if( off[1] - off[0] != need ){
    return anom_fail(e, ANOM_EFORMAT,
                     "tensor '" NAME "': data_offsets [%llu, %llu] hold %llu "
                     "bytes, dtype %s shape %s needs %llu", nm,
                     (unsigned long long)off[0], (unsigned long long)off[1],
                     (unsigned long long)(off[1] - off[0]),
                     dtype_name(t->dtype), have, (unsigned long long)need);
  }
  t->data = data + off[0];
  r->begin = off[0];
  r->end = off[1];
  r->name = nm;
  return ANOM_OK;
}

/* Copy the "__metadata__" object j into f->meta. */
static int parse_meta(st_file *f, const cJSON *j, anom_err *e) {
  const cJSON *c;
  const char **keys = NULL, *dup;
  size_t n = 0;
  int rc = ANOM_OK;

  if( !cJSON_IsObject(j) ){
    return anom_fail(e, ANOM_EFORMAT,
                     "__metadata__ is %s, expected an object of strings",
                     json_kind(j));
  }
  for(c = j->child; c; c = c->next){
    if( !cJSON_IsString(c) || !c->valuestring ){
      return anom_fail(e, ANOM_EFORMAT,
                       "__metadata__ key '" NAME "' is %s, expected a string",
                       c->string ? c->string : "", json_kind(c));
    }
    if( n == INT_MAX ){
      return anom_fail(e, ANOM_ETOOBIG, "__metadata__ has too many keys");
    }
    n++;
  }
  f->meta = anom_calloc(n, sizeof *f->meta);
  keys = anom_calloc(n, sizeof *keys);
  if( !f->meta || !keys ){
    rc = anom_fail(e, ANOM_ENOMEM, "out of memory reading __metadata__");
    goto done;
  }
  f->nmeta = (int)n;
  n = 0;
  for(c = j->child; c; c = c->next, n++){
    const char *k = c->string ? c->string : "";
    f->meta[n].key = str_dup(k);
    f->meta[n].value = str_dup(c->valuestring);
    if( !f->meta[n].key || !f->meta[n].value ){
      rc = anom_fail(e, ANOM_ENOMEM, "out of memory reading __metadata__");
      goto done;
    }
    keys[n] = f->meta[n].key;
  }
  if( (dup = find_duplicate(keys, n)) != NULL ){
    rc = anom_fail(e, ANOM_EFORMAT,
                   "__metadata__ key '" NAME "' appears more than once", dup);
  }
done:
  anom_free(keys);
  return rc;
}

/*
** ---- strict JSON syntax, without allocating ----------------------------
** RFC 8259 grammar over the header bytes, run before cJSON. It gives exact
** error positions, refuses what cJSON would let through (leading zeros,
** "1.", \u0000 that would cut a C string) or would refuse on its own terms
** (lone surrogate escapes, numbers over its 63-character buffer, deep
** nesting), so once it passes, a NULL from cJSON can only mean memory ran
** out. A safetensors header nests 3 deep; ST_JSON_DEPTH leaves room.
*/
#define ST_JSON_DEPTH 16
#define ST_JSON_NUMBER_MAX 40
#define ST_STR_(x) #x
#define ST_STR(x) ST_STR_(x)

typedef struct jscan {
  const unsigned char *s;
  size_t n, i;
  const char *why;      /* what was wrong at i */
} jscan;

static int js_fail(jscan *j, const char *why) {
  j->why = why;
  return 1;
}

static void js_ws(jscan *j) {
  while( j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' ||
                         j->s[j->i] == '\n' || j->s[j->i] == '\r') ){
    j->i++;
  }
}

static int js_digits(jscan *j) {
  size_t start = j->i;
  while( j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9' ) j->i++;
  return j->i == start ? js_fail(j, "expected a digit") : 0;
}

static int js_hex4(jscan *j, unsigned *v) {
  int k;
  *v = 0;
  for(k = 0; k < 4; k++, j->i++){
    unsigned c = j->i < j->n ? j->s[j->i] : 0, d;
    if( c >= '0' && c <= '9' ) d = c - '0';
    else if( c >= 'a' && c <= 'f' ) d = c - 'a' + 10;
    else if( c >= 'A' && c <= 'F' ) d = c - 'A' + 10;
    else return js_fail(j, "expected 4 hex digits after \\u");
    *v = *v << 4 | d;
  }
  return 0;
}

static int js_string(jscan *j) {
  j->i++;  /* the opening quote */
  for(;;){
    unsigned c, u, lo;
    if( j->i >= j->n ) return js_fail(j, "unterminated string");
    c = j->s[j->i];
    if( c == '"' ){ j->i++; return 0; }
    if( c < 0x20 ) return js_fail(j, "raw control character in a string");
    if( c != '\\' ){ j->i++; continue; }
    j->i++;
    c = j->i < j->n ? j->s[j->i] : 0;
    if( c && strchr("\"\\/bfnrt", (int)c) ){ j->i++; continue; }
    if( c != 'u' ) return js_fail(j, "bad escape in a string");
    j->i++;
    if( js_hex4(j, &u) ) return 1;
    if( u == 0 ){
      j->i -= 6;
      return js_fail(j, "\\u0000 in a string");
    }
    if( u >= 0xdc00 && u <= 0xdfff ){
      j->i -= 6;
      return js_fail(j, "unpaired surrogate escape");
    }
    if( u >= 0xd800 && u <= 0xdbff ){
      if( j->n - j->i < 2 || j->s[j->i] != '\\' || j->s[j->i + 1] != 'u' ){
        return js_fail(j, "unpaired surrogate escape");
      }
      j->i += 2;
      if( js_hex4(j, &lo) ) return 1;
      if( lo < 0xdc00 || lo > 0xdfff ){
        j->i -= 6;
        return js_fail(j, "unpaired surrogate escape");
      }
    }
  }
}

static int js_number(jscan *j) {
  size_t start = j->i;
  if( j->s[j->i] == '-' ) j->i++;
  if( j->i < j->n && j->s[j->i] == '0' ) j->i++;
  else if( js_digits(j) ) return 1;
  if( j->i < j->n && j->s[j->i] == '.' ){
    j->i++;
    if( js_digits(j) ) return 1;
  }
  if( j->i < j->n && (j->s[j->i] == 'e' || j->s[j->i] == 'E') ){
    j->i++;
    if( j->i < j->n && (j->s[j->i] == '+' || j->s[j->i] == '-') ) j->i++;
    if( js_digits(j) ) return 1;
  }
  if( j->i - start > ST_JSON_NUMBER_MAX ){
    j->i = start;
    return js_fail(j, "number longer than " ST_STR(ST_JSON_NUMBER_MAX)
                        " characters");
  }
  return 0;
}

static int js_value(jscan *j, int depth) {
  unsigned c;
  js_ws(j);
  if( j->i >= j->n ) return js_fail(j, "unexpected end");
  c = j->s[j->i];
  if( c == '{' || c == '[' ){
    unsigned close = c == '{' ? '}' : ']';
    if( depth == ST_JSON_DEPTH ){
      return js_fail(j, "nested deeper than " ST_STR(ST_JSON_DEPTH) " levels");
    }
    j->i++;
    js_ws(j);
    if( j->i < j->n && j->s[j->i] == close ){ j->i++; return 0; }
    for(;;){
      if( c == '{' ){
        js_ws(j);
        if( j->i >= j->n || j->s[j->i] != '"' ){
          return js_fail(j, "expected a string key");
        }
        if( js_string(j) ) return 1;
        js_ws(j);
        if( j->i >= j->n || j->s[j->i] != ':' ){
          return js_fail(j, "expected ':'");
        }
        j->i++;
      }
      if( js_value(j, depth + 1) ) return 1;
      js_ws(j);
      if( j->i < j->n && j->s[j->i] == ',' ){ j->i++; continue; }
      if( j->i < j->n && j->s[j->i] == close ){ j->i++; return 0; }
      return js_fail(j, c == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
  }
  if( c == '"' ) return js_string(j);
  if( c == '-' || (c >= '0' && c <= '9') ) return js_number(j);
  {
    static const char *const lits[3] = {"true", "false", "null"};
    int k;
    for(k = 0; k < 3; k++){
      size_t len = strlen(lits[k]);
      if( j->n - j->i >= len && memcmp(j->s + j->i, lits[k], len) == 0 ){
        j->i += len;
        return 0;
      }
    }
  }
  return js_fail(j, "unexpected character");
}

/* The header h[0..n) is one JSON value, optionally surrounded by whitespace. */
static int check_header_json(const unsigned char *h, size_t n, anom_err *e) {
  jscan j;
  j.s = h;
  j.n = n;
  j.i = 0;
  j.why = NULL;
  if( js_value(&j, 0) ){
    return anom_fail(e, ANOM_EFORMAT,
                     "header is not valid json: %s at header byte %zu", j.why,
                     j.i);
  }
  js_ws(&j);
  if( j.i < n ){
    return anom_fail(e, ANOM_EFORMAT,
                     "header has text after the json object at header byte "
                     "%zu, expected only space padding", j.i);
  }
  return ANOM_OK;
}

/*
** Check the raw header bytes: JSON text is UTF-8 with no control bytes
** other than the whitespace tab, newline and carriage return.
*/
static int check_header_text(const unsigned char *h, size_t n, anom_err *e) {
  size_t i, bad;
  for(i = 0; i < n; i++){
    if( h[i] < 0x20 && h[i] != '\t' && h[i] != '\n' && h[i] != '\r' ){
      return anom_fail(e, ANOM_EFORMAT,
                       "header has control byte 0x%02x at header byte %zu, "
                       "expected json text", h[i], i);
    }
  }
  if( utf8_check(h, n, &bad) ){
    return anom_fail(e, ANOM_EFORMAT,
                     "header is not valid utf-8 at header byte %zu", bad);
  }
  return ANOM_OK;
}

static int check_limits(const st_limits *l, anom_err *e) {
  if( l->max_dims < 0 || l->max_dims > ST_MAX_DIMS ){
    return anom_fail(e, ANOM_EINVAL,
                     "limits: max_dims %d is outside 0..%d", l->max_dims,
                     ST_MAX_DIMS);
  }
  if( l->max_tensors < 0 || l->max_dim < 0 ){
    return anom_fail(e, ANOM_EINVAL,
                     "limits: max_tensors %lld and max_dim %lld must not be "
                     "negative", (long long)l->max_tensors,
                     (long long)l->max_dim);
  }
  return ANOM_OK;
}

int st_parse(st_file *f, const void *buf, size_t n, const st_limits *limits,
             anom_err *e) {
  const unsigned char *p = buf;
  st_file t;
  st_limits lim;
  char *hdr = NULL;
  cJSON *root = NULL;
  const cJSON *c, *jmeta = NULL;
  const char **names = NULL, *dup;
  st_range *ranges = NULL;
  uint64_t hlen;
  size_t nt = 0, i, data_len, max_nt, bytes;
  int rc = ANOM_OK;

  memset(&t, 0, sizeof t);
  if( !f ) return anom_fail(e, ANOM_EINVAL, "st_parse: no st_file given");
  memset(f, 0, sizeof *f);
  if( !p && n ) return anom_fail(e, ANOM_EINVAL, "st_parse: blob is NULL");
  if( limits ){
    lim = *limits;
    if( (rc = check_limits(&lim, e)) != ANOM_OK ) return rc;
  }else{
    st_limits_default(&lim);
  }

  /* The 8-byte length, then the header bytes. */
  if( n < 8 ){
    return anom_fail(e, ANOM_EFORMAT,
                     "blob is %zu bytes, too short for the 8-byte header "
                     "length", n);
  }
  hlen = load_le64(p);
  if( hlen == 0 ){
    return anom_fail(e, ANOM_EFORMAT,
                     "header length is 0, expected a json object");
  }
  if( hlen > (uint64_t)(n - 8) ){
    return anom_fail(e, ANOM_EFORMAT,
                     "header length %llu runs past the end of the blob (%zu "
                     "bytes)", (unsigned long long)hlen, n);
  }
  if( hlen > (uint64_t)lim.max_header_bytes ){
    return anom_fail(e, ANOM_ETOOBIG,
                     "header length %llu exceeds the limit of %zu bytes",
                     (unsigned long long)hlen, lim.max_header_bytes);
  }
  if( (rc = check_header_text(p + 8, (size_t)hlen, e)) != ANOM_OK ||
      (rc = check_header_json(p + 8, (size_t)hlen, e)) != ANOM_OK ){
    return rc;
  }

  /* cJSON reads a NUL-terminated copy: no byte past the header is touched. */
  hdr = anom_malloc((size_t)hlen + 1);
  if( !hdr ){
    rc = anom_fail(e, ANOM_ENOMEM, "out of memory copying the header");
    goto fail;
  }
  memcpy(hdr, p + 8, (size_t)hlen);
  hdr[hlen] = 0;
  root = cJSON_ParseWithLength(hdr, (size_t)hlen);
  if( !root ){
    /* the syntax is already known good */
    rc = anom_fail(e, ANOM_ENOMEM, "out of memory parsing the header");
    goto fail;
  }
  if( !cJSON_IsObject(root) ){
    rc = anom_fail(e, ANOM_EFORMAT, "header is %s, expected a json object",
                   json_kind(root));
    goto fail;
  }
  data_len = n - 8 - (size_t)hlen;
  t.data = p + 8 + hlen;
  t.data_len = data_len;

  /* Count the tensors; "__metadata__" may appear once. */
  for(c = root->child; c; c = c->next){
    if( c->string && strcmp(c->string, ST_META_KEY) == 0 ){
      if( jmeta ){
        rc = anom_fail(e, ANOM_EFORMAT,
                       "__metadata__ appears more than once, expected at most "
                       "once");
        goto fail;
      }
      jmeta = c;
    }else{
      nt++;
    }
  }
  max_nt = (uint64_t)lim.max_tensors < (uint64_t)INT_MAX
             ? (size_t)lim.max_tensors : (size_t)INT_MAX;
  if( nt > max_nt ){
    rc = anom_fail(e, ANOM_ETOOBIG, "header has %zu tensors, the limit is %zu",
                   nt, max_nt);
    goto fail;
  }
  if( jmeta && (rc = parse_meta(&t, jmeta, e)) != ANOM_OK ) goto fail;

  t.tensors = anom_calloc(nt, sizeof *t.tensors);
  names = anom_calloc(nt, sizeof *names);
  if( anom_mul_size(nt, sizeof *ranges, &bytes) ) bytes = SIZE_MAX;
  ranges = bytes == SIZE_MAX ? NULL : anom_malloc(bytes);
  if( !t.tensors || !names || !ranges ){
    rc = anom_fail(e, ANOM_ENOMEM, "out of memory reading %zu tensors", nt);
    goto fail;
  }
  t.ntensors = (int)nt;

  /* Every tensor on its own, then names and byte ranges across tensors. */
  i = 0;
  for(c = root->child; c; c = c->next){
    if( c == jmeta ) continue;
    t.tensors[i].name = str_dup(c->string ? c->string : "");
    if( !t.tensors[i].name ){
      rc = anom_fail(e, ANOM_ENOMEM, "out of memory reading tensor names");
      goto fail;
    }
    rc = parse_tensor(&t.tensors[i], &ranges[i], c, t.data, data_len, &lim, e);
    if( rc != ANOM_OK ) goto fail;
    names[i] = t.tensors[i].name;
    i++;
  }
  if( (dup = find_duplicate(names, nt)) != NULL ){
    rc = anom_fail(e, ANOM_EFORMAT,
                   "tensor name '" NAME "' appears more than once", dup);
    goto fail;
  }
  /*
  ** Sorted by begin, a range overlaps an earlier one exactly when it starts
  ** before the furthest end seen so far. Empty ranges hold no bytes and
  ** overlap nothing.
  */
  if( nt > 1 ){
    const st_range *far = NULL;
    qsort(ranges, nt, sizeof *ranges, cmp_range);
    for(i = 0; i < nt; i++){
      const st_range *r = &ranges[i];
      if( r->begin == r->end ) continue;
      if( far && r->begin < far->end ){
        rc = anom_fail(e, ANOM_EFORMAT,
                       "tensors '" NAME "' and '" NAME "' overlap: bytes "
                       "[%llu, %llu] and [%llu, %llu]", far->name, r->name,
                       (unsigned long long)far->begin,
                       (unsigned long long)far->end,
                       (unsigned long long)r->begin,
                       (unsigned long long)r->end);
        goto fail;
      }
      if( !far || r->end > far->end ) far = r;
    }
  }

  *f = t;
  anom_free(hdr);
  anom_free(names);
  anom_free(ranges);
  cJSON_Delete(root);
  return ANOM_OK;

fail:
  st_free(&t);
  anom_free(hdr);
  anom_free(names);
  anom_free(ranges);
  cJSON_Delete(root);
  return rc;
}

void st_free(st_file *f) {
  int i;
  if( !f ) return;
  if( f->tensors ){
    for(i = 0; i < f->ntensors; i++) anom_free(f->tensors[i].name);
  }
  if( f->meta ){
    for(i = 0; i < f->nmeta; i++){
      anom_free(f->meta[i].key);
      anom_free(f->meta[i].value);
    }
  }
  anom_free(f->tensors);
  anom_free(f->meta);
  memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
  int i;
  if( !f || !name ) return NULL;
  for(i = 0; i < f->ntensors; i++){
    if( strcmp(f->tensors[i].name, name) == 0 ) return &f->tensors[i];
  }
  return NULL;
}

const char *st_meta(const st_file *f, const char *key) {
  int i;
  if( !f || !key ) return NULL;
  for(i = 0; i < f->nmeta; i++){
    if( strcmp(f->meta[i].key, key) == 0 ) return f->meta[i].value;
  }
  return NULL;
}

int st_read_f32(const st_tensor *t, const int64_t *shape, int ndim, float *dst,
                anom_err *e) {
  const unsigned char *p;
  size_t i, n, need;
  int k;

  if( !t ) return anom_fail(e, ANOM_EINVAL, "st_read_f32: no tensor given");
  if( shape ){
    if( ndim < 0 || ndim > ST_MAX_DIMS ){
      return anom_fail(e, ANOM_EINVAL,
                       "st_read_f32: expected ndim %d is outside 0..%d", ndim,
                       ST_MAX_DIMS);
    }
    for(k = 0; k < ndim && ndim == t->ndim; k++){
      if( shape[k] != t->shape[k] ) break;
    }
    if( ndim != t->ndim || k < ndim ){
      char want[8 * 24 + 4], have[8 * 24 + 4];
      shape_str(want, sizeof want, shape, ndim);
      shape_str(have, sizeof have, t->shape,
                t->ndim >= 0 && t->ndim <= ST_MAX_DIMS ? t->ndim : 0);
      return anom_fail(e, ANOM_EFORMAT,
                       "tensor '" NAME "': expected shape %s, found %s",
                       t->name ? t->name : "", want, have);
    }
  }
  /* The st_tensor may be built by hand: check it is self-consistent. */
  n = (size_t)t->numel;
  if( t->numel < 0 || (uint64_t)t->numel > (uint64_t)SIZE_MAX ||
      (int)t->dtype < ST_F32 || (int)t->dtype > ST_BF16 ||
      anom_mul_size(n, dtype_size(t->dtype), &need) || need != t->nbytes ||
      (n > 0 && (!t->data || !dst)) ){
    return anom_fail(e, ANOM_EINVAL,
                     "tensor '" NAME "': numel %lld, nbytes %zu, dtype or "
                     "buffers are inconsistent", t->name ? t->name : "",
                     (long long)t->numel, t->nbytes);
  }
  p = t->data;
  switch( t->dtype ){
    case ST_F32:
      for(i = 0; i < n; i++) dst[i] = bits_to_float(load_le32(p + 4 * i));
      break;
    case ST_F16:
      for(i = 0; i < n; i++) dst[i] = half_to_float(load_le16(p + 2 * i));
      break;
    case ST_BF16:
      for(i = 0; i < n; i++) dst[i] = bf16_to_float(load_le16(p + 2 * i));
      break;
  }
  return ANOM_OK;
}

/* ---- writing ------------------------------------------------------------ */

/* Check one tensor to write and compute its byte size. */
static int out_tensor_check(const st_out_tensor *t, int idx, size_t *nbytes,
                            anom_err *e) {
  size_t numel = 1;
  int i, zero = 0, ovf = 0;
  if( !t->name || !t->name[0] ){
    return anom_fail(e, ANOM_EINVAL, "tensor %d: name is %s, expected a "
                     "non-empty string", idx, t->name ? "empty" : "NULL");
  }
  if( strcmp(t->name, ST_META_KEY) == 0 ){
    return anom_fail(e, ANOM_EINVAL,
                     "tensor %d: the name __metadata__ is reserved", idx);
  }
  if( utf8_check((const unsigned char *)t->name, strlen(t->name), NULL) ){
    return anom_fail(e, ANOM_EINVAL, "tensor %d: name is not valid utf-8",
                     idx);
  }
  if( t->ndim < 0 || t->ndim > ST_MAX_DIMS ){
    return anom_fail(e, ANOM_EINVAL,
                     "tensor '" NAME "': ndim %d is outside 0..%d", t->name,
                     t->ndim, ST_MAX_DIMS);
  }
  for(i = 0; i < t->ndim; i++){
    if( t->shape[i] < 0 || !((double)t->shape[i] < ST_EXACT_MAX) ){
      return anom_fail(e, ANOM_EINVAL,
                       "tensor '" NAME "': shape[%d] is %lld, expected a "
                       "non-negative integer below 2^53", t->name, i,
                       (long long)t->shape[i]);
    }
    if( t->shape[i] == 0 ) zero = 1;
  }
  if( zero ){
    numel = 0;
  }else{
    for(i = 0; i < t->ndim && !ovf; i++){
      ovf = anom_mul_size(numel, (size_t)t->shape[i], &numel);
    }
  }
  if( ovf || anom_mul_size(numel, sizeof(float), nbytes) ||
      !((double)*nbytes < ST_EXACT_MAX) ){
    char have[8 * 24 + 4];
    shape_str(have, sizeof have, t->shape, t->ndim);
    return anom_fail(e, ANOM_ETOOBIG,
                     "tensor '" NAME "': shape %s has more elements than can "
                     "be written", t->name, have);
  }
  if( numel > 0 && !t->data ){
    return anom_fail(e, ANOM_EINVAL,
                     "tensor '" NAME "': data is NULL for %zu elements",
                     t->name, numel);
  }
  return ANOM_OK;
}

/* Add item to obj under key (to the array obj if key is NULL); 1 on failure,
** when item is freed. */
static int json_put(cJSON *obj, const char *key, cJSON *item) {
  cJSON_bool ok;
  if( !item ) return 1;
  ok = key ? cJSON_AddItemToObject(obj, key, item)
           : cJSON_AddItemToArray(obj, item);
  if( !ok ){
    cJSON_Delete(item);
    return 1;
  }
  return 0;
}

/* Append v to the array arr as a raw decimal integer; 1 on failure. */
static int json_put_uint(cJSON *arr, uint64_t v) {
  char num[24];
  snprintf(num, sizeof num, "%llu", (unsigned long long)v);
  return json_put(arr, NULL, cJSON_CreateRaw(num));
}

/* The header JSON for ts (checked, data offsets from nbytes) and meta. */
static cJSON *build_header(const st_out_tensor *ts, int nt,
                           const st_meta_kv *meta, int nmeta) {
  cJSON *root = cJSON_CreateObject(), *m, *o, *a;
  uint64_t off = 0;
  int i, k;
  if( !root ) return NULL;
  if( nmeta > 0 ){
    if( json_put(root, ST_META_KEY, m = cJSON_CreateObject()) ) goto fail;
    for(i = 0; i < nmeta; i++){
      if( json_put(m, meta[i].key, cJSON_CreateString(meta[i].value)) ){
        goto fail;
      }
    }
  }
  for(i = 0; i < nt; i++){
    /* Checked below 2^53 already; wrapping on the way to a zero dim is
    ** harmless, as arithmetic mod 2^64 still ends at the true product. */
    uint64_t nbytes = 4;
    for(k = 0; k < ts[i].ndim; k++) nbytes *= (uint64_t)ts[i].shape[k];
    if( json_put(root, ts[i].name, o = cJSON_CreateObject()) ||
        !cJSON_AddStringToObject(o, "dtype", "F32") ||
        json_put(o, "shape", a = cJSON_CreateArray()) ){
      goto fail;
    }
    for(k = 0; k < ts[i].ndim; k++){
      if( json_put_uint(a, (uint64_t)ts[i].shape[k]) ) goto fail;
    }
    if( json_put(o, "data_offsets", a = cJSON_CreateArray()) ||
        json_put_uint(a, off) || json_put_uint(a, off + nbytes) ){
      goto fail;
    }
    off += nbytes;
  }
  return root;
fail:
  cJSON_Delete(root);
  return NULL;
}

int st_write(unsigned char **out, size_t *nout, const st_out_tensor *ts, int nt,
             const st_meta_kv *meta, int nmeta, anom_err *e) {
  const char **names = NULL, *dup;
  cJSON *root = NULL;
  char *json = NULL;
  unsigned char *buf = NULL, *q;
  size_t data_bytes = 0, nbytes, hlen, padded, total, cap;
  int i, rc = ANOM_OK;

  if( !out || !nout ){
    return anom_fail(e, ANOM_EINVAL, "st_write: no output buffer given");
  }
  *out = NULL;
  *nout = 0;
  if( nt < 0 || nmeta < 0 || (nt > 0 && !ts) || (nmeta > 0 && !meta) ){
    return anom_fail(e, ANOM_EINVAL,
                     "st_write: bad arguments: %d tensors at %s, %d metadata "
                     "entries at %s", nt, ts ? "an array" : "NULL", nmeta,
                     meta ? "an array" : "NULL");
  }
  for(i = 0; i < nt; i++){
    if( (rc = out_tensor_check(&ts[i], i, &nbytes, e)) != ANOM_OK ) return rc;
    if( anom_add_size(data_bytes, nbytes, &data_bytes) ||
        !((double)data_bytes < ST_EXACT_MAX) ){
      return anom_fail(e, ANOM_ETOOBIG,
                       "st_write: tensors hold more bytes than can be "
                       "written");
    }
  }
  for(i = 0; i < nmeta; i++){
    const st_meta_kv *m = &meta[i];
    if( !m->key || !m->value ){
      return anom_fail(e, ANOM_EINVAL, "metadata %d: %s is NULL", i,
                       !m->key ? "key" : "value");
    }
    if( utf8_check((const unsigned char *)m->key, strlen(m->key), NULL) ||
        utf8_check((const unsigned char *)m->value, strlen(m->value), NULL) ){
      return anom_fail(e, ANOM_EINVAL,
                       "metadata %d: key or value is not valid utf-8", i);
    }
  }

  /* Names unique: sort a copy of the pointers (then the same for keys). */
  cap = (size_t)(nt > nmeta ? nt : nmeta);
  names = anom_calloc(cap, sizeof *names);
  if( !names ){
    rc = anom_fail(e, ANOM_ENOMEM, "out of memory checking tensor names");
    goto done;
  }
  for(i = 0; i < nt; i++) names[i] = ts[i].name;
  if( (dup = find_duplicate(names, (size_t)nt)) != NULL ){
    rc = anom_fail(e, ANOM_EINVAL,
                   "tensor name '" NAME "' appears more than once", dup);
    goto done;
  }
  for(i = 0; i < nmeta; i++) names[i] = meta[i].key;
  if( (dup = find_duplicate(names, (size_t)nmeta)) != NULL ){
    rc = anom_fail(e, ANOM_EINVAL,
                   "metadata key '" NAME "' appears more than once", dup);
    goto done;
  }

  root = build_header(ts, nt, meta, nmeta);
  json = root ? cJSON_PrintUnformatted(root) : NULL;
  if( !json ){
    rc = anom_fail(e, ANOM_ENOMEM, "out of memory building the header");
    goto done;
  }
  hlen = strlen(json);
  padded = (hlen + 7) / 8 * 8;
  if( anom_add_size(8 + padded, data_bytes, &total) ){
    rc = anom_fail(e, ANOM_ETOOBIG, "st_write: file is too large");
    goto done;
  }
  buf = anom_malloc(total);
  if( !buf ){
    rc = anom_fail(e, ANOM_ENOMEM, "out of memory for a %zu-byte file",
                   total);
    goto done;
  }
  store_le64(buf, (uint64_t)padded);
  memcpy(buf + 8, json, hlen);
  memset(buf + 8 + hlen, ' ', padded - hlen);
  q = buf + 8 + padded;
  for(i = 0; i < nt; i++){
    size_t j, n;
    out_tensor_check(&ts[i], i, &nbytes, NULL);
    n = nbytes / 4;
    for(j = 0; j < n; j++){
      uint32_t u;
      memcpy(&u, &ts[i].data[j], sizeof u);
      store_le32(q, u);
      q += 4;
    }
  }
  *out = buf;
  *nout = total;

done:
  anom_free(names);
  cJSON_free(json);
  cJSON_Delete(root);
  return rc;
}
