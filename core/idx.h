/*
** idx.h - the IDX files of MNIST and Fashion-MNIST, plain or gzipped.
**
**   idx_file f;
**   idx_load(&f, bytes, n, &e);      unzips if gzipped, checks the header
**   f.count items of f.item_bytes each at f.data (rows x cols for images)
**   idx_free(&f);
**
** Format (http://yann.lecun.com/exdb/mnist/): 2 zero bytes, a type byte
** (0x08: unsigned byte, the only one read here), the number of dimensions,
** then each dimension as a big-endian 32-bit integer, then the data.
*/
#ifndef ANOM_IDX_H
#define ANOM_IDX_H

#include "common.h"

typedef struct idx_file {
  int ndim;                /* 1 (labels) or 3 (images) */
  int dims[3];
  size_t count;            /* dims[0] */
  size_t item_bytes;       /* product of the other dims (1 for labels) */
  unsigned char *buf;      /* owned: the unzipped file */
  const unsigned char *data;
} idx_file;

/* At most this many bytes once unzipped (Fashion-MNIST's largest is 47 MB). */
#define IDX_MAX_BYTES ((size_t)1 << 30)

int idx_load(idx_file *f, const void *bytes, size_t n, anom_err *e);
void idx_free(idx_file *f);

#endif /* ANOM_IDX_H */
