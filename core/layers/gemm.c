/*
** gemm.c - matrix multiply, the one place in core/ that calls BLAS.
**
**   gemm(0, 1, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);   C = A B^T
**
** Row-major, with cblas_sgemm's meaning for every argument (see layers.h);
** a product with one row or one column goes to cblas_sgemv instead.
** gemm_naive is the plain triple loop the tests hold gemm against; like
** BLAS it never reads C when beta == 0, so C may hold garbage or NaN.
**
** OpenBLAS keeps one thread count for the whole process, and changing it
** while a product runs on another thread is not safe (it may start or
** retire its worker threads). So every product holds a read lock on
** blas_lock, and gemm_set_threads the write lock: a change waits for the
** products in flight, and the next ones see it. Uncontended, the read lock
** costs two atomic operations a product, lost in the product itself.
*/
#include "layers.h"

#include <cblas.h>
#include <pthread.h>

/* guards the BLAS's own process-wide state (the one static in core/
** outside the test build's fault injection) */
static pthread_rwlock_t blas_lock = PTHREAD_RWLOCK_INITIALIZER;

static void gemm_unlocked(int trans_a, int trans_b, int m, int n, int k, float alpha,
                          const float *a, int lda, const float *b, int ldb, float beta,
                          float *c, int ldc);

void gemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
          const float *a, int lda, const float *b, int ldb, float beta,
          float *c, int ldc) {
  pthread_rwlock_rdlock(&blas_lock);
  gemm_unlocked(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  pthread_rwlock_unlock(&blas_lock);
}

int gemm_set_threads(int n) {
#ifdef OPENBLAS_VERSION
  if( n < 1 ) n = 1;
  pthread_rwlock_wrlock(&blas_lock);
  openblas_set_num_threads(n);
  int now = openblas_get_num_threads();
  pthread_rwlock_unlock(&blas_lock);
  return now;
#else
  (void)n;
  return -1;
#endif
}

void gemm_blas_info(gemm_blas *info) {
  static const char *parallel[] = {"sequential", "pthreads", "openmp"};
  *info = (gemm_blas){"unknown", "unknown", "unknown", "unknown", 1, 1};
#ifdef OPENBLAS_VERSION
  info->name = "OpenBLAS";
  info->config = openblas_get_config();
  info->core = openblas_get_corename();
  int p = openblas_get_parallel();
  if( p >= 0 && p <= 2 ) info->parallel = parallel[p];
  info->threads = openblas_get_num_threads();
  info->processors = openblas_get_num_procs();
#else
  (void)parallel;
#endif
}

static void gemm_unlocked(int trans_a, int trans_b, int m, int n, int k, float alpha,
                          const float *a, int lda, const float *b, int ldb, float beta,
                          float *c, int ldc) {
  if( m <= 0 || n <= 0 ) return;
  if( k <= 0 ){
    /* BLAS rejects lda < 1 here; an empty product leaves beta * C. */
    gemm_naive(trans_a, trans_b, m, n, 0, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if( n == 1 || m == 1 ){
    /* A product with one column (one image through a linear layer or a
    ** convolution to 1x1) or one row is a matrix-vector product: sgemv
    ** reads the matrix once, where sgemm would first copy it into its
    ** packed layout. C's vector is cleared first when beta == 0, so that
    ** it is never read (whatever the BLAS does with beta == 0). */
    int len = n == 1 ? m : n, inc = n == 1 ? ldc : 1;
    if( beta == 0.0f ) for(int i = 0; i < len; i++) c[(size_t)i * inc] = 0.0f;
    if( n == 1 ){
      /* c = op(A) b, b the column of op(B) */
      cblas_sgemv(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                  trans_a ? k : m, trans_a ? m : k, alpha, a, lda,
                  b, trans_b ? 1 : ldb, beta, c, ldc);
    }else{
      /* c^T = op(B)^T a^T, a the row of op(A) */
      cblas_sgemv(CblasRowMajor, trans_b ? CblasNoTrans : CblasTrans,
                  trans_b ? n : k, trans_b ? k : n, alpha, b, ldb,
                  a, trans_a ? lda : 1, beta, c, 1);
    }
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b,
              ldb, beta, c, ldc);
}

void gemm_naive(int trans_a, int trans_b, int m, int n, int k, float alpha,
                const float *a, int lda, const float *b, int ldb, float beta,
                float *c, int ldc) {
  for(int i = 0; i < m; i++){
    for(int j = 0; j < n; j++){
      double acc = 0.0;
      for(int p = 0; p < k; p++){
        float av = trans_a ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
        float bv = trans_b ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
        acc += (double)av * bv;
      }
      float *cij = &c[(size_t)i * ldc + j];
      *cij = alpha * (float)acc + (beta == 0.0f ? 0.0f : beta * *cij);
    }
  }
}
