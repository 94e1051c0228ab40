/*
** alad.c - ALAD, Adversarially Learned Anomaly Detection (Zenati, Romain,
** Foo, Lecouat and Chandrasekhar, ICDM 2018), method 'alad'.
**
** A BiGAN: an encoder E (x -> z) and a generator G (z -> x) are trained
** against a discriminator D_xz of joint pairs, (x, E(x)) against (G(z), z),
** and against two cycle discriminators: D_xx tells (x, x) from
** (x, G(E(x))) and D_zz tells (z, z) from (z, E(G(z))). A normal image goes
** round x -> E -> G almost unchanged in the eyes of D_xx; an anomaly does
** not.
**
**   x_hat = G(E(x)),  f_xx(a, b) = D_xx's last hidden layer
**   fm = sum |f_xx(x, x) - f_xx(x, x_hat)|       (the default score)
**   ch = softplus(-logit D_xx(x, x_hat))        (sigmoid CE against "real")
**   l1 = sum |x - x_hat|,  l2 = sqrt(sum (x - x_hat)^2)
** as the authors' run.py computes them (tf.norm ord 1 / 2 over the
** flattened image or features; degree 1). score = the one named by the
** hyper-parameter or the per-call option "score"; parts: all four.
**
** Networks, houssamzenati/Adversarially-Learned-Anomaly-Detection
** alad/cifar10_utilities.py adapted to isize s in {32, 64} and nc in {1, 3}:
** L = log2(s) - 2 stride-2 levels, C_i = min(nf 2^i, 4 nf), i = 0..L-1
** (nf 128, s 32: 128, 256, 512). Every conv, transposed conv and linear
** layer has a bias; BN is TF's (eps 1e-3, momentum 0.99 = PyTorch's 0.01);
** LReLU slope 0.2; [SN] marks spectrally normalised layers (hyper-parameter
** sn); p = dropout. Tensor names are the prefix + the TF scope path.
**   E "encoder.":  layer_i.conv Conv(4,2,1) -> C_(i-1) [SN], BN, LReLU
**                  (i = 1..L); layer_(L+1).conv Conv(4,1,0) -> nz: (nz,1,1)
**   G "generator.": layer_1.tconv1 ConvT(4,1,0) nz -> C_(L-1) at 4x4 (the
**                  authors' stride-2 VALID transposed conv of a 1x1 input
**                  gives the same), BN, ReLU; layer_k.tconvk ConvT(4,2,1)
**                  C_(L-k+1) -> C_(L-k), BN, ReLU (k = 2..L);
**                  layer_(L+1).tconv(L+1) ConvT(4,2,1) -> nc, tanh
**   D_xz "discriminator_xz.", three nets:
**     x: x_layer_1.conv1 Conv(4,2,1) -> C_0 [SN], LReLU; x_layer_i.convi
**        -> C_(i-1) [SN], BN, LReLU (i = 2..L); seen as (16 C_(L-1), 1, 1)
**     z: z_layer_1.conv, z_layer_2.conv 1x1 -> 4 nf [SN], LReLU, dropout p
**     y: on [x, z] (channels): y_layer_1.conv 1x1 -> 8 nf [SN], LReLU,
**        dropout p; y_layer_2.conv 1x1 -> 1, the logit
**   D_xx "discriminator_xx.", on [x, x'] stacked along channels (2 nc, s, s):
**        layer_1.conv1 Conv(5,2,2) -> nf/2 [SN], LReLU, dropout p;
**        layer_2.conv2 Conv(5,2,2) -> nf [SN], LReLU, dropout p: f_xx,
**        (nf, s/4, s/4) flattened; layer_3.fc Linear -> 1
**   D_zz "discriminator_zz." (hyper-parameter dzz), on [z, z'] (2 nz, 1, 1):
**        y_layer_1.fc Linear -> 64 [SN], y_layer_2.fc -> 32 [SN] (LReLU,
**        dropout p each), y_layer_3.fc -> 1
** Seven nets in this order (six without D_zz); each role's parameters are
** one contiguous range of the model's block.
**
** Training (run.py), per batch x and with BCE(l, t) the mean sigmoid
** cross-entropy of the logits l against the constant t:
**   D step, z1 ~ N(0, 1) (n x nz from the rng): E and G in training mode
**     (batch statistics) with their running statistics left alone and no
**     gradients: E(x), G(z1), x_rec = G(E(x)), z_rec = E(G(z1));
**       d_xz = BCE(D_xz(x, E(x)), 1) + BCE(D_xz(G(z1), z1), 0)
**       d_xx = BCE(D_xx(x, x), 1)    + BCE(D_xx(x, x_rec), 0)
**       d_zz = BCE(D_zz(z1, z1), 1)  + BCE(D_zz(z1, z_rec), 0)
**     each D one Adam step on its own loss; D's running statistics move on
**     the real pass, then the fake one.
**   G/E step, fresh z2: E(x), G(z2), x_rec, z_rec with E's and G's running
**     statistics moving (in that order); the D's with batch statistics and
**     fresh dropout masks, their running statistics left alone;
**       cycle = BCE(D_xx(x, x), 0) + BCE(D_xx(x, x_rec), 1)
**             + BCE(D_zz(z2, z2), 0) + BCE(D_zz(z2, z_rec), 1)
**       g = BCE(D_xz(G(z2), z2), 1) + cycle    -> Adam on G
**       e = BCE(D_xz(x, E(x)), 0) + cycle      -> Adam on E
**     g does not depend on E's weights through its first term, nor e on G's
**     through its own, so one backward pass of g + e - cycle gives G's
**     gradient of g and E's of e together.
**   Without D_zz its terms are absent (loss d_zz reads 0). Dropout masks and
**   z come from the training rng, in forward order.
** Weights: raw weights, their moving average (decay ema) and spectral
** normalisation live in a shadow (core/shadow.h). After each Adam step on a
** role's raw weights: the moving average over that role, then one power
** iteration of its normalised layers (shadow_refresh), so the live weights,
** W / sigma(W), follow. Gradients through sigma hold u and v constant.
** train_begin draws the weights (N(0, 0.01), biases 0, BN gamma 1), then one
** u per normalised layer in the order E, D_xz (x, z, y), D_xx, D_zz, then
** runs the first power iteration. train_finish puts the normalised moving
** averages into the model (shadow_finish): the file stores those, so
** scoring runs plain layers in inference mode (running statistics, no
** dropout).
** A bias that feeds a batch norm (E's and G's, D_xz's x branch) gets the
** gradient 0: in training mode the batch mean removes it, so its exact
** gradient is 0, and the float one is rounding noise that Adam, which
** divides by the gradient's own scale, would turn into steps of up to lr.
** Such biases stay 0.
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

#define ALAD_BN_EPS 1e-3f
#define ALAD_BN_MOMENTUM 0.01f
#define ALAD_SLOPE 0.2f
#define ALAD_INIT_STD 0.01f

enum { SCORE_FM, SCORE_CH, SCORE_L1, SCORE_L2, NSCORES };
static const char *const score_names[NSCORES] = {"fm", "ch", "l1", "l2"};

/* The roles, each with its own optimiser and a contiguous range of weights. */
enum { R_E, R_G, R_DXZ, R_DXX, R_DZZ, NROLES };

typedef struct alad {
  int nz, nf, sn, use_dzz, score;
  double lr, beta1, beta2, ema, dropout;
  int levels;                      /* L */
  net *e, *g, *dxz_x, *dxz_z, *dxz_y, *dxx, *dzz;  /* dzz NULL without D_zz */
  int fxx_end;                     /* D_xx layers [0, fxx_end) give f_xx */
} alad;

static int level_ch(const alad *a, int i) {
  int c = a->nf << i;
  return c < 4 * a->nf ? c : 4 * a->nf;
}

/* Layer name from a format and up to two level numbers. */
static const char *lname(char *buf, const char *fmt, int i, int j) {
  snprintf(buf, NET_NAME_MAX, fmt, i, j);
  return buf;
}

static void bn(net *nt, const char *name) {
  net_batchnorm(nt, name, ALAD_BN_EPS);
  net_set_momentum(nt, ALAD_BN_MOMENTUM);
}

static void build_encoder(const alad *a, net *nt) {
  char nm[NET_NAME_MAX];
  int L = a->levels;
  for(int i = 1; i <= L; i++){
    net_conv(nt, lname(nm, "layer_%d.conv", i, 0), level_ch(a, i - 1), 4, 2, 1, 1);
    bn(nt, lname(nm, "layer_%d.batch_normalization", i, 0));
    net_leaky_relu(nt, lname(nm, "layer_%d.leaky_relu", i, 0), ALAD_SLOPE);
  }
  net_conv(nt, lname(nm, "layer_%d.conv", L + 1, 0), a->nz, 4, 1, 0, 1);
}

static void build_generator(const alad *a, net *nt, int nc) {
  char nm[NET_NAME_MAX];
  int L = a->levels;
  net_convt(nt, "layer_1.tconv1", level_ch(a, L - 1), 4, 1, 0, 1);
  bn(nt, "layer_1.batch_normalization");
  net_relu(nt, "layer_1.relu");
  for(int k = 2; k <= L; k++){
    net_convt(nt, lname(nm, "layer_%d.tconv%d", k, k), level_ch(a, L - k), 4, 2, 1, 1);
    bn(nt, lname(nm, "layer_%d.batch_normalization", k, 0));
    net_relu(nt, lname(nm, "layer_%d.relu", k, 0));
  }
  net_convt(nt, lname(nm, "layer_%d.tconv%d", L + 1, L + 1), nc, 4, 2, 1, 1);
  net_tanh(nt, lname(nm, "layer_%d.tanh", L + 1, 0));
}

static void build_dxz_x(const alad *a, net *nt) {
  char nm[NET_NAME_MAX];
  int L = a->levels;
  net_conv(nt, "x_layer_1.conv1", level_ch(a, 0), 4, 2, 1, 1);
  net_leaky_relu(nt, "x_layer_1.leaky_relu", ALAD_SLOPE);
  for(int i = 2; i <= L; i++){
    net_conv(nt, lname(nm, "x_layer_%d.conv%d", i, i), level_ch(a, i - 1), 4, 2, 1, 1);
    bn(nt, lname(nm, "x_layer_%d.batch_normalization", i, 0));
    net_leaky_relu(nt, lname(nm, "x_layer_%d.leaky_relu", i, 0), ALAD_SLOPE);
  }
  net_reshape(nt, "x_flatten", 16 * level_ch(a, L - 1), 1, 1);
}

static void build_dxz_z(const alad *a, net *nt) {
  float p = (float)a->dropout;
  net_conv(nt, "z_layer_1.conv", 4 * a->nf, 1, 1, 0, 1);
  net_leaky_relu(nt, "z_layer_1.leaky_relu", ALAD_SLOPE);
  net_dropout(nt, "z_layer_1.dropout", p);
  net_conv(nt, "z_layer_2.conv", 4 * a->nf, 1, 1, 0, 1);
  net_leaky_relu(nt, "z_layer_2.leaky_relu", ALAD_SLOPE);
  net_dropout(nt, "z_layer_2.dropout", p);
}

static void build_dxz_y(const alad *a, net *nt) {
  net_conv(nt, "y_layer_1.conv", 8 * a->nf, 1, 1, 0, 1);
  net_leaky_relu(nt, "y_layer_1.leaky_relu", ALAD_SLOPE);
  net_dropout(nt, "y_layer_1.dropout", (float)a->dropout);
  net_conv(nt, "y_layer_2.conv", 1, 1, 1, 0, 1);
}

static void build_dxx(alad *a, net *nt) {
  float p = (float)a->dropout;
  net_conv(nt, "layer_1.conv1", a->nf / 2, 5, 2, 2, 1);
  net_leaky_relu(nt, "layer_1.leaky_relu", ALAD_SLOPE);
  net_dropout(nt, "layer_1.dropout", p);
  net_conv(nt, "layer_2.conv2", a->nf, 5, 2, 2, 1);
  net_leaky_relu(nt, "layer_2.leaky_relu", ALAD_SLOPE);
  net_dropout(nt, "layer_2.dropout", p);
  a->fxx_end = nt->nlayers;
  net_linear(nt, "layer_3.fc", 1, 1);
}

static void build_dzz(const alad *a, net *nt) {
  float p = (float)a->dropout;
  net_linear(nt, "y_layer_1.fc", 64, 1);
  net_leaky_relu(nt, "y_layer_1.leaky_relu", ALAD_SLOPE);
  net_dropout(nt, "y_layer_1.dropout", p);
  net_linear(nt, "y_layer_2.fc", 32, 1);
  net_leaky_relu(nt, "y_layer_2.leaky_relu", ALAD_SLOPE);
  net_dropout(nt, "y_layer_2.dropout", p);
  net_linear(nt, "y_layer_3.fc", 1, 1);
}

/* The score named by obj's "score" (def when absent). */
static int parse_score(const cJSON *obj, int def, int *out, anom_err *e) {
  const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, "score") : NULL;
  if( !v ){ *out = def; return ANOM_OK; }
  for(int k = 0; k < NSCORES && cJSON_IsString(v); k++)
    if( strcmp(v->valuestring, score_names[k]) == 0 ){ *out = k; return ANOM_OK; }
  return anom_fail(e, ANOM_EINVAL, "alad: 'score' must be one of fm, ch, l1, l2");
}

/* Declare nt (built by the caller) and return the model's copy in *out. */
static int add(anom_model *m, net *nt, net **out, anom_err *e) {
  int rc = model_add_net(m, nt, e);
  if( rc ) return rc;
  *out = m->nets[m->nnets - 1];
  return ANOM_OK;
}

static int alad_create(anom_model *m, const cJSON *hp, anom_err *e) {
  static const char *const known[] = {"nz", "nf", "lr", "beta1", "beta2", "ema",
                                      "dropout", "sn", "dzz", "score", NULL};
  const char *me = "alad";
  int rc;
  if( (rc = hp_check_keys(hp, known, me, "hyper-parameter", e)) ) return rc;
  alad *a = anom_calloc(1, sizeof(*a));
  if( !a ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  m->det = a;
  if( (rc = hp_int(hp, me, "nz", 100, 1, 4096, &a->nz, e))
      || (rc = hp_int(hp, me, "nf", 128, 2, 1024, &a->nf, e))
      || (rc = hp_num(hp, me, "lr", 2e-4, 1e-12, 1, &a->lr, e))
      || (rc = hp_num(hp, me, "beta1", 0.5, 0, 0.999999, &a->beta1, e))
      || (rc = hp_num(hp, me, "beta2", 0.999, 0, 0.999999999, &a->beta2, e))
      || (rc = hp_num(hp, me, "ema", 0.999, 0, 0.999999999, &a->ema, e))
      || (rc = hp_num(hp, me, "dropout", 0.2, 0, 0.9, &a->dropout, e))
      || (rc = hp_int(hp, me, "sn", 1, 0, 1, &a->sn, e))
      || (rc = hp_int(hp, me, "dzz", 1, 0, 1, &a->use_dzz, e))
      || (rc = parse_score(hp, SCORE_FM, &a->score, e)) )
    return rc;
  int s = m->width, nc = m->channels;
  if( m->width != m->height || (s != 32 && s != 64) )
    return anom_fail(e, ANOM_EINVAL, "alad: the input must be square with a side "
                     "of 32 or 64, found %dx%d", m->width, m->height);
  a->levels = s == 32 ? 3 : 4;
  int L = a->levels;
  net nt;
  net_init(&nt, "encoder.", nc, s, s);
  build_encoder(a, &nt);
  if( (rc = add(m, &nt, &a->e, e)) ) return rc;
  net_init(&nt, "generator.", a->nz, 1, 1);
  build_generator(a, &nt, nc);
  if( (rc = add(m, &nt, &a->g, e)) ) return rc;
  net_init(&nt, "discriminator_xz.", nc, s, s);
  build_dxz_x(a, &nt);
  if( (rc = add(m, &nt, &a->dxz_x, e)) ) return rc;
  net_init(&nt, "discriminator_xz.", a->nz, 1, 1);
  build_dxz_z(a, &nt);
  if( (rc = add(m, &nt, &a->dxz_z, e)) ) return rc;
  net_init(&nt, "discriminator_xz.", 16 * level_ch(a, L - 1) + 4 * a->nf, 1, 1);
  build_dxz_y(a, &nt);
  if( (rc = add(m, &nt, &a->dxz_y, e)) ) return rc;
  net_init(&nt, "discriminator_xx.", 2 * nc, s, s);
  build_dxx(a, &nt);
  if( (rc = add(m, &nt, &a->dxx, e)) ) return rc;
  if( a->use_dzz ){
    net_init(&nt, "discriminator_zz.", 2 * a->nz, 1, 1);
    build_dzz(a, &nt);
    if( (rc = add(m, &nt, &a->dzz, e)) ) return rc;
  }
  return ANOM_OK;
}

static cJSON *alad_hparams(const anom_model *m) {
  const alad *a = m->det;
  cJSON *j = cJSON_CreateObject();
  if( !j ) return NULL;
  cJSON_AddNumberToObject(j, "nz", a->nz);
  cJSON_AddNumberToObject(j, "nf", a->nf);
  cJSON_AddNumberToObject(j, "lr", a->lr);
  cJSON_AddNumberToObject(j, "beta1", a->beta1);
  cJSON_AddNumberToObject(j, "beta2", a->beta2);
  cJSON_AddNumberToObject(j, "ema", a->ema);
  cJSON_AddNumberToObject(j, "dropout", a->dropout);
  cJSON_AddNumberToObject(j, "sn", a->sn);
  cJSON_AddNumberToObject(j, "dzz", a->use_dzz);
  cJSON_AddStringToObject(j, "score", score_names[a->score]);
  return j;
}

static size_t img_floats(const anom_model *m) {
  return (size_t)m->channels * m->height * m->width;
}

/* Floats of one f_xx. */
static size_t fxx_floats(const alad *a) {
  return net_out_floats(a->dxx, a->fxx_end - 1);
}

static size_t max_size(size_t x, size_t y) { return x > y ? x : y; }

static size_t alad_work_floats(const anom_model *m, int n) {
  const alad *a = m->det;
  size_t scratch = max_size(net_scratch_floats(a->e, n), net_scratch_floats(a->g, n));
  scratch = max_size(scratch, net_scratch_floats(a->dxx, n));
  return (size_t)n * (a->nz + 3 * img_floats(m) + 2 * fxx_floats(a) + 1) + scratch;
}

static int alad_score(const anom_model *m, int n, const float *x, float *work,
                      score_result *out, float *recon, const cJSON *opts,
                      anom_err *e) {
  const alad *a = m->det;
  static const char *const known[] = {"score", NULL};
  int which, rc;
  if( (rc = hp_check_keys(opts, known, "alad", "scoring option", e))
      || (rc = parse_score(opts, a->score, &which, e)) )
    return rc;
  size_t img = img_floats(m), fsz = fxx_floats(a);
  int nc = m->channels, hw = m->height * m->width;
  float *z = work, *xh = z + (size_t)n * a->nz, *cat = xh + (size_t)n * img;
  float *fr = cat + 2 * (size_t)n * img, *ff = fr + (size_t)n * fsz;
  float *logit = ff + (size_t)n * fsz, *scratch = logit + n;
  const net *d = a->dxx;
  net_forward(a->e, 0, a->e->nlayers, n, x, z, scratch);
  net_forward(a->g, 0, a->g->nlayers, n, z, xh, scratch);
  concat_forward(n, nc, nc, hw, cat, x, x);
  net_forward(d, 0, a->fxx_end, n, cat, fr, scratch);
  concat_forward(n, nc, nc, hw, cat, x, xh);
  net_forward(d, 0, a->fxx_end, n, cat, ff, scratch);
  net_forward(d, a->fxx_end, d->nlayers, n, ff, logit, scratch);
  for(int i = 0; i < n; i++){
    const float *xi = x + (size_t)i * img, *xhi = xh + (size_t)i * img;
    const float *fri = fr + (size_t)i * fsz, *ffi = ff + (size_t)i * fsz;
    double fm = 0, l1 = 0, l2 = 0, l = logit[i];
    for(size_t k = 0; k < fsz; k++) fm += fabs((double)fri[k] - ffi[k]);
    for(size_t k = 0; k < img; k++){
      double dd = (double)xi[k] - xhi[k];
      l1 += fabs(dd);
      l2 += dd * dd;
    }
    score_result *r = &out[i];
    r->nparts = NSCORES;
    r->part_name[SCORE_FM] = "fm"; r->part[SCORE_FM] = fm;
    r->part_name[SCORE_CH] = "ch"; r->part[SCORE_CH] = fmax(-l, 0) + log1p(exp(-fabs(l)));
    r->part_name[SCORE_L1] = "l1"; r->part[SCORE_L1] = l1;
    r->part_name[SCORE_L2] = "l2"; r->part[SCORE_L2] = sqrt(l2);
    r->score = r->part[which];
  }
  if( recon ) memcpy(recon, xh, (size_t)n * img * sizeof(float));
  return ANOM_OK;
}


/* ---- training ----------------------------------------------------------- */

/* D_xz's three nets, for one pass: caches and the joint net's input. */
typedef struct dxz_pass {
  net_cache c[3];                  /* x branch, z branch, joint */
  float *cat;                      /* [x branch, z branch] */
} dxz_pass;

typedef struct alad_train {
  int max_batch;
  rng *r;
  shadow sh;                       /* raw weights, moving average, SN */
  float *grads, *m, *v;            /* like the model's parameters */
  adam opt[NROLES];
  size_t off[NROLES], cnt[NROLES]; /* each role's range of parameters */
  net_cache c_ex, c_gz, c_gr, c_ez;   /* E(x), G(z), G(E(x)), E(G(z)) */
  dxz_pass xz_real, xz_fake;       /* D_xz(x, E(x)), D_xz(G(z), z) */
  net_cache c_xx_real, c_xx_fake, c_zz_real, c_zz_fake;
  float *buf;                      /* the buffers below, one allocation */
  float *z;                        /* (n, nz) */
  float *cat_xx_real, *cat_xx_fake;/* (n, 2 nc, s, s) */
  float *cat_zz_real, *cat_zz_fake;/* (n, 2 nz) */
  float *dlogit;                   /* (n) */
  float *djoint, *dxb, *dzb;       /* D_xz's joint input, split */
  float *dxx_in, *dzz_in;          /* gradients of D_xx's, D_zz's inputs */
  float *d_rx, *d_gz;              /* of G(E(x)), G(z): (n, nc, s, s) */
  float *d_rz, *d_ex;              /* of E(G(z)), E(x): (n, nz) */
  float *scratch;
} alad_train;

static const char *const alad_losses[] = {"d_xz", "d_xx", "d_zz", "g", "e", NULL};

/* Each role's nets, in model order (unused slots NULL). */
static void role_nets(const alad *a, int role, const net *out[3]) {
  out[0] = out[1] = out[2] = NULL;
  switch( role ){
    case R_E: out[0] = a->e; break;
    case R_G: out[0] = a->g; break;
    case R_DXZ: out[0] = a->dxz_x; out[1] = a->dxz_z; out[2] = a->dxz_y; break;
    case R_DXX: out[0] = a->dxx; break;
    case R_DZZ: out[0] = a->dzz; break;
  }
}

static void cache_free3(dxz_pass *p) {
  for(int i = 0; i < 3; i++) net_cache_free(&p->c[i]);
}

static void alad_train_end(anom_model *m, void *state) {
  alad_train *t = state;
  (void)m;
  if( !t ) return;
  shadow_free(&t->sh);
  anom_free(t->grads);
  anom_free(t->m);
  anom_free(t->v);
  net_cache_free(&t->c_ex);
  net_cache_free(&t->c_gz);
  net_cache_free(&t->c_gr);
  net_cache_free(&t->c_ez);
  cache_free3(&t->xz_real);
  cache_free3(&t->xz_fake);
  net_cache_free(&t->c_xx_real);
  net_cache_free(&t->c_xx_fake);
  net_cache_free(&t->c_zz_real);
  net_cache_free(&t->c_zz_fake);
  anom_free(t->buf);
  anom_free(t);
}

static size_t joint_floats(const alad *a) {
  return (size_t)a->dxz_y->c;
}

/* Carve t->buf (when not NULL) into the buffers for batches of n; returns
** the floats they take. */
static size_t carve(const anom_model *m, const alad *a, alad_train *t, size_t n) {
  size_t img = img_floats(m), nz = (size_t)a->nz, jf = joint_floats(a);
  size_t xb = net_out_floats(a->dxz_x, -1), zb = net_out_floats(a->dxz_z, -1);
  size_t scratch = 0;
  for(int i = 0; i < m->nnets; i++)
    scratch = max_size(scratch, net_train_scratch_floats(m->nets[i], (int)n));
  struct { float **p; size_t floats; } parts[] = {
    {&t->z, n * nz},
    {&t->cat_xx_real, 2 * n * img}, {&t->cat_xx_fake, 2 * n * img},
    {&t->cat_zz_real, 2 * n * nz}, {&t->cat_zz_fake, 2 * n * nz},
    {&t->xz_real.cat, n * jf}, {&t->xz_fake.cat, n * jf},
    {&t->dlogit, n},
    {&t->djoint, n * jf}, {&t->dxb, n * xb}, {&t->dzb, n * zb},
    {&t->dxx_in, 2 * n * img}, {&t->dzz_in, 2 * n * nz},
    {&t->d_rx, n * img}, {&t->d_gz, n * img}, {&t->d_rz, n * nz}, {&t->d_ex, n * nz},
    {&t->scratch, scratch},
  };
  size_t total = 0;
  for(size_t k = 0; k < sizeof(parts) / sizeof(parts[0]); k++){
    if( t->buf ) *parts[k].p = t->buf + total;
    total += parts[k].floats;
  }
  return total;
}

/* Register the convolutions and linear layers of nt for spectral
** normalisation, all of them or all but the last (a logit or E's output). */
static int add_sn_net(shadow *s, const anom_model *m, const net *nt, int all, rng *r,
                      anom_err *e) {
  int last = -1, rc;
  for(int i = 0; i < nt->nlayers; i++)
    if( nt->layers[i].kind == LAYER_CONV || nt->layers[i].kind == LAYER_LINEAR ) last = i;
  for(int i = 0; i < nt->nlayers; i++){
    layer_kind k = nt->layers[i].kind;
    if( (k == LAYER_CONV || k == LAYER_LINEAR) && (all || i != last)
        && (rc = shadow_add_sn(s, m->block, nt, i, r, e)) )
      return rc;
  }
  return ANOM_OK;
}

static int alad_train_begin(anom_model *m, int max_batch, rng *r, void **state,
                            anom_err *e) {
  alad *a = m->det;
  for(int i = 0; i < m->nnets; i++) net_init_normal(m->nets[i], r, ALAD_INIT_STD, 0);
  alad_train *t = anom_calloc(1, sizeof(*t));
  *state = t;
  if( !t ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  t->max_batch = max_batch;
  t->r = r;
  for(int role = 0; role < NROLES; role++){
    const net *nets[3];
    role_nets(a, role, nets);
    if( !nets[0] ) continue;
    t->off[role] = (size_t)(nets[0]->params - m->block);
    for(int k = 0; k < 3 && nets[k]; k++) t->cnt[role] += nets[k]->nparams;
    t->opt[role] = (adam){ (float)a->lr, (float)a->beta1, (float)a->beta2, 1e-8f, 0 };
  }
  int rc;
  if( (rc = shadow_init(&t->sh, m->block, m->nparams, (float)a->ema, e)) ) return rc;
  /* u: E, D_xz (x, z, joint), D_xx, D_zz, right after the weights */
  if( a->sn
      && ((rc = add_sn_net(&t->sh, m, a->e, 0, r, e))
          || (rc = add_sn_net(&t->sh, m, a->dxz_x, 1, r, e))
          || (rc = add_sn_net(&t->sh, m, a->dxz_z, 1, r, e))
          || (rc = add_sn_net(&t->sh, m, a->dxz_y, 0, r, e))
          || (rc = add_sn_net(&t->sh, m, a->dxx, 0, r, e))
          || (a->dzz && (rc = add_sn_net(&t->sh, m, a->dzz, 0, r, e)))) )
    return rc;
  shadow_refresh(&t->sh, m->block, 0, m->nparams);

  t->grads = anom_calloc(m->nparams, sizeof(float));
  t->m = anom_calloc(m->nparams, sizeof(float));
  t->v = anom_calloc(m->nparams, sizeof(float));
  t->buf = anom_malloc(carve(m, a, t, (size_t)max_batch) * sizeof(float));
  if( !t->grads || !t->m || !t->v || !t->buf )
    return anom_fail(e, ANOM_ENOMEM, "out of memory for training state");
  carve(m, a, t, (size_t)max_batch);
  net_cache *caches[] = {&t->c_ex, &t->c_gz, &t->c_gr, &t->c_ez};
  const net *owners[] = {a->e, a->g, a->g, a->e};
  for(int k = 0; k < 4; k++)
    if( (rc = net_cache_init(caches[k], owners[k], max_batch, e)) ) return rc;
  const net *xz[3] = {a->dxz_x, a->dxz_z, a->dxz_y};
  for(int k = 0; k < 3; k++)
    if( (rc = net_cache_init(&t->xz_real.c[k], xz[k], max_batch, e))
        || (rc = net_cache_init(&t->xz_fake.c[k], xz[k], max_batch, e)) )
      return rc;
  if( (rc = net_cache_init(&t->c_xx_real, a->dxx, max_batch, e))
      || (rc = net_cache_init(&t->c_xx_fake, a->dxx, max_batch, e)) )
    return rc;
  if( a->dzz
      && ((rc = net_cache_init(&t->c_zz_real, a->dzz, max_batch, e))
          || (rc = net_cache_init(&t->c_zz_fake, a->dzz, max_batch, e))) )
    return rc;
  for(int k = 0; k < 3; k++) t->xz_real.c[k].rng = t->xz_fake.c[k].rng = r;
  t->c_xx_real.rng = t->c_xx_fake.rng = t->c_zz_real.rng = t->c_zz_fake.rng = r;
  return ANOM_OK;
}

static void alad_train_finish(anom_model *m, void *state) {
  alad_train *t = state;
  shadow_finish(&t->sh, m->block);
}

static float *grads_of(const anom_model *m, float *grads, const net *nt) {
  return grads + (nt->params - m->block);
}

/* Zero the gradients of the biases of nt that feed a batch norm. */
static void zero_bn_fed_biases(const anom_model *m, const net *nt, float *grads) {
  float *g = grads_of(m, grads, nt);
  for(int i = 0; i + 1 < nt->nlayers; i++){
    const layer *l = &nt->layers[i];
    if( l->has_bias && nt->layers[i + 1].kind == LAYER_BATCHNORM )
      memset(g + l->p_off + l->np - l->oc, 0, (size_t)l->oc * sizeof(float));
  }
}

/* Adam on a role's raw weights from the gradients in t->grads (with
** respect to the live weights), then its moving average and live weights. */
static void update(anom_model *m, alad_train *t, int role) {
  size_t off = t->off[role], cnt = t->cnt[role];
  shadow_grad(&t->sh, t->grads, m->block, off, cnt);
  adam_step(&t->opt[role], t->sh.raw + off, t->grads + off, t->m + off, t->v + off, cnt);
  shadow_ema(&t->sh, off, cnt);
  shadow_refresh(&t->sh, m->block, off, cnt);
}

/* D_xz on (x, z), training mode, into p; returns the logits (n). */
static const float *dxz_forward(const alad *a, alad_train *t, int n, const float *x,
                                const float *z, dxz_pass *p, int update_running) {
  net_forward_train(a->dxz_x, n, x, &p->c[0], update_running, t->scratch);
  net_forward_train(a->dxz_z, n, z, &p->c[1], update_running, t->scratch);
  int cx = (int)net_out_floats(a->dxz_x, -1), cz = (int)net_out_floats(a->dxz_z, -1);
  concat_forward(n, cx, cz, 1, p->cat, net_cache_out(&p->c[0], a->dxz_x, -1),
                 net_cache_out(&p->c[1], a->dxz_z, -1));
  net_forward_train(a->dxz_y, n, p->cat, &p->c[2], update_running, t->scratch);
  return net_cache_out(&p->c[2], a->dxz_y, -1);
}

/* Backward of a dxz_forward from t->dlogit: adds into dx and dz (either may
** be NULL) and, unless grads is NULL, into D_xz's gradients. */
static void dxz_backward(const anom_model *m, const alad *a, alad_train *t, int n,
                         const float *x, const float *z, dxz_pass *p, float *dx,
                         float *dz, float *grads) {
  size_t cx = net_out_floats(a->dxz_x, -1), cz = net_out_floats(a->dxz_z, -1);
  memset(t->djoint, 0, (size_t)n * joint_floats(a) * sizeof(float));
  memset(t->dxb, 0, (size_t)n * cx * sizeof(float));
  memset(t->dzb, 0, (size_t)n * cz * sizeof(float));
  const net *y = a->dxz_y, *xn = a->dxz_x, *zn = a->dxz_z;
  net_backward(y, n, p->cat, &p->c[2], y->nlayers, t->dlogit, t->djoint,
               grads ? grads_of(m, grads, y) : NULL, t->scratch);
  concat_backward(n, (int)cx, (int)cz, 1, t->dxb, t->dzb, t->djoint);
  if( dx || grads )
    net_backward(xn, n, x, &p->c[0], xn->nlayers, t->dxb, dx,
                 grads ? grads_of(m, grads, xn) : NULL, t->scratch);
  if( dz || grads )
    net_backward(zn, n, z, &p->c[1], zn->nlayers, t->dzb, dz,
                 grads ? grads_of(m, grads, zn) : NULL, t->scratch);
}

/* BCE of logits (n) against target; adds its gradient into t->dlogit after
** zeroing it. */
static double bce(alad_train *t, int n, const float *logits, float target) {
  memset(t->dlogit, 0, (size_t)n * sizeof(float));
  return bce_logits_loss(t->dlogit, logits, target, (size_t)n, 1.0f);
}

/* E(x), G(z), G(E(x)), E(G(z)) in training mode, into the four caches. */
static void cycle_forward(const alad *a, alad_train *t, int n, const float *x,
                          int update_running) {
  net_forward_train(a->e, n, x, &t->c_ex, update_running, t->scratch);
  net_forward_train(a->g, n, t->z, &t->c_gz, update_running, t->scratch);
  net_forward_train(a->g, n, net_cache_out(&t->c_ex, a->e, -1), &t->c_gr, update_running,
                    t->scratch);
  net_forward_train(a->e, n, net_cache_out(&t->c_gz, a->g, -1), &t->c_ez, update_running,
                    t->scratch);
}

static void draw_z(const alad *a, alad_train *t, int n) {
  for(size_t i = 0; i < (size_t)n * a->nz; i++) t->z[i] = (float)rng_normal(t->r);
}

/* The D step: losses[0..2]. */
static void d_step(anom_model *m, alad *a, alad_train *t, int n, const float *x,
                   double *losses) {
  int nc = m->channels, hw = m->height * m->width, nz = a->nz;
  draw_z(a, t, n);
  cycle_forward(a, t, n, x, 0);
  const float *ex = net_cache_out(&t->c_ex, a->e, -1), *gz = net_cache_out(&t->c_gz, a->g, -1);
  const float *rx = net_cache_out(&t->c_gr, a->g, -1), *rz = net_cache_out(&t->c_ez, a->e, -1);
  const float *l_real = dxz_forward(a, t, n, x, ex, &t->xz_real, 1);
  const float *l_fake = dxz_forward(a, t, n, gz, t->z, &t->xz_fake, 1);
  concat_forward(n, nc, nc, hw, t->cat_xx_real, x, x);
  net_forward_train(a->dxx, n, t->cat_xx_real, &t->c_xx_real, 1, t->scratch);
  concat_forward(n, nc, nc, hw, t->cat_xx_fake, x, rx);
  net_forward_train(a->dxx, n, t->cat_xx_fake, &t->c_xx_fake, 1, t->scratch);
  if( a->dzz ){
    concat_forward(n, nz, nz, 1, t->cat_zz_real, t->z, t->z);
    net_forward_train(a->dzz, n, t->cat_zz_real, &t->c_zz_real, 1, t->scratch);
    concat_forward(n, nz, nz, 1, t->cat_zz_fake, t->z, rz);
    net_forward_train(a->dzz, n, t->cat_zz_fake, &t->c_zz_fake, 1, t->scratch);
  }

  /* D_xz */
  memset(t->grads + t->off[R_DXZ], 0, t->cnt[R_DXZ] * sizeof(float));
  losses[0] = bce(t, n, l_real, 1.0f);
  dxz_backward(m, a, t, n, x, ex, &t->xz_real, NULL, NULL, t->grads);
  losses[0] += bce(t, n, l_fake, 0.0f);
  dxz_backward(m, a, t, n, gz, t->z, &t->xz_fake, NULL, NULL, t->grads);
  zero_bn_fed_biases(m, a->dxz_x, t->grads);
  update(m, t, R_DXZ);

  /* D_xx */
  const net *d = a->dxx;
  float *gd = grads_of(m, t->grads, d);
  memset(gd, 0, t->cnt[R_DXX] * sizeof(float));
  losses[1] = bce(t, n, net_cache_out(&t->c_xx_real, d, -1), 1.0f);
  net_backward(d, n, t->cat_xx_real, &t->c_xx_real, d->nlayers, t->dlogit, NULL, gd,
               t->scratch);
  losses[1] += bce(t, n, net_cache_out(&t->c_xx_fake, d, -1), 0.0f);
  net_backward(d, n, t->cat_xx_fake, &t->c_xx_fake, d->nlayers, t->dlogit, NULL, gd,
               t->scratch);
  update(m, t, R_DXX);

  /* D_zz */
  losses[2] = 0;
  if( a->dzz ){
    d = a->dzz;
    gd = grads_of(m, t->grads, d);
    memset(gd, 0, t->cnt[R_DZZ] * sizeof(float));
    losses[2] = bce(t, n, net_cache_out(&t->c_zz_real, d, -1), 1.0f);
    net_backward(d, n, t->cat_zz_real, &t->c_zz_real, d->nlayers, t->dlogit, NULL, gd,
                 t->scratch);
    losses[2] += bce(t, n, net_cache_out(&t->c_zz_fake, d, -1), 0.0f);
    net_backward(d, n, t->cat_zz_fake, &t->c_zz_fake, d->nlayers, t->dlogit, NULL, gd,
                 t->scratch);
    update(m, t, R_DZZ);
  }
}

/* The G/E step: losses[3] (g) and losses[4] (e). */
static void ge_step(anom_model *m, alad *a, alad_train *t, int n, const float *x,
                    double *losses) {
  int nc = m->channels, hw = m->height * m->width, nz = a->nz;
  size_t img = img_floats(m);
  draw_z(a, t, n);
  cycle_forward(a, t, n, x, 1);
  const float *ex = net_cache_out(&t->c_ex, a->e, -1), *gz = net_cache_out(&t->c_gz, a->g, -1);
  const float *rx = net_cache_out(&t->c_gr, a->g, -1), *rz = net_cache_out(&t->c_ez, a->e, -1);
  const float *l_real = dxz_forward(a, t, n, x, ex, &t->xz_real, 0);
  const float *l_fake = dxz_forward(a, t, n, gz, t->z, &t->xz_fake, 0);
  const net *dxx = a->dxx, *dzz = a->dzz;
  concat_forward(n, nc, nc, hw, t->cat_xx_real, x, x);
  net_forward_train(a->dxx, n, t->cat_xx_real, &t->c_xx_real, 0, t->scratch);
  concat_forward(n, nc, nc, hw, t->cat_xx_fake, x, rx);
  net_forward_train(a->dxx, n, t->cat_xx_fake, &t->c_xx_fake, 0, t->scratch);
  if( dzz ){
    concat_forward(n, nz, nz, 1, t->cat_zz_real, t->z, t->z);
    net_forward_train(a->dzz, n, t->cat_zz_real, &t->c_zz_real, 0, t->scratch);
    concat_forward(n, nz, nz, 1, t->cat_zz_fake, t->z, rz);
    net_forward_train(a->dzz, n, t->cat_zz_fake, &t->c_zz_fake, 0, t->scratch);
  }
  memset(t->grads + t->off[R_E], 0, t->cnt[R_E] * sizeof(float));
  memset(t->grads + t->off[R_G], 0, t->cnt[R_G] * sizeof(float));
  memset(t->d_rx, 0, (size_t)n * img * sizeof(float));
  memset(t->d_gz, 0, (size_t)n * img * sizeof(float));
  memset(t->d_rz, 0, (size_t)n * nz * sizeof(float));
  memset(t->d_ex, 0, (size_t)n * nz * sizeof(float));

  /* the adversarial terms: G's through G(z2), E's through E(x) */
  double adv_g = bce(t, n, l_fake, 1.0f);
  dxz_backward(m, a, t, n, gz, t->z, &t->xz_fake, t->d_gz, NULL, NULL);
  double adv_e = bce(t, n, l_real, 0.0f);
  dxz_backward(m, a, t, n, x, ex, &t->xz_real, NULL, t->d_ex, NULL);
  /* the cycle: D_xx(x, x) and D_zz(z, z) depend on neither E nor G */
  double cyc = bce(t, n, net_cache_out(&t->c_xx_real, dxx, -1), 0.0f);
  cyc += bce(t, n, net_cache_out(&t->c_xx_fake, dxx, -1), 1.0f);
  memset(t->dxx_in, 0, 2 * (size_t)n * img * sizeof(float));
  net_backward(dxx, n, t->cat_xx_fake, &t->c_xx_fake, dxx->nlayers, t->dlogit, t->dxx_in,
               NULL, t->scratch);
  concat_backward(n, nc, nc, hw, NULL, t->d_rx, t->dxx_in);
  if( dzz ){
    cyc += bce(t, n, net_cache_out(&t->c_zz_real, dzz, -1), 0.0f);
    cyc += bce(t, n, net_cache_out(&t->c_zz_fake, dzz, -1), 1.0f);
    memset(t->dzz_in, 0, 2 * (size_t)n * nz * sizeof(float));
    net_backward(dzz, n, t->cat_zz_fake, &t->c_zz_fake, dzz->nlayers, t->dlogit, t->dzz_in,
                 NULL, t->scratch);
    concat_backward(n, nz, nz, 1, NULL, t->d_rz, t->dzz_in);
    /* z_rec = E(G(z2)): into E, then G(z2) */
    net_backward(a->e, n, gz, &t->c_ez, a->e->nlayers, t->d_rz, t->d_gz,
                 grads_of(m, t->grads, a->e), t->scratch);
  }
  /* x_rec = G(E(x)): into G, then E(x) */
  net_backward(a->g, n, ex, &t->c_gr, a->g->nlayers, t->d_rx, t->d_ex,
               grads_of(m, t->grads, a->g), t->scratch);
  net_backward(a->g, n, t->z, &t->c_gz, a->g->nlayers, t->d_gz, NULL,
               grads_of(m, t->grads, a->g), t->scratch);
  net_backward(a->e, n, x, &t->c_ex, a->e->nlayers, t->d_ex, NULL,
               grads_of(m, t->grads, a->e), t->scratch);
  zero_bn_fed_biases(m, a->e, t->grads);
  zero_bn_fed_biases(m, a->g, t->grads);
  update(m, t, R_G);
  update(m, t, R_E);
  losses[3] = adv_g + cyc;
  losses[4] = adv_e + cyc;
}

static int alad_train_step(anom_model *m, void *state, int n, const float *x,
                           double *losses, anom_err *e) {
  alad *a = m->det;
  alad_train *t = state;
  if( n < 2 || n > t->max_batch )
    return anom_fail(e, ANOM_EINVAL, "alad: a training batch needs 2 to %d images, "
                     "found %d", t->max_batch, n);
  d_step(m, a, t, n, x, losses);
  ge_step(m, a, t, n, x, losses);
  return ANOM_OK;
}

const detector_ops alad_ops = {
  "alad",
  alad_create,
  NULL,                  /* destroy: m->det owns nothing */
  alad_hparams,
  alad_work_floats,
  alad_score,
  NULL,                  /* map: the residual */
  alad_losses,
  alad_train_begin,
  alad_train_step,
  alad_train_end,
  alad_train_finish,
  32,                    /* batch: the authors' */
  NULL,                  /* train_epoch */
};
