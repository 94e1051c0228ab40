/*
** layers.h - the layers of every detector, each a pair of plain functions
** over flat float arrays: x_forward now, x_backward beside it.
**
** Dimension legend: N batch, C input channels, H W input height and width,
** OC output channels, OH OW output height and width, K square kernel size.
** Tensors are NCHW float32, contiguous. Weights use PyTorch's layouts:
** Conv2d (OC, C, K, K), ConvTranspose2d (C, OC, K, K).
**
** Convolutions run as im2col + cblas_sgemm (gemm.c is the only file that
** calls BLAS), one sgemm per chunk of images whose column matrices sit side
** by side; a transposed convolution is one sgemm into columns followed by
** col2im, with no zero-stuffed input. Each kernel has a plain loop twin,
** x_forward_naive, kept as the oracle the tests check it against.
**
** Scratch: conv functions take a caller-owned work buffer of
** conv_work_floats(s, n) floats, so nothing is allocated in the hot loop.
** Elementwise functions may run in place (out == in).
*/
#ifndef ANOM_LAYERS_H
#define ANOM_LAYERS_H

#include <stddef.h>
#include <stdint.h>

/*
** ---- gemm.c: C = alpha * op(A) * op(B) + beta * C, row-major, BLAS-shaped.
** op(A) is (M, K), op(B) is (K, N), C is (M, N); trans_x nonzero means op(X)
** = X^T; ldx is the row stride of X as stored. beta == 0: C is not read.
*/
void gemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
          const float *a, int lda, const float *b, int ldb, float beta,
          float *c, int ldc);
void gemm_naive(int trans_a, int trans_b, int m, int n, int k, float alpha,
                const float *a, int lda, const float *b, int ldb, float beta,
                float *c, int ldc);

/*
** The BLAS behind gemm, and its one process-wide setting: how many threads
** each product may use. gemm_set_threads(n) waits until no gemm is running,
** sets it and returns the number now in effect (the BLAS may cap n), or -1
** when the BLAS cannot be told (one that is not OpenBLAS). gemm_blas_info
** fills in what the BLAS says of itself; strings are static ("unknown"
** where it cannot tell).
*/
typedef struct gemm_blas {
  const char *name;      /* "OpenBLAS" */
  const char *config;    /* its version and build, "OpenBLAS 0.3.21 DYNAMIC_ARCH ..." */
  const char *core;      /* the kernels picked for this CPU, e.g. "SkylakeX" */
  const char *parallel;  /* "sequential", "pthreads" or "openmp" */
  int threads;           /* threads each product may use */
  int processors;        /* processors the BLAS sees */
} gemm_blas;
void gemm_blas_info(gemm_blas *info);
int gemm_set_threads(int n);

/* ---- the shape of one convolution (direct or transposed) */
typedef struct conv_shape {
  int c, h, w;        /* input channels, height, width */
  int oc, oh, ow;     /* output channels, height, width */
  int k, stride, pad; /* square kernel, stride, zero padding */
  int transposed;     /* 0: Conv2d, 1: ConvTranspose2d (output_padding 0) */
} conv_shape;

/*
** Fill s and compute oh, ow:
**   Conv2d:          oh = (h + 2 pad - k) / stride + 1
**   ConvTranspose2d: oh = (h - 1) stride - 2 pad + k
** Returns 0, or -1 when a size or the output is not positive, stride < 1,
** pad < 0, or a column-matrix or tensor size would overflow int.
*/
int conv_shape_init(conv_shape *s, int c, int h, int w, int oc, int k,
                    int stride, int pad, int transposed);

/*
** Images per sgemm when a call gets n: enough that the product is about
** 2048 columns wide, while a chunk's buffers stay within 2 MiB; 1..n.
*/
int conv_chunk(const conv_shape *s, int n);

/*
** Floats of scratch one call of conv2d_* / conv_transpose2d_* on n images
** needs: conv_chunk(s, n) times one image's column matrix (C*K*K*OH*OW for
** Conv2d, OC*K*K*H*W for ConvTranspose2d) plus one image's side buffer (its
** output, OC*OH*OW, for Conv2d; its input, C*H*W, for ConvTranspose2d).
*/
size_t conv_work_floats(const conv_shape *s, int n);

/*
** What inference does to a convolution's output in the same pass: per
** output channel o, y = act(y * scale[o] + shift[o]). scale NULL: 1; shift
** NULL: 0 (a plain bias is shift). act is one of the activations below with
** slope for leaky ReLU. A batch norm in inference mode folds in as scale =
** gamma / sqrt(var + eps), shift = beta + (bias - mean) * scale.
*/
enum { ACT_NONE, ACT_LEAKY_RELU, ACT_RELU, ACT_TANH, ACT_SIGMOID };
typedef struct conv_epilogue {
  const float *scale, *shift;
  int act;
  float slope;
} conv_epilogue;

/* out (OC, HW) = the epilogue of src (OC rows, ld floats apart); out may
** equal src when ld == hw. */
void conv_epilogue_apply(const conv_epilogue *ep, int oc, size_t hw, float *out,
                         const float *src, size_t ld);

/* in (N, C, H, W) -> out (N, OC, OH, OW); weight (OC, C, K, K); bias (OC) or NULL. */
void conv2d_forward(const conv_shape *s, int n, float *out, const float *in,
                    const float *weight, const float *bias, float *work);
/* The same, ending with the epilogue ep instead of a bias. */
void conv2d_forward_fused(const conv_shape *s, int n, float *out, const float *in,
                          const float *weight, const conv_epilogue *ep, float *work);
void conv2d_forward_naive(const conv_shape *s, int n, float *out,
                          const float *in, const float *weight,
                          const float *bias);

/* in (N, C, H, W) -> out (N, OC, OH, OW); weight (C, OC, K, K); bias (OC) or NULL. */
void conv_transpose2d_forward(const conv_shape *s, int n, float *out,
                              const float *in, const float *weight,
                              const float *bias, float *work);
void conv_transpose2d_forward_fused(const conv_shape *s, int n, float *out,
                                    const float *in, const float *weight,
                                    const conv_epilogue *ep, float *work);
void conv_transpose2d_forward_naive(const conv_shape *s, int n, float *out,
                                    const float *in, const float *weight,
                                    const float *bias);

/*
** im2col / col2im. im is the tensor the kernel window slides
** over and col has one column per window position. A transposed conv is the
** adjoint of the Conv2d from (OC, OH, OW) back to (C, H, W), so its sides swap:
**   Conv2d:          im (C, H, W)    <-> col (C*K*K, OH*OW)
**   ConvTranspose2d: im (OC, OH, OW) <-> col (OC*K*K, H*W)
** col[(ch*K + ky)*K + kx, gy*GW + gx] = im[ch, gy*stride - pad + ky,
** gx*stride - pad + kx] (zero outside im), GW = OW or W. col2im adds into im.
** Both take n images at once (consecutive in im), whose column matrices sit
** side by side in col, image j at column j*GH*GW; rows of col are ld floats
** apart (ld >= n*GH*GW).
*/
void im2col(const conv_shape *s, int n, const float *im, float *col, size_t ld);
void col2im(const conv_shape *s, int n, const float *col, size_t ld, float *im);

/*
** Batch norm in inference mode, per channel over (N, C, HW):
**   out = (in - mean) / sqrt(var + eps) * gamma + beta
*/
void batchnorm_forward_infer(int n, int c, int hw, float *out, const float *in,
                             const float *gamma, const float *beta,
                             const float *mean, const float *var, float eps);

/* ---- activations.c, over count elements */
void leaky_relu_forward(float *out, const float *in, size_t count, float slope);
void relu_forward(float *out, const float *in, size_t count);
void tanh_forward(float *out, const float *in, size_t count);
void sigmoid_forward(float *out, const float *in, size_t count);


/* ==== Backward passes (training) ==========================================
** Convention (llm.c's): every backward ADDS into its outputs (din, dweight,
** dbias, dgamma, dbeta: +=); the caller zeroes them. Any of them may be NULL
** to skip that gradient (for example a frozen network, or the first layer's
** din). Gradients are +dL/dx, never negated.
*/

/* dout (N, OC, OH, OW); in (N, C, H, W) is the forward input. */
void conv2d_backward(const conv_shape *s, int n, float *din, float *dweight,
                     float *dbias, const float *dout, const float *in,
                     const float *weight, float *work);
/* dbias (OC) += dout (N, OC, HW) summed over N and HW, per image and
** channel in double: the bias gradient of either convolution. */
void conv_bias_backward(int n, int oc, size_t hw, float *dbias, const float *dout);
void conv_transpose2d_backward(const conv_shape *s, int n, float *din,
                               float *dweight, float *dbias, const float *dout,
                               const float *in, const float *weight, float *work);

/*
** Batch norm in training mode: normalise with the batch's statistics over
** (N, HW) per channel. Writes mean (C) and var (C, biased, as used to
** normalise). out may equal in.
*/
void batchnorm_forward_train(int n, int c, int hw, float *out, float *mean,
                             float *var, const float *in, const float *gamma,
                             const float *beta, float eps);
/*
** PyTorch's running-statistics update: run = (1 - momentum) run + momentum
** batch, with the unbiased variance var * m / (m - 1), m = n * hw.
*/
void batchnorm_update_running(int n, int c, int hw, float *run_mean,
                              float *run_var, const float *mean, const float *var,
                              float momentum);
/* in is the forward input; mean and var from batchnorm_forward_train. */
void batchnorm_backward(int n, int c, int hw, float *din, float *dgamma,
                        float *dbeta, const float *dout, const float *in,
                        const float *mean, const float *var, const float *gamma,
                        float eps);

/* Backward of batchnorm_forward_infer (running statistics, which are
** constants): din += dout gamma rstd; dgamma += sum dout (in - mean) rstd;
** dbeta += sum dout; rstd = 1 / sqrt(var + eps). */
void batchnorm_backward_infer(int n, int c, int hw, float *din, float *dgamma,
                              float *dbeta, const float *dout, const float *in,
                              const float *mean, const float *var,
                              const float *gamma, float eps);

/* Activations: out is the forward output (its sign equals the input's for
** leaky ReLU with slope > 0 and ReLU). din must not alias dout. */
void leaky_relu_backward(float *din, const float *dout, const float *out,
                         size_t count, float slope);
void relu_backward(float *din, const float *dout, const float *out, size_t count);
void tanh_backward(float *din, const float *dout, const float *out, size_t count);
void sigmoid_backward(float *din, const float *dout, const float *out, size_t count);

/* ---- losses.c: each returns the mean loss over count elements (in double)
** and, when dx is not NULL, adds scale * dloss/dx into dx. */
double l1_loss(float *dx, const float *x, const float *y, size_t count, float scale);
double l2_loss(float *dx, const float *x, const float *y, size_t count, float scale);
/* Binary cross-entropy of sigmoid(logits) against a constant target in
** [0, 1], computed from the logits without overflow:
**   max(l, 0) - l t + log(1 + exp(-|l|)). */
double bce_logits_loss(float *dx, const float *logits, float target,
                       size_t count, float scale);

/* ==== Linear, concatenation, dropout ======================================
** Forward and backward together; the backwards follow the convention above
** (+=, any gradient output may be NULL).
*/

/*
** ---- linear.c: nn.Linear, out (N, OUT) = in (N, IN) weight^T + bias.
** weight (OUT, IN) as PyTorch stores it; bias (OUT) or NULL. in_f may be 0
** (out = bias, or 0). out must not alias in.
*/
void linear_forward(int n, int in_f, int out_f, float *out, const float *in,
                    const float *weight, const float *bias);
void linear_forward_naive(int n, int in_f, int out_f, float *out,
                          const float *in, const float *weight,
                          const float *bias);
/* dout (N, OUT); din (N, IN), dweight (OUT, IN), dbias (OUT); in the
** forward input. */
void linear_backward(int n, int in_f, int out_f, float *din, float *dweight,
                     float *dbias, const float *dout, const float *in,
                     const float *weight);

/*
** ---- concat.c: torch.cat([a, b], 1) of a (N, CA, HW) and b (N, CB, HW)
** into out (N, CA+CB, HW); the backward splits dout (N, CA+CB, HW) back,
** adding into da (N, CA, HW) and db (N, CB, HW).
*/
void concat_forward(int n, int ca, int cb, int hw, float *out, const float *a,
                    const float *b);
void concat_backward(int n, int ca, int cb, int hw, float *da, float *db,
                     const float *dout);

/*
** ---- dropout.c: inverted dropout in training mode, p in [0, 1).
** dropout_mask draws count keep flags (1 with probability 1 - p) from r,
** exactly one rng_uniform each; the forward is out = in * mask / (1 - p),
** a copy when p == 0 (mask may then be NULL). out may equal in.
*/
struct rng;
void dropout_mask(uint8_t *mask, size_t count, float p, struct rng *r);
void dropout_forward(float *out, const float *in, const uint8_t *mask,
                     size_t count, float p);
void dropout_backward(float *din, const float *dout, const uint8_t *mask,
                      size_t count, float p);

/* ==== spectral_norm.c =================================================== */

/*
** Spectral normalisation (Miyato et al. 2018), as torch.nn.utils.spectral_norm
** computes it in training mode with n_power_iterations = 1 and dim = 0:
** the weight viewed as a matrix W (rows, cols) -- Conv2d (OC, C*K*K), Linear (OUT, IN) --
**   v = normalize(W^T u),  u' = normalize(W v),  sigma = u'^T W v,  wn = W / sigma
** normalize(a) = a / max(||a||, eps) (F.normalize), eps 1e-12.
** u (rows) is read and, when update is non-zero, overwritten with u' (the
** power iteration's state); v (cols) receives v. update == 0: no iteration,
** sigma = u^T W v from the u and v given (PyTorch's eval mode).
** Returns sigma. wn may not alias w.
*/
float spectral_norm_forward(int rows, int cols, float *wn, const float *w,
                            float *u, float *v, int update, float eps);
/*
** Backward with u and v held constant (as PyTorch and Miyato's code do):
**   dw += (dwn - <dwn, wn> u v^T) / sigma
** with u, v, sigma, wn from the forward.
*/
void spectral_norm_backward(int rows, int cols, float *dw, const float *dwn,
                            const float *wn, const float *u, const float *v,
                            float sigma);

#endif /* ANOM_LAYERS_H */
