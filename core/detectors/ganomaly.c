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
** Hyper-parameters: nz (100), ngf (64), extralayers (0); the input must be
** square with a side that is a multiple of 16.
*/
#include "../model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct ganomaly {
  int nz, ngf, extralayers;
  net *enc1, *dec, *enc2, *netd;  /* owned by the model */
  int netd_features;              /* layers of netd before the classifier */
} ganomaly;

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

static void build_encoder(net *nt, int isize, int nz, int nc, int ndf, int extra,
                          int for_d) {
  namer n = { for_d, 0, "" };
  net_conv(nt, nm(&n, "initial-conv-%d-%d", nc, ndf), ndf, 4, 2, 1, 0);
  net_leaky_relu(nt, nm(&n, "initial-relu-%d", ndf), 0.2f);
  int csize = isize / 2, cndf = ndf;
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

static void build_decoder(net *nt, int isize, int nz, int nc, int ngf, int extra) {
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

/* Read an integer hyper-parameter in [lo, hi], default def. */
static int hp_int(const cJSON *hp, const char *key, int def, int lo, int hi,
                  int *out, anom_err *e) {
  const cJSON *v = hp ? cJSON_GetObjectItemCaseSensitive(hp, key) : NULL;
  if( !v ){ *out = def; return ANOM_OK; }
  if( !cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble)
      || v->valuedouble < lo || v->valuedouble > hi )
    return anom_fail(e, ANOM_EINVAL, "ganomaly: '%s' must be an integer from %d "
                     "to %d", key, lo, hi);
  *out = (int)v->valuedouble;
  return ANOM_OK;
}

static int ganomaly_create(anom_model *m, const cJSON *hp, anom_err *e) {
  static const char *known[] = {"nz", "ngf", "extralayers"};
  const cJSON *it;
  cJSON_ArrayForEach(it, hp){
    size_t k = 0;
    while( k < sizeof(known) / sizeof(known[0]) && strcmp(known[k], it->string) ) k++;
    if( k == sizeof(known) / sizeof(known[0]) )
      return anom_fail(e, ANOM_EINVAL, "ganomaly: unknown hyper-parameter '%s' "
                       "(known: nz, ngf, extralayers)", it->string);
  }
  ganomaly *g = anom_calloc(1, sizeof(*g));
  if( !g ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  m->det = g;
  int rc;
  if( (rc = hp_int(hp, "nz", 100, 1, 4096, &g->nz, e))
      || (rc = hp_int(hp, "ngf", 64, 1, 1024, &g->ngf, e))
      || (rc = hp_int(hp, "extralayers", 0, 0, 16, &g->extralayers, e)) )
    return rc;
  int isize = m->width;
  if( m->width != m->height || isize % 16 || isize < 16 )
    return anom_fail(e, ANOM_EINVAL, "ganomaly: the input must be square with a "
                     "side that is a multiple of 16, found %dx%d", m->width, m->height);
  int nc = m->channels;
  net nt;
  net_init(&nt, "netg.encoder1.", nc, isize, isize);
  build_encoder(&nt, isize, g->nz, nc, g->ngf, g->extralayers, 0);
  if( (rc = model_add_net(m, &nt, e)) ) return rc;
  g->enc1 = m->nets[m->nnets - 1];

  net_init(&nt, "netg.decoder.", g->nz, 1, 1);
  build_decoder(&nt, isize, g->nz, nc, g->ngf, g->extralayers);
  if( (rc = model_add_net(m, &nt, e)) ) return rc;
  g->dec = m->nets[m->nnets - 1];

  net_init(&nt, "netg.encoder2.", nc, isize, isize);
  build_encoder(&nt, isize, g->nz, nc, g->ngf, g->extralayers, 0);
  if( (rc = model_add_net(m, &nt, e)) ) return rc;
  g->enc2 = m->nets[m->nnets - 1];

  net_init(&nt, "netd.", nc, isize, isize);
  build_encoder(&nt, isize, 1, nc, g->ngf, g->extralayers, 1);
  if( (rc = model_add_net(m, &nt, e)) ) return rc;
  g->netd = m->nets[m->nnets - 1];
  g->netd_features = g->netd->nlayers - 2;
  return ANOM_OK;
}

static void ganomaly_destroy(anom_model *m) {
  anom_free(m->det);
  m->det = NULL;
}

static cJSON *ganomaly_hparams(const anom_model *m) {
  const ganomaly *g = m->det;
  cJSON *j = cJSON_CreateObject();
  if( !j ) return NULL;
  cJSON_AddNumberToObject(j, "nz", g->nz);
  cJSON_AddNumberToObject(j, "ngf", g->ngf);
  cJSON_AddNumberToObject(j, "extralayers", g->extralayers);
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
                          score_result *out, float *recon, anom_err *e) {
  (void)e;
  const ganomaly *g = m->det;
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

const detector_ops ganomaly_ops = {
  "ganomaly",
  ganomaly_create,
  ganomaly_destroy,
  ganomaly_hparams,
  ganomaly_work_floats,
  ganomaly_score,
};
