/*
** bench_core.c - scoring throughput of the core alone, on decoded tensors:
** no SQL, no PNG decode. The first N Fashion-MNIST test images are fitted to
** the model's input (image_to_tensor, the model's fit) once, untimed; then
** model_score runs over all N at batch 1 and at batch 64.
**
**   bench_core MODEL [--images N] [--threads T] [--data DIR] [--dump FILE]
**
** Prints one JSON object: images per second at each batch size, the sum of
** the scores (the same images through SQL or PyTorch should give the same
** sum), and what decoding and fitting one image from a PNG costs beside it
** (decode_fit_ms_per_image, see time_decode). --dump writes the N input tensors as raw float32 (N, C, H, W), so
** that the PyTorch reference scores exactly the same inputs.
**
** --threads T (default 1) runs T worker threads, each scoring its own
** contiguous share of the N images at the batch size, with its own work
** buffer, as a scan spread over cores does; the time is the wall clock from
** the start to the last thread's end; cpu_seconds is the workers' CPU time
** (on a busy machine, images / cpu_seconds * T is the steadier figure). Keep OpenBLAS at one thread
** (OPENBLAS_NUM_THREADS=1) so that workers do not oversubscribe the cores.
*/
#include "common.h"
#include "idx.h"
#include "image.h"
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>

static double clock_seconds(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double now_seconds(void) { return clock_seconds(CLOCK_MONOTONIC); }

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

/* One worker: score its share x (n, img) at batch b into its own sum. */
typedef struct worker {
  const anom_model *m;
  const float *x;
  int n, b;
  size_t img;
  float *work;
  score_result *res;
  double sum;
  double cpu;       /* the thread's CPU seconds */
  int rc;
  anom_err e;
} worker;

static void *worker_run(void *arg) {
  worker *w = arg;
  double c0 = clock_seconds(CLOCK_THREAD_CPUTIME_ID);
  w->sum = 0;
  w->rc = ANOM_OK;
  for(int i = 0; i < w->n; i += w->b){
    int k = w->n - i < w->b ? w->n - i : w->b;
    w->rc = model_score(w->m, k, w->x + (size_t)i * w->img, w->work, w->res, NULL, NULL, &w->e);
    if( w->rc ) break;
    for(int j = 0; j < k; j++) w->sum += w->res[j].score;
  }
  w->cpu = clock_seconds(CLOCK_THREAD_CPUTIME_ID) - c0;
  return NULL;
}

/* Score n images x (n, img) at batch b on nt workers (each with a work buffer
** and results for b images); returns wall seconds, the sum of scores in *sum
** and the workers' CPU seconds in *cpu. */
static double time_batches(worker *ws, int nt, const float *x, int n, size_t img, int b,
                           double *sum, double *cpu, anom_err *e) {
  pthread_t tid[64];
  int started = 0, share = (n + nt - 1) / nt;
  double t0 = now_seconds();
  for(int t = 0; t < nt; t++){
    int lo = t * share, hi = lo + share < n ? lo + share : n;
    ws[t].x = x + (size_t)lo * img;
    ws[t].n = hi > lo ? hi - lo : 0;
    ws[t].b = b;
    ws[t].img = img;
  }
  for(int t = 1; t < nt; t++){
    if( pthread_create(&tid[t], NULL, worker_run, &ws[t]) ) break;
    started = t;
  }
  worker_run(&ws[0]);
  for(int t = 1; t <= started; t++) pthread_join(tid[t], NULL);
  double secs = now_seconds() - t0;
  *sum = 0;
  *cpu = 0;
  for(int t = 0; t < nt; t++){
    if( t > started ){ anom_fail(e, ANOM_EINVAL, "cannot start thread %d", t); return -1; }
    if( ws[t].rc ){ *e = ws[t].e; return -1; }
    *sum += ws[t].sum;
    *cpu += ws[t].cpu;
  }
  return secs;
}

/*
** What decoding costs beside scoring: each of the n images (28x28 grey) is
** encoded once as a PNG with our encoder (untimed), then decoded and fitted
** to the model's input (image_decode + image_to_tensor, the work of a SQL
** call before scoring) twice over, the second pass timed. Returns ms per
** image, or -1 with e set.
*/
static double time_decode(const idx_file *f, int n, const anom_model *m, float *x,
                          anom_err *e) {
  unsigned char **png = anom_calloc((size_t)n, sizeof(*png));
  size_t *len = anom_calloc((size_t)n, sizeof(*len));
  double ms = -1, t0 = 0;
  if( !png || !len ){ anom_fail(e, ANOM_ENOMEM, "out of memory"); goto done; }
  for(int i = 0; i < n; i++)
    if( image_encode_png(&png[i], &len[i], (const unsigned char *)f->data + (size_t)i * f->item_bytes,
                         (int)f->dims[2], (int)f->dims[1], 1, e) ) goto done;
  for(int pass = 0; pass < 2; pass++){
    t0 = now_seconds();
    for(int i = 0; i < n; i++){
      image_u8 im;
      if( image_decode(&im, png[i], len[i], 1LL << 26, e) ) goto done;
      int rc = image_to_tensor(x, &im, m->width, m->height, m->channels, m->fit, e);
      image_free(&im);
      if( rc ) goto done;
    }
  }
  ms = (now_seconds() - t0) * 1e3 / n;
done:
  if( png ) for(int i = 0; i < n; i++) anom_free(png[i]);
  anom_free(png);
  anom_free(len);
  return ms;
}

int main(int argc, char **argv) {
  const char *dir = "/usr/share/datasets/fashion-mnist", *model_path = NULL, *dump = NULL;
  int n = 1000, nt = 1, status = 1;
  const int batches[2] = {1, 64};
  unsigned char *mbuf = NULL, *ibuf = NULL;
  size_t mlen = 0, ilen = 0;
  anom_model *m = NULL;
  idx_file f = {0};
  float *x = NULL;
  worker ws[64] = {0};
  anom_err e = {0};
  for(int i = 1; i < argc; i++){
    if( !strcmp(argv[i], "--images") && i + 1 < argc ) n = atoi(argv[++i]);
    else if( !strcmp(argv[i], "--threads") && i + 1 < argc ) nt = atoi(argv[++i]);
    else if( !strcmp(argv[i], "--data") && i + 1 < argc ) dir = argv[++i];
    else if( !strcmp(argv[i], "--dump") && i + 1 < argc ) dump = argv[++i];
    else if( argv[i][0] != '-' && !model_path ) model_path = argv[i];
    else model_path = NULL, i = argc;
  }
  if( !model_path || n < 1 || nt < 1 || nt > 64 ){
    fprintf(stderr, "usage: bench_core MODEL [--images N >= 1] [--threads 1..64] [--data DIR]"
                    " [--dump FILE]\n");
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
  if( !x ){ anom_fail(&e, ANOM_ENOMEM, "out of memory"); goto fail; }
  for(int t = 0; t < nt; t++){
    ws[t].m = m;
    ws[t].work = anom_malloc(model_work_floats(m, batches[1]) * sizeof(float));
    ws[t].res = anom_malloc(batches[1] * sizeof(score_result));
    if( !ws[t].work || !ws[t].res ){ anom_fail(&e, ANOM_ENOMEM, "out of memory"); goto fail; }
  }
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
  double sum, warm = 0, cpu;
  /* warm up: caches, OpenBLAS buffers */
  if( time_batches(ws, nt, x, n < 64 * nt ? n : 64 * nt, img, batches[1], &warm, &cpu, &e) < 0 )
    goto fail;
  printf("{\"impl\": \"ours-core\", \"images\": %d, \"threads\": %d, \"shape\": [%d, %d, %d], "
         "\"fit\": \"%s\", \"params\": %lld", n, nt, m->channels, m->height, m->width,
         model_fit_name(m->fit), (long long)model_param_count(m));
  for(int b = 0; b < 2; b++){
    double s = time_batches(ws, nt, x, n, img, batches[b], &sum, &cpu, &e);
    if( s < 0 ) goto fail;
    printf(", \"batch%d\": {\"seconds\": %.6f, \"images_per_second\": %.3f, "
           "\"cpu_seconds\": %.6f, \"score_sum\": %.9g}", batches[b], s, n / s, cpu, sum);
  }
  double dms = time_decode(&f, n, m, x, &e);
  if( dms < 0 ) goto fail;
  printf(", \"decode_fit_ms_per_image\": %.6f}\n", dms);
  status = 0;
fail:
  if( status ) fprintf(stderr, "bench_core: %s\n", e.msg);
  model_free(m);
  idx_free(&f);
  anom_free(mbuf);
  anom_free(ibuf);
  anom_free(x);
  for(int t = 0; t < nt; t++){
    anom_free(ws[t].work);
    anom_free(ws[t].res);
  }
  return status;
}
