/*
** parallel.c - parallel_for of parallel.h on POSIX threads.
**
** One shared counter, taken with an atomic fetch-and-add, hands out the next
** item; every thread, the caller's included, loops taking items until the
** counter passes n. The helpers are started for the call and joined at its
** end, which also publishes their writes to the caller. Starting a thread
** costs tens of microseconds: callers give each item enough work (a batch
** of images, not one pixel).
*/
#include "parallel.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct parallel_job {
  void (*fn)(void *arg, int i);
  void *arg;
  int n;
  atomic_int next;          /* the next item to hand out */
} parallel_job;

/* Take and run items until none is left. */
static void *parallel_worker(void *p) {
  parallel_job *job = p;
  for(;;){
    int i = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
    if( i >= job->n ) break;
    job->fn(job->arg, i);
  }
  return NULL;
}

int parallel_for(int nthreads, int n, void (*fn)(void *arg, int i), void *arg,
                 anom_err *e) {
  if( nthreads < 1 || nthreads > PARALLEL_MAX_THREADS )
    return anom_fail(e, ANOM_EINVAL, "threads must be from 1 to %d, got %d",
                     PARALLEL_MAX_THREADS, nthreads);
  if( n < 0 ) return anom_fail(e, ANOM_EINVAL, "item count must be >= 0, got %d", n);
  if( !fn ) return anom_fail(e, ANOM_EINVAL, "no function to run");
  parallel_job job;
  job.fn = fn;
  job.arg = arg;
  job.n = n;
  atomic_init(&job.next, 0);
  /* no more helpers than items beyond the caller's own */
  int helpers = (nthreads < n ? nthreads : n) - 1;
  pthread_t tid[PARALLEL_MAX_THREADS];
  int started = 0;
  while( started < helpers
         && pthread_create(&tid[started], NULL, parallel_worker, &job) == 0 )
    started++;
  parallel_worker(&job);
  for(int t = 0; t < started; t++) pthread_join(tid[t], NULL);
  return ANOM_OK;
}
