/*
** skipganomaly.c - Skip-GANomaly (Akcay et al., IJCNN 2019), method
** 'skipganomaly'.
**
** The generator is a U-Net (pix2pix's UnetGenerator with batch norm): an
** encoder of stride-2 convolutions down to 1x1 and a decoder of stride-2
** transposed convolutions back up, each decoder level also seeing the
** encoder's activations of the same size (a skip connection). The
** discriminator D ends in a feature vector f (nz x 1 x 1) and a classifier.
**
**   score(x) = score_w * rec + (1 - score_w) * lat             (the authors')
**   parts:     rec = mean (x - x_hat)^2, lat = mean over nz of (f(x) - f(x_hat))^2
**   per-call option "score_w" in [0, 1] overrides the weight.
**
** Networks, as samet-akcay/skip-ganomaly lib/models/networks.py builds them
** (tensor names are its state_dict names under "netg." and "netd."). With
** L = log2(isize) levels and C_b = ngf * min(2^b, 8):
**   down:  Conv(4,2,1) nc->C_0 (level 0, no norm);  levels 1..L-2:
**          LReLU 0.2, Conv(4,2,1) C_(b-1)->C_b, BN;  innermost level L-1:
**          LReLU, Conv(4,2,1) -> C_(L-1) at 1x1, ReLU, ConvT(4,2,1) back, BN.
**   up:    level b (L-2..1): ReLU, ConvT(4,2,1) 2 C_b -> C_(b-1), BN, on the
**          concatenation [skip, up] of level b+1; level 0: ReLU,
**          ConvT(4,2,1) 2 C_0 -> nc (with bias), tanh.
**   The skip of level b is LeakyReLU(a_(b-1)), not a_(b-1): pix2pix's
**   in-place LeakyReLU overwrites the tensor that is then concatenated.
**   All convolutions but the last are bias-free.
**   D (BasicDiscriminator): "feat" = Conv(4,2,1) nc->ndf, LReLU; while
**   size > 4: Conv(4,2,1) doubling, BN, LReLU; Conv(4,1,0) -> nz = f.
**   "clas" = Conv(3,1,1) nz->1, sigmoid.
**
** The nets (all named "netg.model." + the module path): the encoder path,
** with the innermost level's way back up, is a chain of sequential nets cut
** after the LeakyReLUs of the deepest levels; each decoder level is one net;
** D is one. The skips are the encoder nets' LeakyReLU outputs. A skip inside
** an encoder net costs one more backward pass over the layers before it
** (net_backward starts at a net's end), a skip at a cut costs nothing, so
** the encoder path is cut into SG_MAX_DOWN (3) nets at the deepest levels.
** Inputs are 32, 64 or 128 (SG_MAX_LEVELS).
**
** Hyper-parameters (the authors' defaults): nz 100, ngf 64, ndf 64,
** lr 2e-4, beta1 0.5, beta2 0.999, w_adv 1, w_con 50, w_lat 1, score_w 0.9,
** noise 0 (standard deviation of Gaussian noise added to G's input in
** training; see docs/skipganomaly.md).
**
** Training, per batch, as the authors' optimize_params:
**   forward: x_hat = G(x + noise);  D(x), D(x_hat)
**   G step:  w_adv * BCE(D(x_hat), 1) + w_con * mean |x - x_hat|
**          + w_lat * mean (f(x_hat) - f(x))^2;  Adam on G
**   D step:  BCE(D(x), 1) + BCE(D(x_hat), 0) + w_lat * mean (f(x_hat) - f(x))^2
**            (the authors add G's latent term to D's loss too; kept), Adam on D
**   D is re-initialised when its loss falls under 1e-5. Batch norm runs in
**   training mode; D's running statistics take three updates a batch (x,
**   x_hat, x_hat again), G's one.
**
** For tests, skipganomaly_unet_gradients() runs the U-Net's training
** forward and backward on its own (see its comment below).
*/
#include "../hparams.h"
#include "../model.h"
#include "../optim.h"
#include "../rng.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#define SG_MAX_LEVELS 7            /* isize 128 */
#define SG_MAX_DOWN 3              /* encoder nets */

typedef struct skipganomaly {
  int nz, ngf, ndf;
  double lr, beta1, beta2, w_adv, w_con, w_lat, score_w, noise;
  int levels;                      /* L = log2(isize) */
  int ndown;
  net *down[SG_MAX_DOWN];          /* encoder path + innermost level, in order */
  net *up[SG_MAX_LEVELS - 1];      /* up[k]: decoder level k, k = 0..L-2 */
  net *netd;
  /* the skip of level b (1..L-1): layer skip_layer[b] of down[skip_net[b]] */
  int skip_net[SG_MAX_LEVELS], skip_layer[SG_MAX_LEVELS];
} skipganomaly;

/* Layer name "model[.1.model[.3.model]*].<j>" of level b's j-th module,
** under the prefix "netg.model." (pix2pix's nesting). */
static const char *unet_name(char *buf, int b, int j) {
  int k = snprintf(buf, NET_NAME_MAX, "model");
  if( b >= 1 ) k += snprintf(buf + k, NET_NAME_MAX - k, ".1.model");
  for(int i = 1; i < b; i++) k += snprintf(buf + k, NET_NAME_MAX - k, ".3.model");
  snprintf(buf + k, NET_NAME_MAX - k, ".%d", j);
  return buf;
}

static int level_ch(int ngf, int b) {
  return ngf * (b < 3 ? 1 << b : 8);
}

/* Cut the encoder net after the LeakyReLU of level b (a skip): declare it
** and start the next one on its output. */
static int cut_down(anom_model *m, skipganomaly *g, net *nt, anom_err *e) {
  int c, h, w, rc;
  net_out_shape(nt, -1, &c, &h, &w);
  if( (rc = model_add_net(m, nt, e)) ) return rc;
  g->down[g->ndown++] = m->nets[m->nnets - 1];
  net_init(nt, "netg.model.", c, h, w);
  return ANOM_OK;
}

/* The encoder nets: cuts after the skips of levels L-ndown+1 .. L-1. */
static int build_down(anom_model *m, skipganomaly *g, int ndown, anom_err *e) {
  char nm[NET_NAME_MAX];
  int L = g->levels, rc;
  net nt;
  net_init(&nt, "netg.model.", m->channels, m->height, m->width);
  net_conv(&nt, unet_name(nm, 0, 0), level_ch(g->ngf, 0), 4, 2, 1, 0);
  for(int b = 1; b < L; b++){
    g->skip_net[b] = g->ndown;
    g->skip_layer[b] = nt.nlayers;
    net_leaky_relu(&nt, unet_name(nm, b, 0), 0.2f);
    if( b >= L - ndown + 1 && (rc = cut_down(m, g, &nt, e)) ) return rc;
    net_conv(&nt, unet_name(nm, b, 1), level_ch(g->ngf, b), 4, 2, 1, 0);
    if( b < L - 1 ){
      net_batchnorm(&nt, unet_name(nm, b, 2), 1e-5f);
    }else{
      net_relu(&nt, unet_name(nm, b, 2));
      net_convt(&nt, unet_name(nm, b, 3), level_ch(g->ngf, b - 1), 4, 2, 1, 0);
      net_batchnorm(&nt, unet_name(nm, b, 4), 1e-5f);
    }
  }
  if( (rc = model_add_net(m, &nt, e)) ) return rc;
  g->down[g->ndown++] = m->nets[m->nnets - 1];
  return ANOM_OK;
}

/* Decoder level k: input (2 C_k, side, side), side = isize / 2^(k+1). */
static void build_up(skipganomaly *g, net *nt, int k, int nc) {
  char nm[NET_NAME_MAX];
  if( k == 0 ){
    net_relu(nt, unet_name(nm, 0, 2));
    net_convt(nt, unet_name(nm, 0, 3), nc, 4, 2, 1, 1);
    net_tanh(nt, unet_name(nm, 0, 4));
  }else{
    net_relu(nt, unet_name(nm, k, 4));
    net_convt(nt, unet_name(nm, k, 5), level_ch(g->ngf, k - 1), 4, 2, 1, 0);
    net_batchnorm(nt, unet_name(nm, k, 6), 1e-5f);
  }
}

static void build_netd(skipganomaly *g, net *nt, int isize, int nc) {
  char nm[NET_NAME_MAX];
  snprintf(nm, sizeof(nm), "feat.initial-conv-%d-%d", nc, g->ndf);
  net_conv(nt, nm, g->ndf, 4, 2, 1, 0);
  snprintf(nm, sizeof(nm), "feat.initial-relu-%d", g->ndf);
  net_leaky_relu(nt, nm, 0.2f);
  int csize = isize / 2, cndf = g->ndf;
  while( csize > 4 ){
    snprintf(nm, sizeof(nm), "feat.pyramid-%d-%d-conv", cndf, cndf * 2);
    net_conv(nt, nm, cndf * 2, 4, 2, 1, 0);
    snprintf(nm, sizeof(nm), "feat.pyramid-%d-batchnorm", cndf * 2);
    net_batchnorm(nt, nm, 1e-5f);
    snprintf(nm, sizeof(nm), "feat.pyramid-%d-relu", cndf * 2);
    net_leaky_relu(nt, nm, 0.2f);
    cndf *= 2;
    csize /= 2;
  }
  snprintf(nm, sizeof(nm), "feat.final-%d-1-conv", cndf);
  net_conv(nt, nm, g->nz, 4, 1, 0, 0);
  net_conv(nt, "clas.classifier", 1, 3, 1, 1, 0);
  net_sigmoid(nt, "clas.Sigmoid");
}

static int skipganomaly_create(anom_model *m, const cJSON *hp, anom_err *e) {
  static const char *const known[] = {"nz", "ngf", "ndf", "lr", "beta1", "beta2",
                                      "w_adv", "w_con", "w_lat", "score_w", "noise",
                                      NULL};
  const char *me = "skipganomaly";
  int rc;
  if( (rc = hp_check_keys(hp, known, me, "hyper-parameter", e)) ) return rc;
  skipganomaly *g = anom_calloc(1, sizeof(*g));
  if( !g ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  m->det = g;
  if( (rc = hp_int(hp, me, "nz", 100, 1, 4096, &g->nz, e))
      || (rc = hp_int(hp, me, "ngf", 64, 1, 1024, &g->ngf, e))
      || (rc = hp_int(hp, me, "ndf", 64, 1, 1024, &g->ndf, e))
      || (rc = hp_num(hp, me, "lr", 2e-4, 1e-12, 1, &g->lr, e))
      || (rc = hp_num(hp, me, "beta1", 0.5, 0, 0.999999, &g->beta1, e))
      || (rc = hp_num(hp, me, "beta2", 0.999, 0, 0.999999999, &g->beta2, e))
      || (rc = hp_num(hp, me, "w_adv", 1, 0, 1e6, &g->w_adv, e))
      || (rc = hp_num(hp, me, "w_con", 50, 0, 1e6, &g->w_con, e))
      || (rc = hp_num(hp, me, "w_lat", 1, 0, 1e6, &g->w_lat, e))
      || (rc = hp_num(hp, me, "score_w", 0.9, 0, 1, &g->score_w, e))
      || (rc = hp_num(hp, me, "noise", 0, 0, 10, &g->noise, e)) )
    return rc;
  int isize = m->width;
  if( m->width != m->height || (isize != 32 && isize != 64 && isize != 128) )
    return anom_fail(e, ANOM_EINVAL, "skipganomaly: the input must be square "
                     "with a side of 32, 64 or 128, found %dx%d", m->width, m->height);
  g->levels = isize == 32 ? 5 : isize == 64 ? 6 : 7;
  int nc = m->channels, L = g->levels;

  /* MODEL_MAX_NETS nets: the decoder levels and D first, the rest encoder */
  int ndown = MODEL_MAX_NETS - L;
  if( ndown > L - 1 ) ndown = L - 1;
  if( ndown > SG_MAX_DOWN ) ndown = SG_MAX_DOWN;
  if( (rc = build_down(m, g, ndown, e)) ) return rc;
  net nt;
  for(int k = L - 2; k >= 0; k--){
    int side = isize >> (k + 1);
    net_init(&nt, "netg.model.", 2 * level_ch(g->ngf, k), side, side);
    build_up(g, &nt, k, nc);
    if( (rc = model_add_net(m, &nt, e)) ) return rc;
    g->up[k] = m->nets[m->nnets - 1];
  }
  net_init(&nt, "netd.", nc, isize, isize);
  build_netd(g, &nt, isize, nc);
  if( (rc = model_add_net(m, &nt, e)) ) return rc;
  g->netd = m->nets[m->nnets - 1];
  return ANOM_OK;
}

static cJSON *skipganomaly_hparams(const anom_model *m) {
  const skipganomaly *g = m->det;
  cJSON *j = cJSON_CreateObject();
  if( !j ) return NULL;
  cJSON_AddNumberToObject(j, "nz", g->nz);
  cJSON_AddNumberToObject(j, "ngf", g->ngf);
  cJSON_AddNumberToObject(j, "ndf", g->ndf);
  cJSON_AddNumberToObject(j, "lr", g->lr);
  cJSON_AddNumberToObject(j, "beta1", g->beta1);
  cJSON_AddNumberToObject(j, "beta2", g->beta2);
  cJSON_AddNumberToObject(j, "w_adv", g->w_adv);
  cJSON_AddNumberToObject(j, "w_con", g->w_con);
  cJSON_AddNumberToObject(j, "w_lat", g->w_lat);
  cJSON_AddNumberToObject(j, "score_w", g->score_w);
  cJSON_AddNumberToObject(j, "noise", g->noise);
  return j;
}

static size_t shape_floats(const net *nt, int i) {
  int c, h, w;
  net_out_shape(nt, i, &c, &h, &w);
  return (size_t)c * h * w;
}

static size_t in_floats(const net *nt) {
  return (size_t)nt->c * nt->h * nt->w;
}

/* Floats of one sample of the skip of level b. */
static size_t skip_size(const skipganomaly *g, int b) {
  return shape_floats(g->down[g->skip_net[b]], g->skip_layer[b]);
}

/* Is the skip of level b the output of its encoder net (a cut)? */
static int skip_at_cut(const skipganomaly *g, int b) {
  return g->skip_layer[b] == g->down[g->skip_net[b]]->nlayers - 1;
}

/* The largest input or output of one sample over G's nets. */
static size_t unet_max_floats(const skipganomaly *g) {
  size_t mx = shape_floats(g->down[g->ndown - 1], -1);
  for(int k = 0; k < g->levels - 1; k++){
    if( in_floats(g->up[k]) > mx ) mx = in_floats(g->up[k]);
    if( shape_floats(g->up[k], -1) > mx ) mx = shape_floats(g->up[k], -1);
  }
  return mx;
}

/* Floats of all skips for n images. */
static size_t skip_floats(const skipganomaly *g, int n) {
  size_t s = 0;
  for(int b = 1; b < g->levels; b++)
    s += skip_size(g, b);
  return s * (size_t)n;
}

static size_t max_scratch(const skipganomaly *g, int n, int train) {
  size_t s = 0;
  const net *nets[SG_MAX_DOWN + SG_MAX_LEVELS];
  int nn = 0;
  for(int i = 0; i < g->ndown; i++) nets[nn++] = g->down[i];
  nets[nn++] = g->netd;
  for(int k = 0; k < g->levels - 1; k++) nets[nn++] = g->up[k];
  for(int i = 0; i < nn; i++){
    size_t t = train ? net_train_scratch_floats(nets[i], n) : net_scratch_floats(nets[i], n);
    if( t > s ) s = t;
  }
  return s;
}

static size_t skipganomaly_work_floats(const anom_model *m, int n) {
  const skipganomaly *g = m->det;
  size_t img = (size_t)m->channels * m->height * m->width;
  return (size_t)n * (img + 2 * (size_t)g->nz) + skip_floats(g, n)
       + 3 * (size_t)n * unet_max_floats(g) + max_scratch(g, n, 0);
}

/* Inference U-Net: x (n, C, H, W) -> xh. work: skips, 3 buffers of
** unet_max_floats, scratch. */
static void unet_forward(const skipganomaly *g, int n, const float *x, float *xh,
                         float *work) {
  int L = g->levels;
  size_t mx = (size_t)n * unet_max_floats(g);
  float *skip[SG_MAX_LEVELS];
  float *p = work;
  for(int b = 1; b < L; b++){
    skip[b] = p;
    p += (size_t)n * skip_size(g, b);
  }
  float *u = p, *u2 = p + mx, *cat = p + 2 * mx, *scratch = p + 3 * mx;
  const float *cur = x;
  int b = 1;
  for(int s = 0; s < g->ndown; s++){
    const net *d = g->down[s];
    int from = 0;
    for(; b < L && g->skip_net[b] == s; b++){
      net_forward(d, from, g->skip_layer[b] + 1, n, cur, skip[b], scratch);
      from = g->skip_layer[b] + 1;
      cur = skip[b];
    }
    if( from < d->nlayers ) net_forward(d, from, d->nlayers, n, cur, u, scratch);
  }
  for(int k = L - 2; k >= 0; k--){
    int c, h, w;
    net_out_shape(g->down[g->skip_net[k + 1]], g->skip_layer[k + 1], &c, &h, &w);
    concat_forward(n, c, c, h * w, cat, skip[k + 1], u);
    const net *up = g->up[k];
    net_forward(up, 0, up->nlayers, n, cat, k == 0 ? xh : u2, scratch);
    float *t = u; u = u2; u2 = t;
  }
}

static int skipganomaly_score(const anom_model *m, int n, const float *x,
                              float *work, score_result *out, float *recon,
                              const cJSON *opts, anom_err *e) {
  const skipganomaly *g = m->det;
  static const char *const known[] = {"score_w", NULL};
  double w;
  int rc;
  if( (rc = hp_check_keys(opts, known, "skipganomaly", "scoring option", e))
      || (rc = hp_num(opts, "skipganomaly", "score_w", g->score_w, 0, 1, &w, e)) )
    return rc;
  size_t img = (size_t)m->channels * m->height * m->width;
  float *xh = work, *fx = xh + (size_t)n * img, *fxh = fx + (size_t)n * g->nz;
  float *rest = fxh + (size_t)n * g->nz;
  unet_forward(g, n, x, xh, rest);
  const net *d = g->netd;
  int nf = d->nlayers - 2;
  net_forward(d, 0, nf, n, x, fx, rest);
  net_forward(d, 0, nf, n, xh, fxh, rest);
  for(int i = 0; i < n; i++){
    const float *xi = x + (size_t)i * img, *xhi = xh + (size_t)i * img;
    const float *fi = fx + (size_t)i * g->nz, *fhi = fxh + (size_t)i * g->nz;
    double rec = 0, lat = 0;
    for(size_t k = 0; k < img; k++){
      double dd = (double)xi[k] - xhi[k];
      rec += dd * dd;
    }
    for(int k = 0; k < g->nz; k++){
      double dd = (double)fi[k] - fhi[k];
      lat += dd * dd;
    }
    rec /= (double)img;
    lat /= g->nz;
    score_result *r = &out[i];
    r->score = w * rec + (1 - w) * lat;
    r->nparts = 2;
    r->part_name[0] = "rec"; r->part[0] = rec;
    r->part_name[1] = "lat"; r->part[1] = lat;
  }
  if( recon ) memcpy(recon, xh, (size_t)n * img * sizeof(float));
  return ANOM_OK;
}


/* ---- training ----------------------------------------------------------- */

typedef struct sg_train {
  int max_batch;
  float *grads, *m, *v;            /* like m->block's parameters */
  adam opt_g, opt_d;
  size_t g_count, d_off, d_count;  /* G params [0, g_count), D [d_off, +d_count) */
  net_cache c_down[SG_MAX_DOWN], c_up[SG_MAX_LEVELS - 1], c_dreal, c_dfake;
  float *xin;                      /* G's input, x + noise */
  float *cat[SG_MAX_LEVELS - 1];   /* decoder level k's input */
  float *dcat, *dskip, *du[2];     /* U-Net gradient buffers */
  float *ddown[SG_MAX_DOWN];       /* [s], s >= 1: gradient of down[s]'s input */
  float *dxh, *df, *df2, *dlogit;
  float *scratch;
  rng *r;
} sg_train;

static const char *const skipganomaly_losses[] = {"g", "g_adv", "g_con", "g_lat",
                                                  "d", "d_real", "d_fake", NULL};

static void skipganomaly_train_end(anom_model *m, void *state) {
  sg_train *t = state;
  if( !t ) return;
  const skipganomaly *g = m->det;
  for(int s = 0; s < g->ndown; s++){
    net_cache_free(&t->c_down[s]);
    anom_free(t->ddown[s]);
  }
  for(int k = 0; k < g->levels - 1; k++){
    net_cache_free(&t->c_up[k]);
    anom_free(t->cat[k]);
  }
  net_cache_free(&t->c_dreal);
  net_cache_free(&t->c_dfake);
  anom_free(t->grads);
  anom_free(t->m);
  anom_free(t->v);
  anom_free(t->xin);
  anom_free(t->dcat);
  anom_free(t->dskip);
  anom_free(t->du[0]);
  anom_free(t->du[1]);
  anom_free(t->dxh);
  anom_free(t->df);
  anom_free(t->df2);
  anom_free(t->dlogit);
  anom_free(t->scratch);
  anom_free(t);
}

/* Allocate the state; the weights are left as they are. */
static int train_alloc(anom_model *m, int max_batch, rng *r, sg_train **out,
                       anom_err *e) {
  skipganomaly *g = m->det;
  sg_train *t = anom_calloc(1, sizeof(*t));
  *out = t;
  if( !t ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  t->max_batch = max_batch;
  t->r = r;
  t->g_count = (size_t)(g->netd->params - m->block);
  t->d_off = t->g_count;
  t->d_count = g->netd->nparams;
  t->opt_g = (adam){ (float)g->lr, (float)g->beta1, (float)g->beta2, 1e-8f, 0 };
  t->opt_d = t->opt_g;
  size_t img = (size_t)m->channels * m->height * m->width, n = (size_t)max_batch;
  size_t mx = n * unet_max_floats(g);
  t->grads = anom_calloc(m->nparams, sizeof(float));
  t->m = anom_calloc(m->nparams, sizeof(float));
  t->v = anom_calloc(m->nparams, sizeof(float));
  t->xin = anom_malloc(n * img * sizeof(float));
  t->dcat = anom_malloc(mx * sizeof(float));
  t->dskip = anom_malloc(mx * sizeof(float));
  t->du[0] = anom_malloc(mx * sizeof(float));
  t->du[1] = anom_malloc(mx * sizeof(float));
  t->dxh = anom_malloc(n * img * sizeof(float));
  t->df = anom_malloc(n * g->nz * sizeof(float));
  t->df2 = anom_malloc(n * g->nz * sizeof(float));
  t->dlogit = anom_malloc(n * sizeof(float));
  t->scratch = anom_malloc(max_scratch(g, max_batch, 1) * sizeof(float));
  if( !t->grads || !t->m || !t->v || !t->xin || !t->dcat || !t->dskip
      || !t->du[0] || !t->du[1] || !t->dxh || !t->df || !t->df2 || !t->dlogit
      || !t->scratch )
    return anom_fail(e, ANOM_ENOMEM, "out of memory for training state");
  for(int k = 0; k < g->levels - 1; k++)
    if( !(t->cat[k] = anom_malloc(n * in_floats(g->up[k]) * sizeof(float))) )
      return anom_fail(e, ANOM_ENOMEM, "out of memory for training state");
  for(int s = 1; s < g->ndown; s++)
    if( !(t->ddown[s] = anom_malloc(n * in_floats(g->down[s]) * sizeof(float))) )
      return anom_fail(e, ANOM_ENOMEM, "out of memory for training state");
  int rc;
  for(int s = 0; s < g->ndown; s++)
    if( (rc = net_cache_init(&t->c_down[s], g->down[s], max_batch, e)) ) return rc;
  if( (rc = net_cache_init(&t->c_dreal, g->netd, max_batch, e))
      || (rc = net_cache_init(&t->c_dfake, g->netd, max_batch, e)) )
    return rc;
  for(int k = 0; k < g->levels - 1; k++)
    if( (rc = net_cache_init(&t->c_up[k], g->up[k], max_batch, e)) ) return rc;
  return ANOM_OK;
}

static int skipganomaly_train_begin(anom_model *m, int max_batch, rng *r,
                                    void **state, anom_err *e) {
  for(int i = 0; i < m->nnets; i++) net_init_dcgan(m->nets[i], r);
  sg_train *t;
  int rc = train_alloc(m, max_batch, r, &t, e);
  *state = t;
  return rc;
}

static float *grads_of(const anom_model *m, float *grads, const net *nt) {
  return grads + (nt->params - m->block);
}

/* The input of encoder net s in the last training forward. */
static const float *down_input(const skipganomaly *g, const sg_train *t, int s) {
  return s == 0 ? t->xin : net_cache_out(&t->c_down[s - 1], g->down[s - 1], -1);
}

/* Training forward of the U-Net on t->xin; x_hat is the returned pointer. */
static const float *unet_forward_train(skipganomaly *g, sg_train *t, int n,
                                       int update_running) {
  int L = g->levels;
  for(int s = 0; s < g->ndown; s++)
    net_forward_train(g->down[s], n, down_input(g, t, s), &t->c_down[s],
                      update_running, t->scratch);
  const float *u = net_cache_out(&t->c_down[g->ndown - 1], g->down[g->ndown - 1], -1);
  for(int k = L - 2; k >= 0; k--){
    int b = k + 1, c, h, w;
    const net *d = g->down[g->skip_net[b]];
    net_out_shape(d, g->skip_layer[b], &c, &h, &w);
    const float *skip = net_cache_out(&t->c_down[g->skip_net[b]], d, g->skip_layer[b]);
    concat_forward(n, c, c, h * w, t->cat[k], skip, u);
    net_forward_train(g->up[k], n, t->cat[k], &t->c_up[k], update_running, t->scratch);
    u = net_cache_out(&t->c_up[k], g->up[k], -1);
  }
  return u;
}

/*
** Backward of the U-Net from dxh (the gradient of x_hat): adds into grads
** (laid out like m->block) and, unless NULL, into dx (n, C, H, W). A skip at
** a cut adds into the gradient of the next encoder net's input; a skip
** inside an encoder net is one more net_backward from that layer.
*/
static void unet_backward(const anom_model *m, skipganomaly *g, sg_train *t, int n,
                          const float *dxh, float *dx, float *grads) {
  int L = g->levels;
  for(int s = 1; s < g->ndown; s++)
    memset(t->ddown[s], 0, (size_t)n * in_floats(g->down[s]) * sizeof(float));
  const float *dout = dxh;
  int which = 0;
  for(int k = 0; k <= L - 2; k++){
    const net *up = g->up[k];
    memset(t->dcat, 0, (size_t)n * in_floats(up) * sizeof(float));
    net_backward(up, n, t->cat[k], &t->c_up[k], up->nlayers, dout, t->dcat,
                 grads_of(m, grads, up), t->scratch);
    int b = k + 1, s = g->skip_net[b], c, h, w;
    const net *d = g->down[s];
    net_out_shape(d, g->skip_layer[b], &c, &h, &w);
    size_t half = (size_t)n * c * h * w;
    float *du = t->du[which];
    memset(du, 0, half * sizeof(float));
    if( skip_at_cut(g, b) ){
      concat_backward(n, c, c, h * w, t->ddown[s + 1], du, t->dcat);
    }else{
      memset(t->dskip, 0, half * sizeof(float));
      concat_backward(n, c, c, h * w, t->dskip, du, t->dcat);
      net_backward(d, n, down_input(g, t, s), &t->c_down[s], g->skip_layer[b] + 1,
                   t->dskip, s == 0 ? dx : t->ddown[s], grads_of(m, grads, d),
                   t->scratch);
    }
    dout = du;
    which ^= 1;
  }
  for(int s = g->ndown - 1; s >= 0; s--){
    const net *d = g->down[s];
    net_backward(d, n, down_input(g, t, s), &t->c_down[s], d->nlayers,
                 s == g->ndown - 1 ? dout : t->ddown[s + 1], s == 0 ? dx : t->ddown[s],
                 grads_of(m, grads, d), t->scratch);
  }
}

static int skipganomaly_train_step(anom_model *m, void *state, int n,
                                   const float *x, double *losses, anom_err *e) {
  skipganomaly *g = m->det;
  sg_train *t = state;
  if( n < 2 || n > t->max_batch )
    return anom_fail(e, ANOM_EINVAL, "skipganomaly: a training batch needs 2 to "
                     "%d images, found %d", t->max_batch, n);
  net *d = g->netd;
  int nd = d->nlayers, nf = nd - 2;        /* nf: D layers before the classifier */
  size_t img = (size_t)m->channels * m->height * m->width;
  size_t fsize = (size_t)n * g->nz;

  /* forward_g and forward_d */
  for(size_t i = 0; i < (size_t)n * img; i++)
    t->xin[i] = g->noise > 0 ? x[i] + (float)(g->noise * rng_normal(t->r)) : x[i];
  const float *xh = unet_forward_train(g, t, n, 1);
  net_forward_train(d, n, x, &t->c_dreal, 1, t->scratch);
  net_forward_train(d, n, xh, &t->c_dfake, 1, t->scratch);
  /* backward_d's D(x_hat.detach()) sees the same weights and input: it only
  ** moves the running statistics once more */
  net_replay_running(d, n, &t->c_dfake);
  const float *f_real = net_cache_out(&t->c_dreal, d, nf - 1);
  const float *f_fake = net_cache_out(&t->c_dfake, d, nf - 1);
  const float *logit_real = net_cache_out(&t->c_dreal, d, nd - 2);
  const float *logit_fake = net_cache_out(&t->c_dfake, d, nd - 2);

  /* G step */
  memset(t->grads, 0, t->g_count * sizeof(float));
  memset(t->dxh, 0, (size_t)n * img * sizeof(float));
  memset(t->dlogit, 0, (size_t)n * sizeof(float));
  memset(t->df, 0, fsize * sizeof(float));
  double adv = bce_logits_loss(t->dlogit, logit_fake, 1.0f, (size_t)n, (float)g->w_adv);
  net_backward(d, n, xh, &t->c_dfake, nd - 1, t->dlogit, t->dxh, NULL, t->scratch);
  double lat = l2_loss(t->df, f_fake, f_real, fsize, (float)g->w_lat);
  net_backward(d, n, xh, &t->c_dfake, nf, t->df, t->dxh, NULL, t->scratch);
  double con = l1_loss(t->dxh, xh, x, (size_t)n * img, (float)g->w_con);
  unet_backward(m, g, t, n, t->dxh, NULL, t->grads);
  adam_step(&t->opt_g, m->block, t->grads, t->m, t->v, t->g_count);

  /* D step: BCE on the logits, plus the latent term (the authors' quirk) */
  float *gd = grads_of(m, t->grads, d);
  memset(gd, 0, t->d_count * sizeof(float));
  memset(t->dlogit, 0, (size_t)n * sizeof(float));
  double err_real = bce_logits_loss(t->dlogit, logit_real, 1.0f, (size_t)n, 1.0f);
  net_backward(d, n, x, &t->c_dreal, nd - 1, t->dlogit, NULL, gd, t->scratch);
  memset(t->dlogit, 0, (size_t)n * sizeof(float));
  double err_fake = bce_logits_loss(t->dlogit, logit_fake, 0.0f, (size_t)n, 1.0f);
  net_backward(d, n, xh, &t->c_dfake, nd - 1, t->dlogit, NULL, gd, t->scratch);
  for(size_t i = 0; i < fsize; i++) t->df2[i] = -t->df[i];
  net_backward(d, n, xh, &t->c_dfake, nf, t->df, NULL, gd, t->scratch);
  net_backward(d, n, x, &t->c_dreal, nf, t->df2, NULL, gd, t->scratch);
  adam_step(&t->opt_d, m->block + t->d_off, gd, t->m + t->d_off, t->v + t->d_off,
            t->d_count);
  double err_d = err_real + err_fake + g->w_lat * lat;
  if( err_d < 1e-5 ) net_init_dcgan(d, t->r);

  losses[0] = g->w_adv * adv + g->w_con * con + g->w_lat * lat;
  losses[1] = adv;
  losses[2] = con;
  losses[3] = lat;
  losses[4] = err_d;
  losses[5] = err_real;
  losses[6] = err_fake;
  return ANOM_OK;
}

/*
** For tests: L = sum(x_hat * r) over the U-Net's training forward of x (n,
** C, H, W) with batch statistics (running statistics untouched). Writes L
** into *loss, adds dL/dparams into grads (m->nparams floats, laid out like
** m->block; G's part only) and, unless NULL, dL/dx into dx.
*/
int skipganomaly_unet_gradients(anom_model *m, int n, const float *x,
                                const float *r, double *loss, float *grads,
                                float *dx, anom_err *e) {
  skipganomaly *g = m->det;
  sg_train *t;
  int rc = train_alloc(m, n, NULL, &t, e);
  if( rc ) goto done;
  size_t count = (size_t)n * m->channels * m->height * m->width;
  memcpy(t->xin, x, count * sizeof(float));
  const float *xh = unet_forward_train(g, t, n, 0);
  double l = 0;
  for(size_t i = 0; i < count; i++) l += (double)xh[i] * r[i];
  *loss = l;
  unet_backward(m, g, t, n, r, dx, grads);
done:
  skipganomaly_train_end(m, t);
  return rc;
}

const detector_ops skipganomaly_ops = {
  "skipganomaly",
  skipganomaly_create,
  NULL,                  /* destroy: m->det owns nothing */
  skipganomaly_hparams,
  skipganomaly_work_floats,
  skipganomaly_score,
  NULL,                  /* map: the residual */
  skipganomaly_losses,
  skipganomaly_train_begin,
  skipganomaly_train_step,
  skipganomaly_train_end,
  NULL,                 /* train_finish */
  0,                    /* batch: 64 */
  NULL,                  /* train_epoch */
};
