/*
** net.c - sequential networks: building, tensor naming, inference forward.
** See net.h.
*/
#include "net.h"

#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void net_init(net *nt, const char *prefix, int c, int h, int w) {
  memset(nt, 0, sizeof(*nt));
  snprintf(nt->prefix, sizeof(nt->prefix), "%s", prefix);
  nt->c = c;
  nt->h = h;
  nt->w = w;
}

void net_free(net *nt) {
  anom_free(nt->layers);
  nt->layers = NULL;
  nt->nlayers = nt->cap = 0;
}

void net_out_shape(const net *nt, int i, int *c, int *h, int *w) {
  if( i < 0 ) i = nt->nlayers - 1;
  if( i < 0 || nt->nlayers == 0 ){
    *c = nt->c; *h = nt->h; *w = nt->w;
    return;
  }
  *c = nt->layers[i].oc;
  *h = nt->layers[i].oh;
  *w = nt->layers[i].ow;
}

size_t net_out_floats(const net *nt, int i) {
  int c, h, w;
  net_out_shape(nt, i, &c, &h, &w);
  return (size_t)c * h * w;
}

/* Append a layer of kind taking the current output shape; NULL on failure. */
static layer *net_push(net *nt, layer_kind kind, const char *name) {
  if( nt->failed ) return NULL;
  if( nt->nlayers == nt->cap ){
    int cap = nt->cap ? nt->cap * 2 : 16;
    layer *p = anom_realloc(nt->layers, (size_t)cap * sizeof(*p));
    if( !p ){
      nt->failed = anom_fail(&nt->err, ANOM_ENOMEM, "out of memory");
      return NULL;
    }
    nt->layers = p;
    nt->cap = cap;
  }
  layer *l = &nt->layers[nt->nlayers];
  memset(l, 0, sizeof(*l));
  l->kind = kind;
  snprintf(l->name, sizeof(l->name), "%s", name);
  net_out_shape(nt, -1, &l->c, &l->h, &l->w);
  l->oc = l->c; l->oh = l->h; l->ow = l->w;
  l->p_off = nt->nparams;
  l->b_off = nt->nbufs;
  return l;
}

static int net_conv_any(net *nt, const char *name, int oc, int k, int stride,
                        int pad, int bias, int transposed) {
  layer *l = net_push(nt, transposed ? LAYER_CONVT : LAYER_CONV, name);
  if( !l ) return 1;
  if( conv_shape_init(&l->conv, l->c, l->h, l->w, oc, k, stride, pad, transposed) ){
    nt->failed = anom_fail(&nt->err, ANOM_EINVAL,
        "layer '%s%s': a %s %dx%d stride %d pad %d does not fit a %dx%dx%d input",
        nt->prefix, name, transposed ? "transposed convolution" : "convolution",
        k, k, stride, pad, l->c, l->h, l->w);
    return 1;
  }
  l->oc = oc;
  l->oh = l->conv.oh;
  l->ow = l->conv.ow;
  l->has_bias = bias;
  l->np = (size_t)l->c * oc * k * k + (bias ? (size_t)oc : 0);
  nt->nparams += l->np;
  nt->nlayers++;
  return 0;
}

int net_conv(net *nt, const char *name, int oc, int k, int stride, int pad, int bias) {
  return net_conv_any(nt, name, oc, k, stride, pad, bias, 0);
}

int net_convt(net *nt, const char *name, int oc, int k, int stride, int pad, int bias) {
  return net_conv_any(nt, name, oc, k, stride, pad, bias, 1);
}

int net_batchnorm(net *nt, const char *name, float eps) {
  layer *l = net_push(nt, LAYER_BATCHNORM, name);
  if( !l ) return 1;
  l->eps = eps;
  l->momentum = 0.1f;
  l->np = 2 * (size_t)l->c;
  l->nb = 2 * (size_t)l->c;
  nt->nparams += l->np;
  nt->nbufs += l->nb;
  nt->nlayers++;
  return 0;
}

static int net_elementwise(net *nt, layer_kind kind, const char *name, float slope) {
  layer *l = net_push(nt, kind, name);
  if( !l ) return 1;
  l->slope = slope;
  nt->nlayers++;
  return 0;
}

int net_leaky_relu(net *nt, const char *name, float slope) {
  return net_elementwise(nt, LAYER_LEAKY_RELU, name, slope);
}
int net_relu(net *nt, const char *name) { return net_elementwise(nt, LAYER_RELU, name, 0); }
int net_tanh(net *nt, const char *name) { return net_elementwise(nt, LAYER_TANH, name, 0); }
int net_sigmoid(net *nt, const char *name) { return net_elementwise(nt, LAYER_SIGMOID, name, 0); }

int net_linear(net *nt, const char *name, int oc, int bias) {
  layer *l = net_push(nt, LAYER_LINEAR, name);
  if( !l ) return 1;
  size_t in_f = (size_t)l->c * l->h * l->w;
  if( oc < 1 || in_f > INT32_MAX || (size_t)oc * in_f > INT32_MAX ){
    nt->failed = anom_fail(&nt->err, ANOM_EINVAL,
        "layer '%s%s': a linear layer of %d outputs does not fit a %dx%dx%d input",
        nt->prefix, name, oc, l->c, l->h, l->w);
    return 1;
  }
  l->oc = oc;
  l->oh = l->ow = 1;
  l->has_bias = bias;
  l->np = (size_t)oc * in_f + (bias ? (size_t)oc : 0);
  nt->nparams += l->np;
  nt->nlayers++;
  return 0;
}

int net_dropout(net *nt, const char *name, float p) {
  layer *l = net_push(nt, LAYER_DROPOUT, name);
  if( !l ) return 1;
  if( !(p >= 0 && p < 1) ){
    nt->failed = anom_fail(&nt->err, ANOM_EINVAL,
                           "layer '%s%s': dropout needs p in [0, 1), found %g",
                           nt->prefix, name, (double)p);
    return 1;
  }
  l->slope = p;
  l->m_off = nt->nmask;
  nt->nmask += (size_t)l->c * l->h * l->w;
  nt->nlayers++;
  return 0;
}

int net_reshape(net *nt, const char *name, int c, int h, int w) {
  layer *l = net_push(nt, LAYER_RESHAPE, name);
  if( !l ) return 1;
  if( c < 1 || h < 1 || w < 1 || (size_t)c * h * w != (size_t)l->c * l->h * l->w ){
    nt->failed = anom_fail(&nt->err, ANOM_EINVAL,
        "layer '%s%s': cannot view %dx%dx%d as %dx%dx%d", nt->prefix, name,
        l->c, l->h, l->w, c, h, w);
    return 1;
  }
  l->oc = c; l->oh = h; l->ow = w;
  nt->nlayers++;
  return 0;
}

int net_set_momentum(net *nt, float momentum) {
  if( nt->failed ) return 1;
  if( nt->nlayers == 0 || nt->layers[nt->nlayers - 1].kind != LAYER_BATCHNORM ){
    nt->failed = anom_fail(&nt->err, ANOM_EINVAL, "net '%s': momentum set on a "
                           "layer that is not a batch norm", nt->prefix);
    return 1;
  }
  nt->layers[nt->nlayers - 1].momentum = momentum;
  return 0;
}

void net_bind(net *nt, float *params, float *bufs) {
  nt->params = params;
  nt->bufs = bufs;
}

/* Tensors a layer contributes: conv and linear 1 or 2, batch norm 4, others 0. */
static int layer_tensor_count(const layer *l) {
  switch( l->kind ){
    case LAYER_CONV: case LAYER_CONVT: case LAYER_LINEAR: return l->has_bias ? 2 : 1;
    case LAYER_BATCHNORM: return 4;
    default: return 0;
  }
}

int net_tensor_count(const net *nt) {
  int n = 0;
  for(int i = 0; i < nt->nlayers; i++) n += layer_tensor_count(&nt->layers[i]);
  return n;
}

int net_tensor(const net *nt, int i, char *name, size_t name_size, int *ndim,
               int64_t shape[4], float **data, int *is_buffer) {
  static const char *bn_names[4] = {"weight", "bias", "running_mean", "running_var"};
  for(int li = 0; li < nt->nlayers; li++){
    const layer *l = &nt->layers[li];
    int cnt = layer_tensor_count(l);
    if( i >= cnt ){ i -= cnt; continue; }
    if( l->kind == LAYER_BATCHNORM ){
      snprintf(name, name_size, "%s%s.%s", nt->prefix, l->name, bn_names[i]);
      *ndim = 1;
      shape[0] = l->c;
      *is_buffer = i >= 2;
      *data = i < 2 ? nt->params + l->p_off + (size_t)i * l->c
                    : nt->bufs + l->b_off + (size_t)(i - 2) * l->c;
      return 0;
    }
    if( i == 0 && l->kind == LAYER_LINEAR ){
      snprintf(name, name_size, "%s%s.weight", nt->prefix, l->name);
      *ndim = 2;                  /* Linear weight (OUT, IN) */
      shape[0] = l->oc;
      shape[1] = (int64_t)l->c * l->h * l->w;
      *data = nt->params + l->p_off;
    }else if( i == 0 ){
      snprintf(name, name_size, "%s%s.weight", nt->prefix, l->name);
      *ndim = 4;
      /* Conv2d weight (OC, C, K, K); ConvTranspose2d weight (C, OC, K, K) */
      shape[0] = l->kind == LAYER_CONV ? l->oc : l->c;
      shape[1] = l->kind == LAYER_CONV ? l->c : l->oc;
      shape[2] = shape[3] = l->conv.k;
      *data = nt->params + l->p_off;
    }else{
      snprintf(name, name_size, "%s%s.bias", nt->prefix, l->name);
      *ndim = 1;
      shape[0] = l->oc;
      *data = nt->params + l->p_off + (l->np - (size_t)l->oc);
    }
    *is_buffer = 0;
    return 0;
  }
  return 1;
}

/* The largest activation of one sample, input included (floats). */
static size_t max_act(const net *nt) {
  size_t act = (size_t)nt->c * nt->h * nt->w;
  for(int i = 0; i < nt->nlayers; i++){
    const layer *l = &nt->layers[i];
    size_t a = (size_t)l->c * l->h * l->w, o = (size_t)l->oc * l->oh * l->ow;
    if( a > act ) act = a;
    if( o > act ) act = o;
  }
  return act;
}

/* The most output channels of any convolution. */
static size_t max_oc(const net *nt) {
  size_t oc = 0;
  for(int i = 0; i < nt->nlayers; i++){
    const layer *l = &nt->layers[i];
    if( (l->kind == LAYER_CONV || l->kind == LAYER_CONVT) && (size_t)l->oc > oc )
      oc = (size_t)l->oc;
  }
  return oc;
}

/* Scratch: two activation buffers, then the convolutions' work, then the
** fused epilogue's scale and shift (2 OC). */
size_t net_scratch_floats(const net *nt, int n) {
  size_t work = 0;
  for(int i = 0; i < nt->nlayers; i++){
    const layer *l = &nt->layers[i];
    if( l->kind == LAYER_CONV || l->kind == LAYER_CONVT ){
      size_t wk = conv_work_floats(&l->conv, n);
      if( wk > work ) work = wk;
    }
  }
  return 2 * max_act(nt) * (size_t)n + work + 2 * max_oc(nt);
}

/* The activation of layer kind k as an epilogue code, or -1. */
static int act_of(layer_kind k) {
  switch( k ){
    case LAYER_LEAKY_RELU: return ACT_LEAKY_RELU;
    case LAYER_RELU:       return ACT_RELU;
    case LAYER_TANH:       return ACT_TANH;
    case LAYER_SIGMOID:    return ACT_SIGMOID;
    default:               return -1;
  }
}

/*
** Inference of the convolution at layers[i] together with what follows it:
** a batch norm (running statistics) and then an activation, or an
** activation alone, in the convolution's own pass over its output (see
** conv_epilogue in layers.h). ss holds 2 OC floats for scale and shift.
** Returns the number of layers it ran (1 to 3).
*/
static int conv_forward_fused(const net *nt, int i, int to, int n, float *dst,
                              const float *cur, float *work, float *ss) {
  const layer *l = &nt->layers[i];
  const float *p = nt->params + l->p_off;
  const float *bias = l->has_bias ? p + l->np - l->oc : NULL;
  conv_epilogue ep = { NULL, bias, ACT_NONE, 0.0f };
  int used = 1;
  if( i + 1 < to && nt->layers[i + 1].kind == LAYER_BATCHNORM ){
    const layer *b = &nt->layers[i + 1];
    const float *gamma = nt->params + b->p_off, *beta = gamma + b->c;
    const float *mean = nt->bufs + b->b_off, *var = mean + b->c;
    float *scale = ss, *shift = ss + l->oc;
    for(int o = 0; o < l->oc; o++){
      scale[o] = gamma[o] / sqrtf(var[o] + b->eps);
      shift[o] = beta[o] + ((bias ? bias[o] : 0.0f) - mean[o]) * scale[o];
    }
    ep.scale = scale;
    ep.shift = shift;
    used = 2;
  }
  if( i + used < to && act_of(nt->layers[i + used].kind) >= 0 ){
    ep.act = act_of(nt->layers[i + used].kind);
    ep.slope = nt->layers[i + used].slope;
    used++;
  }
  if( l->kind == LAYER_CONV ) conv2d_forward_fused(&l->conv, n, dst, cur, p, &ep, work);
  else conv_transpose2d_forward_fused(&l->conv, n, dst, cur, p, &ep, work);
  return used;
}

/* How a forward treats batch norm. */
enum { BN_RUNNING, BN_BATCH, BN_BATCH_UPDATE };

/*
** One layer's forward on n samples: cur -> dst (dst may equal cur for batch
** norm and activations). Batch norm by bn_mode; with batch statistics they
** are written to stats (mean, var) and, for BN_BATCH_UPDATE, folded into the
** running statistics.
*/
static void layer_forward(const net *nt, const layer *l, int n, float *dst,
                          const float *cur, float *work, int bn_mode, float *stats,
                          uint8_t *mask, rng *r) {
  const float *p = nt->params + l->p_off;
  size_t count = (size_t)n * l->oc * l->oh * l->ow;
  switch( l->kind ){
    case LAYER_LINEAR: {
      int in_f = l->c * l->h * l->w;
      linear_forward(n, in_f, l->oc, dst, cur, p,
                     l->has_bias ? p + (size_t)l->oc * in_f : NULL);
      break;
    }
    case LAYER_DROPOUT:
      if( bn_mode != BN_RUNNING && l->slope > 0 ){
        dropout_mask(mask, count, l->slope, r);
        dropout_forward(dst, cur, mask, count, l->slope);
      }else if( dst != cur ){
        memcpy(dst, cur, count * sizeof(float));
      }
      break;
    case LAYER_RESHAPE:
      if( dst != cur ) memcpy(dst, cur, count * sizeof(float));
      break;
    case LAYER_CONV:
      conv2d_forward(&l->conv, n, dst, cur, p, l->has_bias ? p + l->np - l->oc : NULL, work);
      break;
    case LAYER_CONVT:
      conv_transpose2d_forward(&l->conv, n, dst, cur, p,
                               l->has_bias ? p + l->np - l->oc : NULL, work);
      break;
    case LAYER_BATCHNORM: {
      float *rm = nt->bufs + l->b_off, *rv = rm + l->c;
      if( bn_mode == BN_RUNNING ){
        batchnorm_forward_infer(n, l->c, l->h * l->w, dst, cur, p, p + l->c, rm, rv, l->eps);
        break;
      }
      batchnorm_forward_train(n, l->c, l->h * l->w, dst, stats, stats + l->c, cur, p,
                              p + l->c, l->eps);
      if( bn_mode == BN_BATCH_UPDATE )
        batchnorm_update_running(n, l->c, l->h * l->w, rm, rv, stats, stats + l->c,
                                 l->momentum);
      break;
    }
    case LAYER_LEAKY_RELU: leaky_relu_forward(dst, cur, count, l->slope); break;
    case LAYER_RELU: relu_forward(dst, cur, count); break;
    case LAYER_TANH: tanh_forward(dst, cur, count); break;
    case LAYER_SIGMOID: sigmoid_forward(dst, cur, count); break;
  }
}

void net_forward(const net *nt, int from, int to, int n, const float *in,
                 float *out, float *scratch) {
  size_t act = max_act(nt);
  float *buf[2] = { scratch, scratch + act * (size_t)n };
  float *work = scratch + 2 * act * (size_t)n;
  float *ss = scratch + net_scratch_floats(nt, n) - 2 * max_oc(nt);
  const float *cur = in;
  int which = 0;
  for(int i = from; i < to; ){
    const layer *l = &nt->layers[i];
    /* batch norm and activations run in place, except on the caller's input */
    float *dst = buf[which];
    if( l->kind >= LAYER_BATCHNORM && cur != in ) dst = (float *)cur;
    else which ^= 1;
    if( l->kind == LAYER_CONV || l->kind == LAYER_CONVT ){
      i += conv_forward_fused(nt, i, to, n, dst, cur, work, ss);
    }else{
      layer_forward(nt, l, n, dst, cur, work, BN_RUNNING, NULL, NULL, NULL);
      i++;
    }
    cur = dst;
  }
  if( to > from ){
    const layer *l = &nt->layers[to - 1];
    memcpy(out, cur, (size_t)n * l->oc * l->oh * l->ow * sizeof(float));
  }else{
    memcpy(out, in, (size_t)n * nt->c * nt->h * nt->w * sizeof(float));
  }
}

/* ==== Training ======================================================== */

int net_cache_init(net_cache *c, const net *nt, int n, anom_err *e) {
  memset(c, 0, sizeof(*c));
  size_t total = 0;
  c->off = anom_calloc((size_t)nt->nlayers + 1, sizeof(size_t));
  if( !c->off ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  for(int i = 0; i < nt->nlayers; i++){
    const layer *l = &nt->layers[i];
    c->off[i] = total;
    total += (size_t)l->oc * l->oh * l->ow;
  }
  c->acts = anom_malloc(total * (size_t)n * sizeof(float));
  c->bn = anom_calloc(nt->nbufs ? nt->nbufs : 1, sizeof(float));
  c->mask = anom_malloc(nt->nmask ? nt->nmask * (size_t)n : 1);
  if( !c->acts || !c->bn || !c->mask ){
    net_cache_free(c);
    return anom_fail(e, ANOM_ENOMEM, "out of memory for the activations of a "
                     "batch of %d (%zu floats)", n, total * (size_t)n);
  }
  c->n = n;
  return ANOM_OK;
}

void net_cache_free(net_cache *c) {
  anom_free(c->acts);
  anom_free(c->off);
  anom_free(c->bn);
  anom_free(c->mask);
  memset(c, 0, sizeof(*c));
}

float *net_cache_out(const net_cache *c, const net *nt, int i) {
  if( i < 0 ) i = nt->nlayers - 1;
  return c->acts + c->off[i] * (size_t)c->n;
}

size_t net_train_scratch_floats(const net *nt, int n) {
  return net_scratch_floats(nt, n);
}

/* The forward of every layer, keeping each output in c. */
static void forward_cached(const net *nt, int n, const float *in, net_cache *c,
                           int bn_mode, float *scratch) {
  const float *cur = in;
  c->frozen = bn_mode == BN_RUNNING;
  for(int i = 0; i < nt->nlayers; i++){
    const layer *l = &nt->layers[i];
    float *dst = c->acts + c->off[i] * (size_t)c->n;
    /* a frozen cache (AnoGAN's search) may have no bn or mask: they are
    ** unused with running statistics, and NULL + offset is undefined */
    float *bn = c->bn ? c->bn + l->b_off : NULL;
    uint8_t *mask = c->mask ? c->mask + l->m_off * (size_t)c->n : NULL;
    layer_forward(nt, l, n, dst, cur, scratch, bn_mode, bn, mask, c->rng);
    cur = dst;
  }
}

void net_forward_train(net *nt, int n, const float *in, net_cache *c,
                       int update_running, float *scratch) {
  forward_cached(nt, n, in, c, update_running ? BN_BATCH_UPDATE : BN_BATCH, scratch);
}

void net_forward_frozen(const net *nt, int n, const float *in, net_cache *c,
                        float *scratch) {
  forward_cached(nt, n, in, c, BN_RUNNING, scratch);
}

void net_replay_running(net *nt, int n, const net_cache *c) {
  for(int i = 0; i < nt->nlayers; i++){
    const layer *l = &nt->layers[i];
    if( l->kind != LAYER_BATCHNORM ) continue;
    const float *st = c->bn + l->b_off;
    batchnorm_update_running(n, l->c, l->h * l->w, nt->bufs + l->b_off,
                             nt->bufs + l->b_off + l->c, st, st + l->c, l->momentum);
  }
}

void net_backward(const net *nt, int n, const float *in, const net_cache *c,
                  int to, const float *dout, float *din, float *grads,
                  float *scratch) {
  size_t act = max_act(nt);
  float *buf[2] = { scratch, scratch + act * (size_t)n };
  float *work = scratch + 2 * act * (size_t)n;
  const float *d = dout;
  int which = 0;
  for(int i = to - 1; i >= 0; i--){
    const layer *l = &nt->layers[i];
    const float *x = i == 0 ? in : c->acts + c->off[i - 1] * (size_t)c->n;
    const float *y = c->acts + c->off[i] * (size_t)c->n;
    const float *p = nt->params + l->p_off;
    float *g = grads ? grads + l->p_off : NULL;
    size_t in_count = (size_t)n * l->c * l->h * l->w;
    float *dx;
    if( i == 0 ){
      dx = din;                   /* may be NULL: then only parameter gradients */
      if( !dx && (l->np == 0 || !g) ) return;
    }else{
      dx = buf[which];
      which ^= 1;
      memset(dx, 0, in_count * sizeof(float));
    }
    switch( l->kind ){
      case LAYER_CONV:
        conv2d_backward(&l->conv, n, dx, g, (g && l->has_bias) ? g + l->np - l->oc : NULL,
                        d, x, p, work);
        break;
      case LAYER_CONVT:
        conv_transpose2d_backward(&l->conv, n, dx, g, (g && l->has_bias) ? g + l->np - l->oc : NULL,
                                  d, x, p, work);
        break;
      case LAYER_LINEAR: {
        int in_f = l->c * l->h * l->w;
        linear_backward(n, in_f, l->oc, dx, g,
                        (g && l->has_bias) ? g + (size_t)l->oc * in_f : NULL, d, x, p);
        break;
      }
      case LAYER_DROPOUT:
        if( !c->frozen && l->slope > 0 ){
          dropout_backward(dx, d, c->mask + l->m_off * (size_t)c->n, in_count, l->slope);
          break;
        }
        if( dx ) for(size_t k = 0; k < in_count; k++) dx[k] += d[k];
        break;
      case LAYER_RESHAPE:
        if( dx ) for(size_t k = 0; k < in_count; k++) dx[k] += d[k];
        break;
      case LAYER_BATCHNORM: {
        /* the statistics the forward normalised with */
        const float *st = c->frozen ? nt->bufs + l->b_off : c->bn + l->b_off;
        if( c->frozen )
          batchnorm_backward_infer(n, l->c, l->h * l->w, dx, g, g ? g + l->c : NULL, d,
                                   x, st, st + l->c, p, l->eps);
        else
          batchnorm_backward(n, l->c, l->h * l->w, dx, g, g ? g + l->c : NULL, d, x,
                             st, st + l->c, p, l->eps);
        break;
      }
      case LAYER_LEAKY_RELU: leaky_relu_backward(dx, d, y, in_count, l->slope); break;
      case LAYER_RELU: relu_backward(dx, d, y, in_count); break;
      case LAYER_TANH: tanh_backward(dx, d, y, in_count); break;
      case LAYER_SIGMOID: sigmoid_backward(dx, d, y, in_count); break;
    }
    d = dx;
  }
}

void net_init_dcgan(net *nt, rng *r) {
  net_init_normal(nt, r, 0.02f, 0.02f);
}

void net_init_normal(net *nt, rng *r, float std, float gamma_std) {
  for(int i = 0; i < nt->nlayers; i++){
    const layer *l = &nt->layers[i];
    float *p = nt->params + l->p_off;
    if( l->kind == LAYER_CONV || l->kind == LAYER_CONVT || l->kind == LAYER_LINEAR ){
      size_t nw = l->np - (l->has_bias ? (size_t)l->oc : 0);
      for(size_t k = 0; k < nw; k++) p[k] = (float)(std * rng_normal(r));
      for(size_t k = nw; k < l->np; k++) p[k] = 0;
    }else if( l->kind == LAYER_BATCHNORM ){
      float *b = nt->bufs + l->b_off;
      for(int k = 0; k < l->c; k++){
        p[k] = gamma_std > 0 ? (float)(1.0 + (double)gamma_std * rng_normal(r)) : 1.0f;
        p[l->c + k] = 0;
        b[k] = 0;
        b[l->c + k] = 1;
      }
    }
  }
}
