/*
** baselines.c - the two baselines every Fashion-MNIST detector must beat
** (one class normal, image AUROC), computed over OpenBLAS:
**
**   pca  the squared reconstruction error of the image from the first 10
**        principal components of the normal training images (centred on
**        their mean; components from the covariance by subspace iteration
**        with Rayleigh-Ritz and a Jacobi eigen-solver on the small matrix)
**   nn   the squared Euclidean distance to the nearest normal training
**        image (||a||^2 + ||b||^2 - 2ab by sgemm, the winner's distance
**        recomputed exactly in double)
**
** Pixels are scaled to [0, 1], 784 per image. The normal set of class c is
** all 6,000 training images of c (no hold-out); the test set is the 10,000
** test images (or the first --test-limit), anomalous when the label is not c.
**
**   baselines [--data DIR] [--classes 0,1,6] [--test-limit N] [--components K]
**   baselines --info        OpenBLAS core, configuration and threads, as JSON
**
** Prints one JSON object on stdout; progress goes to stderr. Threads are
** OpenBLAS's (OPENBLAS_NUM_THREADS, OPENBLAS_CORETYPE).
*/
#include "common.h"
#include "idx.h"
#include "metrics.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DIM 784
#define BLOCK 24            /* subspace dimension for the top components */
#define NN_ROWS 1024        /* test images per sgemm block */

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Read and parse one IDX(.gz) file. */
static int load_idx(idx_file *f, const char *dir, const char *name, anom_err *e) {
  char path[4096];
  unsigned char *buf = NULL;
  long n = 0;
  int rc = ANOM_OK;
  memset(f, 0, sizeof(*f));
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *fp = fopen(path, "rb");
  if( !fp ) return anom_fail(e, ANOM_EINVAL, "cannot open %s", path);
  if( fseek(fp, 0, SEEK_END) || (n = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) ){
    rc = anom_fail(e, ANOM_EINVAL, "cannot size %s", path);
    goto done;
  }
  if( !(buf = anom_malloc(n ? (size_t)n : 1)) ){
    rc = anom_fail(e, ANOM_ENOMEM, "out of memory reading %s", path);
    goto done;
  }
  if( fread(buf, 1, (size_t)n, fp) != (size_t)n ){
    rc = anom_fail(e, ANOM_EINVAL, "short read on %s", path);
    goto done;
  }
  if( (rc = idx_load(f, buf, (size_t)n, e)) ) goto done;
done:
  fclose(fp);
  anom_free(buf);
  return rc;
}

/*
** Eigen-decomposition of the symmetric k x k matrix a (row-major, destroyed)
** by cyclic Jacobi rotations: eigenvalues into w[k], eigenvectors into the
** columns of v (k x k).
*/
static void jacobi_eigen(double *a, int k, double *w, double *v) {
  for(int i = 0; i < k; i++)
    for(int j = 0; j < k; j++) v[i * k + j] = i == j;
  for(int sweep = 0; sweep < 100; sweep++){
    double off = 0, diag = 0;
    for(int i = 0; i < k; i++){
      diag += a[i * k + i] * a[i * k + i];
      for(int j = i + 1; j < k; j++) off += a[i * k + j] * a[i * k + j];
    }
    if( off <= 1e-30 * diag ) break;
    for(int p = 0; p < k; p++){
      for(int q = p + 1; q < k; q++){
        double apq = a[p * k + q];
        if( apq == 0 ) continue;
        double theta = (a[q * k + q] - a[p * k + p]) / (2 * apq);
        double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
        double c = 1 / sqrt(t * t + 1), s = t * c;
        for(int r = 0; r < k; r++){          /* a = a J (columns p, q) */
          double arp = a[r * k + p], arq = a[r * k + q];
          a[r * k + p] = c * arp - s * arq;
          a[r * k + q] = s * arp + c * arq;
        }
        for(int r = 0; r < k; r++){          /* a = J^T a (rows p, q) */
          double apr = a[p * k + r], aqr = a[q * k + r];
          a[p * k + r] = c * apr - s * aqr;
          a[q * k + r] = s * apr + c * aqr;
        }
        for(int r = 0; r < k; r++){          /* v = v J */
          double vrp = v[r * k + p], vrq = v[r * k + q];
          v[r * k + p] = c * vrp - s * vrq;
          v[r * k + q] = s * vrp + c * vrq;
        }
      }
    }
  }
  for(int i = 0; i < k; i++) w[i] = a[i * k + i];
}

/* Orthonormalise the b columns of q (d x b, row-major), Gram-Schmidt twice. */
static void orthonormalise(double *q, int d, int b) {
  for(int j = 0; j < b; j++){
    for(int pass = 0; pass < 2; pass++){
      for(int i = 0; i < j; i++){
        double dot = 0;
        for(int r = 0; r < d; r++) dot += q[r * b + i] * q[r * b + j];
        for(int r = 0; r < d; r++) q[r * b + j] -= dot * q[r * b + i];
      }
    }
    double nrm = 0;
    for(int r = 0; r < d; r++) nrm += q[r * b + j] * q[r * b + j];
    nrm = sqrt(nrm);
    for(int r = 0; r < d; r++) q[r * b + j] = nrm > 0 ? q[r * b + j] / nrm : 0;
  }
}

/*
** The top k eigenvectors of the symmetric d x d matrix c into p (d x k,
** columns, eigenvalues descending into lam[k]), by block subspace iteration
** on BLOCK vectors with a Rayleigh-Ritz step each iteration. Stops when every
** wanted pair has ||c v - lam v|| <= 1e-9 lam_1. Returns the iterations.
*/
static int top_eigen(const double *c, int d, int k, double *p, double *lam,
                     double *resid, anom_err *e) {
  int b = BLOCK, it = 0;
  double *q = anom_malloc((size_t)d * b * sizeof(double));
  double *z = anom_malloc((size_t)d * b * sizeof(double));
  double *h = anom_malloc((size_t)b * b * sizeof(double));
  double *v = anom_malloc((size_t)b * b * sizeof(double));
  double w[BLOCK];
  int order[BLOCK];
  if( !q || !z || !h || !v ){ it = -anom_fail(e, ANOM_ENOMEM, "out of memory"); goto done; }
  uint64_t s = 0x9e3779b97f4a7c15ULL;              /* fixed start, xorshift */
  for(size_t i = 0; i < (size_t)d * b; i++){
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    q[i] = (double)(s >> 11) / 9007199254740992.0 - 0.5;
  }
  orthonormalise(q, d, b);
  for(it = 1; it <= 2000; it++){
    cblas_dsymm(CblasRowMajor, CblasLeft, CblasUpper, d, b, 1, c, d, q, b, 0, z, b);
    /* Rayleigh-Ritz: h = q^T c q, then q <- q v sorted by eigenvalue */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, b, b, d, 1, q, b, z, b, 0, h, b);
    for(int i = 0; i < b; i++)
      for(int j = i + 1; j < b; j++) h[i * b + j] = h[j * b + i] = 0.5 * (h[i * b + j] + h[j * b + i]);
    jacobi_eigen(h, b, w, v);
    for(int i = 0; i < b; i++) order[i] = i;
    for(int i = 1; i < b; i++){                     /* insertion sort, descending */
      int t = order[i], j = i;
      while( j > 0 && w[order[j - 1]] < w[t] ){ order[j] = order[j - 1]; j--; }
      order[j] = t;
    }
    /* residual of the wanted Ritz pairs: (c q) v_i - w_i q v_i */
    double worst = 0;
    for(int i = 0; i < k; i++){
      int col = order[i];
      double r2 = 0;
      for(int r = 0; r < d; r++){
        double cq = 0, qq = 0;
        for(int j = 0; j < b; j++){
          cq += z[r * b + j] * v[j * b + col];
          qq += q[r * b + j] * v[j * b + col];
        }
        p[r * k + i] = qq;
        r2 += (cq - w[col] * qq) * (cq - w[col] * qq);
      }
      lam[i] = w[col];
      if( sqrt(r2) > worst ) worst = sqrt(r2);
    }
    *resid = worst / w[order[0]];
    if( *resid <= 1e-9 ) break;
    /* next block: z = c q, orthonormalised */
    memcpy(q, z, (size_t)d * b * sizeof(double));
    orthonormalise(q, d, b);
  }
  orthonormalise(p, d, k);
done:
  anom_free(q);
  anom_free(z);
  anom_free(h);
  anom_free(v);
  return it;
}

typedef struct class_result {
  int cls, ntrain;
  double pca, nn, pca_seconds, nn_seconds, explained, resid;
  int iterations;
} class_result;

/*
** Both baselines for normal class cls: tr (ntr x DIM bytes) with labels trl,
** te (nte x DIM) with labels tel.
*/
static int run_class(class_result *res, int cls, int ncomp,
                     const unsigned char *tr, const unsigned char *trl, size_t ntr,
                     const unsigned char *te, const unsigned char *tel, size_t nte,
                     anom_err *e) {
  int rc = ANOM_OK, n = 0;
  for(size_t i = 0; i < ntr; i++) n += trl[i] == cls;
  double *xc = anom_malloc((size_t)n * DIM * sizeof(double));
  double *cov = anom_malloc((size_t)DIM * DIM * sizeof(double));
  double *mean = anom_calloc(DIM, sizeof(double));
  double *p = anom_malloc((size_t)DIM * ncomp * sizeof(double));
  double *lam = anom_malloc((size_t)ncomp * sizeof(double));
  double *dt = anom_malloc((size_t)nte * DIM * sizeof(double));
  double *proj = anom_malloc((size_t)nte * ncomp * sizeof(double));
  double *score = anom_malloc(nte * sizeof(double));
  int *lab = anom_malloc(nte * sizeof(int));
  float *trf = anom_malloc((size_t)n * DIM * sizeof(float));
  float *trn = anom_malloc((size_t)n * sizeof(float));
  float *tef = anom_malloc((size_t)NN_ROWS * DIM * sizeof(float));
  float *g = anom_malloc((size_t)NN_ROWS * n * sizeof(float));
  size_t *src = anom_malloc((size_t)n * sizeof(size_t));
  if( !xc || !cov || !mean || !p || !lam || !dt || !proj || !score || !lab ||
      !trf || !trn || !tef || !g || !src ){
    rc = anom_fail(e, ANOM_ENOMEM, "out of memory for class %d", cls);
    goto done;
  }
  memset(res, 0, sizeof(*res));
  res->cls = cls;
  res->ntrain = n;
  for(size_t i = 0; i < nte; i++) lab[i] = tel[i] != cls;

  /* ---- PCA */
  double t0 = now_seconds();
  int r = 0;
  for(size_t i = 0; i < ntr; i++){
    if( trl[i] != cls ) continue;
    src[r] = i;
    for(int j = 0; j < DIM; j++){
      double x = tr[i * DIM + j] / 255.0;
      xc[(size_t)r * DIM + j] = x;
      mean[j] += x;
      trf[(size_t)r * DIM + j] = (float)x;
    }
    r++;
  }
  for(int j = 0; j < DIM; j++) mean[j] /= n;
  for(int i = 0; i < n; i++)
    for(int j = 0; j < DIM; j++) xc[(size_t)i * DIM + j] -= mean[j];
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, DIM, n, 1.0 / n, xc, DIM, 0, cov, DIM);
  for(int i = 0; i < DIM; i++)
    for(int j = 0; j < i; j++) cov[i * DIM + j] = cov[j * DIM + i];
  double trace = 0;
  for(int i = 0; i < DIM; i++) trace += cov[i * DIM + i];
  res->iterations = top_eigen(cov, DIM, ncomp, p, lam, &res->resid, e);
  if( res->iterations < 0 ){ rc = e->code; goto done; }
  for(int i = 0; i < ncomp; i++) res->explained += lam[i];
  res->explained /= trace;
  for(size_t i = 0; i < nte; i++)
    for(int j = 0; j < DIM; j++) dt[i * DIM + j] = te[i * DIM + j] / 255.0 - mean[j];
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nte, ncomp, DIM, 1, dt, DIM,
              p, ncomp, 0, proj, ncomp);
  for(size_t i = 0; i < nte; i++){            /* || d - P P^T d ||^2 */
    double s = 0;
    for(int j = 0; j < DIM; j++){
      double rec = 0;
      for(int k = 0; k < ncomp; k++) rec += p[j * ncomp + k] * proj[i * ncomp + k];
      double d = dt[i * DIM + j] - rec;
      s += d * d;
    }
    score[i] = s;
  }
  if( (rc = auroc(score, lab, nte, &res->pca, e)) ) goto done;
  res->pca_seconds = now_seconds() - t0;

  /* ---- 1-NN */
  t0 = now_seconds();
  for(int i = 0; i < n; i++){
    double s = 0;
    for(int j = 0; j < DIM; j++) s += (double)trf[(size_t)i * DIM + j] * trf[(size_t)i * DIM + j];
    trn[i] = (float)s;
  }
  for(size_t b0 = 0; b0 < nte; b0 += NN_ROWS){
    int m = (int)(nte - b0 < NN_ROWS ? nte - b0 : NN_ROWS);
    for(int i = 0; i < m; i++)
      for(int j = 0; j < DIM; j++) tef[(size_t)i * DIM + j] = te[(b0 + i) * DIM + j] / 255.0f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, DIM, 1, tef, DIM, trf, DIM,
                0, g, n);
    for(int i = 0; i < m; i++){
      const float *gi = g + (size_t)i * n;
      int best = 0;
      float bestd = INFINITY;
      for(int j = 0; j < n; j++){        /* ||a||^2 is common to the row */
        float d = trn[j] - 2 * gi[j];
        if( d < bestd ){ bestd = d; best = j; }
      }
      const unsigned char *a = te + (b0 + i) * DIM, *bb = tr + src[best] * DIM;
      double s = 0;
      for(int j = 0; j < DIM; j++){
        double d = (a[j] - bb[j]) / 255.0;
        s += d * d;
      }
      score[b0 + i] = s;
    }
  }
  if( (rc = auroc(score, lab, nte, &res->nn, e)) ) goto done;
  res->nn_seconds = now_seconds() - t0;
done:
  anom_free(xc); anom_free(cov); anom_free(mean); anom_free(p); anom_free(lam);
  anom_free(dt); anom_free(proj); anom_free(score); anom_free(lab); anom_free(trf);
  anom_free(trn); anom_free(tef); anom_free(g); anom_free(src);
  return rc;
}

static void print_info(void) {
  printf("{\"openblas_core\": \"%s\", \"openblas_config\": \"%s\", \"openblas_threads\": %d}\n",
         openblas_get_corename(), openblas_get_config(), openblas_get_num_threads());
}

int main(int argc, char **argv) {
  const char *dir = "/usr/share/datasets/fashion-mnist";
  int classes[10], ncls = 0, ncomp = 10, status = 1;
  long limit = 0;
  idx_file tri = {0}, trl = {0}, tei = {0}, tel = {0};
  anom_err e = {0};
  for(int i = 1; i < argc; i++){
    if( !strcmp(argv[i], "--info") ){ print_info(); return 0; }
    else if( !strcmp(argv[i], "--data") && i + 1 < argc ) dir = argv[++i];
    else if( !strcmp(argv[i], "--test-limit") && i + 1 < argc ) limit = atol(argv[++i]);
    else if( !strcmp(argv[i], "--components") && i + 1 < argc ) ncomp = atoi(argv[++i]);
    else if( !strcmp(argv[i], "--classes") && i + 1 < argc ){
      for(char *s = argv[++i]; *s && ncls < 10; ){
        char *end;
        long c = strtol(s, &end, 10);
        if( end == s || c < 0 || c > 9 ){
          fprintf(stderr, "baselines: --classes takes digits 0..9 separated by commas, found '%s'\n", s);
          return 2;
        }
        classes[ncls++] = (int)c;
        s = *end == ',' ? end + 1 : end;
      }
    }else{
      fprintf(stderr, "usage: baselines [--data DIR] [--classes 0,1,...] [--test-limit N] "
              "[--components K] | --info\n");
      return 2;
    }
  }
  if( ncomp < 1 || ncomp > BLOCK / 2 ){
    fprintf(stderr, "baselines: --components must be 1..%d, found %d\n", BLOCK / 2, ncomp);
    return 2;
  }
  if( !ncls ) for(ncls = 0; ncls < 10; ncls++) classes[ncls] = ncls;
  if( load_idx(&tri, dir, "train-images-idx3-ubyte.gz", &e) ||
      load_idx(&trl, dir, "train-labels-idx1-ubyte.gz", &e) ||
      load_idx(&tei, dir, "t10k-images-idx3-ubyte.gz", &e) ||
      load_idx(&tel, dir, "t10k-labels-idx1-ubyte.gz", &e) ) goto fail;
  if( tri.ndim != 3 || tri.item_bytes != DIM || tei.ndim != 3 || tei.item_bytes != DIM ||
      trl.count != tri.count || tel.count != tei.count ){
    anom_fail(&e, ANOM_EFORMAT, "expected 28x28 images with as many labels");
    goto fail;
  }
  size_t nte = tei.count;
  if( limit > 0 && (size_t)limit < nte ) nte = (size_t)limit;

  double t0 = now_seconds(), sum_pca = 0, sum_nn = 0;
  printf("{\"openblas_core\": \"%s\", \"openblas_threads\": %d, \"components\": %d, "
         "\"train_images\": \"all normal training images of the class\", \"test_images\": %zu, "
         "\"pixels\": \"[0, 1], 784\", \"classes\": [",
         openblas_get_corename(), openblas_get_num_threads(), ncomp, nte);
  for(int i = 0; i < ncls; i++){
    class_result r;
    if( run_class(&r, classes[i], ncomp, tri.data, trl.data, tri.count, tei.data, tel.data,
                  nte, &e) ) goto fail;
    sum_pca += r.pca;
    sum_nn += r.nn;
    fprintf(stderr, "class %d: pca %.4f (%.1f s, %d iterations, %.1f%% of variance) "
            "1-nn %.4f (%.1f s)\n", r.cls, r.pca, r.pca_seconds, r.iterations,
            100 * r.explained, r.nn, r.nn_seconds);
    printf("%s\n  {\"class\": %d, \"train\": %d, \"pca\": %.6f, \"nn\": %.6f, "
           "\"pca_seconds\": %.3f, \"nn_seconds\": %.3f, \"pca_iterations\": %d, "
           "\"pca_residual\": %.3g, \"pca_explained\": %.4f}",
           i ? "," : "", r.cls, r.ntrain, r.pca, r.nn, r.pca_seconds, r.nn_seconds,
           r.iterations, r.resid, r.explained);
    fflush(stdout);
  }
  printf("],\n \"mean_pca\": %.6f, \"mean_nn\": %.6f, \"seconds\": %.3f}\n",
         sum_pca / ncls, sum_nn / ncls, now_seconds() - t0);
  status = 0;
fail:
  if( status ) fprintf(stderr, "baselines: %s\n", e.msg);
  idx_free(&tri); idx_free(&trl); idx_free(&tei); idx_free(&tel);
  return status;
}
