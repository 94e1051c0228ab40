/*
** net.h - a sequential network: an ordered list of layers over flat blocks.
**
** A net is built by appending layers; each append works out the layer's
** output shape from the previous one. Parameters (weights, biases, batch
** norm's gamma and beta) and buffers (batch norm's running statistics) are
** not owned by the net: the model carves them out of one block per model and
** hands each net its slices with net_bind, so the whole model is one
** allocation and a checkpoint is one walk over the tensors.
**
**   net e;
**   net_init(&e, "netg.encoder1.", 1, 32, 32);
**   net_conv(&e, "main.initial-conv-1-64", 64, 4, 2, 1, 0);
**   net_leaky_relu(&e, "main.initial-relu-64", 0.2f);
**   ...
**   if( e.failed ) ...                       (a bad shape anywhere)
**   net_bind(&e, params, bufs);
**   net_forward(&e, 0, e.nlayers, n, x, y, scratch);
**
** Tensor names are prefix + layer name + "." + "weight" | "bias" |
** "running_mean" | "running_var": the state_dict names of the authors' code.
*/
#ifndef ANOM_NET_H
#define ANOM_NET_H

#include "common.h"
#include "layers.h"

/* Kinds from LAYER_BATCHNORM on may run in place (out == in). */
typedef enum layer_kind {
  LAYER_CONV,
  LAYER_CONVT,
  LAYER_LINEAR,             /* the input flattened: (C*H*W) -> (OC, 1, 1) */
  LAYER_BATCHNORM,
  LAYER_LEAKY_RELU,
  LAYER_RELU,
  LAYER_TANH,
  LAYER_SIGMOID,
  LAYER_DROPOUT,            /* training forward only; identity otherwise */
  LAYER_RESHAPE             /* the same floats seen as another shape */
} layer_kind;

#define NET_NAME_MAX 64

typedef struct layer {
  layer_kind kind;
  char name[NET_NAME_MAX];  /* module name, e.g. "main.pyramid-64-128-conv" */
  int c, h, w;              /* input shape of one sample */
  int oc, oh, ow;           /* output shape of one sample */
  conv_shape conv;          /* LAYER_CONV, LAYER_CONVT */
  int has_bias;             /* conv and linear layers */
  float slope;              /* LAYER_LEAKY_RELU; LAYER_DROPOUT: p */
  float eps, momentum;      /* LAYER_BATCHNORM (PyTorch's 1e-5 and 0.1) */
  size_t p_off, np;         /* parameters: [weight, bias] at params + p_off */
  size_t b_off, nb;         /* buffers: [running_mean, running_var] at bufs + b_off */
  size_t m_off;             /* LAYER_DROPOUT: its mask, per sample, in net_cache */
} layer;

typedef struct net {
  char prefix[NET_NAME_MAX];/* prepended to tensor names, e.g. "netg.decoder." */
  int c, h, w;              /* input shape of one sample */
  int nlayers, cap;
  layer *layers;            /* owned */
  size_t nparams, nbufs;    /* floats in this net's slices */
  size_t nmask;             /* dropout mask bytes per sample */
  float *params, *bufs;     /* slices of the model's blocks (not owned) */
  int failed;               /* set when an append failed; see err */
  anom_err err;
} net;

void net_init(net *nt, const char *prefix, int c, int h, int w);
void net_free(net *nt);

/* Append layers. Each returns 0, or sets nt->failed and returns non-zero. */
int net_conv(net *nt, const char *name, int oc, int k, int stride, int pad, int bias);
int net_convt(net *nt, const char *name, int oc, int k, int stride, int pad, int bias);
int net_batchnorm(net *nt, const char *name, float eps);
int net_leaky_relu(net *nt, const char *name, float slope);
int net_relu(net *nt, const char *name);
int net_tanh(net *nt, const char *name);
int net_sigmoid(net *nt, const char *name);
/* nn.Linear on the flattened input: weight (OC, C*H*W), output (OC, 1, 1). */
int net_linear(net *nt, const char *name, int oc, int bias);
/* Inverted dropout with probability p in [0, 1) (see dropout.c): a mask
** drawn from the cache's rng in net_forward_train, the identity elsewhere. */
int net_dropout(net *nt, const char *name, float p);
/* View the output as (c, h, w); c*h*w must equal the current size. */
int net_reshape(net *nt, const char *name, int c, int h, int w);
/* Set the running-statistics momentum of the last layer, a batch norm
** (PyTorch's convention: run = (1 - momentum) run + momentum batch). */
int net_set_momentum(net *nt, float momentum);

/* Output shape of layer i (i == -1: the net's output; nlayers == 0: input). */
void net_out_shape(const net *nt, int i, int *c, int *h, int *w);

/* Floats in one sample of layer i's output (-1: the net's output). */
size_t net_out_floats(const net *nt, int i);

void net_bind(net *nt, float *params, float *bufs);

/*
** Tensors of the net, in state_dict order: for i in [0, net_tensor_count),
** net_tensor fills the full name (prefix included), the shape and a pointer
** to the data inside the bound blocks. is_buffer tells running statistics
** from trainable parameters.
*/
int net_tensor_count(const net *nt);
int net_tensor(const net *nt, int i, char *name, size_t name_size, int *ndim,
               int64_t shape[4], float **data, int *is_buffer);

/* Floats of scratch net_forward needs for a batch of n. */
size_t net_scratch_floats(const net *nt, int n);

/*
** Inference: run layers [from, to) on in (n samples of layer from's input
** shape) into out (n samples of layer to-1's output shape). Batch norm uses
** the running statistics. scratch holds net_scratch_floats(nt, n) floats.
*/
void net_forward(const net *nt, int from, int to, int n, const float *in,
                 float *out, float *scratch);

/* ==== Training ==========================================================
**
**   net_cache c;                     every layer's output, kept for backward
**   net_cache_init(&c, &e1, batch, &err);
**   net_forward_train(&e1, n, x, &c, 1, work);     batch statistics
**   net_backward(&e1, n, x, &c, e1.nlayers, dz, NULL, grads, scratch);
**
** grads is the net's slice of a gradient block laid out like its params
** (grads + layer.p_off); backward adds into it and into din.
*/
struct rng;

typedef struct net_cache {
  int n;               /* largest batch it holds */
  int frozen;          /* filled by net_forward_frozen: batch norm used running stats */
  float *acts;         /* layer i's output at acts + off[i] * n */
  size_t *off;         /* nlayers offsets, per sample */
  float *bn;           /* per batch-norm layer: mean (C) then var (C), at bn + l.b_off */
  uint8_t *mask;       /* dropout masks, layer l's at mask + l.m_off * n */
  struct rng *rng;     /* dropout masks of net_forward_train come from here */
} net_cache;

int net_cache_init(net_cache *c, const net *nt, int n, anom_err *e);
void net_cache_free(net_cache *c);

/* The output of layer i (-1: the last) of the last training forward. */
float *net_cache_out(const net_cache *c, const net *nt, int i);

/* Floats of scratch net_forward_train and net_backward need for a batch of n. */
size_t net_train_scratch_floats(const net *nt, int n);

/*
** Training forward of all layers: batch norm normalises with the batch's
** statistics, keeps them in c and, when update_running, folds them into the
** running statistics (PyTorch's train mode). Dropout layers with p > 0 draw
** their masks from c->rng (which must then be set), in layer order, one
** rng_uniform per element of the batch.
*/
void net_forward_train(net *nt, int n, const float *in, net_cache *c,
                       int update_running, float *scratch);

/*
** Inference forward (running statistics, nothing updated) that keeps the
** activations, so that net_backward can take gradients through a frozen
** network: AnoGAN's search for z, for one.
*/
void net_forward_frozen(const net *nt, int n, const float *in, net_cache *c,
                        float *scratch);

/* Fold the batch statistics kept in c into the running statistics once
** more, as a second identical forward pass would. */
void net_replay_running(net *nt, int n, const net_cache *c);

/*
** Backward through layers [0, to): dout is the gradient of the output of
** layer to-1. Adds into din (n samples of the input shape) unless NULL, and
** into grads unless NULL.
*/
void net_backward(const net *nt, int n, const float *in, const net_cache *c,
                  int to, const float *dout, float *din, float *grads,
                  float *scratch);

/* DCGAN initialisation (as the authors' weights_init): conv weights
** N(0, 0.02), conv biases 0, batch-norm gamma N(1, 0.02) and beta 0,
** running mean 0 and variance 1. */
void net_init_dcgan(net *nt, struct rng *r);

/* The same with conv and linear weights N(0, std) and batch-norm gamma
** N(1, gamma_std) (gamma_std 0: exactly 1, nothing drawn): TensorFlow's
** random_normal_initializer and its batch-norm defaults for gamma_std 0.
** Draws in layer order: every weight, then each gamma when gamma_std > 0. */
void net_init_normal(net *nt, struct rng *r, float std, float gamma_std);

#endif /* ANOM_NET_H */
