/*
** shadow.h - the weights training keeps beside a model's own: the raw
** weights the optimiser moves, their exponential moving average, and
** spectral normalisation between the raw weights and the weights the
** networks compute with. EGBAD and ALAD train this way (the authors'
** TensorFlow code: tf.train.ExponentialMovingAverage(0.999) over every
** trainable variable, applied after each optimiser step, and the averages
** used at test time; ALAD's utils/sn.py normalises its layers).
**
**   shadow s;
**   shadow_init(&s, m->block, m->nparams, 0.999f, &e);   raw = ema = live
**   shadow_add_sn(&s, d, 0, r, &e);      layer 0 of net d is normalised
**   shadow_refresh(&s, m->block, 0, m->nparams);    live = SN(raw), u moves
**   ... forward and backward with the nets over the live weights ...
**   shadow_grad(&s, grads, off, len);    gradients wrt live -> wrt raw
**   adam_step(&opt, s.raw + off, grads + off, ...);
**   shadow_ema(&s, off, len);            ema = decay ema + (1 - decay) raw
**   shadow_refresh(&s, m->block, off, len);
**   ...
**   shadow_finish(&s, m->block);         live = SN(ema): the model to score
**   shadow_free(&s);
**
** The model's parameter block (m->block, nparams floats) always holds the
** live weights, so the nets need no rebinding. A normalised layer's live
** weight is W / sigma(W): that is what a model file stores, so scoring runs
** plain layers. Batch norm's running statistics are buffers, outside the
** block's parameters: they are neither averaged nor normalised (TensorFlow
** keeps them out of the trainable variables too).
**
** The average is bias-corrected, as Adam corrects its moments: it starts
** at zero and shadow_finish divides it by 1 - decay^t after t steps, so it
** weighs the weights the optimiser produced and nothing of the random
** initial ones. TensorFlow's ExponentialMovingAverage, which the authors
** use, starts from the initial weights instead: after t steps they keep a
** share decay^t of the average (44% after 810 steps at 0.999, the whole
** of a 15-epoch EGBAD run on one Fashion-MNIST class). The two agree once
** t is much larger than 1 / (1 - decay).
*/
#ifndef ANOM_SHADOW_H
#define ANOM_SHADOW_H

#include "common.h"

struct net;
struct rng;

typedef struct shadow_sn {
  size_t off;          /* the weight's offset in the parameter block */
  int rows, cols;      /* as a matrix: (OC, C*K*K) or (OUT, IN) */
  float *u, *v;        /* power-iteration state (rows) and last v (cols) */
  float sigma;         /* of the last refresh */
} shadow_sn;

#define SHADOW_MAX_RANGES 32

typedef struct shadow {
  size_t n;            /* parameters */
  float decay;         /* of the moving average */
  float *raw;          /* the optimiser's weights (n) */
  float *ema;          /* their moving average (n), not yet bias-corrected */
  int nranges;         /* ranges shadow_ema has averaged, with their steps */
  struct { size_t off, len; long steps; } range[SHADOW_MAX_RANGES];
  int nsn, capsn;
  shadow_sn *sn;       /* normalised layers, in the order added */
  float *tmp;          /* one normalised layer's gradient */
  size_t ntmp;
} shadow;

/* raw starts as a copy of live (n floats), ema at zero. */
int shadow_init(shadow *s, const float *live, size_t n, float decay, anom_err *e);
void shadow_free(shadow *s);

/*
** Normalise the weight of layer i of nt (a convolution or a linear layer of
** a net bound into the block whose start is block). u starts as a unit
** vector drawn from r (N(0, 1), normalised), as torch.nn.utils.spectral_norm.
*/
int shadow_add_sn(shadow *s, const float *block, const struct net *nt, int i,
                  struct rng *r, anom_err *e);

/* live[off, off+len) = raw, normalised layers as W / sigma(W) after one
** power iteration on their u (ranges must not split a layer). */
void shadow_refresh(shadow *s, float *live, size_t off, size_t len);

/* Turn grads[off, off+len), gradients with respect to the live weights, into
** gradients with respect to raw (u, v held constant: spectral_norm_backward, layers.h). */
void shadow_grad(shadow *s, float *grads, const float *live, size_t off, size_t len);

/* ema = decay ema + (1 - decay) raw over [off, off+len). Ranges are
** counted apart (a network each) and must always be passed the same way;
** at most SHADOW_MAX_RANGES of them. */
void shadow_ema(shadow *s, size_t off, size_t len);

/* live = the averaged weights, each range's divided by 1 - decay^steps
** (weights never averaged stay raw), normalised with sigma from one more
** power iteration on the averages. */
void shadow_finish(shadow *s, float *live);

#endif /* ANOM_SHADOW_H */
