/*
** fma_peak.c - what one core (and two) can compute at most, as a yardstick
** for the scoring benchmarks: single-precision FMA GFLOP/s of independent
** accumulator chains, and OpenBLAS's cblas_sgemm GFLOP/s on a few matrices
** of the shapes our convolutions give.
**
**   fma_peak            one JSON line on stdout
**
** The FMA loop keeps ACCS independent chains acc = acc * a + b in vector
** registers, enough to cover the FMA latency on every port, so it runs at
** the core's FMA throughput: AVX-512 (16 floats a vector) when the CPU has
** it, else AVX2 with FMA (8 floats); 2 FLOP per lane per FMA. It is timed on
** 1 thread and on 2 threads (one loop per thread, started together at a
** barrier; GFLOP/s = all FLOP / the slower thread's seconds); each figure is
** the best of TRIALS runs of about 0.1 s, since noise only lowers it. sgemm
** runs on one OpenBLAS thread (openblas_set_num_threads(1)), best of 3 after
** a warm-up. Output, e.g.:
**
**   {"isa": "avx512f", "lanes": 16, "accumulators": 12,
**    "fma_gflops": {"1": 150.2, "2": 298.7}, "openblas_core": "SkylakeX",
**    "sgemm": [{"m": 128, "n": 4096, "k": 1024, "gflops": 131.0}, ...]}
**
** "isa" is "none" (and the FMA figures null) on a CPU with neither.
*/
#include "common.h"

#include <cblas.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define ACCS 12          /* independent chains: latency 4 x 2 ports = 8 needed */
#define TRIALS 5
#define MAX_THREADS 2

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The twelve chains, written out so that each stays in its own register. */
#define CHAINS(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7) OP(8) OP(9) OP(10) OP(11)

/* iters x ACCS AVX-512 FMAs; returns the sum of the lanes (keeps the work live). */
__attribute__((target("avx512f"))) static float fma_avx512(long iters) {
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
#define DECL(i) __m512 c##i = _mm512_set1_ps(1.0f + (i) * 0.01f);
#define STEP(i) c##i = _mm512_fmadd_ps(c##i, a, b);
#define SUM(i) s = _mm512_add_ps(s, c##i);
  CHAINS(DECL)
  for(long it = 0; it < iters; it++){
    CHAINS(STEP)
  }
  __m512 s = _mm512_setzero_ps();
  CHAINS(SUM)
#undef DECL
#undef STEP
#undef SUM
  return _mm512_reduce_add_ps(s);
}

/* The same with AVX2 FMAs (8 floats a vector). */
__attribute__((target("avx2,fma"))) static float fma_avx2(long iters) {
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
#define DECL(i) __m256 c##i = _mm256_set1_ps(1.0f + (i) * 0.01f);
#define STEP(i) c##i = _mm256_fmadd_ps(c##i, a, b);
#define SUM(i) s = _mm256_add_ps(s, c##i);
  CHAINS(DECL)
  for(long it = 0; it < iters; it++){
    CHAINS(STEP)
  }
  __m256 s = _mm256_setzero_ps();
  CHAINS(SUM)
#undef DECL
#undef STEP
#undef SUM
  float lanes[8];
  _mm256_storeu_ps(lanes, s);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}

typedef struct {
  int wide;                  /* 1: AVX-512, 0: AVX2 */
  long iters;
  pthread_barrier_t *start;
  double seconds;            /* out: this thread's time */
  float sink;                /* out: the loop's result */
} fma_job;

static void *fma_thread(void *arg) {
  fma_job *j = arg;
  pthread_barrier_wait(j->start);
  double t0 = now_seconds();
  j->sink = j->wide ? fma_avx512(j->iters) : fma_avx2(j->iters);
  j->seconds = now_seconds() - t0;
  return NULL;
}

/* GFLOP/s of nthreads loops of iters iterations each, run together; -1 on error. */
static double fma_run(int wide, int nthreads, long iters, float *sink) {
  pthread_t th[MAX_THREADS];
  fma_job jobs[MAX_THREADS];
  pthread_barrier_t start;
  int started = 0;
  double slowest = 0;
  if( pthread_barrier_init(&start, NULL, (unsigned)nthreads) ) return -1;
  for(int t = 0; t < nthreads; t++){
    jobs[t] = (fma_job){ wide, iters, &start, 0, 0 };
    if( pthread_create(&th[t], NULL, fma_thread, &jobs[t]) ) break;
    started++;
  }
  if( started < nthreads ){
    /* the barrier would never open: run the missing threads' share here */
    for(int t = started; t < nthreads; t++) fma_thread(&jobs[t]);
  }
  for(int t = 0; t < started; t++) pthread_join(th[t], NULL);
  pthread_barrier_destroy(&start);
  if( started < nthreads ) return -1;
  for(int t = 0; t < nthreads; t++){
    if( jobs[t].seconds > slowest ) slowest = jobs[t].seconds;
    *sink += jobs[t].sink;
  }
  double flop = 2.0 * (wide ? 16 : 8) * ACCS * (double)iters * nthreads;
  return slowest > 0 ? flop / slowest * 1e-9 : -1;
}

/* Best GFLOP/s of TRIALS runs of about 0.1 s each on nthreads threads. */
static double fma_peak(int wide, int nthreads, float *sink) {
  long iters = 1 << 16;
  double t0 = now_seconds();
  /* calibrate on one thread: grow iters until a run takes 0.1 s */
  for(;;){
    double s0 = now_seconds();
    *sink += wide ? fma_avx512(iters) : fma_avx2(iters);
    double s = now_seconds() - s0;
    if( s > 0.1 || now_seconds() - t0 > 2 ) break;
    iters = s > 0.01 ? (long)(iters * 0.1 / s) : iters * 8;
  }
  double best = -1;
  for(int i = 0; i < TRIALS; i++){
    double g = fma_run(wide, nthreads, iters, sink);
    if( g > best ) best = g;
  }
  return best;
}

/* Best GFLOP/s of 3 cblas_sgemm calls C(m, n) = A(m, k) B(k, n), after one warm-up. */
static double sgemm_gflops(int m, int n, int k, float *sink, anom_err *e) {
  float *a = anom_malloc((size_t)m * k * sizeof(float));
  float *b = anom_malloc((size_t)k * n * sizeof(float));
  float *c = anom_malloc((size_t)m * n * sizeof(float));
  double best = -1;
  if( !a || !b || !c ){
    anom_fail(e, ANOM_ENOMEM, "out of memory for sgemm %dx%dx%d", m, n, k);
    goto done;
  }
  for(size_t i = 0; i < (size_t)m * k; i++) a[i] = ((float)(i * 7 % 13) - 6) * 0.01f;
  for(size_t i = 0; i < (size_t)k * n; i++) b[i] = ((float)(i * 5 % 11) - 5) * 0.01f;
  for(int r = 0; r < 4; r++){
    double t0 = now_seconds();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
    double s = now_seconds() - t0;
    *sink += c[(size_t)(r * 977) % ((size_t)m * n)];
    if( r > 0 && s > 0 && 2.0 * m * n * k / s * 1e-9 > best ) best = 2.0 * m * n * k / s * 1e-9;
  }
done:
  anom_free(a);
  anom_free(b);
  anom_free(c);
  return best;
}

static void print_gflops(double g) {
  if( g > 0 ) printf("%.1f", g);
  else printf("null");
}

int main(int argc, char **argv) {
  static const int shapes[][3] = {   /* m, n, k: conv weights x im2col columns */
    {128, 4096, 1024}, {256, 1024, 2048}, {64, 1024, 1024}
  };
  anom_err e = {0};
  float sink = 0;
  (void)argv;
  if( argc > 1 ){
    fprintf(stderr, "usage: fma_peak   (prints one JSON line)\n");
    return 2;
  }
  __builtin_cpu_init();
  int wide = __builtin_cpu_supports("avx512f");
  int have = wide || (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
  printf("{\"isa\": \"%s\", \"lanes\": %d, \"accumulators\": %d, \"fma_gflops\": {",
         wide ? "avx512f" : have ? "avx2+fma" : "none", wide ? 16 : have ? 8 : 0, ACCS);
  for(int t = 1; t <= MAX_THREADS; t++){
    printf("%s\"%d\": ", t > 1 ? ", " : "", t);
    print_gflops(have ? fma_peak(wide, t, &sink) : -1);
    fflush(stdout);
  }
  openblas_set_num_threads(1);
  printf("}, \"openblas_core\": \"%s\", \"sgemm_threads\": 1, \"sgemm\": [",
         openblas_get_corename());
  for(size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++){
    double g = sgemm_gflops(shapes[i][0], shapes[i][1], shapes[i][2], &sink, &e);
    if( g < 0 && e.msg[0] ){
      printf("]}\n");
      fprintf(stderr, "fma_peak: %s\n", e.msg);
      return 1;
    }
    printf("%s{\"m\": %d, \"n\": %d, \"k\": %d, \"gflops\": ", i ? ", " : "",
           shapes[i][0], shapes[i][1], shapes[i][2]);
    print_gflops(g);
    printf("}");
  }
  /* sink is finite and positive; printing it keeps every loop's work live */
  printf("], \"checksum\": %.3g}\n", (double)sink);
  return 0;
}
