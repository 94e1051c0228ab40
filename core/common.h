/*
** common.h - error reporting and allocation shared by every file in core/.
**
** core/ is plain C with no SQLite in it. Functions that can fail return an
** int status (ANOM_OK on success) and write a human-readable message into a
** caller-owned anom_err. Nothing in core/ exits, aborts or asserts on input a
** user or a database file can influence.
**
**   anom_err e;
**   if( image_decode(&im, blob, n, max_px, &e) ) printf("%s\n", e.msg);
**
** Messages are lowercase, name the thing at fault and say what was expected
** against what was found. ext/ prefixes them with the SQL function's name.
*/
#ifndef ANOM_COMMON_H
#define ANOM_COMMON_H

#include <stddef.h>
#include <stdint.h>

enum {
  ANOM_OK = 0,
  ANOM_EINVAL = 1,   /* bad argument or bad input data */
  ANOM_ENOMEM = 2,   /* an allocation failed */
  ANOM_ETOOBIG = 3,  /* over a configured limit (pixels, bytes, parameters) */
  ANOM_EFORMAT = 4,  /* a file or blob is not in the expected format */
  ANOM_EINTR = 5     /* interrupted by the caller */
};

#define ANOM_VERSION "0.1.0"

#define ANOM_ERR_MAX 512

typedef struct anom_err {
  int code;               /* last ANOM_* code written, ANOM_OK if none */
  char msg[ANOM_ERR_MAX]; /* NUL-terminated message, "" if none */
} anom_err;

/* Format a message into e (may be NULL) and return code. */
int anom_fail(anom_err *e, int code, const char *fmt, ...)
#if defined(__GNUC__)
  __attribute__((format(printf, 3, 4)))
#endif
  ;

/* Reset e to "no error". */
void anom_err_clear(anom_err *e);

/*
** Allocation. Every allocation in core/ and ext/ goes through these so that
** tests can fail the N-th one (see anom_alloc_fail_after in common.c, built
** only with -DANOM_TEST). anom_free(NULL) is a no-op.
*/
void *anom_malloc(size_t n);
void *anom_calloc(size_t count, size_t size);
void *anom_realloc(void *p, size_t n);
void anom_free(void *p);

/* Overflow-safe size arithmetic: return 0 on success, 1 on overflow. */
int anom_mul_size(size_t a, size_t b, size_t *out);
int anom_add_size(size_t a, size_t b, size_t *out);

#ifdef ANOM_TEST
/* Make the n-th allocation from now fail (n >= 1); 0 turns it off.
** Visible outside a test build of the extension, for tests/sql/test_oom.c. */
__attribute__((visibility("default"))) void anom_alloc_fail_after(long n);
#endif

#endif /* ANOM_COMMON_H */
