/*
** common.c - error messages and the allocation wrappers of core/common.h.
*/
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int anom_fail(anom_err *e, int code, const char *fmt, ...) {
  if( e ){
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    e->code = code;
  }
  return code;
}

void anom_err_clear(anom_err *e) {
  if( e ){
    e->code = ANOM_OK;
    e->msg[0] = 0;
  }
}

#ifdef ANOM_TEST
/* Test-only fault injection; never compiled into the shipped extension. */
static long fail_countdown = 0;
void anom_alloc_fail_after(long n) { fail_countdown = n; }
static int should_fail(void) {
  if( fail_countdown > 0 && --fail_countdown == 0 ) return 1;
  return 0;
}
#else
#define should_fail() 0
#endif

void *anom_malloc(size_t n) {
  if( should_fail() ) return NULL;
  return malloc(n ? n : 1);
}

void *anom_calloc(size_t count, size_t size) {
  if( should_fail() ) return NULL;
  if( count == 0 || size == 0 ) return calloc(1, 1);
  return calloc(count, size);
}

void *anom_realloc(void *p, size_t n) {
  if( should_fail() ) return NULL;
  return realloc(p, n ? n : 1);
}

void anom_free(void *p) { free(p); }

int anom_mul_size(size_t a, size_t b, size_t *out) {
  if( a != 0 && b > SIZE_MAX / a ) return 1;
  *out = a * b;
  return 0;
}

int anom_add_size(size_t a, size_t b, size_t *out) {
  if( b > SIZE_MAX - a ) return 1;
  *out = a + b;
  return 0;
}
