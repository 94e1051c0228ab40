/*
** defectgan.c - DefectGAN, after Zhao et al., "A Surface Defect Detection
** Method Based on Positive Samples" (PRICAI 2018), method 'defectgan'.
**
** No author code is public, so the details below are ours (docs/defectgan.md
** says which). An encoder-decoder G learns to repair images: during training
** every clean image x gets synthetic defects painted on (x~ = C(x), core/
** defects.h, drawn from the training rng) and G is trained to turn x~ back
** into x, adversarially against a discriminator D plus an L1 term. At
** scoring, an image and its repair x_hat = G(x) are compared through local
** binary patterns (core/lbp.h) on their grey levels:
**
**   map(x)   = box_window( Hamming( LBP_P,R(grey x), LBP_P,R(grey x_hat) ) )
**   score(x) = mean of the top `top` fraction of map(x)           (part "lbp")
**   parts:     lbp (the score), recon = mean |x - x_hat|
**
** Networks: GANomaly's (built by ganomaly.h's builders, after
** samet-akcay/ganomaly lib/networks.py) without the second encoder, with the
** same tensor names:
**   netg.encoder1.  DCGAN encoder: Conv(4,2,1) nc->ngf, LReLU 0.2;
**                   extralayers x [Conv(3,1,1), BN, LReLU]; while size > 4:
**                   Conv(4,2,1) doubling, BN, LReLU; Conv(4,1,0) -> nz.
**   netg.decoder.   ConvT(4,1,0) nz->C0 (C0 = ngf * isize / 8), BN, ReLU;
**                   while size < isize/2: ConvT(4,2,1) halving, BN, ReLU;
**                   extralayers x [Conv(3,1,1), BN, ReLU]; ConvT(4,2,1) -> nc, tanh.
**   netd.           the encoder with width ndf and nz 1, "features.<i>"
**                   then "classifier.0" (conv) and "classifier.1" (sigmoid).
** All convolutions bias-free; batch norm eps 1e-5, momentum 0.1. Inputs are
** square with a side that is a power of two from 16 up, 1 or 3 channels.
**
** Training, per batch x (DCGAN init, Adam per network):
**   x~ = C(x);  x_hat = G(x~);  D(x), D(x_hat)             (batch statistics)
**   G step:  w_adv BCE(D(x_hat), 1) + w_l1 mean |x_hat - x|;  Adam on G
**   D step:  BCE(D(x), 1) + BCE(D(x_hat), 0);  Adam on D
** laid out as GANomaly's optimize_params: D's step reuses the outputs of
** the forward pass, G's step evaluates D(x_hat) once more, so D's running
** statistics move three times a batch (x, x_hat, x_hat) and G's once. BCE
** is taken on D's logit (the classifier conv before its sigmoid). D is
** re-initialised when its loss falls under 1e-5, as in GANomaly. Losses
** reported: g (the weighted G loss), d, l1 (the unweighted mean |x_hat - x|).
*/
#include "ganomaly.h"

#include "../defects.h"
#include "../hparams.h"
#include "../lbp.h"
#include "../model.h"
#include "../optim.h"
#include "../rng.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#define WINDOW_MAX 31

typedef struct lbp_opts {
  int points;
  double radius;
  int window;
  double top;
} lbp_opts;

typedef struct defectgan {
  int nz, ngf, ndf, extralayers;
  double lr, beta1, beta2, w_adv, w_l1;
  defect_opts def;
  lbp_opts lbp;
  net *enc, *dec, *netd;         /* owned by the model */
} defectgan;

extern const detector_ops defectgan_ops;

/* ---- hyper-parameters --------------------------------------------------- */

static const char *const defectgan_keys[] = {"nz", "ngf", "ndf", "extralayers",
  "lr", "beta1", "beta2", "w_adv", "w_l1", "defect_p", "defect_max", "size_min",
  "size_max", "kinds", "lbp_points", "lbp_radius", "window", "top", NULL};

static const char *const score_keys[] = {"lbp_points", "lbp_radius", "window",
                                         "top", NULL};

/* The LBP settings of obj (hyper-parameters or scoring options), def where
** absent. */
static int read_lbp(const cJSON *obj, const lbp_opts *def, lbp_opts *o, anom_err *e) {
  int rc;
  if( (rc = hp_int(obj, "defectgan", "lbp_points", def->points, 1, LBP_MAX_POINTS,
                   &o->points, e))
      || (rc = hp_num(obj, "defectgan", "lbp_radius", def->radius, 0.5, 16,
                      &o->radius, e))
      || (rc = hp_int(obj, "defectgan", "window", def->window, 1, WINDOW_MAX,
                      &o->window, e))
      || (rc = hp_num(obj, "defectgan", "top", def->top, 1e-4, 1, &o->top, e)) )
    return rc;
  if( o->window % 2 == 0 )
    return anom_fail(e, ANOM_EINVAL, "defectgan: 'window' must be odd, found %d",
                     o->window);
  return ANOM_OK;
}

static int read_kinds(const cJSON *hp, unsigned *kinds, anom_err *e) {
  const cJSON *v = hp ? cJSON_GetObjectItemCaseSensitive(hp, "kinds") : NULL;
  *kinds = DEFECT_ALL;
  if( !v ) return ANOM_OK;
  if( !cJSON_IsString(v) || defects_parse_kinds(v->valuestring, kinds) )
    return anom_fail(e, ANOM_EINVAL, "defectgan: 'kinds' must be \"all\" or a "
                     "comma-separated list of block, line, noise, shift%s%.64s%s",
                     cJSON_IsString(v) ? ", found '" : "",
                     cJSON_IsString(v) ? v->valuestring : "",
                     cJSON_IsString(v) ? "'" : "");
  return ANOM_OK;
}

static int defectgan_create(anom_model *m, const cJSON *hp, anom_err *e) {
  int rc = hp_check_keys(hp, defectgan_keys, "defectgan", "hyper-parameter", e);
  if( rc ) return rc;
  defectgan *g = anom_calloc(1, sizeof(*g));
  if( !g ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  m->det = g;
  static const lbp_opts lbp_def = { 8, 1.0, 3, 0.01 };
  if( (rc = hp_int(hp, "defectgan", "nz", 100, 1, 4096, &g->nz, e))
      || (rc = hp_int(hp, "defectgan", "ngf", 64, 1, 1024, &g->ngf, e))
      || (rc = hp_int(hp, "defectgan", "ndf", 64, 1, 1024, &g->ndf, e))
      || (rc = hp_int(hp, "defectgan", "extralayers", 0, 0, 16, &g->extralayers, e))
      || (rc = hp_num(hp, "defectgan", "lr", 2e-4, 1e-12, 1, &g->lr, e))
      || (rc = hp_num(hp, "defectgan", "beta1", 0.5, 0, 0.999999, &g->beta1, e))
      || (rc = hp_num(hp, "defectgan", "beta2", 0.999, 0, 0.999999999, &g->beta2, e))
      || (rc = hp_num(hp, "defectgan", "w_adv", 1, 0, 1e6, &g->w_adv, e))
      || (rc = hp_num(hp, "defectgan", "w_l1", 50, 0, 1e6, &g->w_l1, e))
      || (rc = hp_num(hp, "defectgan", "defect_p", 0.9, 0, 1, &g->def.p, e))
      || (rc = hp_int(hp, "defectgan", "defect_max", 3, 1, 64, &g->def.max, e))
      || (rc = hp_num(hp, "defectgan", "size_min", 0.05, 0, 1, &g->def.size_min, e))
      || (rc = hp_num(hp, "defectgan", "size_max", 0.3, 0, 1, &g->def.size_max, e))
      || (rc = read_kinds(hp, &g->def.kinds, e))
      || (rc = read_lbp(hp, &lbp_def, &g->lbp, e)) )
    return rc;
  if( g->def.size_min > g->def.size_max )
    return anom_fail(e, ANOM_EINVAL, "defectgan: 'size_min' (%g) must not exceed "
                     "'size_max' (%g)", g->def.size_min, g->def.size_max);
  int isize = m->width;
  /* GANomaly's builders halve the side down to 4 and double it back up */
  if( m->width != m->height || isize < 16 || (isize & (isize - 1)) )
    return anom_fail(e, ANOM_EINVAL, "defectgan: the input must be square with a "
                     "side of 16, 32, 64... (a power of two), found %dx%d", m->width,
                     m->height);
  int nc = m->channels;
  net nt;
  net_init(&nt, "netg.encoder1.", nc, isize, isize);
  ganomaly_build_encoder(&nt, isize, g->nz, nc, g->ngf, g->extralayers, 0, 1);
  if( (rc = model_add_net(m, &nt, e)) ) return rc;
  g->enc = m->nets[m->nnets - 1];

  net_init(&nt, "netg.decoder.", g->nz, 1, 1);
  ganomaly_build_decoder(&nt, isize, g->nz, nc, g->ngf, g->extralayers);
  if( (rc = model_add_net(m, &nt, e)) ) return rc;
  g->dec = m->nets[m->nnets - 1];

  net_init(&nt, "netd.", nc, isize, isize);
  ganomaly_build_encoder(&nt, isize, 1, nc, g->ndf, g->extralayers, 1, 1);
  if( (rc = model_add_net(m, &nt, e)) ) return rc;
  g->netd = m->nets[m->nnets - 1];
  return ANOM_OK;
}

static cJSON *defectgan_hparams(const anom_model *m) {
  const defectgan *g = m->det;
  cJSON *j = cJSON_CreateObject();
  if( !j ) return NULL;
  char kinds[64];
  defects_kinds_name(g->def.kinds, kinds, sizeof(kinds));
  cJSON_AddNumberToObject(j, "nz", g->nz);
  cJSON_AddNumberToObject(j, "ngf", g->ngf);
  cJSON_AddNumberToObject(j, "ndf", g->ndf);
  cJSON_AddNumberToObject(j, "extralayers", g->extralayers);
  cJSON_AddNumberToObject(j, "lr", g->lr);
  cJSON_AddNumberToObject(j, "beta1", g->beta1);
  cJSON_AddNumberToObject(j, "beta2", g->beta2);
  cJSON_AddNumberToObject(j, "w_adv", g->w_adv);
  cJSON_AddNumberToObject(j, "w_l1", g->w_l1);
  cJSON_AddNumberToObject(j, "defect_p", g->def.p);
  cJSON_AddNumberToObject(j, "defect_max", g->def.max);
  cJSON_AddNumberToObject(j, "size_min", g->def.size_min);
  cJSON_AddNumberToObject(j, "size_max", g->def.size_max);
  cJSON_AddStringToObject(j, "kinds", kinds);
  cJSON_AddNumberToObject(j, "lbp_points", g->lbp.points);
  cJSON_AddNumberToObject(j, "lbp_radius", g->lbp.radius);
  cJSON_AddNumberToObject(j, "window", g->lbp.window);
  cJSON_AddNumberToObject(j, "top", g->lbp.top);
  return j;
}

/* ---- scoring ------------------------------------------------------------ */

/* Floats of the per-image LBP scratch: two grey images, a Hamming map and
** two code images (uint32, one float each). */
static size_t lbp_floats(const anom_model *m) {
  return 5 * (size_t)m->height * m->width;
}

/* What run_map needs: z, x_hat, then scratch for the nets or the LBP. */
static size_t map_work_floats(const anom_model *m, int n) {
  const defectgan *g = m->det;
  size_t img = (size_t)m->channels * m->height * m->width;
  size_t s = net_scratch_floats(g->enc, n), t = net_scratch_floats(g->dec, n);
  if( t > s ) s = t;
  if( lbp_floats(m) > s ) s = lbp_floats(m);
  return (size_t)n * ((size_t)g->nz + img) + s;
}

static size_t defectgan_work_floats(const anom_model *m, int n) {
  return (size_t)n * m->height * m->width + map_work_floats(m, n);
}

/* x_hat = G(x) and the maps (n, H, W); returns x_hat, inside work. */
static const float *run_map(const anom_model *m, int n, const float *x, float *work,
                            const lbp_opts *o, float *map) {
  const defectgan *g = m->det;
  int h = m->height, w = m->width, c = m->channels;
  size_t hw = (size_t)h * w, img = (size_t)c * hw;
  float *z = work, *xh = z + (size_t)n * g->nz, *scratch = xh + (size_t)n * img;
  net_forward(g->enc, 0, g->enc->nlayers, n, x, z, scratch);
  net_forward(g->dec, 0, g->dec->nlayers, n, z, xh, scratch);
  float *ga = scratch, *gb = ga + hw, *ham = gb + hw;
  uint32_t *ca = (uint32_t *)(ham + hw), *cb = ca + hw;
  for(int i = 0; i < n; i++){
    lbp_grey(ga, x + (size_t)i * img, c, h, w);
    lbp_grey(gb, xh + (size_t)i * img, c, h, w);
    lbp_codes(ca, ga, h, w, o->points, o->radius);
    lbp_codes(cb, gb, h, w, o->points, o->radius);
    lbp_hamming(ham, ca, cb, hw);
    lbp_box(map + (size_t)i * hw, ham, h, w, o->window);
  }
  return xh;
}

static int read_score_opts(const defectgan *g, const cJSON *opts, lbp_opts *o,
                           anom_err *e) {
  int rc = hp_check_keys(opts, score_keys, "defectgan", "scoring option", e);
  if( rc ) return rc;
  return read_lbp(opts, &g->lbp, o, e);
}

/*
** Score n images with their LBP maps in map (n, H, W). The score, the mean
** of a map's top values, reorders what it selects from: copy (H * W floats)
** keeps map intact, or NULL lets the score use map itself as scratch.
** run_work holds map_work_floats(m, n) floats.
*/
static int score_maps(const anom_model *m, int n, const float *x, float *run_work,
                      float *map, float *copy, score_result *out, float *recon,
                      const cJSON *opts, anom_err *e) {
  const defectgan *g = m->det;
  lbp_opts o;
  int rc = read_score_opts(g, opts, &o, e);
  if( rc ) return rc;
  size_t hw = (size_t)m->height * m->width, img = (size_t)m->channels * hw;
  const float *xh = run_map(m, n, x, run_work, &o, map);
  for(int i = 0; i < n; i++){
    const float *xi = x + (size_t)i * img, *xhi = xh + (size_t)i * img;
    double l1 = 0;
    for(size_t k = 0; k < img; k++) l1 += fabs((double)xi[k] - xhi[k]);
    float *top = map + (size_t)i * hw;
    if( copy ){
      memcpy(copy, top, hw * sizeof(float));
      top = copy;
    }
    score_result *r = &out[i];
    r->score = lbp_top_mean(top, hw, o.top);
    r->nparts = 2;
    r->part_name[0] = "lbp";   r->part[0] = r->score;
    r->part_name[1] = "recon"; r->part[1] = l1 / (double)img;
  }
  if( recon ) memcpy(recon, xh, (size_t)n * img * sizeof(float));
  return ANOM_OK;
}

static int defectgan_map_op(const anom_model *m, int n, const float *x, float *work,
                            float *map, score_result *out, float *recon,
                            const cJSON *opts, anom_err *e) {
  size_t hw = (size_t)m->height * m->width;
  return score_maps(m, n, x, work + (size_t)n * hw, map, work, out, recon, opts, e);
}

static int defectgan_score(const anom_model *m, int n, const float *x, float *work,
                           score_result *out, float *recon, const cJSON *opts,
                           anom_err *e) {
  size_t hw = (size_t)m->height * m->width;
  return score_maps(m, n, x, work + (size_t)n * hw, work, NULL, out, recon, opts, e);
}

/* ---- training ----------------------------------------------------------- */

typedef struct dg_train {
  int max_batch;
  float *grads, *m, *v;           /* like m->block's parameters */
  adam opt_g, opt_d;
  size_t g_count, d_off, d_count; /* G params [0, g_count), D [d_off, +d_count) */
  net_cache c_enc, c_dec, c_dreal, c_dfake;
  float *xt;                      /* G's input: the batch with defects */
  float *dxh, *dz, *dlogit;       /* gradient buffers */
  float *scratch;
  rng *r;
} dg_train;

static const char *const defectgan_losses[] = {"g", "d", "l1", NULL};

static void defectgan_train_end(anom_model *m, void *state) {
  (void)m;
  dg_train *t = state;
  if( !t ) return;
  net_cache_free(&t->c_enc);
  net_cache_free(&t->c_dec);
  net_cache_free(&t->c_dreal);
  net_cache_free(&t->c_dfake);
  anom_free(t->grads);
  anom_free(t->m);
  anom_free(t->v);
  anom_free(t->xt);
  anom_free(t->dxh);
  anom_free(t->dz);
  anom_free(t->dlogit);
  anom_free(t->scratch);
  anom_free(t);
}

static int defectgan_train_begin(anom_model *m, int max_batch, rng *r, void **state,
                                 anom_err *e) {
  defectgan *g = m->det;
  dg_train *t = anom_calloc(1, sizeof(*t));
  *state = t;
  if( !t ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  t->max_batch = max_batch;
  t->r = r;
  net *nets[3] = {g->enc, g->dec, g->netd};
  for(int i = 0; i < 3; i++) net_init_dcgan(nets[i], r);
  t->g_count = (size_t)(g->netd->params - m->block);
  t->d_off = t->g_count;
  t->d_count = g->netd->nparams;
  t->opt_g = (adam){ (float)g->lr, (float)g->beta1, (float)g->beta2, 1e-8f, 0 };
  t->opt_d = t->opt_g;
  size_t img = (size_t)m->channels * m->height * m->width, n = (size_t)max_batch;
  size_t scratch = 0;
  for(int i = 0; i < 3; i++){
    size_t s = net_train_scratch_floats(nets[i], max_batch);
    if( s > scratch ) scratch = s;
  }
  t->grads = anom_calloc(m->nparams, sizeof(float));
  t->m = anom_calloc(m->nparams, sizeof(float));
  t->v = anom_calloc(m->nparams, sizeof(float));
  t->xt = anom_malloc(n * img * sizeof(float));
  t->dxh = anom_malloc(n * img * sizeof(float));
  t->dz = anom_malloc(n * g->nz * sizeof(float));
  t->dlogit = anom_malloc(n * sizeof(float));
  t->scratch = anom_malloc(scratch * sizeof(float));
  if( !t->grads || !t->m || !t->v || !t->xt || !t->dxh || !t->dz || !t->dlogit
      || !t->scratch )
    return anom_fail(e, ANOM_ENOMEM, "out of memory for training state");
  int rc;
  if( (rc = net_cache_init(&t->c_enc, g->enc, max_batch, e))
      || (rc = net_cache_init(&t->c_dec, g->dec, max_batch, e))
      || (rc = net_cache_init(&t->c_dreal, g->netd, max_batch, e))
      || (rc = net_cache_init(&t->c_dfake, g->netd, max_batch, e)) )
    return rc;
  return ANOM_OK;
}

static float *grads_of(const anom_model *m, dg_train *t, const net *nt) {
  return t->grads + (nt->params - m->block);
}

static int defectgan_train_step(anom_model *m, void *state, int n, const float *x,
                                double *losses, anom_err *e) {
  defectgan *g = m->det;
  dg_train *t = state;
  if( n < 2 || n > t->max_batch )
    return anom_fail(e, ANOM_EINVAL, "defectgan: a training batch needs 2 to %d "
                     "images, found %d", t->max_batch, n);
  net *d = g->netd;
  int nd = d->nlayers;                 /* layer nd - 2: the logit */
  int c = m->channels, h = m->height, w = m->width;
  size_t img = (size_t)c * h * w;

  /* x~ = C(x), image by image from the training rng */
  memcpy(t->xt, x, (size_t)n * img * sizeof(float));
  for(int i = 0; i < n; i++)
    defects_apply(t->xt + (size_t)i * img, c, h, w, &g->def, t->r, NULL);

  /* forward_g and forward_d */
  net_forward_train(g->enc, n, t->xt, &t->c_enc, 1, t->scratch);
  const float *z = net_cache_out(&t->c_enc, g->enc, -1);
  net_forward_train(g->dec, n, z, &t->c_dec, 1, t->scratch);
  const float *xh = net_cache_out(&t->c_dec, g->dec, -1);
  net_forward_train(d, n, x, &t->c_dreal, 1, t->scratch);
  net_forward_train(d, n, xh, &t->c_dfake, 1, t->scratch);
  /* G's step calls D(x_hat) again: same weights and input, so it only moves
  ** the running statistics once more */
  net_replay_running(d, n, &t->c_dfake);
  const float *logit_real = net_cache_out(&t->c_dreal, d, nd - 2);
  const float *logit_fake = net_cache_out(&t->c_dfake, d, nd - 2);

  /* G step */
  memset(t->grads, 0, t->g_count * sizeof(float));
  memset(t->dxh, 0, (size_t)n * img * sizeof(float));
  memset(t->dz, 0, (size_t)n * g->nz * sizeof(float));
  memset(t->dlogit, 0, (size_t)n * sizeof(float));
  double adv = bce_logits_loss(t->dlogit, logit_fake, 1.0f, (size_t)n, (float)g->w_adv);
  net_backward(d, n, xh, &t->c_dfake, nd - 1, t->dlogit, t->dxh, NULL, t->scratch);
  double l1 = l1_loss(t->dxh, xh, x, (size_t)n * img, (float)g->w_l1);
  net_backward(g->dec, n, z, &t->c_dec, g->dec->nlayers, t->dxh, t->dz,
               grads_of(m, t, g->dec), t->scratch);
  net_backward(g->enc, n, t->xt, &t->c_enc, g->enc->nlayers, t->dz, NULL,
               grads_of(m, t, g->enc), t->scratch);
  adam_step(&t->opt_g, m->block, t->grads, t->m, t->v, t->g_count);

  /* D step on the outputs of the forward pass */
  float *gd = grads_of(m, t, d);
  memset(gd, 0, t->d_count * sizeof(float));
  memset(t->dlogit, 0, (size_t)n * sizeof(float));
  double err_real = bce_logits_loss(t->dlogit, logit_real, 1.0f, (size_t)n, 1.0f);
  net_backward(d, n, x, &t->c_dreal, nd - 1, t->dlogit, NULL, gd, t->scratch);
  memset(t->dlogit, 0, (size_t)n * sizeof(float));
  double err_fake = bce_logits_loss(t->dlogit, logit_fake, 0.0f, (size_t)n, 1.0f);
  net_backward(d, n, xh, &t->c_dfake, nd - 1, t->dlogit, NULL, gd, t->scratch);
  adam_step(&t->opt_d, m->block + t->d_off, gd, t->m + t->d_off, t->v + t->d_off,
            t->d_count);
  double err_d = err_real + err_fake;
  if( err_d < 1e-5 ) net_init_dcgan(d, t->r);

  losses[0] = g->w_adv * adv + g->w_l1 * l1;
  losses[1] = err_d;
  losses[2] = l1;
  return ANOM_OK;
}

const detector_ops defectgan_ops = {
  "defectgan",
  defectgan_create,
  NULL,                  /* destroy: m->det owns nothing */
  defectgan_hparams,
  defectgan_work_floats,
  defectgan_score,
  defectgan_map_op,      /* map: the LBP map */
  defectgan_losses,
  defectgan_train_begin,
  defectgan_train_step,
  defectgan_train_end,
  NULL,                  /* train_finish */
  0,                     /* batch: 64 */
  NULL,                  /* train_epoch */
};
