/*
** fuzz.h - what the libFuzzer harnesses of tests/fuzz/ share: a check that
** aborts on a broken promise (libFuzzer keeps the input as a crash), the
** repair of a model file's checksum (a fuzzer cannot compute a CRC-32, and
** without it nothing past the check is reached), and UBSan defaults so that
** replaying an input by hand stops at the first report, as make fuzz does.
**
**   #include "tests/fuzz/fuzz.h"
**   fuzz_check(m == NULL, "a failed model_load left *out set", NULL);
**   if( fuzz_fix_checksum(copy, n) ) model_load(&m, copy, n, NULL, &e);
**
** Include it in one file per harness: it defines __ubsan_default_options.
*/
#ifndef ANOM_FUZZ_H
#define ANOM_FUZZ_H

#include "core/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Abort with "what: detail" on stderr unless ok. detail may be NULL. */
static inline void fuzz_check(int ok, const char *what, const char *detail) {
  if( ok ) return;
  fprintf(stderr, "fuzz: broken promise: %s%s%s\n", what, detail ? ": " : "",
          detail ? detail : "");
  abort();
}

/*
** Write the CRC-32 of the data section of the safetensors file buf[0..n)
** into the 8 hex digits after the first "crc32: in its header. Returns 0,
** changing nothing, when the header length or the value is not there.
*/
static inline int fuzz_fix_checksum(unsigned char *buf, size_t n) {
  if( n < 8 ) return 0;
  uint64_t hlen = 0;
  for(int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i];
  if( hlen > n - 8 ) return 0;
  unsigned char *p = memmem(buf + 8, (size_t)hlen, "\"crc32:", 7);
  if( !p || (size_t)(p - buf) + 7 + 8 > 8 + hlen ) return 0;
  uint32_t crc = st_crc32(0, buf + 8 + hlen, n - 8 - (size_t)hlen);
  char hex[9];
  snprintf(hex, sizeof(hex), "%08x", (unsigned)crc);
  memcpy(p + 7, hex, 8);
  return 1;
}

/* Read by UBSan at start-up; UBSAN_OPTIONS adds to it. */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void) {
  return "halt_on_error=1:print_stacktrace=1";
}

#endif /* ANOM_FUZZ_H */
