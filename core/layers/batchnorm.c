/*
** batchnorm.c - BatchNorm2d in inference mode (running statistics) and in
** training mode (batch statistics) with its backward pass.
**
**   batchnorm_forward_infer(n, c, h * w, out, in, gamma, beta, mean, var, 1e-5f);
**
** Per channel the affine map is folded once, in float:
**   scale = gamma / sqrtf(var + eps),  shift = beta - mean * scale
** then every element costs one multiply-add: out = in * scale + shift.
** out may equal in. var + eps must be positive (the model loader checks).
**
** Training, as PyTorch's BatchNorm2d.train() does it:
**
**   batchnorm_forward_train(n, c, hw, out, mean, var, in, gamma, beta, 1e-5f);
**   batchnorm_update_running(n, c, hw, run_mean, run_var, mean, var, 0.1f);
**   ...later, with the same in, mean, var:
**   batchnorm_backward(n, c, hw, din, dgamma, dbeta, dout, in, mean, var,
**                      gamma, 1e-5f);
**
** The batch mean and the biased variance are summed in double (two passes,
** so a large offset does not cancel the spread) and stored as float; the
** output and the backward both normalise with those stored floats,
** xhat = (in - mean) * rstd, rstd = 1 / sqrt(var + eps), so the two agree.
** With m = n * hw values per channel the backward is
**   din += gamma rstd / m * (m dout - sum(dout) - xhat sum(dout xhat))
**   dgamma += sum(dout xhat),  dbeta += sum(dout)
** with both sums in double.
*/
#include "layers.h"

#include <math.h>

/* in, out (N, C, HW); gamma, beta, mean, var (C) */
void batchnorm_forward_infer(int n, int c, int hw, float *out, const float *in,
                             const float *gamma, const float *beta,
                             const float *mean, const float *var, float eps) {
  for(int ch = 0; ch < c; ch++){
    float scale = gamma[ch] / sqrtf(var[ch] + eps);
    float shift = beta[ch] - mean[ch] * scale;
    for(int i = 0; i < n; i++){
      size_t base = ((size_t)i * c + ch) * hw;
      for(int j = 0; j < hw; j++) out[base + j] = in[base + j] * scale + shift;
    }
  }
}

/* rstd = 1 / sqrt(var + eps), from the float var the caller holds */
static double bn_rstd(float var, float eps) {
  return 1.0 / sqrt((double)var + (double)eps);
}

/* in, out (N, C, HW); gamma, beta, mean, var (C) */
void batchnorm_forward_train(int n, int c, int hw, float *out, float *mean,
                             float *var, const float *in, const float *gamma,
                             const float *beta, float eps) {
  double m = (double)n * hw;
  for(int ch = 0; ch < c; ch++){
    double sum = 0.0, sq = 0.0;
    for(int i = 0; i < n; i++){
      const float *x = in + ((size_t)i * c + ch) * hw;
      for(int j = 0; j < hw; j++) sum += x[j];
    }
    double mu = sum / m;
    for(int i = 0; i < n; i++){
      const float *x = in + ((size_t)i * c + ch) * hw;
      for(int j = 0; j < hw; j++){
        double d = x[j] - mu;
        sq += d * d;
      }
    }
    mean[ch] = (float)mu;
    var[ch] = (float)(sq / m);
    float scale = (float)(gamma[ch] * bn_rstd(var[ch], eps));
    float mf = mean[ch], shift = beta[ch];
    for(int i = 0; i < n; i++){
      size_t base = ((size_t)i * c + ch) * hw;
      for(int j = 0; j < hw; j++)
        out[base + j] = (in[base + j] - mf) * scale + shift;
    }
  }
}

/* run_mean, run_var, mean, var (C) */
void batchnorm_update_running(int n, int c, int hw, float *run_mean,
                              float *run_var, const float *mean,
                              const float *var, float momentum) {
  double m = (double)n * hw;
  /* one value per channel has no unbiased variance (PyTorch refuses such a
  ** batch); the biased one, 0, is used rather than dividing by zero */
  double unbias = m > 1.0 ? m / (m - 1.0) : 1.0;
  double mo = momentum;
  for(int ch = 0; ch < c; ch++){
    run_mean[ch] = (float)((1.0 - mo) * run_mean[ch] + mo * mean[ch]);
    run_var[ch] = (float)((1.0 - mo) * run_var[ch] + mo * var[ch] * unbias);
  }
}

/* din, dout, in (N, C, HW); dgamma, dbeta, mean, var, gamma (C) */
void batchnorm_backward(int n, int c, int hw, float *din, float *dgamma,
                        float *dbeta, const float *dout, const float *in,
                        const float *mean, const float *var, const float *gamma,
                        float eps) {
  double m = (double)n * hw;
  for(int ch = 0; ch < c; ch++){
    double rstd = bn_rstd(var[ch], eps), mu = mean[ch];
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    for(int i = 0; i < n; i++){
      size_t base = ((size_t)i * c + ch) * hw;
      for(int j = 0; j < hw; j++){
        double dy = dout[base + j];
        sum_dy += dy;
        sum_dy_xhat += dy * ((in[base + j] - mu) * rstd);
      }
    }
    if( dgamma ) dgamma[ch] += (float)sum_dy_xhat;
    if( dbeta ) dbeta[ch] += (float)sum_dy;
    if( !din ) continue;
    double k = gamma[ch] * rstd, mean_dy = sum_dy / m;
    double mean_dy_xhat = sum_dy_xhat / m;
    for(int i = 0; i < n; i++){
      size_t base = ((size_t)i * c + ch) * hw;
      for(int j = 0; j < hw; j++){
        double xhat = (in[base + j] - mu) * rstd;
        din[base + j] += (float)(k * (dout[base + j] - mean_dy
                                      - xhat * mean_dy_xhat));
      }
    }
  }
}

void batchnorm_backward_infer(int n, int c, int hw, float *din, float *dgamma,
                              float *dbeta, const float *dout, const float *in,
                              const float *mean, const float *var,
                              const float *gamma, float eps) {
  for(int ch = 0; ch < c; ch++){
    float rstd = 1.0f / sqrtf(var[ch] + eps);
    float scale = gamma[ch] * rstd;
    double sg = 0, sb = 0;
    for(int i = 0; i < n; i++){
      size_t base = ((size_t)i * c + ch) * (size_t)hw;
      for(int k = 0; k < hw; k++){
        float d = dout[base + k];
        if( din ) din[base + k] += d * scale;
        sg += (double)d * (in[base + k] - mean[ch]) * rstd;
        sb += d;
      }
    }
    if( dgamma ) dgamma[ch] += (float)sg;
    if( dbeta ) dbeta[ch] += (float)sb;
  }
}
