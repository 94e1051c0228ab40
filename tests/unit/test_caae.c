/*
** test_caae.c - the constrained adversarial auto-encoder: inference, the
** gradient penalty's gradients and two training steps against the PyTorch
** reference, the penalty against finite differences, the critic schedule,
** a model_train run saved, reloaded and repeated, options, errors and
** allocation failures.
**
** The golden files come from tests/bench/reference/make_golden_caae.py:
**   golden-caae-tiny.safetensors
**     side 32, nc 1, nz 8, nf 2, critic 16 -> 32 with seeded weights and
**     non-trivial batch norm: eval-mode outputs, and the gradient penalty at 6
**     latents with autograd's gradients (create_graph=True), in float64;
**   golden-caae-train-tiny.safetensors
**     side 16, nc 3: the C initialisation from core/rng.c's generator
**     (replicated in Python), then two training steps with z_p and eps from
**     the same generator: 3 critic steps, then 2.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/model.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/train.h"

#include "golden.h"
#include "detector_test.h"
#include "fdcheck.h"

/* In core/detectors/caae.c. */
int caae_gp_gradients(const anom_model *m, int n, const float *zhat, double *gp,
                      float *dz, float *grads, anom_err *e);

#define TOL 1e-4   /* |ours - golden| <= TOL * max(1, |golden|) */
#define TINY_HP "{\"nz\": 8, \"nf\": 2, \"critic_h1\": 16, \"critic_h2\": 32"

/* The forward golden, opened into g, and its model, the tensors loaded. */
static anom_model *load_tiny(golden_file *g) {
  golden_open(g, "tests/data/golden-caae-tiny.safetensors");
  anom_model *m = create_model("caae", 32, 1, TINY_HP "}");
  set_tensors(m, &g->f, "");
  return m;
}

static double max_abs(const float *v, int64_t n) {
  double mx = 0;
  for(int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(v[i]));
  return mx;
}

static void test_golden_forward(void **state) {
  (void)state;
  golden_file g;
  anom_model *m = load_tiny(&g);
  assert_string_equal(m->ops->name, "caae");
  assert_int_equal(m->nnets, 21);   /* 10 encoder nets, 10 decoder nets, critic */
  int64_t nx, nz, nc;
  float *x = golden(&g.f, "input", &nx), *xh = golden(&g.f, "x_hat", NULL);
  float *z = golden(&g.f, "z", &nz), *res = golden(&g.f, "residual", NULL);
  float *l2 = golden(&g.f, "l2", NULL), *cz = golden(&g.f, "critic_z", &nc);
  float *cout = golden(&g.f, "critic_out", NULL);
  int n = 4;
  assert_int_equal(nx, n * 32 * 32);
  anom_err e;
  float *work = work_for(m, n);
  float *recon = malloc((size_t)nx * sizeof(float));
  score_result r[4];
  assert_int_equal(model_score(m, n, x, work, r, recon, NULL, &e), ANOM_OK);
  double es = 0;
  for(int i = 0; i < n; i++){
    assert_int_equal(r[i].nparts, 2);
    assert_string_equal(r[i].part_name[0], "residual");
    assert_string_equal(r[i].part_name[1], "l2");
    assert_true(r[i].score == r[i].part[0]);
    es = fmax(es, fabs(r[i].score - res[i]) / fmax(1e-3, fabs(res[i])));
    es = fmax(es, fabs(r[i].part[1] - l2[i]) / fmax(1e-3, fabs(l2[i])));
  }
  double ex = max_rel_err(recon, xh, nx);

  /* E(x): the encoder's nets, head, 4 x (main + shortcut), dense */
  float *a = malloc((size_t)n * 2048 * sizeof(float)), *b = malloc((size_t)n * 2048 * sizeof(float));
  float *c = malloc((size_t)n * 2048 * sizeof(float)), *zo = malloc((size_t)nz * sizeof(float));
  float *scratch = malloc(model_work_floats(m, n) * sizeof(float));
  net_forward(m->nets[0], 0, m->nets[0]->nlayers, n, x, a, scratch);
  for(int k = 0; k < 4; k++){
    const net *mn = m->nets[1 + 2 * k], *sc = m->nets[2 + 2 * k];
    assert_true(net_out_floats(mn, -1) <= 2048);
    net_forward(mn, 0, mn->nlayers, n, a, b, scratch);
    net_forward(sc, 0, sc->nlayers, n, a, c, scratch);
    for(size_t i = 0; i < (size_t)n * net_out_floats(mn, -1); i++) a[i] = b[i] + c[i];
  }
  net_forward(m->nets[9], 0, m->nets[9]->nlayers, n, a, zo, scratch);
  double ez = max_rel_err(zo, z, nz);
  /* the critic */
  const net *d = m->nets[20];
  net_forward(d, 0, d->nlayers, n, cz, zo, scratch);
  double ec = max_rel_err(zo, cout, n);

  /* the residual map: mean over channels of |x - x_hat| (one channel here),
  ** its mean the score */
  float *map = malloc((size_t)nx * sizeof(float));
  score_result rm[8];
  assert_int_equal(model_map(m, n, x, work, map, rm, NULL, NULL, &e), ANOM_OK);
  double em = 0;
  for(int i = 0; i < n; i++){
    double s = 0;
    for(int p = 0; p < 1024; p++){
      size_t k = (size_t)i * 1024 + p;
      em = fmax(em, fabs(map[k] - fabs((double)x[k] - xh[k])) / fmax(1, fabs(xh[k])));
      s += map[k];
    }
    assert_true(fabs(s / 1024 - r[i].score) <= 1e-6 * fmax(1, r[i].score));
  }
  printf("# max relative error: z %.2e x_hat %.2e critic %.2e residual/l2 %.2e map %.2e\n",
         ez, ex, ec, es, em);
  assert_true(ez <= TOL && ex <= TOL && ec <= TOL && es <= TOL && em <= TOL);
  /* the inputs differ, and so do their scores */
  assert_true(fabs(r[1].score - r[3].score) > 0.1);

  free(a); free(b); free(c); free(zo); free(scratch); free(map);
  free(work); free(recon);
  free(x); free(xh); free(z); free(res); free(l2); free(cz); free(cout);
  golden_close(&g);
  model_free(m);
}

/*
** The gradient penalty GP = mean (||grad D(z_hat)|| - 1)^2: its value, grad D
** and dGP/dtheta against autograd (create_graph=True) in float64, to 1e-4 of
** each tensor's largest magnitude; the biases' exactly 0.
*/
static void test_gp_autograd(void **state) {
  (void)state;
  golden_file g;
  anom_model *m = load_tiny(&g);
  anom_err e;
  int64_t nzh;
  float *zhat = golden(&g.f, "gp_zhat", &nzh), *gold_gp = golden(&g.f, "gp", NULL);
  float *gold_dz = golden(&g.f, "gp_dz", NULL);
  int n = (int)(nzh / 8);
  assert_int_equal(n, 6);
  float *grads = calloc(m->nparams, sizeof(float)), *dz = malloc((size_t)nzh * sizeof(float));
  double gp;
  assert_int_equal(caae_gp_gradients(m, n, zhat, &gp, dz, grads, &e), ANOM_OK);
  double egp = fabs(gp - gold_gp[0]) / fmax(1e-3, fabs(gold_gp[0]));
  double edz = max_rel_err(dz, gold_dz, nzh);
  assert_true(gold_gp[0] > 0.1);
  const net *d = m->nets[20];
  size_t off = (size_t)(d->params - m->block);
  for(size_t i = 0; i < off; i++) assert_true(grads[i] == 0);   /* nothing outside D */
  double worst = 0;
  char name[200], full[260];
  for(int t = 0; t < net_tensor_count(d); t++){
    int ndim, isbuf;
    int64_t shape[4], numel;
    float *data;
    net_tensor(d, t, name, sizeof(name), &ndim, shape, &data, &isbuf);
    snprintf(full, sizeof(full), "gp_grad.%s", name);
    float *gold = golden(&g.f, full, &numel);
    const float *ours = grads + (data - m->block);
    double mx = max_abs(gold, numel), dd = 0;
    for(int64_t k = 0; k < numel; k++) dd = fmax(dd, fabs((double)ours[k] - gold[k]));
    if( mx == 0 ){
      for(int64_t k = 0; k < numel; k++) assert_true(ours[k] == 0);   /* biases */
    }else{
      if( dd > 1e-4 * mx ) fprintf(stderr, "%s: max |d| %.3g, max |gold| %.3g\n", full, dd, mx);
      assert_true(dd <= 1e-4 * mx);
      worst = fmax(worst, dd / mx);
    }
    free(gold);
  }
  printf("# gradient penalty %.6f: value %.2e, grad D %.2e, dGP/dtheta worst "
         "max|d| / max|gold| %.2e\n", gp, egp, edz, worst);
  assert_true(egp <= TOL && edz <= TOL);
  free(zhat); free(gold_gp); free(gold_dz); free(grads); free(dz);
  golden_close(&g);
  model_free(m);
}

/*
** Finite differences of GP itself along every critic parameter (weights on
** the 2^-12 grid, four-point central differences with exact steps h = 2^-10,
** fdcheck.h). GP jumps where a hidden unit of D changes sign at some z_hat
** (grad D is piecewise constant), so a parameter whose stencil moves a sign
** is skipped; there must be few of those. The biases' GP gradient is 0 and
** their differences must be too.
*/
typedef struct gp_ctx {
  anom_model *m;
  int n;
  const float *zhat;
  float *junk, *act, *scratch;
} gp_ctx;

static double gp_of(void *p) {
  gp_ctx *c = p;
  double gp;
  anom_err e;
  assert_int_equal(caae_gp_gradients(c->m, c->n, c->zhat, &gp, NULL, c->junk, &e), ANOM_OK);
  return gp;
}

/* The signs of D's hidden units at every z_hat, packed into sig. */
static void gp_signs(gp_ctx *c, unsigned char *sig) {
  const net *d = c->m->nets[20];
  size_t k = 0;
  for(int l = 1; l < d->nlayers; l += 2){          /* the leaky ReLUs */
    net_forward(d, 0, l + 1, c->n, c->zhat, c->act, c->scratch);
    size_t cnt = (size_t)c->n * net_out_floats(d, l);
    for(size_t i = 0; i < cnt; i++) sig[k++] = c->act[i] > 0;
  }
}

static void test_gp_finite_differences(void **state) {
  (void)state;
  golden_file g;
  anom_model *m = load_tiny(&g);
  anom_err e;
  int64_t nzh;
  float *zhat = golden(&g.f, "gp_zhat", &nzh);
  net *d = m->nets[20];
  for(size_t i = 0; i < d->nparams; i++)
    d->params[i] = (float)(ldexp(nearbyint(ldexp(d->params[i], 12)), -12));
  int n = (int)(nzh / 8);
  gp_ctx c = { m, n, zhat, calloc(m->nparams, sizeof(float)),
               malloc((size_t)n * 64 * sizeof(float)),
               malloc(net_scratch_floats(d, n) * sizeof(float)) };
  size_t nsig = (size_t)n * (16 + 32);
  unsigned char *sig0 = malloc(nsig), *sig = malloc(nsig);
  gp_signs(&c, sig0);
  float *grads = calloc(m->nparams, sizeof(float));
  double gp;
  assert_int_equal(caae_gp_gradients(m, n, zhat, &gp, NULL, grads, &e), ANOM_OK);
  fd_check ck = { "gradient penalty", 0x1p-10, 2e-5, 1e-3, 0, 0, 0 };
  int skipped = 0;
  for(size_t i = 0; i < d->nparams; i++){
    float *p = d->params + i, v = *p;
    int moves = 0;
    for(int s = -2; s <= 2 && !moves; s++){
      *p = (float)(v + s * ck.h);
      gp_signs(&c, sig);
      moves = memcmp(sig, sig0, nsig) != 0;
    }
    *p = v;
    if( moves ){ skipped++; continue; }
    check_grad(&ck, "theta", gp_of, &c, p, grads + (p - m->block), 1);
  }
  report(&ck);
  printf("# gradient penalty %.6f: %ld of %zu critic parameters against finite "
         "differences (%d skipped: a unit changes sign), worst |err| %.2e at |fd| %.2e\n",
         gp, ck.checked, d->nparams, skipped, ck.worst, ck.worst_fd);
  assert_true(skipped <= (int)d->nparams / 50);
  free(zhat); free(c.junk); free(c.act); free(c.scratch); free(grads); free(sig0); free(sig);
  golden_close(&g);
  model_free(m);
}

/*
** Two training steps against the reference, from the C initialisation: the
** initialisation bit for bit; the losses rec, cons, critic, gp, enc to 1e-5
** relative (floor 1e-3); every tensor after step 2: parameters
** |w - gold| <= 1e-3 lr + 2^-22 |gold|, running statistics 1e-5 of the
** tensor's largest magnitude. (PyTorch's own float32 run is within 8e-4 lr
** except on two critic biases, 0.07 lr, and so on enc, 1.1e-4: a bias whose
** unit has the same sign on every z_p and z_f gets mean - mean = 0, which
** float32 PyTorch leaves as rounding noise that Adam scales up to a sizable
** step; ours cancels exactly, as the float64 truth does.)
*/
static void test_golden_train_steps(void **state) {
  (void)state;
  golden_file g;
  golden_open(&g, "tests/data/golden-caae-train-tiny.safetensors");
  anom_err e;
  anom_model *m = create_model("caae", 16, 3, TINY_HP ", \"lr\": 2e-4, \"n_critic\": 2, "
                               "\"n_critic_early\": 3, \"early_epochs\": 1}");
  rng r;
  rng_seed(&r, 2024);
  void *st;
  assert_int_equal(m->ops->train_begin(m, 4, &r, &st, &e), ANOM_OK);
  static const char *const init_keys[] = {"encoder.conv1.weight", "encoder.bn1.weight",
    "encoder.res4.bn3.weight", "decoder.dense.weight", "decoder.res1.deconv1.weight",
    "critic.h2.weight"};
  char name[200], full[260];
  for(size_t k = 0; k < sizeof(init_keys) / sizeof(init_keys[0]); k++){
    int64_t numel = -1, gnumel;
    const float *data = find_tensor(m, init_keys[k], &numel, NULL, NULL);
    assert_non_null(data);
    snprintf(full, sizeof(full), "init.%s", init_keys[k]);
    float *gold = golden(&g.f, full, &gnumel);
    assert_true(numel == gnumel);
    assert_memory_equal(data, gold, (size_t)numel * sizeof(float));
    free(gold);
  }

  float *x = golden(&g.f, "input", NULL);
  static const char *const keys[] = {"rec", "cons", "critic", "gp", "enc"};
  double worst_loss = 0;
  for(int step = 1; step <= 2; step++){
    double losses[TRAIN_MAX_LOSSES];
    m->ops->train_epoch(m, st, step - 1);      /* one batch an epoch */
    assert_int_equal(m->ops->train_step(m, st, 4, x, losses, &e), ANOM_OK);
    worst_loss = fmax(worst_loss, check_step_losses(&g.f, step, losses, keys, 5, 1e-3));
  }
  const double lr = 2e-4;
  double worst = 0, worst_bias = 0, worst_buf = 0;
  for(int i = 0; i < m->nnets; i++)
    for(int t = 0; t < net_tensor_count(m->nets[i]); t++){
      int ndim, isbuf;
      int64_t shape[4], numel;
      float *data;
      net_tensor(m->nets[i], t, name, sizeof(name), &ndim, shape, &data, &isbuf);
      snprintf(full, sizeof(full), "step2.%s", name);
      float *gold = golden(&g.f, full, &numel);
      double mx = max_abs(gold, numel);
      int critic_bias = !strncmp(name, "critic.", 7) && strstr(name, ".bias");
      for(int64_t k = 0; k < numel; k++){
        double d = fabs((double)data[k] - gold[k]);
        int ok;
        if( isbuf ){
          ok = d <= 1e-5 * fmax(mx, 1e-3);
          worst_buf = fmax(worst_buf, d / fmax(mx, 1e-3));
        }else{
          ok = d <= 1e-3 * lr + 0x1p-22 * fabs(gold[k]);
          if( critic_bias ) worst_bias = fmax(worst_bias, d / lr);
          else worst = fmax(worst, d / lr);
        }
        if( !ok ){
          fprintf(stderr, "%s[%lld]: ours %.9g, golden %.9g\n", full, (long long)k,
                  data[k], gold[k]);
          fail();
        }
      }
      free(gold);
    }
  printf("# golden training steps: losses within %.2e; after step 2 weights %.2e lr, "
         "critic biases %.2e lr, running statistics %.2e\n",
         worst_loss, worst, worst_bias, worst_buf);
  m->ops->train_end(m, st);
  free(x);
  model_free(m);
  golden_close(&g);
}

/* The critic schedule, read off the generator: a step draws n * nz normals,
** then n uniforms per critic step. */
static void test_critic_schedule(void **state) {
  (void)state;
  anom_model *m = create_model("caae", 16, 1, TINY_HP ", \"n_critic\": 1, "
                               "\"n_critic_early\": 3, \"early_epochs\": 2}");
  rng r, ref;
  rng_seed(&r, 5);
  void *st;
  anom_err e;
  assert_int_equal(m->ops->train_begin(m, 2, &r, &st, &e), ANOM_OK);
  float x[2 * 256];
  for(int i = 0; i < 2 * 256; i++) x[i] = (float)sin(0.1 * i);
  double losses[TRAIN_MAX_LOSSES];
  /* no epoch given: epoch 0, early; then 3 batches an epoch: epochs 0 and 1
  ** early, epoch 2 late */
  static const int expect[] = {3, 3, 3, 3, 3, 3, 1, 1};
  for(int s = 0; s < 8; s++){
    if( s >= 1 && s % 3 == 0 ) m->ops->train_epoch(m, st, s / 3);
    ref = r;
    assert_int_equal(m->ops->train_step(m, st, 2, x, losses, &e), ANOM_OK);
    for(int k = 0; k < 2 * 8; k++) rng_normal(&ref);
    for(int k = 0; k < 2 * expect[s]; k++) rng_uniform(&ref);
    assert_memory_equal(ref.s, r.s, sizeof(r.s));
    assert_int_equal(ref.has_spare, r.has_spare);
    for(int k = 0; k < 5; k++) assert_true(isfinite(losses[k]));
  }
  m->ops->train_end(m, st);
  model_free(m);
  /* no critic steps at all: the critic's losses are 0 */
  m = create_model("caae", 16, 1, TINY_HP ", \"n_critic\": 0, \"n_critic_early\": 0}");
  assert_int_equal(m->ops->train_begin(m, 2, &r, &st, &e), ANOM_OK);
  assert_int_equal(m->ops->train_step(m, st, 2, x, losses, &e), ANOM_OK);
  assert_true(losses[2] == 0 && losses[3] == 0 && isfinite(losses[4]));
  m->ops->train_end(m, st);
  model_free(m);
}

static void test_score_options(void **state) {
  (void)state;
  anom_model *m = create_model("caae", 16, 3, TINY_HP "}");
  rng r;
  rng_seed(&r, 3);
  void *st;
  anom_err e;
  assert_int_equal(m->ops->train_begin(m, 2, &r, &st, &e), ANOM_OK);  /* the init */
  m->ops->train_end(m, st);
  size_t img = 3 * 16 * 16;
  float *x = malloc(2 * img * sizeof(float)), *recon = malloc(2 * img * sizeof(float));
  float *map = malloc(2 * 256 * sizeof(float));
  for(size_t i = 0; i < 2 * img; i++) x[i] = (float)sin(0.37 * (double)i);
  float *work = work_for(m, 2);
  score_result r1[2], r2[2], rm[2];
  assert_int_equal(model_score(m, 2, x, work, r1, recon, NULL, &e), ANOM_OK);
  cJSON *o = cJSON_Parse("{}");
  assert_int_equal(model_score(m, 2, x, work, r2, NULL, o, &e), ANOM_OK);
  cJSON_Delete(o);
  for(int i = 0; i < 2; i++){
    assert_true(r1[i].score == r2[i].score && r1[i].part[1] == r2[i].part[1]);
    double l1 = 0, l2 = 0;
    for(size_t k = 0; k < img; k++){
      double d = (double)x[i * img + k] - recon[i * img + k];
      l1 += fabs(d);
      l2 += d * d;
    }
    assert_true(fabs(r1[i].score - l1 / img) <= 1e-12 * fmax(1, l1));
    assert_true(fabs(r1[i].part[1] - l2 / img) <= 1e-12 * fmax(1, l2));
  }
  /* three channels: the map averages them per pixel */
  assert_int_equal(model_map(m, 2, x, work, map, rm, NULL, NULL, &e), ANOM_OK);
  for(int i = 0; i < 2; i++){
    double s = 0;
    for(int p = 0; p < 256; p++){
      double want = 0;
      for(int ch = 0; ch < 3; ch++){
        size_t k = (size_t)i * img + (size_t)ch * 256 + p;
        want += fabs((double)x[k] - recon[k]);
      }
      assert_true(fabs(map[i * 256 + p] - want / 3) <= 1e-6 * fmax(1, want));
      s += map[i * 256 + p];
    }
    assert_true(fabs(s / 256 - r1[i].score) <= 1e-6 * fmax(1, r1[i].score));
  }
  o = cJSON_Parse("{\"score_w\": 0.5}");
  anom_err_clear(&e);
  assert_int_equal(model_score(m, 2, x, work, r2, NULL, o, &e), ANOM_EINVAL);
  assert_string_equal(e.msg, "caae takes no scoring options, found 'score_w'");
  cJSON_Delete(o);
  free(x); free(recon); free(map); free(work);
  model_free(m);
}

static void test_create_errors(void **state) {
  (void)state;
  static const create_case cases[] = {
    {"{\"ngf\": 8}", 32, 32, "caae: unknown hyper-parameter 'ngf' (known: nz, nf, "
     "critic_h1, critic_h2, lr, beta1, beta2, rho, gp, n_critic, n_critic_early, "
     "early_epochs)"},
    {"{\"nf\": 1}", 32, 32, "caae: 'nf' must be an integer from 2 to 1024"},
    {"{\"nz\": 0}", 32, 32, "caae: 'nz' must be an integer from 1 to 4096"},
    {"{\"critic_h1\": 2.5}", 32, 32, "caae: 'critic_h1' must be an integer from 1 to 65536"},
    {"{\"rho\": -1}", 32, 32, "caae: 'rho' must be a number from 0 to 1e+06"},
    {"{\"gp\": \"ten\"}", 32, 32, "caae: 'gp' must be a number from 0 to 1e+06"},
    {"{\"n_critic\": -1}", 32, 32, "caae: 'n_critic' must be an integer from 0 to 10000"},
    {"{\"beta2\": 1}", 32, 32, "caae: 'beta2' must be a number from 0 to 1"},
    {"{}", 40, 40, "caae: the input must be square with a side that is a multiple of 16, "
     "found 40x40"},
    {"{}", 32, 64, "caae: the input must be square with a side that is a multiple of 16, "
     "found 32x64"},
    {"{}", 8, 8, "found 8x8"},
  };
  check_create_errors("caae", cases, sizeof(cases) / sizeof(cases[0]), MSG_CONTAINS);
  /* the defaults; the parameter count is the PyTorch reference's (caae_ref.py) */
  anom_model *m = create_model("caae", 32, 1, NULL);
  assert_int_equal(m->nnets, 21);
  assert_int_equal((long long)model_param_count(m), 2267922LL);
  cJSON *j = m->ops->hparams(m);
  assert_int_equal(cJSON_GetObjectItem(j, "nz")->valueint, 128);
  assert_int_equal(cJSON_GetObjectItem(j, "nf")->valueint, 16);
  assert_int_equal(cJSON_GetObjectItem(j, "critic_h1")->valueint, 200);
  assert_int_equal(cJSON_GetObjectItem(j, "critic_h2")->valueint, 400);
  assert_true(cJSON_GetObjectItem(j, "lr")->valuedouble == 2e-5);
  assert_true(cJSON_GetObjectItem(j, "beta1")->valuedouble == 0.5);
  assert_true(cJSON_GetObjectItem(j, "beta2")->valuedouble == 0.9);
  assert_true(cJSON_GetObjectItem(j, "rho")->valuedouble == 0.5);
  assert_true(cJSON_GetObjectItem(j, "gp")->valuedouble == 10);
  assert_int_equal(cJSON_GetObjectItem(j, "n_critic")->valueint, 20);
  assert_int_equal(cJSON_GetObjectItem(j, "n_critic_early")->valueint, 200);
  assert_int_equal(cJSON_GetObjectItem(j, "early_epochs")->valueint, 20);
  cJSON_Delete(j);
  assert_int_equal(m->ops->batch, 64);
  assert_non_null(m->ops->train_begin);
  assert_null(m->ops->train_finish);
  model_free(m);
  /* 48 and 64 build, 3 channels */
  model_free(create_model("caae", 48, 3, NULL));
  m = create_model("caae", 64, 3, NULL);
  assert_int_equal((long long)model_param_count(m), 3057860LL);
  model_free(m);
}

static anom_model *train_tiny(const float *x, int n, train_report *rep) {
  anom_model *m = create_model("caae", 16, 1, TINY_HP ", \"n_critic\": 2, "
                               "\"n_critic_early\": 2, \"lr\": 1e-3}");
  train_options o;
  train_options_default(&o);
  o.epochs = 1;
  o.batch = 4;
  o.seed = 9;
  o.holdout = 0.2;
  anom_err e;
  int rc = model_train(m, x, n, &o, rep, &e);
  if( rc ) fprintf(stderr, "%s\n", e.msg);
  assert_int_equal(rc, ANOM_OK);
  return m;
}

/* One epoch of model_train (2 batches), saved and reloaded: the same scores
** bit for bit and the same file; trained again with the seed: the same bytes. */
static void test_train_save_load(void **state) {
  (void)state;
  int n = 10;
  float *x = blob_images(n, 16, 7);
  train_report rep;
  anom_model *m = train_tiny(x, n, &rep);
  assert_int_equal(rep.images_train, 8);
  assert_int_equal(rep.batches, 2);
  assert_int_equal(rep.nlosses, 5);
  assert_string_equal(rep.loss_names[0], "rec");
  assert_string_equal(rep.loss_names[1], "cons");
  assert_string_equal(rep.loss_names[2], "critic");
  assert_string_equal(rep.loss_names[3], "gp");
  assert_string_equal(rep.loss_names[4], "enc");
  for(int k = 0; k < 5; k++) assert_true(isfinite(rep.losses[k]));
  assert_true(isfinite(m->threshold));
  anom_model *m2 = check_save_load(m, x, n, NULL);
  cJSON *j = m2->ops->hparams(m2);
  assert_true(cJSON_GetObjectItem(j, "lr")->valuedouble == 1e-3);
  assert_int_equal(cJSON_GetObjectItem(j, "critic_h2")->valueint, 32);
  cJSON_Delete(j);
  /* determinism: the same data and seed train the same model, bit for bit */
  anom_model *m3 = train_tiny(x, n, &rep);
  unsigned char *blob, *blob3;
  size_t nb, nb3;
  anom_err e;
  assert_int_equal(model_save(m, &blob, &nb, &e), ANOM_OK);
  assert_int_equal(model_save(m3, &blob3, &nb3, &e), ANOM_OK);
  assert_int_equal(nb, nb3);
  assert_memory_equal(blob, blob3, nb);
  assert_memory_equal(m->block, m3->block, (m->nparams + m->nbufs) * sizeof(float));
  anom_free(blob); anom_free(blob3);
  free(x);
  model_free(m); model_free(m2); model_free(m3);
}

/* A batch of one is refused (batch norm needs two), as is one over max_batch. */
static void test_train_step_errors(void **state) {
  (void)state;
  anom_model *m = create_model("caae", 16, 1, TINY_HP "}");
  check_batch_errors(m);
  model_free(m);
}

#ifdef ANOM_TEST
/* Every allocation of train_begin, of model_create and of caae_gp_gradients
** failing in turn: an error, no leak. */
static void test_oom(void **state) {
  (void)state;
  anom_model *m = create_model("caae", 16, 1, TINY_HP "}");
  rng r;
  assert_true(oom_train_begin(m, &r, NULL) > 50);
  anom_err e;
  float zhat[2 * 8] = {0.5f, -1, 2, 0.25f, -0.75f, 1, 0, 1.5f, -2, 1, 0.5f, -0.5f, 1, 1, -1, 0};
  float *grads = calloc(m->nparams, sizeof(float));
  double gp;
  for(int k = 1; k < 50; k++){
    anom_alloc_fail_after(k);
    int rc = caae_gp_gradients(m, 2, zhat, &gp, NULL, grads, &e);
    anom_alloc_fail_after(0);
    if( rc == ANOM_OK ) break;
    assert_int_equal(rc, ANOM_ENOMEM);
  }
  free(grads);
  model_free(m);
  assert_true(oom_create("caae", 16, 1, TINY_HP "}") > 20);
}
#endif

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_golden_forward),
    cmocka_unit_test(test_gp_autograd),
    cmocka_unit_test(test_gp_finite_differences),
    cmocka_unit_test(test_golden_train_steps),
    cmocka_unit_test(test_critic_schedule),
    cmocka_unit_test(test_score_options),
    cmocka_unit_test(test_create_errors),
    cmocka_unit_test(test_train_save_load),
    cmocka_unit_test(test_train_step_errors),
#ifdef ANOM_TEST
    cmocka_unit_test(test_oom),
#endif
  };
  return cmocka_run_group_tests_name("caae", tests, NULL, NULL);
}
