/*
** egbad.c - EGBAD, "Efficient GAN-Based Anomaly Detection" (Zenati, Foo,
** Lecouat, Manek and Chandrasekhar, 2018), method 'egbad'.
**
** A BiGAN: a generator G maps z ~ N(0, 1) to images, an encoder E maps
** images to latents, and a discriminator D(x, z) tells the pairs (x, E(x))
** from the pairs (G(z), z). Trained on normal images, E learns to invert G
** on them, so G(E(x)) reconstructs a normal image and fails on an anomaly.
**
**   z = E(x),  x_hat = G(z)                       (inference mode, per image)
**   residual = sum |x - x_hat|                    (over C*H*W: the L1 norm)
**   fm       = sum |f(x, z) - f(x_hat, z)|        (f: D's last hidden layer)
**   ce       = softplus(-logit of D(x_hat, z))    (BCE against "real")
**   score    = (1 - score_w) residual + score_w (fm or ce)
**   parts "residual", "fm", "ce"; per-call options "score" ("fm" | "ce") and
**   "score_w" in [0, 1]; recon is x_hat.
**
** Networks, as the authors' bigan/mnist_utilities.py with 8x8 instead of
** 7x7 maps: an input of side s (32 or 64) has L = log2(s / 8) stride-2
** levels (2 or 3). Tensor names are the authors' variable scopes under
** "encoder.", "generator." and "discriminator.". LReLU has slope 0.1, batch
** norm TensorFlow's eps 1e-3 and momentum 0.99 (0.01 in PyTorch's terms);
** every conv and dense layer has a bias. Shapes for s 32, nf 32, nz 200:
**   E  layer_1.conv        Conv(nc->nf, 3, 1, 1), no activation   32 @32
**      layer_{i+1}, i=1..L Conv(3, 2, 1) -> 2^i nf, BN, LReLU      64 @16, 128 @8
**      layer_{L+2}.fc      Linear(2^L nf 64 -> nz) = z             8192 -> 200
**   G  layer_1             Linear(nz -> 32 nf), BN, ReLU           1024
**      layer_2             Linear(-> 2^L nf 64), BN, ReLU          8192
**      reshape (2^L nf, 8, 8); layer_3 .. layer_{L+2}: ConvT(4, 2, 1)
**      halving the channels, BN, ReLU; the last to nc and tanh    64 @16, nc @32
**   D  is three nets: Dx on x, Dz on z, Dj on their concatenation.
**      Dx x_layer_1        Conv(nc->2nf, 4, 2, 1), LReLU, dropout   64 @16
**         x_layer_2..L     Conv(2nf->2nf, 4, 2, 1), BN, LReLU, dropout   64 @8
**         flattened to (2nf 64, 1, 1)                              4096
**      Dz z_layer_1        Linear(nz -> 16 nf), LReLU, dropout     512
**      Dj y_layer_1        Linear(2nf 64 + 16nf -> 32 nf), LReLU, dropout = f   1024
**         y_fc_logits      Linear(-> 1) = the logit
** Flattening is in (C, H, W) order, as our activations are stored.
**
** Hyper-parameters (the authors' MNIST values): nz 200, nf 32, lr 1e-5,
** beta1 0.5, beta2 0.999, ema 0.999, dropout 0.5, score "fm", score_w 0.1.
** anomaly_train's default batch is theirs, 100.
**
** Training, per batch (losses: sigmoid cross-entropy on the logits, batch means):
**   D step:   z1 ~ N(0, 1); E(x), G(z1) on batch statistics, running
**             statistics untouched, no gradients;
**             L_D = BCE(D(x, E(x)), 1) + BCE(D(G(z1), z1), 0); Adam on D.
**             D's running statistics move on the real pair, then the fake.
**   G+E step: z2 ~ N(0, 1); E(x) and G(z2) in training mode, moving their
**             running statistics; D on batch statistics without moving its
**             own, with fresh dropout masks;
**             L_G = BCE(D(G(z2), z2), 1) -> gradients into G (through D's x);
**             L_E = BCE(D(x, E(x)), 0)   -> gradients into E (through D's z);
**             Adam on G and on E, both from this one forward.
**   One Adam per network. After each optimiser step, the network's moving
**   average (decay ema) follows (shadow.h); train_finish puts the averages
**   into the model, which is what scores. z and the dropout masks come from
**   the training rng, z drawn (n, nz) row-major at the start of each step,
**   masks in forward order. Weights start N(0, 0.02), biases 0, BN gamma 1,
**   beta 0 (TensorFlow's initialisers); the losses reported are "d", "g", "e".
**
** For tests, egbad_d_gradients() runs D's training forward and backward on
** its own (see its comment below).
*/
#include "../hparams.h"
#include "../model.h"
#include "../optim.h"
#include "../rng.h"
#include "../shadow.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define EG_LRELU 0.1f
#define EG_BN_EPS 1e-3f
#define EG_BN_MOMENTUM 0.01f      /* TensorFlow's momentum 0.99 */
#define EG_INIT_STD 0.02f
#define EG_DJ_F 3                 /* Dj's layers up to the feature f */

enum { SCORE_FM, SCORE_CE };

typedef struct egbad {
  int nz, nf;
  double lr, beta1, beta2, ema, dropout, score_w;
  int score;                      /* SCORE_FM or SCORE_CE */
  int levels;                     /* L = log2(isize / 8) */
  net *e, *g, *dx, *dz, *dj;      /* the model's nets, in this order */
} egbad;

/* "<scope>_<i>.<what>", a layer name after the authors' variable scopes. */
static const char *lname(char *buf, const char *scope, int i, const char *what) {
  snprintf(buf, NET_NAME_MAX, "%s_%d.%s", scope, i, what);
  return buf;
}

static void add_bn(net *nt, const char *name) {
  net_batchnorm(nt, name, EG_BN_EPS);
  net_set_momentum(nt, EG_BN_MOMENTUM);
}

static void build_e(const egbad *g, net *nt) {
  char nm[NET_NAME_MAX];
  net_conv(nt, "layer_1.conv", g->nf, 3, 1, 1, 1);
  for(int i = 1; i <= g->levels; i++){
    net_conv(nt, lname(nm, "layer", i + 1, "conv"), g->nf << i, 3, 2, 1, 1);
    add_bn(nt, lname(nm, "layer", i + 1, "batch_normalization"));
    net_leaky_relu(nt, lname(nm, "layer", i + 1, "leaky_relu"), EG_LRELU);
  }
  net_linear(nt, lname(nm, "layer", g->levels + 2, "fc"), g->nz, 1);
}

static void build_g(const egbad *g, net *nt, int nc) {
  char nm[NET_NAME_MAX];
  int top = g->nf << g->levels;
  net_linear(nt, "layer_1.fc", 32 * g->nf, 1);
  add_bn(nt, "layer_1.batch_normalization");
  net_relu(nt, "layer_1.relu");
  net_linear(nt, "layer_2.fc", top * 64, 1);
  add_bn(nt, "layer_2.batch_normalization");
  net_relu(nt, "layer_2.relu");
  net_reshape(nt, "reshape", top, 8, 8);
  for(int j = 1; j <= g->levels; j++){
    int last = j == g->levels;
    net_convt(nt, lname(nm, "layer", j + 2, "conv"), last ? nc : top >> j, 4, 2, 1, 1);
    if( last ){
      net_tanh(nt, lname(nm, "layer", j + 2, "tanh"));
    }else{
      add_bn(nt, lname(nm, "layer", j + 2, "batch_normalization"));
      net_relu(nt, lname(nm, "layer", j + 2, "relu"));
    }
  }
}

static void build_dx(const egbad *g, net *nt) {
  char nm[NET_NAME_MAX];
  for(int j = 1; j <= g->levels; j++){
    net_conv(nt, lname(nm, "x_layer", j, "conv"), 2 * g->nf, 4, 2, 1, 1);
    if( j > 1 ) add_bn(nt, lname(nm, "x_layer", j, "batch_normalization"));
    net_leaky_relu(nt, lname(nm, "x_layer", j, "leaky_relu"), EG_LRELU);
    net_dropout(nt, lname(nm, "x_layer", j, "dropout"), (float)g->dropout);
  }
  net_reshape(nt, "x_flatten", 2 * g->nf * 64, 1, 1);
}

static void build_dz(const egbad *g, net *nt) {
  net_linear(nt, "z_layer_1.fc", 16 * g->nf, 1);
  net_leaky_relu(nt, "z_layer_1.leaky_relu", EG_LRELU);
  net_dropout(nt, "z_layer_1.dropout", (float)g->dropout);
}

static void build_dj(const egbad *g, net *nt) {
  net_linear(nt, "y_layer_1.fc", 32 * g->nf, 1);
  net_leaky_relu(nt, "y_layer_1.leaky_relu", EG_LRELU);
  net_dropout(nt, "y_layer_1.dropout", (float)g->dropout);
  net_linear(nt, "y_fc_logits.fc", 1, 1);
}

/* "score": "fm" or "ce" in obj; def when absent. */
static int hp_score_kind(const cJSON *obj, int def, int *out, anom_err *e) {
  const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, "score") : NULL;
  if( !v ){ *out = def; return ANOM_OK; }
  if( cJSON_IsString(v) && strcmp(v->valuestring, "fm") == 0 ) *out = SCORE_FM;
  else if( cJSON_IsString(v) && strcmp(v->valuestring, "ce") == 0 ) *out = SCORE_CE;
  else return anom_fail(e, ANOM_EINVAL, "egbad: 'score' must be \"fm\" or \"ce\"");
  return ANOM_OK;
}

/* Declare nt (built by the caller) and keep its pointer in *slot. */
static int add_net(anom_model *m, net *nt, net **slot, anom_err *e) {
  int rc = model_add_net(m, nt, e);
  if( rc == ANOM_OK ) *slot = m->nets[m->nnets - 1];
  return rc;
}

static int egbad_create(anom_model *m, const cJSON *hp, anom_err *e) {
  static const char *const known[] = {"nz", "nf", "lr", "beta1", "beta2", "ema",
                                      "dropout", "score", "score_w", NULL};
  const char *me = "egbad";
  int rc;
  if( (rc = hp_check_keys(hp, known, me, "hyper-parameter", e)) ) return rc;
  egbad *g = anom_calloc(1, sizeof(*g));
  if( !g ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  m->det = g;
  if( (rc = hp_int(hp, me, "nz", 200, 1, 4096, &g->nz, e))
      || (rc = hp_int(hp, me, "nf", 32, 1, 1024, &g->nf, e))
      || (rc = hp_num(hp, me, "lr", 1e-5, 1e-12, 1, &g->lr, e))
      || (rc = hp_num(hp, me, "beta1", 0.5, 0, 0.999999, &g->beta1, e))
      || (rc = hp_num(hp, me, "beta2", 0.999, 0, 0.999999999, &g->beta2, e))
      || (rc = hp_num(hp, me, "ema", 0.999, 0, 0.999999999, &g->ema, e))
      || (rc = hp_num(hp, me, "dropout", 0.5, 0, 0.99, &g->dropout, e))
      || (rc = hp_score_kind(hp, SCORE_FM, &g->score, e))
      || (rc = hp_num(hp, me, "score_w", 0.1, 0, 1, &g->score_w, e)) )
    return rc;
  int isize = m->width, nc = m->channels;
  if( m->width != m->height || (isize != 32 && isize != 64) )
    return anom_fail(e, ANOM_EINVAL, "egbad: the input must be square with a side "
                     "of 32 or 64, found %dx%d", m->width, m->height);
  g->levels = isize == 32 ? 2 : 3;

  net nt;
  net_init(&nt, "encoder.", nc, isize, isize);
  build_e(g, &nt);
  if( (rc = add_net(m, &nt, &g->e, e)) ) return rc;
  net_init(&nt, "generator.", g->nz, 1, 1);
  build_g(g, &nt, nc);
  if( (rc = add_net(m, &nt, &g->g, e)) ) return rc;
  net_init(&nt, "discriminator.", nc, isize, isize);
  build_dx(g, &nt);
  if( (rc = add_net(m, &nt, &g->dx, e)) ) return rc;
  net_init(&nt, "discriminator.", g->nz, 1, 1);
  build_dz(g, &nt);
  if( (rc = add_net(m, &nt, &g->dz, e)) ) return rc;
  net_init(&nt, "discriminator.", 2 * g->nf * 64 + 16 * g->nf, 1, 1);
  build_dj(g, &nt);
  return add_net(m, &nt, &g->dj, e);
}

static cJSON *egbad_hparams(const anom_model *m) {
  const egbad *g = m->det;
  cJSON *j = cJSON_CreateObject();
  if( !j ) return NULL;
  cJSON_AddNumberToObject(j, "nz", g->nz);
  cJSON_AddNumberToObject(j, "nf", g->nf);
  cJSON_AddNumberToObject(j, "lr", g->lr);
  cJSON_AddNumberToObject(j, "beta1", g->beta1);
  cJSON_AddNumberToObject(j, "beta2", g->beta2);
  cJSON_AddNumberToObject(j, "ema", g->ema);
  cJSON_AddNumberToObject(j, "dropout", g->dropout);
  cJSON_AddStringToObject(j, "score", g->score == SCORE_CE ? "ce" : "fm");
  cJSON_AddNumberToObject(j, "score_w", g->score_w);
  return j;
}

/* Floats of one sample: Dx's and Dz's outputs (the halves of Dj's input), f. */
static size_t hx_size(const egbad *g) { return net_out_floats(g->dx, -1); }
static size_t hz_size(const egbad *g) { return net_out_floats(g->dz, -1); }
static size_t f_size(const egbad *g) { return net_out_floats(g->dj, EG_DJ_F - 1); }

static size_t max_scratch(const egbad *g, int n, int train) {
  const net *nets[5] = { g->e, g->g, g->dx, g->dz, g->dj };
  size_t s = 0;
  for(int i = 0; i < 5; i++){
    size_t t = train ? net_train_scratch_floats(nets[i], n) : net_scratch_floats(nets[i], n);
    if( t > s ) s = t;
  }
  return s;
}

static size_t egbad_work_floats(const anom_model *m, int n) {
  const egbad *g = m->det;
  size_t img = (size_t)m->channels * m->height * m->width, hx = hx_size(g), hz = hz_size(g);
  return (size_t)n * (g->nz + img + 2 * (hx + hz) + 2 * f_size(g) + 1)
       + max_scratch(g, n, 0);
}

/* Inference f(x, z) into f: Dx(x) into hx, Dz(z) into hz, their
** concatenation into jin, then Dj up to the feature layer. */
static void d_features(const egbad *g, int n, const float *x, const float *z,
                       float *hx, float *hz, float *jin, float *f, float *scratch) {
  net_forward(g->dx, 0, g->dx->nlayers, n, x, hx, scratch);
  net_forward(g->dz, 0, g->dz->nlayers, n, z, hz, scratch);
  concat_forward(n, (int)hx_size(g), (int)hz_size(g), 1, jin, hx, hz);
  net_forward(g->dj, 0, EG_DJ_F, n, jin, f, scratch);
}

static int egbad_score(const anom_model *m, int n, const float *x, float *work,
                       score_result *out, float *recon, const cJSON *opts,
                       anom_err *e) {
  const egbad *g = m->det;
  static const char *const known[] = {"score", "score_w", NULL};
  int kind, rc;
  double w;
  if( (rc = hp_check_keys(opts, known, "egbad", "scoring option", e))
      || (rc = hp_score_kind(opts, g->score, &kind, e))
      || (rc = hp_num(opts, "egbad", "score_w", g->score_w, 0, 1, &w, e)) )
    return rc;
  size_t img = (size_t)m->channels * m->height * m->width;
  size_t hx = hx_size(g), hz = hz_size(g), nf = f_size(g), nn = (size_t)n;
  float *z = work, *xh = z + nn * g->nz;
  float *bx = xh + nn * img, *bz = bx + nn * hx, *jin = bz + nn * hz;
  float *fx = jin + nn * (hx + hz), *fxh = fx + nn * nf, *logit = fxh + nn * nf;
  float *scratch = logit + nn;
  net_forward(g->e, 0, g->e->nlayers, n, x, z, scratch);
  net_forward(g->g, 0, g->g->nlayers, n, z, xh, scratch);
  d_features(g, n, x, z, bx, bz, jin, fx, scratch);
  d_features(g, n, xh, z, bx, bz, jin, fxh, scratch);
  net_forward(g->dj, EG_DJ_F, g->dj->nlayers, n, fxh, logit, scratch);
  for(int i = 0; i < n; i++){
    const float *xi = x + (size_t)i * img, *xhi = xh + (size_t)i * img;
    const float *fi = fx + (size_t)i * nf, *fhi = fxh + (size_t)i * nf;
    double res = 0, fm = 0;
    for(size_t k = 0; k < img; k++) res += fabs((double)xi[k] - xhi[k]);
    for(size_t k = 0; k < nf; k++) fm += fabs((double)fi[k] - fhi[k]);
    double ce = bce_logits_loss(NULL, logit + i, 1.0f, 1, 1.0f);  /* softplus(-l) */
    score_result *r = &out[i];
    r->score = (1 - w) * res + w * (kind == SCORE_CE ? ce : fm);
    r->nparts = 3;
    r->part_name[0] = "residual"; r->part[0] = res;
    r->part_name[1] = "fm";       r->part[1] = fm;
    r->part_name[2] = "ce";       r->part[2] = ce;
  }
  if( recon ) memcpy(recon, xh, nn * img * sizeof(float));
  return ANOM_OK;
}


/* ---- training ----------------------------------------------------------- */

/* D's training forward on one pair (x, z): its three nets' caches. */
typedef struct eg_pair {
  net_cache cx, cz, cj;
  float *jin;                      /* Dj's input, [Dx(x), Dz(z)] per sample */
  const float *x, *z;              /* the inputs of the last forward */
} eg_pair;

typedef struct eg_train {
  int max_batch;
  rng *r;                          /* z and the dropout masks */
  shadow sh;                       /* raw weights and their moving average */
  adam opt_e, opt_g, opt_d;
  size_t g_off, d_off;             /* E [0, g_off), G [g_off, d_off), D [d_off, nparams) */
  float *grads, *m, *v;            /* laid out like m->block's parameters */
  net_cache c_e, c_g;
  eg_pair real, fake;              /* D on (x, E(x)) and on (G(z), z) */
  float *z;                        /* (n, nz) */
  float *dlogit;                   /* (n) */
  float *djin, *dhx, *dhz;         /* gradients at Dj's input and its halves */
  float *dgz;                      /* (n, C, H, W): at G's output */
  float *dez;                      /* (n, nz): at E's output */
  float *scratch;
} eg_train;

static const char *const egbad_losses[] = {"d", "g", "e", NULL};

static void pair_free(eg_pair *p) {
  net_cache_free(&p->cx);
  net_cache_free(&p->cz);
  net_cache_free(&p->cj);
  anom_free(p->jin);
}

static void egbad_train_end(anom_model *m, void *state) {
  (void)m;
  eg_train *t = state;
  if( !t ) return;
  shadow_free(&t->sh);
  net_cache_free(&t->c_e);
  net_cache_free(&t->c_g);
  pair_free(&t->real);
  pair_free(&t->fake);
  anom_free(t->grads);
  anom_free(t->m);
  anom_free(t->v);
  anom_free(t->z);
  anom_free(t->dlogit);
  anom_free(t->djin);
  anom_free(t->dhx);
  anom_free(t->dhz);
  anom_free(t->dgz);
  anom_free(t->dez);
  anom_free(t->scratch);
  anom_free(t);
}

static int pair_init(const egbad *g, eg_pair *p, int n, rng *r, anom_err *e) {
  int rc;
  if( (rc = net_cache_init(&p->cx, g->dx, n, e))
      || (rc = net_cache_init(&p->cz, g->dz, n, e))
      || (rc = net_cache_init(&p->cj, g->dj, n, e)) )
    return rc;
  p->cx.rng = p->cz.rng = p->cj.rng = r;
  p->jin = anom_malloc((size_t)n * (hx_size(g) + hz_size(g)) * sizeof(float));
  if( !p->jin ) return anom_fail(e, ANOM_ENOMEM, "out of memory for training state");
  return ANOM_OK;
}

/* Allocate the state (the shadow aside); the weights are left as they are. */
static int train_alloc(anom_model *m, int max_batch, rng *r, eg_train **out,
                       anom_err *e) {
  egbad *g = m->det;
  eg_train *t = anom_calloc(1, sizeof(*t));
  *out = t;
  if( !t ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  t->max_batch = max_batch;
  t->r = r;
  t->g_off = (size_t)(g->g->params - m->block);
  t->d_off = (size_t)(g->dx->params - m->block);
  t->opt_e = (adam){ (float)g->lr, (float)g->beta1, (float)g->beta2, 1e-8f, 0 };
  t->opt_g = t->opt_d = t->opt_e;
  size_t img = (size_t)m->channels * m->height * m->width, n = (size_t)max_batch;
  size_t hx = hx_size(g), hz = hz_size(g);
  t->grads = anom_calloc(m->nparams, sizeof(float));
  t->m = anom_calloc(m->nparams, sizeof(float));
  t->v = anom_calloc(m->nparams, sizeof(float));
  t->z = anom_malloc(n * g->nz * sizeof(float));
  t->dlogit = anom_malloc(n * sizeof(float));
  t->djin = anom_malloc(n * (hx + hz) * sizeof(float));
  t->dhx = anom_malloc(n * hx * sizeof(float));
  t->dhz = anom_malloc(n * hz * sizeof(float));
  t->dgz = anom_malloc(n * img * sizeof(float));
  t->dez = anom_malloc(n * g->nz * sizeof(float));
  t->scratch = anom_malloc(max_scratch(g, max_batch, 1) * sizeof(float));
  if( !t->grads || !t->m || !t->v || !t->z || !t->dlogit || !t->djin || !t->dhx
      || !t->dhz || !t->dgz || !t->dez || !t->scratch )
    return anom_fail(e, ANOM_ENOMEM, "out of memory for training state");
  int rc;
  if( (rc = net_cache_init(&t->c_e, g->e, max_batch, e))
      || (rc = net_cache_init(&t->c_g, g->g, max_batch, e))
      || (rc = pair_init(g, &t->real, max_batch, r, e))
      || (rc = pair_init(g, &t->fake, max_batch, r, e)) )
    return rc;
  return ANOM_OK;
}

static int egbad_train_begin(anom_model *m, int max_batch, rng *r, void **state,
                             anom_err *e) {
  const egbad *g = m->det;
  for(int i = 0; i < m->nnets; i++) net_init_normal(m->nets[i], r, EG_INIT_STD, 0);
  eg_train *t;
  int rc = train_alloc(m, max_batch, r, &t, e);
  *state = t;
  if( rc ) return rc;
  return shadow_init(&t->sh, m->block, m->nparams, (float)g->ema, e);
}

static float *grads_of(const anom_model *m, float *grads, const net *nt) {
  return grads + (nt->params - m->block);
}

/* D's training forward on (x, z) into p, batch statistics, folded into the
** running statistics when update; returns the n logits. */
static const float *d_forward(egbad *g, eg_train *t, eg_pair *p, int n,
                              const float *x, const float *z, int update) {
  p->x = x;
  p->z = z;
  net_forward_train(g->dx, n, x, &p->cx, update, t->scratch);
  net_forward_train(g->dz, n, z, &p->cz, update, t->scratch);
  concat_forward(n, (int)hx_size(g), (int)hz_size(g), 1, p->jin,
                 net_cache_out(&p->cx, g->dx, -1), net_cache_out(&p->cz, g->dz, -1));
  net_forward_train(g->dj, n, p->jin, &p->cj, update, t->scratch);
  return net_cache_out(&p->cj, g->dj, -1);
}

/*
** Backward of D's last forward on p from dlogit (n) and, unless NULL, df
** (the gradient of f, n x 32 nf). Adds into D's parameter gradients when
** grads (laid out like m->block) is not NULL, and into dx (n, C, H, W) and
** dz (n, nz) unless NULL; branches nothing asks for are skipped.
*/
static void d_backward(const anom_model *m, const egbad *g, eg_train *t,
                       const eg_pair *p, int n, const float *dlogit, const float *df,
                       float *grads, float *dx, float *dz) {
  size_t hx = hx_size(g), hz = hz_size(g);
  float *gj = grads ? grads_of(m, grads, g->dj) : NULL;
  memset(t->djin, 0, (size_t)n * (hx + hz) * sizeof(float));
  net_backward(g->dj, n, p->jin, &p->cj, g->dj->nlayers, dlogit, t->djin, gj, t->scratch);
  if( df ) net_backward(g->dj, n, p->jin, &p->cj, EG_DJ_F, df, t->djin, gj, t->scratch);
  memset(t->dhx, 0, (size_t)n * hx * sizeof(float));
  memset(t->dhz, 0, (size_t)n * hz * sizeof(float));
  concat_backward(n, (int)hx, (int)hz, 1, t->dhx, t->dhz, t->djin);
  if( grads || dx )
    net_backward(g->dx, n, p->x, &p->cx, g->dx->nlayers, t->dhx, dx,
                 grads ? grads_of(m, grads, g->dx) : NULL, t->scratch);
  if( grads || dz )
    net_backward(g->dz, n, p->z, &p->cz, g->dz->nlayers, t->dhz, dz,
                 grads ? grads_of(m, grads, g->dz) : NULL, t->scratch);
}

/* BCE of the logits against target, its gradient into t->dlogit. */
static double logit_bce(eg_train *t, const float *logit, float target, int n) {
  memset(t->dlogit, 0, (size_t)n * sizeof(float));
  return bce_logits_loss(t->dlogit, logit, target, (size_t)n, 1.0f);
}

/* Adam on the parameters [off, off+len) of the raw weights, then the moving
** average and the live weights over that range. */
static void update(anom_model *m, eg_train *t, adam *opt, size_t off, size_t len) {
  shadow_grad(&t->sh, t->grads, m->block, off, len);
  adam_step(opt, t->sh.raw + off, t->grads + off, t->m + off, t->v + off, len);
  shadow_ema(&t->sh, off, len);
  shadow_refresh(&t->sh, m->block, off, len);
}

static int egbad_train_step(anom_model *m, void *state, int n, const float *x,
                            double *losses, anom_err *e) {
  egbad *g = m->det;
  eg_train *t = state;
  if( n < 2 || n > t->max_batch )
    return anom_fail(e, ANOM_EINVAL, "egbad: a training batch needs 2 to %d "
                     "images, found %d", t->max_batch, n);
  size_t nz = (size_t)n * g->nz, img = (size_t)m->channels * m->height * m->width;
  size_t d_len = m->nparams - t->d_off;
  const float *ez = net_cache_out(&t->c_e, g->e, -1), *gz = net_cache_out(&t->c_g, g->g, -1);

  /* D step: E and G on batch statistics, frozen */
  for(size_t i = 0; i < nz; i++) t->z[i] = (float)rng_normal(t->r);
  net_forward_train(g->e, n, x, &t->c_e, 0, t->scratch);
  net_forward_train(g->g, n, t->z, &t->c_g, 0, t->scratch);
  const float *l_real = d_forward(g, t, &t->real, n, x, ez, 1);
  const float *l_fake = d_forward(g, t, &t->fake, n, gz, t->z, 1);
  memset(t->grads + t->d_off, 0, d_len * sizeof(float));
  double d_real = logit_bce(t, l_real, 1.0f, n);
  d_backward(m, g, t, &t->real, n, t->dlogit, NULL, t->grads, NULL, NULL);
  double d_fake = logit_bce(t, l_fake, 0.0f, n);
  d_backward(m, g, t, &t->fake, n, t->dlogit, NULL, t->grads, NULL, NULL);
  update(m, t, &t->opt_d, t->d_off, d_len);

  /* G and E step: D on batch statistics, its running statistics left alone */
  for(size_t i = 0; i < nz; i++) t->z[i] = (float)rng_normal(t->r);
  net_forward_train(g->e, n, x, &t->c_e, 1, t->scratch);
  net_forward_train(g->g, n, t->z, &t->c_g, 1, t->scratch);
  l_real = d_forward(g, t, &t->real, n, x, ez, 0);
  l_fake = d_forward(g, t, &t->fake, n, gz, t->z, 0);
  memset(t->grads, 0, t->d_off * sizeof(float));
  memset(t->dgz, 0, (size_t)n * img * sizeof(float));
  double loss_g = logit_bce(t, l_fake, 1.0f, n);
  d_backward(m, g, t, &t->fake, n, t->dlogit, NULL, NULL, t->dgz, NULL);
  net_backward(g->g, n, t->z, &t->c_g, g->g->nlayers, t->dgz, NULL,
               grads_of(m, t->grads, g->g), t->scratch);
  memset(t->dez, 0, nz * sizeof(float));
  double loss_e = logit_bce(t, l_real, 0.0f, n);
  d_backward(m, g, t, &t->real, n, t->dlogit, NULL, NULL, NULL, t->dez);
  net_backward(g->e, n, x, &t->c_e, g->e->nlayers, t->dez, NULL,
               grads_of(m, t->grads, g->e), t->scratch);
  update(m, t, &t->opt_g, t->g_off, t->d_off - t->g_off);
  update(m, t, &t->opt_e, 0, t->g_off);

  losses[0] = d_real + d_fake;
  losses[1] = loss_g;
  losses[2] = loss_e;
  return ANOM_OK;
}

/* The moving averages become the model's weights. */
static void egbad_train_finish(anom_model *m, void *state) {
  eg_train *t = state;
  if( t ) shadow_finish(&t->sh, m->block);
}

/*
** For tests: L = sum_i r[i] logit_i + sum q . f over D's training forward on
** the n pairs (x, z): batch statistics (running statistics untouched),
** dropout masks drawn from masks (may be NULL when dropout is 0). Writes L
** into *loss, adds dL/dparams into grads (m->nparams floats, laid out like
** m->block; D's part only) and, unless NULL, dL/dx into dx (n, C, H, W) and
** dL/dz into dz (n, nz).
*/
int egbad_d_gradients(anom_model *m, int n, const float *x, const float *z,
                      const float *r, const float *q, rng *masks, double *loss,
                      float *grads, float *dx, float *dz, anom_err *e) {
  egbad *g = m->det;
  eg_train *t;
  int rc = train_alloc(m, n, masks, &t, e);
  if( rc ) goto done;
  const float *logit = d_forward(g, t, &t->real, n, x, z, 0);
  const float *f = net_cache_out(&t->real.cj, g->dj, EG_DJ_F - 1);
  size_t nf = (size_t)n * f_size(g);
  double l = 0;
  for(int i = 0; i < n; i++) l += (double)r[i] * logit[i];
  for(size_t k = 0; k < nf; k++) l += (double)q[k] * f[k];
  *loss = l;
  d_backward(m, g, t, &t->real, n, r, q, grads, dx, dz);
done:
  egbad_train_end(m, t);
  return rc;
}

const detector_ops egbad_ops = {
  "egbad",
  egbad_create,
  NULL,                  /* destroy: m->det owns nothing */
  egbad_hparams,
  egbad_work_floats,
  egbad_score,
  NULL,                  /* map: the residual */
  egbad_losses,
  egbad_train_begin,
  egbad_train_step,
  egbad_train_end,
  egbad_train_finish,
  100,                   /* batch: the authors' */
  NULL,                  /* train_epoch */
};
