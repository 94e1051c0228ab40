/*
** test_parallel.c - parallel_for (core/parallel.c).
**
** Every item runs exactly once, for thread counts from 1 to more than the
** items and item counts from 0 up; work done on other threads is visible to
** the caller when parallel_for returns; with more than one thread and slow
** items, more than one thread does take part (so the threads are real);
** and bad arguments are refused with their messages, running nothing.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "core/parallel.h"

#define MAX_ITEMS 1000

typedef struct count_job {
  atomic_int runs[MAX_ITEMS];   /* how often item i ran */
  long long value[MAX_ITEMS];   /* written by the item, read by the caller */
  pthread_t who[MAX_ITEMS];     /* the thread that ran item i */
  int sleep_us;                 /* make each item slow */
} count_job;

static void count_item(void *arg, int i) {
  count_job *job = arg;
  atomic_fetch_add(&job->runs[i], 1);
  job->value[i] = (long long)i * i + 7;
  job->who[i] = pthread_self();
  if( job->sleep_us ){
    struct timespec ts = {0, job->sleep_us * 1000L};
    nanosleep(&ts, NULL);
  }
}

static void reset(count_job *job) {
  for(int i = 0; i < MAX_ITEMS; i++) atomic_init(&job->runs[i], 0);
  memset(job->value, 0, sizeof(job->value));
  job->sleep_us = 0;
}

static void test_each_item_once(void **state) {
  (void)state;
  static count_job job;
  const int threads[] = {1, 2, 3, 8, 64};
  const int counts[] = {0, 1, 2, 7, 63, 64, 65, 1000};
  for(size_t t = 0; t < sizeof(threads) / sizeof(threads[0]); t++)
  for(size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++){
    anom_err e = {0};
    reset(&job);
    assert_int_equal(parallel_for(threads[t], counts[c], count_item, &job, &e), ANOM_OK);
    for(int i = 0; i < MAX_ITEMS; i++){
      int want = i < counts[c];
      assert_int_equal(atomic_load(&job.runs[i]), want);
      /* plain writes of the workers, seen by the caller after the join */
      assert_true(job.value[i] == (want ? (long long)i * i + 7 : 0));
    }
  }
}

/* 40 items of 2 ms on 4 threads: the caller cannot run them all alone
** before the others start, so more than one thread must show up. */
static void test_threads_take_part(void **state) {
  (void)state;
  static count_job job;
  anom_err e = {0};
  reset(&job);
  job.sleep_us = 2000;
  assert_int_equal(parallel_for(4, 40, count_item, &job, &e), ANOM_OK);
  int distinct = 0;
  for(int i = 0; i < 40; i++){
    int seen = 0;
    for(int j = 0; j < i && !seen; j++) seen = pthread_equal(job.who[i], job.who[j]);
    distinct += !seen;
  }
  assert_true(distinct > 1);
  /* one thread: everything on the caller's */
  reset(&job);
  assert_int_equal(parallel_for(1, 5, count_item, &job, &e), ANOM_OK);
  for(int i = 0; i < 5; i++) assert_true(pthread_equal(job.who[i], pthread_self()));
}

static void test_bad_arguments(void **state) {
  (void)state;
  static count_job job;
  anom_err e = {0};
  reset(&job);
  assert_int_equal(parallel_for(0, 5, count_item, &job, &e), ANOM_EINVAL);
  assert_string_equal(e.msg, "threads must be from 1 to 64, got 0");
  assert_int_equal(parallel_for(PARALLEL_MAX_THREADS + 1, 5, count_item, &job, &e), ANOM_EINVAL);
  assert_string_equal(e.msg, "threads must be from 1 to 64, got 65");
  assert_int_equal(parallel_for(2, -1, count_item, &job, &e), ANOM_EINVAL);
  assert_string_equal(e.msg, "item count must be >= 0, got -1");
  assert_int_equal(parallel_for(2, 5, NULL, &job, &e), ANOM_EINVAL);
  assert_string_equal(e.msg, "no function to run");
  for(int i = 0; i < 5; i++) assert_int_equal(atomic_load(&job.runs[i]), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_each_item_once),
    cmocka_unit_test(test_threads_take_part),
    cmocka_unit_test(test_bad_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
