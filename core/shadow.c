/*
** shadow.c - raw weights, their moving average and spectral normalisation
** for training. See shadow.h.
*/
#include "shadow.h"

#include "layers.h"
#include "net.h"
#include "rng.h"

#include <math.h>
#include <string.h>

#define SN_EPS 1e-12f

int shadow_init(shadow *s, const float *live, size_t n, float decay, anom_err *e) {
  memset(s, 0, sizeof(*s));
  s->n = n;
  s->decay = decay;
  s->raw = anom_malloc((n ? n : 1) * sizeof(float));
  s->ema = anom_calloc(n ? n : 1, sizeof(float));
  if( !s->raw || !s->ema ){
    shadow_free(s);
    return anom_fail(e, ANOM_ENOMEM, "out of memory for the averaged weights");
  }
  memcpy(s->raw, live, n * sizeof(float));
  return ANOM_OK;
}

void shadow_free(shadow *s) {
  for(int i = 0; i < s->nsn; i++){
    anom_free(s->sn[i].u);
    anom_free(s->sn[i].v);
  }
  anom_free(s->sn);
  anom_free(s->raw);
  anom_free(s->ema);
  anom_free(s->tmp);
  memset(s, 0, sizeof(*s));
}

int shadow_add_sn(shadow *s, const float *block, const net *nt, int i, rng *r,
                  anom_err *e) {
  const layer *l = &nt->layers[i];
  int rows, cols;
  if( l->kind == LAYER_CONV ){
    rows = l->oc;
    cols = l->c * l->conv.k * l->conv.k;
  }else if( l->kind == LAYER_LINEAR ){
    rows = l->oc;
    cols = l->c * l->h * l->w;
  }else{
    return anom_fail(e, ANOM_EINVAL, "spectral norm on layer '%s%s', which is "
                     "neither a convolution nor a linear layer", nt->prefix, l->name);
  }
  if( s->nsn == s->capsn ){
    int cap = s->capsn ? 2 * s->capsn : 8;
    shadow_sn *p = anom_realloc(s->sn, (size_t)cap * sizeof(*p));
    if( !p ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
    s->sn = p;
    s->capsn = cap;
  }
  size_t size = (size_t)rows * cols;
  if( size > s->ntmp ){
    float *t = anom_realloc(s->tmp, size * sizeof(float));
    if( !t ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
    s->tmp = t;
    s->ntmp = size;
  }
  shadow_sn *q = &s->sn[s->nsn];
  memset(q, 0, sizeof(*q));
  q->off = (size_t)(nt->params + l->p_off - block);
  q->rows = rows;
  q->cols = cols;
  q->u = anom_malloc((size_t)rows * sizeof(float));
  q->v = anom_calloc((size_t)cols, sizeof(float));
  if( !q->u || !q->v ){
    anom_free(q->u);
    anom_free(q->v);
    return anom_fail(e, ANOM_ENOMEM, "out of memory");
  }
  double norm = 0;
  for(int k = 0; k < rows; k++){
    q->u[k] = (float)rng_normal(r);
    norm += (double)q->u[k] * q->u[k];
  }
  norm = sqrt(norm);
  if( norm < SN_EPS ) norm = SN_EPS;
  for(int k = 0; k < rows; k++) q->u[k] = (float)(q->u[k] / norm);
  s->nsn++;
  return ANOM_OK;
}

/* live = src over [off, off+len), normalised layers through the power iteration. */
static void refresh_from(shadow *s, const float *src, float *live, size_t off, size_t len) {
  memcpy(live + off, src + off, len * sizeof(float));
  for(int i = 0; i < s->nsn; i++){
    shadow_sn *q = &s->sn[i];
    if( q->off < off || q->off >= off + len ) continue;
    q->sigma = spectral_norm_forward(q->rows, q->cols, live + q->off, src + q->off,
                                     q->u, q->v, 1, SN_EPS);
  }
}

void shadow_refresh(shadow *s, float *live, size_t off, size_t len) {
  refresh_from(s, s->raw, live, off, len);
}

void shadow_grad(shadow *s, float *grads, const float *live, size_t off, size_t len) {
  for(int i = 0; i < s->nsn; i++){
    shadow_sn *q = &s->sn[i];
    if( q->off < off || q->off >= off + len ) continue;
    size_t size = (size_t)q->rows * q->cols;
    memset(s->tmp, 0, size * sizeof(float));
    spectral_norm_backward(q->rows, q->cols, s->tmp, grads + q->off, live + q->off,
                           q->u, q->v, q->sigma);
    memcpy(grads + q->off, s->tmp, size * sizeof(float));
  }
}

void shadow_ema(shadow *s, size_t off, size_t len) {
  int i = 0;
  while( i < s->nranges && s->range[i].off != off ) i++;
  if( i == s->nranges ){
    if( i == SHADOW_MAX_RANGES ) return;   /* a programming error: see shadow.h */
    s->range[i].off = off;
    s->range[i].len = len;
    s->range[i].steps = 0;
    s->nranges++;
  }
  s->range[i].steps++;
  float d = s->decay, c = 1.0f - s->decay;
  float *a = s->ema + off;
  const float *w = s->raw + off;
  for(size_t k = 0; k < len; k++) a[k] = d * a[k] + c * w[k];
}

void shadow_finish(shadow *s, float *live) {
  /* weights outside every averaged range have no average: their raw value */
  size_t covered = 0;
  for(int i = 0; i < s->nranges; i++) covered += s->range[i].len;
  if( covered < s->n ){
    for(size_t k = 0; k < s->n; k++){
      int in = 0;
      for(int i = 0; i < s->nranges && !in; i++)
        in = k >= s->range[i].off && k < s->range[i].off + s->range[i].len;
      if( !in ) s->ema[k] = s->raw[k];
    }
  }
  for(int i = 0; i < s->nranges; i++){
    double corr = 1.0 - pow((double)s->decay, (double)s->range[i].steps);
    float *a = s->ema + s->range[i].off;
    if( corr <= 0 ){                       /* decay 1: the average never moved */
      memcpy(a, s->raw + s->range[i].off, s->range[i].len * sizeof(float));
      continue;
    }
    float scale = (float)(1.0 / corr);
    for(size_t k = 0; k < s->range[i].len; k++) a[k] *= scale;
  }
  s->nranges = 0;                          /* corrected once */
  refresh_from(s, s->ema, live, 0, s->n);
}
