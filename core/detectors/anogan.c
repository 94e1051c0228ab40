/*
** anogan.c - AnoGAN (Schlegl et al., IPMI 2017), method 'anogan'.
**
** A DCGAN is trained on normal images only. To score an image x, a latent z
** is searched for whose generated image G(z) is closest to x, by gradient
** descent on z with the networks frozen; what is left over is the score:
**
**   L(z)     = (1 - lambda) * sum |x - G(z)| + lambda * sum |f(x) - f(G(z))|
**   score(x) = L(z) after `steps` Adam steps from z0 ~ N(0, 1)
**   parts:     residual = sum |x - G(z)|, discrimination = sum |f(x) - f(G(z))|
**              (both at the final z); the reconstruction is G(final z)
**
** f is the discriminator's last feature map. There is no official code; the
** networks are the DCGAN of GANomaly's code (samet-akcay/ganomaly,
** lib/networks.py), tensor names its state_dict names:
**   G = Decoder(isize, nz, nc, ngf, extralayers), z (nz, 1, 1) -> image,
**       "netg.main.<module name>";
**   D = an Encoder with nz 1, its last Conv(4,1,0) + sigmoid the classifier
**       ("netd.classifier.0") and the rest the features ("netd.features.<i>").
** The input must be square with a side that is a power of two from 16.
**
** Hyper-parameters: nz 100, ngf 64, extralayers 0; training lr 2e-4, beta1
** 0.5, beta2 0.999; search defaults steps 500, lambda 0.1, search_lr 0.001,
** search_beta1 0.5. Per call, opts may override steps, lambda and lr (as
** search_lr) and give the seed of z0 (default 0).
**
** Training, per batch, as the PyTorch DCGAN example: z ~ N(0, 1) from the
** trainer's rng, fake = G(z);
**   D step: BCE(D(x), 1) + BCE(D(fake), 0) on the logits; Adam on D;
**   G step: BCE(D(fake), 1) through the updated D; Adam on G.
** Batch norm runs in training mode (D's statistics update three times a
** batch: real, fake, fake again).
**
** Scoring searches all n images of a batch at once: the images' losses are
** independent (frozen batch norm), so the gradient of their sum with respect
** to one image's z is that image's own, and Adam works element-wise. Every
** image starts from the same z0, so a score does not depend on the batch.
*/
#include "../hparams.h"
#include "../model.h"
#include "../optim.h"
#include "../rng.h"
#include "anogan.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct anogan {
  int nz, ngf, extralayers;
  double lr, beta1, beta2;               /* training */
  int steps;                             /* search defaults */
  double lambda, search_lr, search_beta1;
  net *g, *d;                            /* owned by the model */
  int d_features;                        /* layers of D before the classifier */
  size_t *g_off, *d_off;                 /* per-layer output offsets (net_cache) */
  size_t g_acts, d_acts;                 /* floats of all layer outputs, one sample */
} anogan;

/* ---- networks ------------------------------------------------------------ */

/* G: ConvT(4,1,0) nz -> C0 (C0 = ngf * isize / 8), BN, ReLU; ConvT(4,2,1)
** halving channels, BN, ReLU, until isize/2; extra Conv(3,1,1) blocks;
** ConvT(4,2,1) -> nc, tanh. Names are the authors' module names. */
static void build_generator(net *nt, int isize, int nz, int nc, int ngf, int extra) {
  char b[NET_NAME_MAX];
  int ch = ngf / 2, size = 4;
  while( size != isize ){ ch *= 2; size *= 2; }
  snprintf(b, sizeof(b), "main.initial-%d-%d-convt", nz, ch);
  net_convt(nt, b, ch, 4, 1, 0, 0);
  snprintf(b, sizeof(b), "main.initial-%d-batchnorm", ch);
  net_batchnorm(nt, b, 1e-5f);
  snprintf(b, sizeof(b), "main.initial-%d-relu", ch);
  net_relu(nt, b);
  for(size = 4; size < isize / 2; size *= 2, ch /= 2){
    snprintf(b, sizeof(b), "main.pyramid-%d-%d-convt", ch, ch / 2);
    net_convt(nt, b, ch / 2, 4, 2, 1, 0);
    snprintf(b, sizeof(b), "main.pyramid-%d-batchnorm", ch / 2);
    net_batchnorm(nt, b, 1e-5f);
    snprintf(b, sizeof(b), "main.pyramid-%d-relu", ch / 2);
    net_relu(nt, b);
  }
  for(int t = 0; t < extra; t++){
    snprintf(b, sizeof(b), "main.extra-layers-%d-%d-conv", t, ch);
    net_conv(nt, b, ch, 3, 1, 1, 0);
    snprintf(b, sizeof(b), "main.extra-layers-%d-%d-batchnorm", t, ch);
    net_batchnorm(nt, b, 1e-5f);
    snprintf(b, sizeof(b), "main.extra-layers-%d-%d-relu", t, ch);
    net_relu(nt, b);
  }
  snprintf(b, sizeof(b), "main.final-%d-%d-convt", ch, nc);
  net_convt(nt, b, nc, 4, 2, 1, 0);
  snprintf(b, sizeof(b), "main.final-%d-tanh", nc);
  net_tanh(nt, b);
}

/* D (input channels from net_init): Conv(4,2,1) -> ngf, LReLU 0.2; extra Conv(3,1,1), BN, LReLU blocks;
** Conv(4,2,1) doubling channels, BN, LReLU, down to 4x4: "features.<i>";
** then Conv(4,1,0) -> 1 and sigmoid: "classifier.0", "classifier.1". */
static void build_discriminator(net *nt, int isize, int ndf, int extra) {
  char b[NET_NAME_MAX];
  int i = 0;
#define FEAT (snprintf(b, sizeof(b), "features.%d", i++), b)
  net_conv(nt, FEAT, ndf, 4, 2, 1, 0);
  net_leaky_relu(nt, FEAT, 0.2f);
  int ch = ndf;
  for(int t = 0; t < extra; t++){
    net_conv(nt, FEAT, ch, 3, 1, 1, 0);
    net_batchnorm(nt, FEAT, 1e-5f);
    net_leaky_relu(nt, FEAT, 0.2f);
  }
  for(int size = isize / 2; size > 4; size /= 2, ch *= 2){
    net_conv(nt, FEAT, ch * 2, 4, 2, 1, 0);
    net_batchnorm(nt, FEAT, 1e-5f);
    net_leaky_relu(nt, FEAT, 0.2f);
  }
#undef FEAT
  net_conv(nt, "classifier.0", 1, 4, 1, 0, 0);
  net_sigmoid(nt, "classifier.1");
}

/* Per-layer output offsets of one sample, as net_cache lays them out
** (net.h: layer i's output at acts + off[i] * n); *total gets their sum. */
static size_t *layer_offsets(const net *nt, size_t *total) {
  size_t *off = anom_calloc((size_t)nt->nlayers + 1, sizeof(size_t));
  if( !off ) return NULL;
  size_t t = 0;
  for(int i = 0; i < nt->nlayers; i++){
    const layer *l = &nt->layers[i];
    off[i] = t;
    t += (size_t)l->oc * l->oh * l->ow;
  }
  *total = t;
  return off;
}


/* ---- hyper-parameters ---------------------------------------------------- */

#define STEPS_MAX 100000
#define LR_MAX 10.0

static const char *const anogan_keys[] = {"nz", "ngf", "extralayers", "lr", "beta1",
  "beta2", "steps", "lambda", "search_lr", "search_beta1", NULL};

static int anogan_create(anom_model *m, const cJSON *hp, anom_err *e) {
  int rc = hp_check_keys(hp, anogan_keys, "anogan", "hyper-parameter", e);
  if( rc ) return rc;
  anogan *a = anom_calloc(1, sizeof(*a));
  if( !a ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  m->det = a;
  if( (rc = hp_int(hp, "anogan", "nz", 100, 1, 4096, &a->nz, e))
      || (rc = hp_int(hp, "anogan", "ngf", 64, 1, 1024, &a->ngf, e))
      || (rc = hp_int(hp, "anogan", "extralayers", 0, 0, 16, &a->extralayers, e))
      || (rc = hp_num(hp, "anogan", "lr", 2e-4, 1e-12, 1, &a->lr, e))
      || (rc = hp_num(hp, "anogan", "beta1", 0.5, 0, 0.999999, &a->beta1, e))
      || (rc = hp_num(hp, "anogan", "beta2", 0.999, 0, 0.999999999, &a->beta2, e))
      || (rc = hp_int(hp, "anogan", "steps", 500, 1, STEPS_MAX, &a->steps, e))
      || (rc = hp_num(hp, "anogan", "lambda", 0.1, 0, 1, &a->lambda, e))
      || (rc = hp_num(hp, "anogan", "search_lr", 0.001, 1e-12, LR_MAX, &a->search_lr, e))
      || (rc = hp_num(hp, "anogan", "search_beta1", 0.5, 0, 0.999999, &a->search_beta1, e)) )
    return rc;
  int isize = m->width;
  /* the DCGAN builders halve the side down to 4 and double it back up */
  if( m->width != m->height || isize < 16 || (isize & (isize - 1)) )
    return anom_fail(e, ANOM_EINVAL, "anogan: the input must be square with a "
                     "side of 16, 32, 64... (a power of two), found %dx%d", m->width,
                     m->height);
  int nc = m->channels;
  net nt;
  net_init(&nt, "netg.", a->nz, 1, 1);
  build_generator(&nt, isize, a->nz, nc, a->ngf, a->extralayers);
  if( (rc = model_add_net(m, &nt, e)) ) return rc;
  a->g = m->nets[m->nnets - 1];

  net_init(&nt, "netd.", nc, isize, isize);
  build_discriminator(&nt, isize, a->ngf, a->extralayers);
  if( (rc = model_add_net(m, &nt, e)) ) return rc;
  a->d = m->nets[m->nnets - 1];
  a->d_features = a->d->nlayers - 2;

  a->g_off = layer_offsets(a->g, &a->g_acts);
  a->d_off = layer_offsets(a->d, &a->d_acts);
  if( !a->g_off || !a->d_off ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  return ANOM_OK;
}

static void anogan_destroy(anom_model *m) {
  anogan *a = m->det;
  anom_free(a->g_off);
  anom_free(a->d_off);
}

static cJSON *anogan_hparams(const anom_model *m) {
  const anogan *a = m->det;
  cJSON *j = cJSON_CreateObject();
  if( !j ) return NULL;
  cJSON_AddNumberToObject(j, "nz", a->nz);
  cJSON_AddNumberToObject(j, "ngf", a->ngf);
  cJSON_AddNumberToObject(j, "extralayers", a->extralayers);
  cJSON_AddNumberToObject(j, "lr", a->lr);
  cJSON_AddNumberToObject(j, "beta1", a->beta1);
  cJSON_AddNumberToObject(j, "beta2", a->beta2);
  cJSON_AddNumberToObject(j, "steps", a->steps);
  cJSON_AddNumberToObject(j, "lambda", a->lambda);
  cJSON_AddNumberToObject(j, "search_lr", a->search_lr);
  cJSON_AddNumberToObject(j, "search_beta1", a->search_beta1);
  return j;
}

/* ---- the search ---------------------------------------------------------- */

/* The scratch of a search over n images, carved out of work in this order. */
typedef struct search_buf {
  double *loss, *res, *dis;  /* (n) each: L and its parts, per image */
  float *z, *mz, *vz, *dz;   /* (n, nz) each: z, Adam moments, gradient */
  float *fx, *df;            /* (n, F): f(x), gradient at f(G(z)) */
  float *dxh;                /* (n, C, H, W): gradient at G(z) */
  net_cache cg, cd;          /* frozen caches of G and D over work */
  float *scratch;            /* net scratch */
} search_buf;

static size_t search_floats(const anom_model *m, int n) {
  const anogan *a = m->det;
  size_t img = (size_t)m->channels * m->height * m->width;
  size_t fsize = net_out_floats(a->d, a->d_features - 1);
  size_t sg = net_scratch_floats(a->g, n), sd = net_scratch_floats(a->d, n);
  return (size_t)n * (6 + 4 * (size_t)a->nz + 2 * fsize + img + a->g_acts + a->d_acts)
         + 1 + (sg > sd ? sg : sd);
}

static size_t anogan_work_floats(const anom_model *m, int n) {
  return search_floats(m, n);
}

static void search_layout(const anom_model *m, int n, float *work, search_buf *s) {
  const anogan *a = m->det;
  size_t img = (size_t)m->channels * m->height * m->width;
  size_t fsize = net_out_floats(a->d, a->d_features - 1), zs = (size_t)n * a->nz;
  /* the doubles first, at the first 8-byte boundary (one float spare) */
  float *p = work + (((uintptr_t)work % sizeof(double)) ? 1 : 0);
  s->loss = (double *)(void *)p;
  s->res = s->loss + n;
  s->dis = s->res + n;
  p += 6 * (size_t)n;
  s->z = p;   p += zs;
  s->mz = p;  p += zs;
  s->vz = p;  p += zs;
  s->dz = p;  p += zs;
  s->fx = p;  p += (size_t)n * fsize;
  s->df = p;  p += (size_t)n * fsize;
  s->dxh = p; p += (size_t)n * img;
  s->cg = (net_cache){ .n = n, .frozen = 1, .acts = p, .off = a->g_off };  p += (size_t)n * a->g_acts;
  s->cd = (net_cache){ .n = n, .frozen = 1, .acts = p, .off = a->d_off };  p += (size_t)n * a->d_acts;
  s->scratch = p;
}

static double sign_of(double v) { return (v > 0) - (v < 0); }

/*
** L at s->z for each image into s->loss, its parts into s->res and s->dis;
** with grad, also dL/dz summed over images into s->dz (overwritten).
*/
static void search_eval(const anom_model *m, int n, const float *x, search_buf *s,
                        double lambda, int grad) {
  const anogan *a = m->det;
  size_t img = (size_t)m->channels * m->height * m->width;
  size_t fsize = net_out_floats(a->d, a->d_features - 1);
  net_forward_frozen(a->g, n, s->z, &s->cg, s->scratch);
  const float *xh = net_cache_out(&s->cg, a->g, -1);
  net_forward_frozen(a->d, n, xh, &s->cd, s->scratch);
  const float *fg = net_cache_out(&s->cd, a->d, a->d_features - 1);
  float wr = (float)(1 - lambda), wd = (float)lambda;
  for(int i = 0; i < n; i++){
    const float *xi = x + (size_t)i * img, *xhi = xh + (size_t)i * img;
    const float *fxi = s->fx + (size_t)i * fsize, *fgi = fg + (size_t)i * fsize;
    float *dxi = s->dxh + (size_t)i * img, *dfi = s->df + (size_t)i * fsize;
    double r = 0, d = 0;
    for(size_t k = 0; k < img; k++){
      double v = (double)xhi[k] - xi[k];
      r += fabs(v);
      if( grad ) dxi[k] = 0;
    }
    for(size_t k = 0; k < fsize; k++){
      double v = (double)fgi[k] - fxi[k];
      d += fabs(v);
      if( grad ) dfi[k] = wd * (float)sign_of(v);
    }
    s->loss[i] = (1 - lambda) * r + lambda * d;
    s->res[i] = r;
    s->dis[i] = d;
  }
  if( !grad ) return;
  /* through D's features into dxh, then the residual's own gradient */
  net_backward(a->d, n, xh, &s->cd, a->d_features, s->df, s->dxh, NULL, s->scratch);
  for(size_t k = 0; k < (size_t)n * img; k++)
    s->dxh[k] += wr * (float)sign_of((double)xh[k] - x[k]);
  memset(s->dz, 0, (size_t)n * a->nz * sizeof(float));
  net_backward(a->g, n, s->z, &s->cg, a->g->nlayers, s->dxh, s->dz, NULL, s->scratch);
}

/* s->z holds z0 and s->fx holds f(x); on return s->z is the final z and
** G(z) is the output of s->cg. */
static void search_run(const anom_model *m, int n, const float *x, search_buf *s,
                       int steps, double lambda, double lr) {
  const anogan *a = m->det;
  size_t zs = (size_t)n * a->nz;
  adam opt = { (float)lr, (float)a->search_beta1, 0.999f, 1e-8f, 0 };
  memset(s->mz, 0, zs * sizeof(float));
  memset(s->vz, 0, zs * sizeof(float));
  for(int t = 0; t < steps; t++){
    search_eval(m, n, x, s, lambda, 1);
    adam_step(&opt, s->z, s->dz, s->mz, s->vz, zs);
  }
  search_eval(m, n, x, s, lambda, 0);
}

void anogan_search(const anom_model *m, int n, const float *x, const float *z0,
                   int steps, double lambda, double lr, float *z_out,
                   double *loss_out, float *work) {
  const anogan *a = m->det;
  search_buf s;
  search_layout(m, n, work, &s);
  memcpy(s.z, z0, (size_t)n * a->nz * sizeof(float));
  net_forward(a->d, 0, a->d_features, n, x, s.fx, s.scratch);
  search_run(m, n, x, &s, steps, lambda, lr);
  memcpy(z_out, s.z, (size_t)n * a->nz * sizeof(float));
  memcpy(loss_out, s.loss, (size_t)n * sizeof(double));
}

/* ---- scoring ------------------------------------------------------------- */

#define OPT_KEYS "steps, lambda, lr, seed"

/* The search settings: the model's, overridden by opts. */
static int read_opts(const anogan *a, const cJSON *opts, int *steps, double *lambda,
                     double *lr, uint64_t *seed, anom_err *e) {
  *steps = a->steps;
  *lambda = a->lambda;
  *lr = a->search_lr;
  *seed = 0;
  if( !opts ) return ANOM_OK;
  if( !cJSON_IsObject(opts) )
    return anom_fail(e, ANOM_EINVAL, "anogan: scoring options must be a JSON object");
  const cJSON *it;
  cJSON_ArrayForEach(it, opts){
    const char *k = it->string;
    double v = it->valuedouble;
    int num = cJSON_IsNumber(it) && isfinite(v);
    if( strcmp(k, "steps") == 0 ){
      if( !num || v != floor(v) || v < 1 || v > STEPS_MAX )
        return anom_fail(e, ANOM_EINVAL, "anogan: scoring option 'steps' must be "
                         "an integer from 1 to %d", STEPS_MAX);
      *steps = (int)v;
    }else if( strcmp(k, "lambda") == 0 ){
      if( !num || v < 0 || v > 1 )
        return anom_fail(e, ANOM_EINVAL, "anogan: scoring option 'lambda' must be "
                         "a number from 0 to 1");
      *lambda = v;
    }else if( strcmp(k, "lr") == 0 ){
      if( !num || !(v > 0) || v > LR_MAX )
        return anom_fail(e, ANOM_EINVAL, "anogan: scoring option 'lr' must be a "
                         "number greater than 0 and at most %g", LR_MAX);
      *lr = v;
    }else if( strcmp(k, "seed") == 0 ){
      if( !num || v != floor(v) || v < 0 || v > 9007199254740992.0 )
        return anom_fail(e, ANOM_EINVAL, "anogan: scoring option 'seed' must be "
                         "an integer from 0 to 2^53");
      *seed = (uint64_t)v;
    }else{
      return anom_fail(e, ANOM_EINVAL, "anogan: unknown scoring option '%s' "
                       "(known: " OPT_KEYS ")", k);
    }
  }
  return ANOM_OK;
}

static int anogan_score(const anom_model *m, int n, const float *x, float *work,
                        score_result *out, float *recon, const cJSON *opts,
                        anom_err *e) {
  const anogan *a = m->det;
  int steps;
  double lambda, lr;
  uint64_t seed;
  int rc = read_opts(a, opts, &steps, &lambda, &lr, &seed, e);
  if( rc ) return rc;
  search_buf s;
  search_layout(m, n, work, &s);
  /* one z0 for every image: dz is free until the search, so draw into it */
  rng r;
  rng_seed(&r, seed);
  for(int k = 0; k < a->nz; k++) s.dz[k] = (float)rng_normal(&r);
  for(int i = 0; i < n; i++)
    memcpy(s.z + (size_t)i * a->nz, s.dz, (size_t)a->nz * sizeof(float));
  net_forward(a->d, 0, a->d_features, n, x, s.fx, s.scratch);
  search_run(m, n, x, &s, steps, lambda, lr);
  for(int i = 0; i < n; i++){
    score_result *o = &out[i];
    o->score = s.loss[i];
    o->nparts = 2;
    o->part_name[0] = "residual";       o->part[0] = s.res[i];
    o->part_name[1] = "discrimination"; o->part[1] = s.dis[i];
  }
  if( recon )
    memcpy(recon, net_cache_out(&s.cg, a->g, -1),
           (size_t)n * m->channels * m->height * m->width * sizeof(float));
  return ANOM_OK;
}

/* ---- training ------------------------------------------------------------ */

typedef struct anogan_train {
  int max_batch;
  float *grads, *m, *v;          /* like m->block's parameters */
  adam opt_g, opt_d;
  net_cache c_g, c_dreal, c_dfake;
  float *z, *dfake, *dlogit;     /* (n, nz), (n, C, H, W), (n) */
  float *scratch;
  rng *r;                        /* the trainer's, for z */
} anogan_train;

static const char *const anogan_losses[] = {"g", "d", "d_real", "d_fake", NULL};

static void anogan_train_end(anom_model *m, void *state) {
  (void)m;
  anogan_train *t = state;
  if( !t ) return;
  net_cache_free(&t->c_g);
  net_cache_free(&t->c_dreal);
  net_cache_free(&t->c_dfake);
  anom_free(t->grads);
  anom_free(t->m);
  anom_free(t->v);
  anom_free(t->z);
  anom_free(t->dfake);
  anom_free(t->dlogit);
  anom_free(t->scratch);
  anom_free(t);
}

static int anogan_train_begin(anom_model *m, int max_batch, rng *r, void **state,
                              anom_err *e) {
  anogan *a = m->det;
  anogan_train *t = anom_calloc(1, sizeof(*t));
  *state = t;
  if( !t ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  t->max_batch = max_batch;
  t->r = r;
  net_init_dcgan(a->g, r);
  net_init_dcgan(a->d, r);
  t->opt_g = (adam){ (float)a->lr, (float)a->beta1, (float)a->beta2, 1e-8f, 0 };
  t->opt_d = t->opt_g;
  size_t img = (size_t)m->channels * m->height * m->width, n = (size_t)max_batch;
  size_t sg = net_train_scratch_floats(a->g, max_batch);
  size_t sd = net_train_scratch_floats(a->d, max_batch);
  t->grads = anom_calloc(m->nparams, sizeof(float));
  t->m = anom_calloc(m->nparams, sizeof(float));
  t->v = anom_calloc(m->nparams, sizeof(float));
  t->z = anom_malloc(n * a->nz * sizeof(float));
  t->dfake = anom_malloc(n * img * sizeof(float));
  t->dlogit = anom_malloc(n * sizeof(float));
  t->scratch = anom_malloc((sg > sd ? sg : sd) * sizeof(float));
  if( !t->grads || !t->m || !t->v || !t->z || !t->dfake || !t->dlogit || !t->scratch )
    return anom_fail(e, ANOM_ENOMEM, "out of memory for training state");
  int rc;
  if( (rc = net_cache_init(&t->c_g, a->g, max_batch, e))
      || (rc = net_cache_init(&t->c_dreal, a->d, max_batch, e))
      || (rc = net_cache_init(&t->c_dfake, a->d, max_batch, e)) )
    return rc;
  return ANOM_OK;
}

/* D's BCE against target on the logits of the last forward into c; its
** gradient goes back into d_grads (D's parameters) and, unless NULL, din. */
static double d_bce(const anogan *a, anogan_train *t, int n, const float *in,
                    const net_cache *c, float target, float *d_grads, float *din) {
  int logit_layer = a->d->nlayers - 2;
  const float *logit = net_cache_out(c, a->d, logit_layer);
  memset(t->dlogit, 0, (size_t)n * sizeof(float));
  double err = bce_logits_loss(t->dlogit, logit, target, (size_t)n, 1.0f);
  net_backward(a->d, n, in, c, logit_layer + 1, t->dlogit, din, d_grads, t->scratch);
  return err;
}

static int anogan_train_step(anom_model *m, void *state, int n, const float *x,
                             double *losses, anom_err *e) {
  anogan *a = m->det;
  anogan_train *t = state;
  if( n < 2 || n > t->max_batch )
    return anom_fail(e, ANOM_EINVAL, "anogan: a training batch needs 2 to %d "
                     "images, found %d", t->max_batch, n);
  net *g = a->g, *d = a->d;
  size_t img = (size_t)m->channels * m->height * m->width;
  size_t g_off = (size_t)(g->params - m->block), d_off = (size_t)(d->params - m->block);
  float *gg = t->grads + g_off, *gd = t->grads + d_off;

  for(size_t i = 0; i < (size_t)n * a->nz; i++) t->z[i] = (float)rng_normal(t->r);
  net_forward_train(g, n, t->z, &t->c_g, 1, t->scratch);
  const float *fake = net_cache_out(&t->c_g, g, -1);

  /* D step: real -> 1, fake (detached) -> 0 */
  memset(gd, 0, d->nparams * sizeof(float));
  net_forward_train(d, n, x, &t->c_dreal, 1, t->scratch);
  double err_real = d_bce(a, t, n, x, &t->c_dreal, 1.0f, gd, NULL);
  net_forward_train(d, n, fake, &t->c_dfake, 1, t->scratch);
  double err_fake = d_bce(a, t, n, fake, &t->c_dfake, 0.0f, gd, NULL);
  adam_step(&t->opt_d, d->params, gd, t->m + d_off, t->v + d_off, d->nparams);

  /* G step: fake -> 1 through the updated D (no D parameter gradients) */
  net_forward_train(d, n, fake, &t->c_dfake, 1, t->scratch);
  memset(t->dfake, 0, (size_t)n * img * sizeof(float));
  double err_g = d_bce(a, t, n, fake, &t->c_dfake, 1.0f, NULL, t->dfake);
  memset(gg, 0, g->nparams * sizeof(float));
  net_backward(g, n, t->z, &t->c_g, g->nlayers, t->dfake, NULL, gg, t->scratch);
  adam_step(&t->opt_g, g->params, gg, t->m + g_off, t->v + g_off, g->nparams);

  losses[0] = err_g;
  losses[1] = err_real + err_fake;
  losses[2] = err_real;
  losses[3] = err_fake;
  return ANOM_OK;
}

const detector_ops anogan_ops = {
  "anogan",
  anogan_create,
  anogan_destroy,
  anogan_hparams,
  anogan_work_floats,
  anogan_score,
  NULL,                  /* map: the residual */
  anogan_losses,
  anogan_train_begin,
  anogan_train_step,
  anogan_train_end,
  NULL,                 /* train_finish */
  0,                    /* batch: 64 */
  NULL,                  /* train_epoch */
};
