/*
** bench_core.c - scoring throughput of the core alone, on decoded tensors:
** no SQL, no PNG decode. The first N Fashion-MNIST test images are fitted to
** the model's input (image_to_tensor, the model's fit) once, untimed; then
** model_score runs over all N at batch 1 and at batch 64.
**
**   bench_core MODEL [--images N] [--data DIR] [--dump FILE]
**
** Prints one JSON object: images per second at each batch size, and the sum
** of the scores (the same images through SQL or PyTorch should give the same
** sum). --dump writes the N input tensors as raw float32 (N, C, H, W), so
** that the PyTorch reference scores exactly the same inputs. Threads are
** OpenBLAS's (OPENBLAS_NUM_THREADS).
*/
#include "common.h"
#include "idx.h"
#include "image.h"
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The whole file at path into a new buffer (*out, *n). */
static int read_file(unsigned char **out, size_t *n, const char *path, anom_err *e) {
  int rc = ANOM_OK;
  long len = 0;
  *out = NULL;
  FILE *fp = fopen(path, "rb");
  if( !fp ) return anom_fail(e, ANOM_EINVAL, "cannot open %s", path);
  if( fseek(fp, 0, SEEK_END) || (len = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) ){
    rc = anom_fail(e, ANOM_EINVAL, "cannot size %s", path);
    goto done;
  }
  if( !(*out = anom_malloc(len ? (size_t)len : 1)) ){
    rc = anom_fail(e, ANOM_ENOMEM, "out of memory reading %s", path);
    goto done;
  }
  if( fread(*out, 1, (size_t)len, fp) != (size_t)len ){
    rc = anom_fail(e, ANOM_EINVAL, "short read on %s", path);
    anom_free(*out);
    *out = NULL;
    goto done;
  }
  *n = (size_t)len;
done:
  fclose(fp);
  return rc;
}

/* Score n images x (n, img) at batch b; returns seconds, sum of scores in *sum. */
static double time_batches(const anom_model *m, const float *x, int n, size_t img, int b,
                           float *work, score_result *res, double *sum, anom_err *e) {
  double t0 = now_seconds();
  *sum = 0;
  for(int i = 0; i < n; i += b){
    int k = n - i < b ? n - i : b;
    if( model_score(m, k, x + (size_t)i * img, work, res, NULL, NULL, e) ) return -1;
    for(int j = 0; j < k; j++) *sum += res[j].score;
  }
  return now_seconds() - t0;
}

int main(int argc, char **argv) {
  const char *dir = "/usr/share/datasets/fashion-mnist", *model_path = NULL, *dump = NULL;
  int n = 1000, status = 1;
  const int batches[2] = {1, 64};
  unsigned char *mbuf = NULL, *ibuf = NULL;
  size_t mlen = 0, ilen = 0;
  anom_model *m = NULL;
  idx_file f = {0};
  float *x = NULL, *work = NULL;
  score_result *res = NULL;
  anom_err e = {0};
  for(int i = 1; i < argc; i++){
    if( !strcmp(argv[i], "--images") && i + 1 < argc ) n = atoi(argv[++i]);
    else if( !strcmp(argv[i], "--data") && i + 1 < argc ) dir = argv[++i];
    else if( !strcmp(argv[i], "--dump") && i + 1 < argc ) dump = argv[++i];
    else if( argv[i][0] != '-' && !model_path ) model_path = argv[i];
    else model_path = NULL, i = argc;
  }
  if( !model_path || n < 1 ){
    fprintf(stderr, "usage: bench_core MODEL [--images N >= 1] [--data DIR] [--dump FILE]\n");
    return 2;
  }
  char path[4096];
  snprintf(path, sizeof(path), "%s/t10k-images-idx3-ubyte.gz", dir);
  if( read_file(&mbuf, &mlen, model_path, &e) || model_load(&m, mbuf, mlen, NULL, &e) ||
      read_file(&ibuf, &ilen, path, &e) || idx_load(&f, ibuf, ilen, &e) ) goto fail;
  if( f.ndim != 3 ){ anom_fail(&e, ANOM_EFORMAT, "%s: expected images", path); goto fail; }
  if( (size_t)n > f.count ) n = (int)f.count;
  size_t img = (size_t)m->channels * m->height * m->width;
  x = anom_malloc((size_t)n * img * sizeof(float));
  work = anom_malloc(model_work_floats(m, batches[1]) * sizeof(float));
  res = anom_malloc(batches[1] * sizeof(score_result));
  if( !x || !work || !res ){ anom_fail(&e, ANOM_ENOMEM, "out of memory"); goto fail; }
  for(int i = 0; i < n; i++){
    image_u8 im = { f.dims[2], f.dims[1], 1, (unsigned char *)f.data + (size_t)i * f.item_bytes };
    if( image_to_tensor(x + (size_t)i * img, &im, m->width, m->height, m->channels, m->fit, &e) )
      goto fail;
  }
  if( dump ){
    FILE *fp = fopen(dump, "wb");
    if( !fp || fwrite(x, sizeof(float), (size_t)n * img, fp) != (size_t)n * img ){
      if( fp ) fclose(fp);
      anom_fail(&e, ANOM_EINVAL, "cannot write %s", dump);
      goto fail;
    }
    if( fclose(fp) ){ anom_fail(&e, ANOM_EINVAL, "cannot write %s", dump); goto fail; }
  }
  double sum, warm = 0;
  /* warm up: caches, OpenBLAS buffers */
  if( time_batches(m, x, n < 64 ? n : 64, img, batches[1], work, res, &warm, &e) < 0 ) goto fail;
  printf("{\"impl\": \"ours-core\", \"images\": %d, \"shape\": [%d, %d, %d], \"fit\": \"%s\", "
         "\"params\": %lld", n, m->channels, m->height, m->width, model_fit_name(m->fit),
         (long long)model_param_count(m));
  for(int b = 0; b < 2; b++){
    double s = time_batches(m, x, n, img, batches[b], work, res, &sum, &e);
    if( s < 0 ) goto fail;
    printf(", \"batch%d\": {\"seconds\": %.6f, \"images_per_second\": %.3f, \"score_sum\": %.9g}",
           batches[b], s, n / s, sum);
  }
  printf("}\n");
  status = 0;
fail:
  if( status ) fprintf(stderr, "bench_core: %s\n", e.msg);
  model_free(m);
  idx_free(&f);
  anom_free(mbuf);
  anom_free(ibuf);
  anom_free(x);
  anom_free(work);
  anom_free(res);
  return status;
}
