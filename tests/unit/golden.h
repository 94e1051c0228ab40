/*
** golden.h - what the unit tests share for reading files and checking
** against the PyTorch reference's golden files. Include after <cmocka.h>,
** core/model.h and core/safetensors.h. Test code only: it asserts.
*/
#ifndef ANOM_TEST_GOLDEN_H
#define ANOM_TEST_GOLDEN_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define TEST_UNUSED __attribute__((unused))

/* A whole file, malloc'ed; its size in *n. */
static TEST_UNUSED unsigned char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  long size = ftell(f);
  assert_true(size >= 0);
  assert_int_equal(fseek(f, 0, SEEK_SET), 0);
  unsigned char *buf = malloc((size_t)size + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
  fclose(f);
  *n = (size_t)size;
  return buf;
}

/* A golden tensor as malloc'ed floats; its element count in *numel (may be NULL). */
static TEST_UNUSED float *golden(const st_file *g, const char *name, int64_t *numel) {
  const st_tensor *t = st_find(g, name);
  if( !t ) fprintf(stderr, "golden tensor '%s' is missing\n", name);
  assert_non_null(t);
  float *v = malloc((size_t)t->numel * sizeof(float) + 1);
  assert_non_null(v);
  assert_int_equal(st_read_f32(t, NULL, 0, v, NULL), ANOM_OK);
  if( numel ) *numel = t->numel;
  return v;
}

/* max |a - b| / max(1, |b|). */
static TEST_UNUSED double max_rel_err(const float *a, const float *b, int64_t n) {
  double worst = 0;
  for(int64_t i = 0; i < n; i++){
    double d = fabs((double)a[i] - b[i]) / fmax(1.0, fabs((double)b[i]));
    if( d > worst ) worst = d;
  }
  return worst;
}

/* Copy the golden tensors prefix + name into the model's tensors. */
static TEST_UNUSED void set_tensors(anom_model *m, const st_file *g, const char *prefix) {
  char name[200], full[260];
  for(int i = 0; i < m->nnets; i++){
    for(int t = 0; t < net_tensor_count(m->nets[i]); t++){
      int ndim, isbuf;
      int64_t shape[4];
      float *data;
      net_tensor(m->nets[i], t, name, sizeof(name), &ndim, shape, &data, &isbuf);
      snprintf(full, sizeof(full), "%s%s", prefix, name);
      const st_tensor *gt = st_find(g, full);
      assert_non_null(gt);
      assert_int_equal(st_read_f32(gt, shape, ndim, data, NULL), ANOM_OK);
    }
  }
}

/*
** The model's tensors against the golden prefix + name of a training
** golden (with "before." and "step1." tensors). Weights:
** |w - gold| <= a lr + 2^-22 |gold|, a = 1e-3 where the reference's first
** update moved the weight by a full lr (Adam's first step is lr sign(g)),
** a = 2e-2 on the few weights whose gradient is so small that float32
** rounding changes it by percents; running statistics: 1e-5 of the tensor's
** largest magnitude. Returns the worst weight error in units of lr.
*/
static TEST_UNUSED double check_tensors(const anom_model *m, const st_file *g,
                                        const char *prefix, double lr) {
  char name[200], full[260];
  double worst = 0;
  for(int i = 0; i < m->nnets; i++){
    for(int t = 0; t < net_tensor_count(m->nets[i]); t++){
      int ndim, isbuf;
      int64_t shape[4], numel;
      float *data;
      net_tensor(m->nets[i], t, name, sizeof(name), &ndim, shape, &data, &isbuf);
      snprintf(full, sizeof(full), "%s%s", prefix, name);
      float *gold = golden(g, full, &numel);
      snprintf(full, sizeof(full), "before.%s", name);
      float *b0 = golden(g, full, NULL);
      snprintf(full, sizeof(full), "step1.%s", name);
      float *b1 = golden(g, full, NULL);
      double maxabs = 0;
      for(int64_t k = 0; k < numel; k++) maxabs = fmax(maxabs, fabs(gold[k]));
      for(int64_t k = 0; k < numel; k++){
        double d = fabs((double)data[k] - gold[k]);
        int ok;
        if( isbuf ) ok = d <= 1e-5 * fmax(maxabs, 1e-3);
        else{
          double a = fabs((double)b1[k] - b0[k]) >= 0.99 * lr ? 1e-3 : 2e-2;
          ok = d <= a * lr + 0x1p-22 * fabs(gold[k]);
          if( d / lr > worst ) worst = d / lr;
        }
        if( !ok ){
          fprintf(stderr, "%s%s[%lld]: ours %.9g, golden %.9g\n", prefix, name,
                  (long long)k, data[k], gold[k]);
          fail();
        }
      }
      free(gold);
      free(b0);
      free(b1);
    }
  }
  return worst;
}

/*
** Two training steps on x (n images) against a training golden: after step
** s, the losses "step<s>.<keys[k]>" (one value each, loss k of train_step)
** to 1e-5 relative, and every tensor "step<s>.<name>" by check_tensors.
*/
static TEST_UNUSED void check_train_steps(anom_model *m, void *state, const st_file *g,
                                          const float *x, int n, const char *const *keys,
                                          int nkeys, double lr) {
  anom_err e;
  for(int step = 1; step <= 2; step++){
    double losses[TRAIN_MAX_LOSSES], worst_loss = 0;
    assert_int_equal(m->ops->train_step(m, state, n, x, losses, &e), ANOM_OK);
    char prefix[16], key[64];
    snprintf(prefix, sizeof(prefix), "step%d.", step);
    for(int k = 0; k < nkeys; k++){
      snprintf(key, sizeof(key), "step%d.%s", step, keys[k]);
      float *gold = golden(g, key, NULL);
      double rel = fabs(losses[k] - gold[0]) / fmax(1e-3, fabs(gold[0]));
      if( rel > 1e-5 ) fprintf(stderr, "%s: ours %.9g golden %.9g\n", key, losses[k], gold[0]);
      assert_true(rel <= 1e-5);
      worst_loss = fmax(worst_loss, rel);
      free(gold);
    }
    double worst = check_tensors(m, g, prefix, lr);
    printf("# golden training step %d: worst weight error %.2e lr, losses within %.2e\n",
           step, worst, worst_loss);
  }
}

#endif /* ANOM_TEST_GOLDEN_H */
