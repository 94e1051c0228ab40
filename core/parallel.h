/*
** parallel.h - run the items of a loop on several threads.
**
**   static void square(void *arg, int i) { int *v = arg; v[i] *= v[i]; }
**   ...
**   int v[100] = {...};
**   if( parallel_for(4, 100, square, v, &e) ) printf("%s\n", e.msg);
**
** parallel_for(nthreads, n, fn, arg, e) calls fn(arg, i) once for every i
** in [0, n) on up to nthreads threads: the caller's thread and nthreads - 1
** POSIX threads started for the call and joined before it returns. Items
** are handed out one at a time, in increasing order, to whichever thread is
** free, so fn must not assume which thread runs i or in what order items
** finish; whatever fn writes is visible to the caller once parallel_for has
** returned. fn reports its own failures through arg (it returns nothing).
**
** No global state: any number of calls may run at once from any threads.
** A helper thread that cannot be started leaves its share to the others
** (every item still runs exactly once), so the only failure is a bad
** argument.
*/
#ifndef ANOM_PARALLEL_H
#define ANOM_PARALLEL_H

#include "common.h"

/* The most threads one call runs. */
#define PARALLEL_MAX_THREADS 64

/*
** Run fn(arg, i) for i in [0, n) on nthreads threads (1 runs everything on
** the caller's thread). ANOM_EINVAL when nthreads is not in
** [1, PARALLEL_MAX_THREADS], n < 0 or fn is NULL; else ANOM_OK once every
** item has run.
*/
int parallel_for(int nthreads, int n, void (*fn)(void *arg, int i), void *arg,
                 anom_err *e);

#endif /* ANOM_PARALLEL_H */
