/*
** safetensors.h - read and write the safetensors container that holds models.
**
** Layout (https://huggingface.co/docs/safetensors): an 8-byte little-endian
** header length N, then N bytes of JSON header, then the tensor bytes.
** The header maps each tensor name to {"dtype", "shape", "data_offsets":
** [begin, end]} (offsets relative to the start of the data section), plus an
** optional "__metadata__" object whose values are all strings.
**
**   st_file f;
**   if( st_parse(&f, blob, n, limits, &e) ) ...;       every offset, dtype, shape checked
**   const st_tensor *t = st_find(&f, "netg.encoder1.main.initial-conv-1-64.weight");
**   st_read_f32(t, shape, 4, dst, &e);                   F32, F16, BF16 -> float
**   const char *m = st_meta(&f, "method");
**   st_free(&f);
**
** st_parse does not copy the tensor bytes: f points into buf, which must
** outlive f. Everything is checked with overflow-safe arithmetic; a message
** says what was found and what was expected.
**
** Writing: st_write builds a complete file in one new buffer from a list of
** F32 tensors and string metadata, in the order given, 8-byte aligned header.
*/
#ifndef ANOM_SAFETENSORS_H
#define ANOM_SAFETENSORS_H

#include "common.h"

#define ST_MAX_DIMS 8

typedef enum st_dtype { ST_F32 = 0, ST_F16 = 1, ST_BF16 = 2 } st_dtype;

typedef struct st_tensor {
  char *name;                 /* owned by the st_file */
  st_dtype dtype;
  int ndim;                   /* 0..ST_MAX_DIMS */
  int64_t shape[ST_MAX_DIMS];
  int64_t numel;              /* product of shape (1 for a scalar) */
  const unsigned char *data;  /* into the parsed buffer */
  size_t nbytes;              /* numel * element size, checked */
} st_tensor;

typedef struct st_meta_kv {
  char *key, *value;          /* owned by the st_file */
} st_meta_kv;

typedef struct st_file {
  int ntensors;
  st_tensor *tensors;         /* in header order */
  int nmeta;
  st_meta_kv *meta;           /* "__metadata__" entries */
  const unsigned char *data;  /* start of the data section in buf */
  size_t data_len;
} st_file;

typedef struct st_limits {
  size_t max_header_bytes;    /* default 16 MiB */
  int64_t max_tensors;        /* default 100000 */
  int max_dims;               /* default ST_MAX_DIMS */
  int64_t max_dim;            /* largest single dimension, default 1<<30 */
} st_limits;

/* Fill l with the defaults above. */
void st_limits_default(st_limits *l);

/*
** Parse and validate buf[0..n). limits may be NULL for the defaults.
** Checks: header length within n and the limit; the header is a JSON object;
** every tensor has a known dtype, a shape of non-negative integers within the
** limits, data_offsets [b, e] with b <= e <= data length and
** e - b == numel * element size; no two tensors overlap; names are unique;
** __metadata__, if present, maps strings to strings.
** On failure f is zeroed and nothing needs freeing.
*/
int st_parse(st_file *f, const void *buf, size_t n, const st_limits *limits,
             anom_err *e);

void st_free(st_file *f);

/* The tensor called name, or NULL. */
const st_tensor *st_find(const st_file *f, const char *name);

/* The metadata value for key, or NULL. */
const char *st_meta(const st_file *f, const char *key);

/*
** Copy tensor t to dst as float32, converting F16 and BF16. If shape is not
** NULL, t's shape must equal shape[0..ndim) exactly, else ANOM_EFORMAT with a
** message like "tensor 'x': expected shape [64, 1, 4, 4], found [64, 3, 4, 4]".
*/
int st_read_f32(const st_tensor *t, const int64_t *shape, int ndim, float *dst,
                anom_err *e);

/* CRC-32 (IEEE 802.3, as zlib's crc32) of n bytes, continuing from crc. */
uint32_t st_crc32(uint32_t crc, const void *buf, size_t n);

/* One tensor to write: float32 data of the given shape. */
typedef struct st_out_tensor {
  const char *name;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  const float *data;          /* numel floats */
} st_out_tensor;

/*
** Write a safetensors file with the given tensors (all F32, little-endian,
** in the order given) and metadata (nmeta key/value strings) into a new
** buffer *out of *nout bytes; free it with anom_free.
*/
int st_write(unsigned char **out, size_t *nout, const st_out_tensor *ts, int nt,
             const st_meta_kv *meta, int nmeta, anom_err *e);

#endif /* ANOM_SAFETENSORS_H */
