/*
** caae.c - the constrained adversarial auto-encoder (Chen and Konukoglu,
** MIDL 2018), method 'caae'.
**
** An encoder E maps the image x to a latent z, a decoder Dec maps z back to
** a reconstruction x_hat (linear output, no tanh). A critic D in latent space
** (an MLP) pushes the distribution of E(x) toward the prior N(0, I), as a
** Wasserstein GAN with gradient penalty, and a consistency term keeps
** E(x_hat) near E(x).
**
**   score(x) = mean |x - x_hat|                       (the residual, the paper's)
**   parts:     residual (the score), l2 = mean (x - x_hat)^2
**   map:       model_map()'s residual, the mean over channels of |x - x_hat|
**              (n, H, W); the score is its mean.
**
** Networks, as aubreychen9012/cAAE model.py and funcs/resblocks.py build
** them (TensorLayer; "SAME" padding becomes symmetric padding), leaky ReLU
** slope 0.2 everywhere, batch norm eps 1e-5 and momentum 0.1 (TensorLayer's
** decay 0.9), nf = 16 and s = side / 16 by default:
**   E:   Conv(3,1,1) nc->nf, LReLU, BN, LReLU                      ("encoder.")
**        4 x ResBlockDown(C): main  Conv(3,2,1) C->C, BN, LReLU,
**                                   Conv(3,1,1) C->2C, BN, LReLU
**                             short Conv(3,2,1) C->2C, BN, LReLU
**                             out = main + short        (C: nf, 2nf, 4nf, 8nf)
**        Linear 16nf*s*s -> nz on the flattened (C, H, W) activations.
**   Dec: Linear nz -> 16nf*s*s, LReLU, view (16nf, s, s),          ("decoder.")
**        Conv(3,1,1) -> 8nf, LReLU;
**        4 x ResBlockUp(C):   main  ConvT(4,2,1) C->C, BN, LReLU,
**                                   ConvT(3,1,1) C->C/2, BN, LReLU
**                             short ConvT(4,2,1) C->C/2, BN, LReLU
**                             out = main + short        (C: 8nf, 4nf, 2nf, nf)
**        Conv(3,1,1) nf/2 -> nc, linear.
**   D:   Linear nz->critic_h1, LReLU, Linear ->critic_h2, LReLU, Linear ->1.
**   Convolutions followed directly by a batch norm have no bias (the norm
**   subtracts it again); every other layer has one.
** Each path (E, Dec) is a head net, a main and a shortcut net per block and
** a tail net: 21 nets with D.
**
** Training, per batch, as the authors' main.py (Adam beta1 0.5, beta2 0.9,
** lr 2e-5, one optimiser per role):
**   AE step:  rec  = mean_i sqrt(sum_pixels (x_hat - x)^2 + 1e-8)
**             cons = mean_i ||E(x) - E'(x_hat)||^2   (E' = E with running stats)
**             minimise rec + rho cons over E and Dec.
**   then z_f = E(x) (batch statistics), z_p ~ N(0, I) drawn (n, nz) once;
**   critic steps (n_critic_early in the first early_epochs epochs, else
**   n_critic), each with eps_i ~ U(0, 1) per sample:
**             z_hat = eps z_p + (1 - eps) z_f
**             L_D = mean D(z_p) - mean D(z_f) + gp * mean_i (||grad D(z_hat_i)|| - 1)^2
**   E step:   minimise mean D(E(x)) over E (its own Adam).
** Batch norm uses the batch's statistics in training; E's running statistics
** take two updates a batch (the AE step's E(x) and z_f), Dec's one.
**
** The gradient penalty's derivative. D is piecewise linear (linear layers
** and leaky ReLUs), so g = grad_z D(z_hat) is one backward pass with
** dout = 1, and for a fixed q, q . g is the directional derivative of D
** along q: the linearised net (D's weights, the leaky ReLU masks of the
** z_hat pass, no biases) applied to q. With q = dGP/dg held fixed,
** dGP/dtheta = d(q . g)/dtheta is a backward pass through that linearised
** net (double backprop for piecewise-linear MLPs; biases get none).
**
** The epoch comes from detector_ops.train_epoch, which core/train.c calls
** before each epoch's first batch.
**
** Use: through caae_ops (detector.h) like every detector. Two functions
** below is exported beside it (declared by its caller):
**   caae_gp_gradients(m, n, z_hat, &gp, dz, grads, &e)   for the tests
*/
#include "../hparams.h"
#include "../model.h"
#include "../optim.h"
#include "../rng.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define CAAE_BLOCKS 4
#define CAAE_SLOPE 0.2f
#define CAAE_BN_EPS 1e-5f

/* A residual path: head, CAAE_BLOCKS blocks (main + shortcut, summed), tail. */
typedef struct caae_path {
  net *head, *main[CAAE_BLOCKS], *shortcut[CAAE_BLOCKS], *tail;
} caae_path;

typedef struct caae {
  int nz, nf, critic_h1, critic_h2;
  int n_critic, n_critic_early, early_epochs;
  double lr, beta1, beta2, rho, gp;
  caae_path enc, dec;
  net *critic;
} caae;

static const char *const caae_known[] = {
  "nz", "nf", "critic_h1", "critic_h2", "lr", "beta1", "beta2", "rho", "gp",
  "n_critic", "n_critic_early", "early_epochs", NULL
};

/* ---- building ------------------------------------------------------------ */

static int add_net(anom_model *m, net *nt, net **slot, anom_err *e) {
  int rc = model_add_net(m, nt, e);
  if( rc ) return rc;
  *slot = m->nets[m->nnets - 1];
  return ANOM_OK;
}

/* Layers "<base>" and "<base>.act": batch norm then leaky ReLU. */
static void bn_act(net *nt, const char *bn, const char *act) {
  net_batchnorm(nt, bn, CAAE_BN_EPS);
  net_leaky_relu(nt, act, CAAE_SLOPE);
}

static int build_encoder(anom_model *m, caae *g, anom_err *e) {
  char prefix[NET_NAME_MAX];
  int side = m->width, c = g->nf, s = side, rc;
  net nt;
  net_init(&nt, "encoder.", m->channels, side, side);
  net_conv(&nt, "conv1", g->nf, 3, 1, 1, 1);
  net_leaky_relu(&nt, "conv1.act", CAAE_SLOPE);
  bn_act(&nt, "bn1", "bn1.act");
  if( (rc = add_net(m, &nt, &g->enc.head, e)) ) return rc;
  for(int b = 0; b < CAAE_BLOCKS; b++){
    snprintf(prefix, sizeof(prefix), "encoder.res%d.", b + 1);
    net_init(&nt, prefix, c, s, s);
    net_conv(&nt, "conv1", c, 3, 2, 1, 0);
    bn_act(&nt, "bn1", "bn1.act");
    net_conv(&nt, "conv2", 2 * c, 3, 1, 1, 0);
    bn_act(&nt, "bn2", "bn2.act");
    if( (rc = add_net(m, &nt, &g->enc.main[b], e)) ) return rc;
    net_init(&nt, prefix, c, s, s);
    net_conv(&nt, "conv3", 2 * c, 3, 2, 1, 0);
    bn_act(&nt, "bn3", "bn3.act");
    if( (rc = add_net(m, &nt, &g->enc.shortcut[b], e)) ) return rc;
    c *= 2;
    s /= 2;
  }
  net_init(&nt, "encoder.", c, s, s);
  net_linear(&nt, "dense", g->nz, 1);
  return add_net(m, &nt, &g->enc.tail, e);
}

static int build_decoder(anom_model *m, caae *g, anom_err *e) {
  char prefix[NET_NAME_MAX];
  int side = m->width, s = side / 16, c = 8 * g->nf, rc;
  net nt;
  net_init(&nt, "decoder.", g->nz, 1, 1);
  net_linear(&nt, "dense", 16 * g->nf * s * s, 1);
  net_leaky_relu(&nt, "dense.act", CAAE_SLOPE);
  net_reshape(&nt, "reshape", 16 * g->nf, s, s);
  net_conv(&nt, "conv1", c, 3, 1, 1, 1);
  net_leaky_relu(&nt, "conv1.act", CAAE_SLOPE);
  if( (rc = add_net(m, &nt, &g->dec.head, e)) ) return rc;
  for(int b = 0; b < CAAE_BLOCKS; b++){
    snprintf(prefix, sizeof(prefix), "decoder.res%d.", b + 1);
    net_init(&nt, prefix, c, s, s);
    net_convt(&nt, "deconv1", c, 4, 2, 1, 0);
    bn_act(&nt, "bn1", "bn1.act");
    net_convt(&nt, "deconv2", c / 2, 3, 1, 1, 0);
    bn_act(&nt, "bn2", "bn2.act");
    if( (rc = add_net(m, &nt, &g->dec.main[b], e)) ) return rc;
    net_init(&nt, prefix, c, s, s);
    net_convt(&nt, "conv3", c / 2, 4, 2, 1, 0);
    bn_act(&nt, "bn3", "bn3.act");
    if( (rc = add_net(m, &nt, &g->dec.shortcut[b], e)) ) return rc;
    c /= 2;
    s *= 2;
  }
  net_init(&nt, "decoder.", c, side, side);
  net_conv(&nt, "conv2", m->channels, 3, 1, 1, 1);
  return add_net(m, &nt, &g->dec.tail, e);
}

static int build_critic(anom_model *m, caae *g, anom_err *e) {
  net nt;
  net_init(&nt, "critic.", g->nz, 1, 1);
  net_linear(&nt, "h0", g->critic_h1, 1);
  net_leaky_relu(&nt, "h0.act", CAAE_SLOPE);
  net_linear(&nt, "h1", g->critic_h2, 1);
  net_leaky_relu(&nt, "h1.act", CAAE_SLOPE);
  net_linear(&nt, "h2", 1, 1);
  return add_net(m, &nt, &g->critic, e);
}

static int caae_create(anom_model *m, const cJSON *hp, anom_err *e) {
  const char *me = "caae";
  int rc;
  if( (rc = hp_check_keys(hp, caae_known, me, "hyper-parameter", e)) ) return rc;
  caae *g = anom_calloc(1, sizeof(*g));
  if( !g ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  m->det = g;
  if( (rc = hp_int(hp, me, "nz", 128, 1, 4096, &g->nz, e))
      || (rc = hp_int(hp, me, "nf", 16, 2, 1024, &g->nf, e))
      || (rc = hp_int(hp, me, "critic_h1", 200, 1, 65536, &g->critic_h1, e))
      || (rc = hp_int(hp, me, "critic_h2", 400, 1, 65536, &g->critic_h2, e))
      || (rc = hp_num(hp, me, "lr", 2e-5, 1e-12, 1, &g->lr, e))
      || (rc = hp_num(hp, me, "beta1", 0.5, 0, 0.999999, &g->beta1, e))
      || (rc = hp_num(hp, me, "beta2", 0.9, 0, 0.999999999, &g->beta2, e))
      || (rc = hp_num(hp, me, "rho", 0.5, 0, 1e6, &g->rho, e))
      || (rc = hp_num(hp, me, "gp", 10, 0, 1e6, &g->gp, e))
      || (rc = hp_int(hp, me, "n_critic", 20, 0, 10000, &g->n_critic, e))
      || (rc = hp_int(hp, me, "n_critic_early", 200, 0, 10000, &g->n_critic_early, e))
      || (rc = hp_int(hp, me, "early_epochs", 20, 0, 1000000, &g->early_epochs, e)) )
    return rc;
  if( m->width != m->height || m->width % 16 )
    return anom_fail(e, ANOM_EINVAL, "caae: the input must be square with a side "
                     "that is a multiple of 16, found %dx%d", m->width, m->height);
  if( (rc = build_encoder(m, g, e)) || (rc = build_decoder(m, g, e))
      || (rc = build_critic(m, g, e)) )
    return rc;
  return ANOM_OK;
}

static cJSON *caae_hparams(const anom_model *m) {
  const caae *g = m->det;
  cJSON *j = cJSON_CreateObject();
  if( !j ) return NULL;
  cJSON_AddNumberToObject(j, "nz", g->nz);
  cJSON_AddNumberToObject(j, "nf", g->nf);
  cJSON_AddNumberToObject(j, "critic_h1", g->critic_h1);
  cJSON_AddNumberToObject(j, "critic_h2", g->critic_h2);
  cJSON_AddNumberToObject(j, "lr", g->lr);
  cJSON_AddNumberToObject(j, "beta1", g->beta1);
  cJSON_AddNumberToObject(j, "beta2", g->beta2);
  cJSON_AddNumberToObject(j, "rho", g->rho);
  cJSON_AddNumberToObject(j, "gp", g->gp);
  cJSON_AddNumberToObject(j, "n_critic", g->n_critic);
  cJSON_AddNumberToObject(j, "n_critic_early", g->n_critic_early);
  cJSON_AddNumberToObject(j, "early_epochs", g->early_epochs);
  return j;
}

/* ---- sizes --------------------------------------------------------------- */

static size_t in_floats(const net *nt) {
  return (size_t)nt->c * nt->h * nt->w;
}

/* Every net of the model, for the largest-of loops. */
static int all_nets(const caae *g, const net **out) {
  int k = 0;
  const caae_path *p[2] = { &g->enc, &g->dec };
  for(int i = 0; i < 2; i++){
    out[k++] = p[i]->head;
    for(int b = 0; b < CAAE_BLOCKS; b++){
      out[k++] = p[i]->main[b];
      out[k++] = p[i]->shortcut[b];
    }
    out[k++] = p[i]->tail;
  }
  out[k++] = g->critic;
  return k;
}

/* The largest input or output of one sample over every net. */
static size_t max_io(const caae *g) {
  const net *nets[2 * (2 * CAAE_BLOCKS + 2) + 1];
  int nn = all_nets(g, nets);
  size_t mx = 0;
  for(int i = 0; i < nn; i++){
    if( in_floats(nets[i]) > mx ) mx = in_floats(nets[i]);
    if( net_out_floats(nets[i], -1) > mx ) mx = net_out_floats(nets[i], -1);
  }
  return mx;
}

static size_t max_scratch(const caae *g, int n, int train) {
  const net *nets[2 * (2 * CAAE_BLOCKS + 2) + 1];
  int nn = all_nets(g, nets);
  size_t s = 0;
  for(int i = 0; i < nn; i++){
    size_t t = train ? net_train_scratch_floats(nets[i], n) : net_scratch_floats(nets[i], n);
    if( t > s ) s = t;
  }
  return s;
}

static size_t caae_work_floats(const anom_model *m, int n) {
  const caae *g = m->det;
  size_t img = (size_t)m->channels * m->height * m->width;
  return (size_t)n * (img + (size_t)g->nz) + 3 * (size_t)n * max_io(g)
       + max_scratch(g, n, 0);
}

/* ---- inference ----------------------------------------------------------- */

/* in -> out through path p with running statistics. bufs: 3 buffers of
** stride floats, then scratch. */
static void path_forward(const caae_path *p, int n, const float *in, float *out,
                         float *bufs, size_t stride, float *scratch) {
  float *a = bufs, *b = bufs + stride, *c = bufs + 2 * stride;
  net_forward(p->head, 0, p->head->nlayers, n, in, a, scratch);
  for(int k = 0; k < CAAE_BLOCKS; k++){
    net_forward(p->main[k], 0, p->main[k]->nlayers, n, a, b, scratch);
    net_forward(p->shortcut[k], 0, p->shortcut[k]->nlayers, n, a, c, scratch);
    size_t cnt = (size_t)n * net_out_floats(p->main[k], -1);
    for(size_t i = 0; i < cnt; i++) b[i] += c[i];
    float *t = a; a = b; b = t;
  }
  net_forward(p->tail, 0, p->tail->nlayers, n, a, out, scratch);
}

/* x_hat (n, C, H, W) at the start of work. */
static float *reconstruct(const anom_model *m, int n, const float *x, float *work) {
  const caae *g = m->det;
  size_t img = (size_t)m->channels * m->height * m->width;
  size_t stride = (size_t)n * max_io(g);
  float *xh = work, *z = xh + (size_t)n * img, *bufs = z + (size_t)n * g->nz;
  float *scratch = bufs + 3 * stride;
  path_forward(&g->enc, n, x, z, bufs, stride, scratch);
  path_forward(&g->dec, n, z, xh, bufs, stride, scratch);
  return xh;
}

static int caae_score(const anom_model *m, int n, const float *x, float *work,
                      score_result *out, float *recon, const cJSON *opts,
                      anom_err *e) {
  if( opts && opts->child )
    return anom_fail(e, ANOM_EINVAL, "caae takes no scoring options, found '%s'",
                     opts->child->string);
  size_t img = (size_t)m->channels * m->height * m->width;
  const float *xh = reconstruct(m, n, x, work);
  for(int i = 0; i < n; i++){
    const float *xi = x + (size_t)i * img, *xhi = xh + (size_t)i * img;
    double l1 = 0, l2 = 0;
    for(size_t k = 0; k < img; k++){
      double d = (double)xi[k] - xhi[k];
      l1 += fabs(d);
      l2 += d * d;
    }
    score_result *r = &out[i];
    r->score = l1 / (double)img;
    r->nparts = 2;
    r->part_name[0] = "residual"; r->part[0] = r->score;
    r->part_name[1] = "l2"; r->part[1] = l2 / (double)img;
  }
  if( recon ) memcpy(recon, xh, (size_t)n * img * sizeof(float));
  return ANOM_OK;
}

/* ---- training: residual paths ------------------------------------------- */

/* How a training forward treats batch norm. */
enum { BN_UPDATE, BN_FROZEN };

/* Every activation of one pass through a path, kept for its backward. */
typedef struct path_cache {
  net_cache head, main[CAAE_BLOCKS], shortcut[CAAE_BLOCKS], tail;
  float *sum[CAAE_BLOCKS];           /* block k's output, the next one's input */
} path_cache;

static void path_cache_free(path_cache *c) {
  net_cache_free(&c->head);
  net_cache_free(&c->tail);
  for(int k = 0; k < CAAE_BLOCKS; k++){
    net_cache_free(&c->main[k]);
    net_cache_free(&c->shortcut[k]);
    anom_free(c->sum[k]);
    c->sum[k] = NULL;
  }
}

static int path_cache_init(path_cache *c, const caae_path *p, int n, anom_err *e) {
  int rc;
  memset(c, 0, sizeof(*c));
  if( (rc = net_cache_init(&c->head, p->head, n, e))
      || (rc = net_cache_init(&c->tail, p->tail, n, e)) )
    return rc;
  for(int k = 0; k < CAAE_BLOCKS; k++){
    if( (rc = net_cache_init(&c->main[k], p->main[k], n, e))
        || (rc = net_cache_init(&c->shortcut[k], p->shortcut[k], n, e)) )
      return rc;
    c->sum[k] = anom_malloc((size_t)n * net_out_floats(p->main[k], -1) * sizeof(float));
    if( !c->sum[k] ) return anom_fail(e, ANOM_ENOMEM, "out of memory for training state");
  }
  return ANOM_OK;
}

static void net_fwd(net *nt, int n, const float *in, net_cache *c, int mode,
                    float *scratch) {
  if( mode == BN_FROZEN ) net_forward_frozen(nt, n, in, c, scratch);
  else net_forward_train(nt, n, in, c, 1, scratch);
}

/* Training forward of path p on in; returns the path's output (in c). */
static const float *path_forward_train(const caae_path *p, path_cache *c, int n,
                                       const float *in, int mode, float *scratch) {
  net_fwd(p->head, n, in, &c->head, mode, scratch);
  const float *cur = net_cache_out(&c->head, p->head, -1);
  for(int k = 0; k < CAAE_BLOCKS; k++){
    net_fwd(p->main[k], n, cur, &c->main[k], mode, scratch);
    net_fwd(p->shortcut[k], n, cur, &c->shortcut[k], mode, scratch);
    const float *a = net_cache_out(&c->main[k], p->main[k], -1);
    const float *b = net_cache_out(&c->shortcut[k], p->shortcut[k], -1);
    size_t cnt = (size_t)n * net_out_floats(p->main[k], -1);
    for(size_t i = 0; i < cnt; i++) c->sum[k][i] = a[i] + b[i];
    cur = c->sum[k];
  }
  net_fwd(p->tail, n, cur, &c->tail, mode, scratch);
  return net_cache_out(&c->tail, p->tail, -1);
}

static float *grads_of(const anom_model *m, float *grads, const net *nt) {
  return grads + (nt->params - m->block);
}

/*
** Backward of the last training pass of p (cache c, input in) from dout:
** adds into grads (laid out like m->block) and, unless NULL, into din.
** dbuf: two buffers of n * max_io floats.
*/
static void path_backward(const anom_model *m, const caae_path *p, const path_cache *c,
                          int n, const float *in, const float *dout, float *din,
                          float *grads, float *dbuf[2], float *scratch) {
  float *d = dbuf[0], *dprev = dbuf[1];
  memset(d, 0, (size_t)n * in_floats(p->tail) * sizeof(float));
  net_backward(p->tail, n, c->sum[CAAE_BLOCKS - 1], &c->tail, p->tail->nlayers, dout,
               d, grads_of(m, grads, p->tail), scratch);
  for(int k = CAAE_BLOCKS - 1; k >= 0; k--){
    const float *bin = k ? c->sum[k - 1] : net_cache_out(&c->head, p->head, -1);
    memset(dprev, 0, (size_t)n * in_floats(p->main[k]) * sizeof(float));
    net_backward(p->main[k], n, bin, &c->main[k], p->main[k]->nlayers, d, dprev,
                 grads_of(m, grads, p->main[k]), scratch);
    net_backward(p->shortcut[k], n, bin, &c->shortcut[k], p->shortcut[k]->nlayers, d,
                 dprev, grads_of(m, grads, p->shortcut[k]), scratch);
    float *t = d; d = dprev; dprev = t;
  }
  net_backward(p->head, n, in, &c->head, p->head->nlayers, d, din,
               grads_of(m, grads, p->head), scratch);
}

/* ---- training: the critic and its gradient penalty ---------------------- */

/* Buffers of the gradient penalty for a batch of up to n. */
typedef struct gp_work {
  net_cache hat, lin;     /* D at z_hat; the linearised pass */
  float *g, *q;           /* (n, nz): grad of D at z_hat, dGP/dg */
  float *d[2];            /* (n, widest layer of D) */
} gp_work;

static void gp_work_free(gp_work *w) {
  net_cache_free(&w->hat);
  net_cache_free(&w->lin);
  anom_free(w->g);
  anom_free(w->q);
  anom_free(w->d[0]);
  anom_free(w->d[1]);
  memset(w, 0, sizeof(*w));
}

static size_t critic_width(const caae *g) {
  size_t w = (size_t)g->nz;
  if( (size_t)g->critic_h1 > w ) w = (size_t)g->critic_h1;
  if( (size_t)g->critic_h2 > w ) w = (size_t)g->critic_h2;
  return w;
}

static int gp_work_init(gp_work *w, const caae *g, int n, anom_err *e) {
  int rc;
  memset(w, 0, sizeof(*w));
  if( (rc = net_cache_init(&w->hat, g->critic, n, e))
      || (rc = net_cache_init(&w->lin, g->critic, n, e)) )
    return rc;
  size_t nz = (size_t)n * g->nz, wd = (size_t)n * critic_width(g);
  w->g = anom_malloc(nz * sizeof(float));
  w->q = anom_malloc(nz * sizeof(float));
  w->d[0] = anom_malloc(wd * sizeof(float));
  w->d[1] = anom_malloc(wd * sizeof(float));
  if( !w->g || !w->q || !w->d[0] || !w->d[1] )
    return anom_fail(e, ANOM_ENOMEM, "out of memory for training state");
  return ANOM_OK;
}

/*
** GP = mean_i (||g_i|| - 1)^2 with g_i = grad_z D(z_hat_i) (kept in w->g);
** adds weight * dGP/dtheta into gd, the critic's slice of a gradient block,
** by the double backprop of the header comment. Returns GP.
*/
static double critic_gp(const caae *g, int n, const float *zhat, float weight,
                        float *gd, gp_work *w, float *scratch) {
  net *d = g->critic;
  int nz = g->nz;
  net_forward_train(d, n, zhat, &w->hat, 0, scratch);
  float *ones = w->d[0];
  for(int i = 0; i < n; i++) ones[i] = 1.0f;
  memset(w->g, 0, (size_t)n * nz * sizeof(float));
  net_backward(d, n, zhat, &w->hat, d->nlayers, ones, w->g, NULL, scratch);
  double gp = 0;
  for(int i = 0; i < n; i++){
    const float *gi = w->g + (size_t)i * nz;
    float *qi = w->q + (size_t)i * nz;
    double s = 0;
    for(int k = 0; k < nz; k++) s += (double)gi[k] * gi[k];
    double norm = sqrt(s);
    gp += (norm - 1) * (norm - 1);
    /* d/dg_i of weight * (||g_i|| - 1)^2 / n; 0 where the norm is (its
    ** subgradient, as torch's norm) */
    double coef = norm > 0 ? weight * 2.0 * (norm - 1) / ((double)n * norm) : 0;
    for(int k = 0; k < nz; k++) qi[k] = (float)(coef * gi[k]);
  }
  gp /= n;

  /* the linearised net on q: linear layers without bias, the masks of z_hat */
  const float *cur = w->q;
  for(int l = 0; l < d->nlayers; l++){
    const layer *L = &d->layers[l];
    float *dst = net_cache_out(&w->lin, d, l);
    size_t cnt = (size_t)n * L->oc * L->oh * L->ow;
    if( L->kind == LAYER_LINEAR ){
      linear_forward(n, L->c * L->h * L->w, L->oc, dst, cur, d->params + L->p_off, NULL);
    }else{
      const float *h = net_cache_out(&w->hat, d, l);
      for(size_t k = 0; k < cnt; k++) dst[k] = h[k] > 0.0f ? cur[k] : L->slope * cur[k];
    }
    cur = dst;
  }
  /* its backward from dout = 1 per sample, into the weights only */
  float *dcur = w->d[0], *dprev = w->d[1];
  for(int i = 0; i < n; i++) dcur[i] = 1.0f;
  for(int l = d->nlayers - 1; l >= 0; l--){
    const layer *L = &d->layers[l];
    const float *lin_in = l ? net_cache_out(&w->lin, d, l - 1) : w->q;
    size_t in_cnt = (size_t)n * L->c * L->h * L->w;
    float *dx = l ? dprev : NULL;
    if( dx ) memset(dx, 0, in_cnt * sizeof(float));
    if( L->kind == LAYER_LINEAR ){
      linear_backward(n, L->c * L->h * L->w, L->oc, dx, gd + L->p_off, NULL, dcur,
                      lin_in, d->params + L->p_off);
    }else if( dx ){
      leaky_relu_backward(dx, dcur, net_cache_out(&w->hat, d, l), in_cnt, L->slope);
    }
    float *t = dcur; dcur = dprev; dprev = t;
  }
  return gp;
}

/*
** For tests: GP at z_hat (n, nz) with the model's critic into *gp, the
** gradient of D at z_hat into dz (n, nz) unless NULL, and dGP/dtheta added
** into grads (m->nparams floats laid out like m->block; the critic's part).
*/
int caae_gp_gradients(const anom_model *m, int n, const float *zhat, double *gp,
                      float *dz, float *grads, anom_err *e) {
  const caae *g = m->det;
  gp_work w;
  float *scratch = anom_malloc(net_train_scratch_floats(g->critic, n) * sizeof(float));
  int rc = gp_work_init(&w, g, n, e);
  if( !rc && !scratch ) rc = anom_fail(e, ANOM_ENOMEM, "out of memory");
  if( !rc ){
    *gp = critic_gp(g, n, zhat, 1.0f, grads_of(m, grads, g->critic), &w, scratch);
    if( dz ) memcpy(dz, w.g, (size_t)n * g->nz * sizeof(float));
  }
  gp_work_free(&w);
  anom_free(scratch);
  return rc;
}

/* ---- training: the steps ------------------------------------------------- */

typedef struct caae_train {
  int max_batch;
  rng *r;
  int epoch;                       /* the current epoch, from 0 */
  float *grads;                    /* like m->block's parameters */
  float *m_ae, *v_ae;              /* Adam of the AE step: E and Dec */
  float *m_c, *v_c;                /* of the critic */
  float *m_e, *v_e;                /* of the E step: E */
  adam opt_ae, opt_c, opt_e;
  size_t e_count, c_off, c_count;  /* E [0, e_count), Dec up to c_off, D after */
  path_cache ce, cd, ce2;          /* E(x), Dec(z), E'(x_hat) */
  net_cache creal, cfake;          /* D(z_p), D(z_f) */
  gp_work gw;
  float *dz, *dz2, *dxh, *dbuf[2];
  float *zp, *zhat, *dout;
  float *eps;
  float *scratch;
} caae_train;

static const char *const caae_losses[] = {"rec", "cons", "critic", "gp", "enc", NULL};

static void caae_train_end(anom_model *m, void *state) {
  (void)m;
  caae_train *t = state;
  if( !t ) return;
  path_cache_free(&t->ce);
  path_cache_free(&t->cd);
  path_cache_free(&t->ce2);
  net_cache_free(&t->creal);
  net_cache_free(&t->cfake);
  gp_work_free(&t->gw);
  anom_free(t->grads);
  anom_free(t->m_ae); anom_free(t->v_ae);
  anom_free(t->m_c); anom_free(t->v_c);
  anom_free(t->m_e); anom_free(t->v_e);
  anom_free(t->dz); anom_free(t->dz2); anom_free(t->dxh);
  anom_free(t->dbuf[0]); anom_free(t->dbuf[1]);
  anom_free(t->zp); anom_free(t->zhat); anom_free(t->dout); anom_free(t->eps);
  anom_free(t->scratch);
  anom_free(t);
}

/*
** The authors' initialisation: convolution and transposed-convolution
** weights truncated N(0, 0.02) (redrawn beyond 2 sigma, as TensorFlow's
** truncated_normal_initializer), E's and Dec's dense weights truncated
** N(0, 0.1) (TensorLayer's DenseLayer default), the critic's N(0, 0.01);
** biases 0; batch-norm gamma N(1, gamma_std), beta 0, running statistics 0
** and 1. Draws in layer order, each weight then each gamma.
*/
static float draw(rng *r, double std, int truncated) {
  double v;
  do v = rng_normal(r); while( truncated && fabs(v) > 2.0 );
  return (float)(std * v);
}

static void init_net(net *nt, rng *r, double linear_std, int truncated, double gamma_std) {
  for(int i = 0; i < nt->nlayers; i++){
    const layer *l = &nt->layers[i];
    float *p = nt->params + l->p_off;
    if( l->kind == LAYER_CONV || l->kind == LAYER_CONVT || l->kind == LAYER_LINEAR ){
      double std = l->kind == LAYER_LINEAR ? linear_std : 0.02;
      size_t nw = l->np - (l->has_bias ? (size_t)l->oc : 0);
      for(size_t k = 0; k < nw; k++) p[k] = draw(r, std, truncated);
      for(size_t k = nw; k < l->np; k++) p[k] = 0;
    }else if( l->kind == LAYER_BATCHNORM ){
      float *b = nt->bufs + l->b_off;
      for(int k = 0; k < l->c; k++){
        p[k] = (float)(1.0 + gamma_std * rng_normal(r));
        p[l->c + k] = 0;
        b[k] = 0;
        b[l->c + k] = 1;
      }
    }
  }
}

static void init_weights(caae *g, rng *r) {
  const caae_path *p[2] = { &g->enc, &g->dec };
  for(int i = 0; i < 2; i++){
    init_net(p[i]->head, r, 0.1, 1, 0.01);    /* e_bn1: N(1, 0.01) */
    for(int k = 0; k < CAAE_BLOCKS; k++){
      init_net(p[i]->main[k], r, 0.1, 1, 0.02);
      init_net(p[i]->shortcut[k], r, 0.1, 1, 0.02);
    }
    init_net(p[i]->tail, r, 0.1, 1, 0.02);
  }
  init_net(g->critic, r, 0.01, 0, 0);
}

static int train_alloc(anom_model *m, int max_batch, rng *r, caae_train **out,
                       anom_err *e) {
  caae *g = m->det;
  caae_train *t = anom_calloc(1, sizeof(*t));
  *out = t;
  if( !t ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  t->max_batch = max_batch;
  t->r = r;
  t->e_count = (size_t)(g->dec.head->params - m->block);
  t->c_off = (size_t)(g->critic->params - m->block);
  t->c_count = g->critic->nparams;
  t->opt_ae = (adam){ (float)g->lr, (float)g->beta1, (float)g->beta2, 1e-8f, 0 };
  t->opt_c = t->opt_ae;
  t->opt_e = t->opt_ae;
  size_t n = (size_t)max_batch, io = n * max_io(g), nz = n * g->nz;
  size_t img = (size_t)m->channels * m->height * m->width;
  t->grads = anom_calloc(m->nparams, sizeof(float));
  t->m_ae = anom_calloc(t->c_off, sizeof(float));
  t->v_ae = anom_calloc(t->c_off, sizeof(float));
  t->m_c = anom_calloc(t->c_count, sizeof(float));
  t->v_c = anom_calloc(t->c_count, sizeof(float));
  t->m_e = anom_calloc(t->e_count, sizeof(float));
  t->v_e = anom_calloc(t->e_count, sizeof(float));
  t->dz = anom_malloc(nz * sizeof(float));
  t->dz2 = anom_malloc(nz * sizeof(float));
  t->dxh = anom_malloc(n * img * sizeof(float));
  t->dbuf[0] = anom_malloc(io * sizeof(float));
  t->dbuf[1] = anom_malloc(io * sizeof(float));
  t->zp = anom_malloc(nz * sizeof(float));
  t->zhat = anom_malloc(nz * sizeof(float));
  t->dout = anom_malloc(n * sizeof(float));
  t->eps = anom_malloc(n * sizeof(float));
  t->scratch = anom_malloc(max_scratch(g, max_batch, 1) * sizeof(float));
  if( !t->grads || !t->m_ae || !t->v_ae || !t->m_c || !t->v_c || !t->m_e || !t->v_e
      || !t->dz || !t->dz2 || !t->dxh || !t->dbuf[0] || !t->dbuf[1] || !t->zp
      || !t->zhat || !t->dout || !t->eps || !t->scratch )
    return anom_fail(e, ANOM_ENOMEM, "out of memory for training state");
  int rc;
  if( (rc = path_cache_init(&t->ce, &g->enc, max_batch, e))
      || (rc = path_cache_init(&t->cd, &g->dec, max_batch, e))
      || (rc = path_cache_init(&t->ce2, &g->enc, max_batch, e))
      || (rc = net_cache_init(&t->creal, g->critic, max_batch, e))
      || (rc = net_cache_init(&t->cfake, g->critic, max_batch, e))
      || (rc = gp_work_init(&t->gw, g, max_batch, e)) )
    return rc;
  return ANOM_OK;
}

static int caae_train_begin(anom_model *m, int max_batch, rng *r, void **state,
                            anom_err *e) {
  init_weights(m->det, r);
  caae_train *t;
  int rc = train_alloc(m, max_batch, r, &t, e);
  *state = t;
  return rc;
}

/* The authors' schedule runs n_critic_early critic steps a batch in the
** first early_epochs epochs, n_critic after; core/train.c says when an
** epoch starts. A state no one told stays in epoch 0. */
static void caae_train_epoch(anom_model *m, void *state, int epoch) {
  (void)m;
  ((caae_train *)state)->epoch = epoch;
}

/* Mean of D's n outputs. */
static double mean_of(const float *v, int n) {
  double s = 0;
  for(int i = 0; i < n; i++) s += v[i];
  return s / n;
}

static int caae_train_step(anom_model *m, void *state, int n, const float *x,
                           double *losses, anom_err *e) {
  caae *g = m->det;
  caae_train *t = state;
  if( n < 2 || n > t->max_batch )
    return anom_fail(e, ANOM_EINVAL, "caae: a training batch needs 2 to %d images, "
                     "found %d", t->max_batch, n);
  size_t img = (size_t)m->channels * m->height * m->width;
  size_t nzs = (size_t)n * g->nz;
  net *d = g->critic;

  /* ---- AE step: rec + rho cons on E and Dec */
  memset(t->grads, 0, t->c_off * sizeof(float));
  const float *z1 = path_forward_train(&g->enc, &t->ce, n, x, BN_UPDATE, t->scratch);
  const float *xh = path_forward_train(&g->dec, &t->cd, n, z1, BN_UPDATE, t->scratch);
  const float *z2 = path_forward_train(&g->enc, &t->ce2, n, xh, BN_FROZEN, t->scratch);
  double rec = 0, cons = 0;
  for(int i = 0; i < n; i++){
    const float *xi = x + (size_t)i * img, *xhi = xh + (size_t)i * img;
    float *di = t->dxh + (size_t)i * img;
    double s = 0;
    for(size_t k = 0; k < img; k++){
      double dd = (double)xhi[k] - xi[k];
      s += dd * dd;
    }
    double r = sqrt(s + 1e-8);
    rec += r;
    float c = (float)(1.0 / ((double)n * r));
    for(size_t k = 0; k < img; k++) di[k] = c * (xhi[k] - xi[k]);
  }
  rec /= n;
  float cz = (float)(2.0 * g->rho / n);
  for(size_t k = 0; k < nzs; k++){
    float dd = z1[k] - z2[k];
    cons += (double)dd * dd;
    t->dz[k] = cz * dd;
    t->dz2[k] = -cz * dd;
  }
  cons /= n;
  /* E'(x_hat) first: its frozen batch norm reads the running statistics,
  ** which the next E(x) pass moves */
  path_backward(m, &g->enc, &t->ce2, n, xh, t->dz2, t->dxh, t->grads, t->dbuf, t->scratch);
  path_backward(m, &g->dec, &t->cd, n, z1, t->dxh, t->dz, t->grads, t->dbuf, t->scratch);
  path_backward(m, &g->enc, &t->ce, n, x, t->dz, NULL, t->grads, t->dbuf, t->scratch);
  adam_step(&t->opt_ae, m->block, t->grads, t->m_ae, t->v_ae, t->c_off);

  /* ---- z_f = E(x) for the critic and the E step; the prior sample */
  const float *zf = path_forward_train(&g->enc, &t->ce, n, x, BN_UPDATE, t->scratch);
  for(size_t k = 0; k < nzs; k++) t->zp[k] = (float)rng_normal(t->r);

  /* ---- critic steps */
  int early = t->epoch < g->early_epochs;
  int steps = early ? g->n_critic_early : g->n_critic;
  float *gd = t->grads + t->c_off;
  double loss_c = 0, gp = 0;
  for(int s = 0; s < steps; s++){
    for(int i = 0; i < n; i++) t->eps[i] = (float)rng_uniform(t->r);
    memset(gd, 0, t->c_count * sizeof(float));
    net_forward_train(d, n, t->zp, &t->creal, 0, t->scratch);
    net_forward_train(d, n, zf, &t->cfake, 0, t->scratch);
    double dreal = mean_of(net_cache_out(&t->creal, d, -1), n);
    double dfake = mean_of(net_cache_out(&t->cfake, d, -1), n);
    for(int i = 0; i < n; i++) t->dout[i] = 1.0f / (float)n;
    net_backward(d, n, t->zp, &t->creal, d->nlayers, t->dout, NULL, gd, t->scratch);
    for(int i = 0; i < n; i++) t->dout[i] = -1.0f / (float)n;
    net_backward(d, n, zf, &t->cfake, d->nlayers, t->dout, NULL, gd, t->scratch);
    for(int i = 0; i < n; i++){
      float a = t->eps[i], b = 1.0f - a;
      for(int k = 0; k < g->nz; k++){
        size_t j = (size_t)i * g->nz + k;
        t->zhat[j] = a * t->zp[j] + b * zf[j];
      }
    }
    gp = critic_gp(g, n, t->zhat, (float)g->gp, gd, &t->gw, t->scratch);
    loss_c = dreal - dfake + g->gp * gp;
    adam_step(&t->opt_c, m->block + t->c_off, gd, t->m_c, t->v_c, t->c_count);
  }

  /* ---- E step: mean D(E(x)) on E */
  memset(t->grads, 0, t->e_count * sizeof(float));
  net_forward_train(d, n, zf, &t->cfake, 0, t->scratch);
  double enc = mean_of(net_cache_out(&t->cfake, d, -1), n);
  for(int i = 0; i < n; i++) t->dout[i] = 1.0f / (float)n;
  memset(t->dz, 0, nzs * sizeof(float));
  net_backward(d, n, zf, &t->cfake, d->nlayers, t->dout, t->dz, NULL, t->scratch);
  path_backward(m, &g->enc, &t->ce, n, x, t->dz, NULL, t->grads, t->dbuf, t->scratch);
  adam_step(&t->opt_e, m->block, t->grads, t->m_e, t->v_e, t->e_count);

  losses[0] = rec;
  losses[1] = cons;
  losses[2] = loss_c;
  losses[3] = gp;
  losses[4] = enc;
  return ANOM_OK;
}

const detector_ops caae_ops = {
  "caae",
  caae_create,
  NULL,                  /* destroy: m->det owns nothing */
  caae_hparams,
  caae_work_floats,
  caae_score,
  NULL,                  /* map: the residual */
  caae_losses,
  caae_train_begin,
  caae_train_step,
  caae_train_end,
  NULL,                  /* train_finish: no averaged weights */
  64,                    /* batch: the authors' BATCH_SIZE */
  caae_train_epoch,
};
