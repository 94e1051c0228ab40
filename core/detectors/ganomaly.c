/*
** ganomaly.c - GANomaly (Akcay et al., ACCV 2018), method 'ganomaly'.
**
** The generator is an encoder-decoder-encoder: E1 maps the image x to a
** latent z, the decoder maps z to a reconstruction x_hat, and E2 maps x_hat
** to z'. A normal image goes round the loop unchanged; an anomaly does not.
**
**   score(x) = mean over nz of (z - z')^2                     (the authors')
**   parts:     latent (the score), recon_l1 = mean |x - x_hat|,
**              recon_l2 = mean (x - x_hat)^2
**
** Networks, as samet-akcay/ganomaly lib/networks.py builds them (tensor
** names are its state_dict names under "netg." and "netd."):
**   Encoder(isize, nz, nc, ndf=ngf, extralayers):
**     Conv(4,2,1) nc->ngf, LReLU 0.2;  extralayers x [Conv(3,1,1), BN, LReLU];
**     while size > 4: Conv(4,2,1) doubling channels, BN, LReLU;
**     Conv(4,1,0) -> nz (1x1).                            all convs bias-free
**   Decoder: ConvT(4,1,0) nz->C0 (C0 = ngf * isize / 8), BN, ReLU;
**     while size < isize/2: ConvT(4,2,1) halving channels, BN, ReLU;
**     extralayers x [Conv(3,1,1), BN, ReLU]; ConvT(4,2,1) -> nc, tanh.
**   NetG = encoder1, decoder, encoder2.  NetD = an Encoder with nz 1 whose
**   last conv (+ sigmoid) is the classifier and the rest the features.
**
** Hyper-parameters: nz (100), ngf (64), extralayers (0), first_pad (1); the
** input must be square with a side that is a power of two from 16. Training
** (the authors' defaults): lr 2e-4, beta1 0.5, beta2 0.999, w_adv 1, w_con 50,
** w_enc 1.
**
** first_pad is the padding of the first conv of E1, E2 and D: 1 as the
** authors, or 4 as anomalib's GANomaly (openvinotoolkit/anomalib, since
** 2022). The pyramid is counted from isize/2 either way, so with 4 the maps
** run 32 -> 19 -> 9 -> 4 -> 1 (64 -> 35 -> 17 -> 8 -> 4 -> 1) and the last
** conv still gives 1x1 from a side of 32 up; at 16 it would give 2x2
** (16 -> 11 -> 5 -> 2), so first_pad 4 needs a side of 32 or more.
**
** Training, per batch, as the authors' optimize_params (lib/model.py):
**   forward: x -> E1 -> z -> Dec -> x_hat -> E2 -> z';  D(x), D(x_hat)
**   G step:  w_adv * mean (f(x) - f(x_hat))^2      (f: D's features)
**          + w_con * mean |x - x_hat| + w_enc * mean (z' - z)^2;  Adam on G
**   D step:  0.5 * [BCE(D(x), 1) + BCE(D(x_hat), 0)];  Adam on D
**   D is re-initialised when its loss falls under 1e-5.
** Batch norm runs in training mode; D's running statistics take four
** updates a batch (the reference calls D on x and x_hat twice each).
*/
#include "ganomaly.h"

#include "../hparams.h"
#include "../model.h"
#include "../optim.h"
#include "../rng.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct ganomaly {
  int nz, ngf, extralayers, first_pad;
  double lr, beta1, beta2, w_adv, w_con, w_enc;
  net *enc1, *dec, *enc2, *netd;  /* owned by the model */
  int netd_features;              /* layers of netd before the classifier */
} ganomaly;

/* ---- networks (ganomaly.h: defectgan.c builds with them too) ------------ */

/* Layer names: the authors' module names in "main", or, for NetD, the index
** of the child in the flattened Sequential ("features.3"). */
typedef struct namer {
  int numeric;
  int index;
  char buf[NET_NAME_MAX];
} namer;

static const char *nm(namer *n, const char *fmt, ...) {
  if( n->numeric ){
    snprintf(n->buf, sizeof(n->buf), "features.%d", n->index++);
  }else{
    va_list ap;
    va_start(ap, fmt);
    strcpy(n->buf, "main.");
    vsnprintf(n->buf + 5, sizeof(n->buf) - 5, fmt, ap);
    va_end(ap);
  }
  return n->buf;
}

void ganomaly_build_encoder(net *nt, int isize, int nz, int nc, int ndf, int extra,
                            int for_d, int first_pad) {
  namer n = { for_d, 0, "" };
  net_conv(nt, nm(&n, "initial-conv-%d-%d", nc, ndf), ndf, 4, 2, first_pad, 0);
  net_leaky_relu(nt, nm(&n, "initial-relu-%d", ndf), 0.2f);
  int csize = isize / 2, cndf = ndf;  /* the layer count, whatever first_pad */
  for(int t = 0; t < extra; t++){
    net_conv(nt, nm(&n, "extra-layers-%d-%d-conv", t, cndf), cndf, 3, 1, 1, 0);
    net_batchnorm(nt, nm(&n, "extra-layers-%d-%d-batchnorm", t, cndf), 1e-5f);
    net_leaky_relu(nt, nm(&n, "extra-layers-%d-%d-relu", t, cndf), 0.2f);
  }
  while( csize > 4 ){
    net_conv(nt, nm(&n, "pyramid-%d-%d-conv", cndf, cndf * 2), cndf * 2, 4, 2, 1, 0);
    net_batchnorm(nt, nm(&n, "pyramid-%d-batchnorm", cndf * 2), 1e-5f);
    net_leaky_relu(nt, nm(&n, "pyramid-%d-relu", cndf * 2), 0.2f);
    cndf *= 2;
    csize /= 2;
  }
  if( for_d ){
    net_conv(nt, "classifier.0", nz, 4, 1, 0, 0);
    net_sigmoid(nt, "classifier.1");
  }else{
    net_conv(nt, nm(&n, "final-%d-%d-conv", cndf, 1), nz, 4, 1, 0, 0);
  }
}

void ganomaly_build_decoder(net *nt, int isize, int nz, int nc, int ngf, int extra) {
  namer n = { 0, 0, "" };
  int cngf = ngf / 2, tisize = 4;
  while( tisize != isize ){ cngf *= 2; tisize *= 2; }
  net_convt(nt, nm(&n, "initial-%d-%d-convt", nz, cngf), cngf, 4, 1, 0, 0);
  net_batchnorm(nt, nm(&n, "initial-%d-batchnorm", cngf), 1e-5f);
  net_relu(nt, nm(&n, "initial-%d-relu", cngf));
  int csize = 4;
  while( csize < isize / 2 ){
    net_convt(nt, nm(&n, "pyramid-%d-%d-convt", cngf, cngf / 2), cngf / 2, 4, 2, 1, 0);
    net_batchnorm(nt, nm(&n, "pyramid-%d-batchnorm", cngf / 2), 1e-5f);
    net_relu(nt, nm(&n, "pyramid-%d-relu", cngf / 2));
    cngf /= 2;
    csize *= 2;
  }
  for(int t = 0; t < extra; t++){
    net_conv(nt, nm(&n, "extra-layers-%d-%d-conv", t, cngf), cngf, 3, 1, 1, 0);
    net_batchnorm(nt, nm(&n, "extra-layers-%d-%d-batchnorm", t, cngf), 1e-5f);
    net_relu(nt, nm(&n, "extra-layers-%d-%d-relu", t, cngf));
  }
  net_convt(nt, nm(&n, "final-%d-%d-convt", cngf, nc), nc, 4, 2, 1, 0);
  net_tanh(nt, nm(&n, "final-%d-tanh", nc));
}

static const char *const ganomaly_keys[] = {"nz", "ngf", "extralayers", "first_pad",
  "lr", "beta1", "beta2", "w_adv", "w_con", "w_enc", NULL};

/* first_pad: 1 (the authors') or 4 (anomalib's), 1 when absent. Other values
** give other map sizes, which no published network uses. */
static int read_first_pad(const cJSON *hp, int *out, anom_err *e) {
  const cJSON *v = hp ? cJSON_GetObjectItemCaseSensitive(hp, "first_pad") : NULL;
  *out = 1;
  if( !v ) return ANOM_OK;
  if( !cJSON_IsNumber(v) )
    return anom_fail(e, ANOM_EINVAL, "ganomaly: 'first_pad' must be 1 (the authors') "
                     "or 4 (anomalib's), found a %s", cJSON_IsString(v) ? "string" : "non-number");
  if( v->valuedouble != 1 && v->valuedouble != 4 )
    return anom_fail(e, ANOM_EINVAL, "ganomaly: 'first_pad' must be 1 (the authors') "
                     "or 4 (anomalib's), found %g", v->valuedouble);
  *out = (int)v->valuedouble;
  return ANOM_OK;
}

/* E1, E2 and D must end in one value per channel (nz x 1 x 1). */
static int check_latent(const net *nt, int nz, anom_err *e) {
  int c, h, w;
  net_out_shape(nt, -1, &c, &h, &w);
  if( c != nz || h != 1 || w != 1 )
    return anom_fail(e, ANOM_EINVAL, "ganomaly: the encoder %s ends in %dx%dx%d, not "
                     "%dx1x1", nt->prefix, c, h, w, nz);
  return ANOM_OK;
}

static int ganomaly_create(anom_model *m, const cJSON *hp, anom_err *e) {
  int rc = hp_check_keys(hp, ganomaly_keys, "ganomaly", "hyper-parameter", e);
  if( rc ) return rc;
  ganomaly *g = anom_calloc(1, sizeof(*g));
  if( !g ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  m->det = g;
  if( (rc = hp_int(hp, "ganomaly", "nz", 100, 1, 4096, &g->nz, e))
      || (rc = hp_int(hp, "ganomaly", "ngf", 64, 1, 1024, &g->ngf, e))
      || (rc = hp_int(hp, "ganomaly", "extralayers", 0, 0, 16, &g->extralayers, e))
      || (rc = read_first_pad(hp, &g->first_pad, e))
      || (rc = hp_num(hp, "ganomaly", "lr", 2e-4, 1e-12, 1, &g->lr, e))
      || (rc = hp_num(hp, "ganomaly", "beta1", 0.5, 0, 0.999999, &g->beta1, e))
      || (rc = hp_num(hp, "ganomaly", "beta2", 0.999, 0, 0.999999999, &g->beta2, e))
      || (rc = hp_num(hp, "ganomaly", "w_adv", 1, 0, 1e6, &g->w_adv, e))
      || (rc = hp_num(hp, "ganomaly", "w_con", 50, 0, 1e6, &g->w_con, e))
      || (rc = hp_num(hp, "ganomaly", "w_enc", 1, 0, 1e6, &g->w_enc, e)) )
    return rc;
  int isize = m->width;
  /* the DCGAN builders halve the side down to 4 and double it back up */
  if( m->width != m->height || isize < 16 || (isize & (isize - 1)) )
    return anom_fail(e, ANOM_EINVAL, "ganomaly: the input must be square with a "
                     "side of 16, 32, 64... (a power of two), found %dx%d", m->width,
                     m->height);
  if( g->first_pad == 4 && isize < 32 )
    return anom_fail(e, ANOM_EINVAL, "ganomaly: 'first_pad' 4 needs a side of 32 or "
                     "more (at %d the encoder would end in 2x2, not 1x1)", isize);
  int nc = m->channels;
  net nt;
  net_init(&nt, "netg.encoder1.", nc, isize, isize);
  ganomaly_build_encoder(&nt, isize, g->nz, nc, g->ngf, g->extralayers, 0, g->first_pad);
  if( (rc = model_add_net(m, &nt, e)) ) return rc;
  g->enc1 = m->nets[m->nnets - 1];
  if( (rc = check_latent(g->enc1, g->nz, e)) ) return rc;

  net_init(&nt, "netg.decoder.", g->nz, 1, 1);
  ganomaly_build_decoder(&nt, isize, g->nz, nc, g->ngf, g->extralayers);
  if( (rc = model_add_net(m, &nt, e)) ) return rc;
  g->dec = m->nets[m->nnets - 1];

  net_init(&nt, "netg.encoder2.", nc, isize, isize);
  ganomaly_build_encoder(&nt, isize, g->nz, nc, g->ngf, g->extralayers, 0, g->first_pad);
  if( (rc = model_add_net(m, &nt, e)) ) return rc;
  g->enc2 = m->nets[m->nnets - 1];

  net_init(&nt, "netd.", nc, isize, isize);
  ganomaly_build_encoder(&nt, isize, 1, nc, g->ngf, g->extralayers, 1, g->first_pad);
  if( (rc = model_add_net(m, &nt, e)) ) return rc;
  g->netd = m->nets[m->nnets - 1];
  if( (rc = check_latent(g->netd, 1, e)) ) return rc;
  g->netd_features = g->netd->nlayers - 2;
  return ANOM_OK;
}

static cJSON *ganomaly_hparams(const anom_model *m) {
  const ganomaly *g = m->det;
  cJSON *j = cJSON_CreateObject();
  if( !j ) return NULL;
  cJSON_AddNumberToObject(j, "nz", g->nz);
  cJSON_AddNumberToObject(j, "ngf", g->ngf);
  cJSON_AddNumberToObject(j, "extralayers", g->extralayers);
  /* only when not the authors' 1: files without it read as 1 */
  if( g->first_pad != 1 ) cJSON_AddNumberToObject(j, "first_pad", g->first_pad);
  cJSON_AddNumberToObject(j, "lr", g->lr);
  cJSON_AddNumberToObject(j, "beta1", g->beta1);
  cJSON_AddNumberToObject(j, "beta2", g->beta2);
  cJSON_AddNumberToObject(j, "w_adv", g->w_adv);
  cJSON_AddNumberToObject(j, "w_con", g->w_con);
  cJSON_AddNumberToObject(j, "w_enc", g->w_enc);
  return j;
}

static size_t max3(size_t a, size_t b, size_t c) {
  size_t m = a > b ? a : b;
  return m > c ? m : c;
}

static size_t ganomaly_work_floats(const anom_model *m, int n) {
  const ganomaly *g = m->det;
  size_t img = (size_t)m->channels * m->height * m->width;
  return (size_t)n * (2 * (size_t)g->nz + img)
       + max3(net_scratch_floats(g->enc1, n), net_scratch_floats(g->dec, n),
              net_scratch_floats(g->enc2, n));
}

static int ganomaly_score(const anom_model *m, int n, const float *x, float *work,
                          score_result *out, float *recon, const cJSON *opts,
                          anom_err *e) {
  const ganomaly *g = m->det;
  if( opts && opts->child )
    return anom_fail(e, ANOM_EINVAL, "ganomaly takes no scoring options, found '%s'",
                     opts->child->string);
  size_t img = (size_t)m->channels * m->height * m->width;
  float *z = work, *z2 = z + (size_t)n * g->nz, *xh = z2 + (size_t)n * g->nz;
  float *scratch = xh + (size_t)n * img;
  net_forward(g->enc1, 0, g->enc1->nlayers, n, x, z, scratch);
  net_forward(g->dec, 0, g->dec->nlayers, n, z, xh, scratch);
  net_forward(g->enc2, 0, g->enc2->nlayers, n, xh, z2, scratch);
  for(int i = 0; i < n; i++){
    const float *zi = z + (size_t)i * g->nz, *z2i = z2 + (size_t)i * g->nz;
    const float *xi = x + (size_t)i * img, *xhi = xh + (size_t)i * img;
    double lat = 0, l1 = 0, l2 = 0;
    for(int k = 0; k < g->nz; k++){
      double d = (double)zi[k] - z2i[k];
      lat += d * d;
    }
    for(size_t k = 0; k < img; k++){
      double d = (double)xi[k] - xhi[k];
      l1 += fabs(d);
      l2 += d * d;
    }
    score_result *r = &out[i];
    r->score = lat / g->nz;
    r->nparts = 3;
    r->part_name[0] = "latent";   r->part[0] = r->score;
    r->part_name[1] = "recon_l1"; r->part[1] = l1 / (double)img;
    r->part_name[2] = "recon_l2"; r->part[2] = l2 / (double)img;
  }
  if( recon ) memcpy(recon, xh, (size_t)n * img * sizeof(float));
  return ANOM_OK;
}


/* ---- training ----------------------------------------------------------- */

typedef struct gan_train {
  int max_batch;
  float *grads, *m, *v;          /* like m->block's parameters */
  adam opt_g, opt_d;
  size_t g_count, d_off, d_count;/* G params [0, g_count), D [d_off, +d_count) */
  net_cache c_e1, c_dec, c_e2, c_dreal, c_dfake;
  float *dxh, *dz, *dz2, *df, *dlogit;  /* gradient buffers */
  float *scratch;
  rng *r;
} gan_train;

static const char *const ganomaly_losses[] = {"g", "g_adv", "g_con", "g_enc",
                                              "d", "d_real", "d_fake", NULL};

static void ganomaly_train_end(anom_model *m, void *state) {
  (void)m;
  gan_train *t = state;
  if( !t ) return;
  net_cache_free(&t->c_e1);
  net_cache_free(&t->c_dec);
  net_cache_free(&t->c_e2);
  net_cache_free(&t->c_dreal);
  net_cache_free(&t->c_dfake);
  anom_free(t->grads);
  anom_free(t->m);
  anom_free(t->v);
  anom_free(t->dxh);
  anom_free(t->dz);
  anom_free(t->dz2);
  anom_free(t->df);
  anom_free(t->dlogit);
  anom_free(t->scratch);
  anom_free(t);
}


static int ganomaly_train_begin(anom_model *m, int max_batch, rng *r, void **state,
                                anom_err *e) {
  ganomaly *g = m->det;
  gan_train *t = anom_calloc(1, sizeof(*t));
  *state = t;
  if( !t ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  t->max_batch = max_batch;
  t->r = r;
  net *nets[4] = {g->enc1, g->dec, g->enc2, g->netd};
  for(int i = 0; i < 4; i++) net_init_dcgan(nets[i], r);
  t->g_count = (size_t)(g->netd->params - m->block);
  t->d_off = t->g_count;
  t->d_count = g->netd->nparams;
  t->opt_g = (adam){ (float)g->lr, (float)g->beta1, (float)g->beta2, 1e-8f, 0 };
  t->opt_d = t->opt_g;
  size_t img = (size_t)m->channels * m->height * m->width, n = (size_t)max_batch;
  size_t scratch = 0;
  for(int i = 0; i < 4; i++){
    size_t s = net_train_scratch_floats(nets[i], max_batch);
    if( s > scratch ) scratch = s;
  }
  t->grads = anom_calloc(m->nparams, sizeof(float));
  t->m = anom_calloc(m->nparams, sizeof(float));
  t->v = anom_calloc(m->nparams, sizeof(float));
  t->dxh = anom_malloc(n * img * sizeof(float));
  t->dz = anom_malloc(n * g->nz * sizeof(float));
  t->dz2 = anom_malloc(n * g->nz * sizeof(float));
  t->df = anom_malloc(n * net_out_floats(g->netd, g->netd_features - 1) * sizeof(float));
  t->dlogit = anom_malloc(n * sizeof(float));
  t->scratch = anom_malloc(scratch * sizeof(float));
  if( !t->grads || !t->m || !t->v || !t->dxh || !t->dz || !t->dz2 || !t->df
      || !t->dlogit || !t->scratch )
    return anom_fail(e, ANOM_ENOMEM, "out of memory for training state");
  int rc;
  if( (rc = net_cache_init(&t->c_e1, g->enc1, max_batch, e))
      || (rc = net_cache_init(&t->c_dec, g->dec, max_batch, e))
      || (rc = net_cache_init(&t->c_e2, g->enc2, max_batch, e))
      || (rc = net_cache_init(&t->c_dreal, g->netd, max_batch, e))
      || (rc = net_cache_init(&t->c_dfake, g->netd, max_batch, e)) )
    return rc;
  return ANOM_OK;
}

static float *grads_of(const anom_model *m, gan_train *t, const net *nt) {
  return t->grads + (nt->params - m->block);
}

static int ganomaly_train_step(anom_model *m, void *state, int n, const float *x,
                               double *losses, anom_err *e) {
  ganomaly *g = m->det;
  gan_train *t = state;
  if( n < 2 || n > t->max_batch )
    return anom_fail(e, ANOM_EINVAL, "ganomaly: a training batch needs 2 to %d "
                     "images, found %d", t->max_batch, n);
  net *d = g->netd;
  int nf = g->netd_features;                /* D layers before the classifier */
  size_t img = (size_t)m->channels * m->height * m->width;
  size_t fsize = (size_t)n * net_out_floats(d, nf - 1);
  size_t zsize = (size_t)n * g->nz;

  /* forward_g and forward_d */
  net_forward_train(g->enc1, n, x, &t->c_e1, 1, t->scratch);
  const float *z = net_cache_out(&t->c_e1, g->enc1, -1);
  net_forward_train(g->dec, n, z, &t->c_dec, 1, t->scratch);
  const float *xh = net_cache_out(&t->c_dec, g->dec, -1);
  net_forward_train(g->enc2, n, xh, &t->c_e2, 1, t->scratch);
  const float *z2 = net_cache_out(&t->c_e2, g->enc2, -1);
  net_forward_train(d, n, x, &t->c_dreal, 1, t->scratch);
  net_forward_train(d, n, xh, &t->c_dfake, 1, t->scratch);

  /* G step. The reference's second pair of D calls sees the same weights
  ** and inputs, so it only moves the running statistics again. */
  net_replay_running(d, n, &t->c_dreal);
  net_replay_running(d, n, &t->c_dfake);
  memset(t->grads, 0, t->g_count * sizeof(float));
  memset(t->df, 0, fsize * sizeof(float));
  memset(t->dxh, 0, (size_t)n * img * sizeof(float));
  memset(t->dz, 0, zsize * sizeof(float));
  memset(t->dz2, 0, zsize * sizeof(float));
  const float *f_real = net_cache_out(&t->c_dreal, d, nf - 1);
  const float *f_fake = net_cache_out(&t->c_dfake, d, nf - 1);
  double adv = l2_loss(t->df, f_fake, f_real, fsize, (float)g->w_adv);
  net_backward(d, n, xh, &t->c_dfake, nf, t->df, t->dxh, NULL, t->scratch);
  double con = l1_loss(t->dxh, xh, x, (size_t)n * img, (float)g->w_con);
  double enc = l2_loss(t->dz2, z2, z, zsize, (float)g->w_enc);
  for(size_t i = 0; i < zsize; i++) t->dz[i] = -t->dz2[i];   /* z is not detached */
  net_backward(g->enc2, n, xh, &t->c_e2, g->enc2->nlayers, t->dz2, t->dxh,
               grads_of(m, t, g->enc2), t->scratch);
  net_backward(g->dec, n, z, &t->c_dec, g->dec->nlayers, t->dxh, t->dz,
               grads_of(m, t, g->dec), t->scratch);
  net_backward(g->enc1, n, x, &t->c_e1, g->enc1->nlayers, t->dz, NULL,
               grads_of(m, t, g->enc1), t->scratch);
  adam_step(&t->opt_g, m->block, t->grads, t->m, t->v, t->g_count);

  /* D step on the logits (the classifier conv's output, before sigmoid) */
  float *gd = grads_of(m, t, d);
  memset(gd, 0, t->d_count * sizeof(float));
  int logit_layer = d->nlayers - 2;
  double err_real = 0, err_fake = 0;
  const net_cache *caches[2] = {&t->c_dreal, &t->c_dfake};
  const float *inputs[2] = {x, xh};
  for(int k = 0; k < 2; k++){
    const float *logit = net_cache_out(caches[k], d, logit_layer);
    memset(t->dlogit, 0, (size_t)n * sizeof(float));
    double err = bce_logits_loss(t->dlogit, logit, k == 0 ? 1.0f : 0.0f, (size_t)n, 0.5f);
    if( k == 0 ) err_real = err; else err_fake = err;
    net_backward(d, n, inputs[k], caches[k], logit_layer + 1, t->dlogit, NULL, gd,
                 t->scratch);
  }
  adam_step(&t->opt_d, m->block + t->d_off, gd, t->m + t->d_off, t->v + t->d_off,
            t->d_count);
  double err_d = 0.5 * (err_real + err_fake);
  if( err_d < 1e-5 ) net_init_dcgan(d, t->r);

  losses[0] = g->w_adv * adv + g->w_con * con + g->w_enc * enc;
  losses[1] = adv;
  losses[2] = con;
  losses[3] = enc;
  losses[4] = err_d;
  losses[5] = err_real;
  losses[6] = err_fake;
  return ANOM_OK;
}

const detector_ops ganomaly_ops = {
  "ganomaly",
  ganomaly_create,
  NULL,                  /* destroy: m->det owns nothing */
  ganomaly_hparams,
  ganomaly_work_floats,
  ganomaly_score,
  NULL,                  /* map: the residual */
  ganomaly_losses,
  ganomaly_train_begin,
  ganomaly_train_step,
  ganomaly_train_end,
  NULL,                 /* train_finish */
  0,                    /* batch: 64 */
  NULL,                  /* train_epoch */
};
