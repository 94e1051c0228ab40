/*
** idx.c - IDX files, see idx.h. Gzip is unpacked with image_gunzip (the
** inflate that stb_image already carries for PNG).
*/
#include "idx.h"

#include "image.h"

#include <string.h>

void idx_free(idx_file *f) {
  anom_free(f->buf);
  memset(f, 0, sizeof(*f));
}

int idx_load(idx_file *f, const void *bytes, size_t n, anom_err *e) {
  memset(f, 0, sizeof(*f));
  const unsigned char *p = bytes;
  int rc;
  if( n >= 2 && p[0] == 0x1f && p[1] == 0x8b ){
    if( (rc = image_gunzip(&f->buf, &n, p, n, IDX_MAX_BYTES, e)) ) return rc;
  }else{
    if( n > IDX_MAX_BYTES )
      return anom_fail(e, ANOM_ETOOBIG, "IDX file of %zu bytes is over the limit", n);
    if( !(f->buf = anom_malloc(n)) ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
    memcpy(f->buf, p, n);
  }
  p = f->buf;
  rc = ANOM_EFORMAT;
  if( n < 4 || p[0] != 0 || p[1] != 0 ){
    anom_fail(e, rc, "not an IDX file (it must start with two zero bytes)");
    goto fail;
  }
  if( p[2] != 0x08 ){
    anom_fail(e, rc, "IDX type 0x%02x is not read (only 0x08, unsigned bytes)", p[2]);
    goto fail;
  }
  f->ndim = p[3];
  if( f->ndim != 1 && f->ndim != 3 ){
    anom_fail(e, rc, "IDX file has %d dimensions, expected 1 (labels) or 3 (images)", f->ndim);
    goto fail;
  }
  size_t hdr = 4 + 4 * (size_t)f->ndim, need = 1;
  if( n < hdr ){ anom_fail(e, rc, "IDX header cut short"); goto fail; }
  for(int i = 0; i < f->ndim; i++){
    const unsigned char *d = p + 4 + 4 * i;
    uint32_t v = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
    if( v == 0 || v > (1u << 30) ){
      anom_fail(e, rc, "IDX dimension %d is %u", i, (unsigned)v);
      goto fail;
    }
    f->dims[i] = (int)v;
    if( anom_mul_size(need, v, &need) ){ anom_fail(e, rc, "IDX dimensions overflow"); goto fail; }
  }
  if( n - hdr < need ){
    anom_fail(e, rc, "IDX data cut short: %zu bytes, the header says %zu", n - hdr, need);
    goto fail;
  }
  f->count = (size_t)f->dims[0];
  f->item_bytes = need / f->count;
  f->data = p + hdr;
  return ANOM_OK;
fail:
  idx_free(f);
  return rc;
}
