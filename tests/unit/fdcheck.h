/*
** fdcheck.h - what the layer tests share: float buffers and comparisons,
** and the finite-difference gradient check:
** a four-point central difference (O(h^4)) along every element, with steps
** that are exact in float (parameters on a 2^-12 grid, h a power of two).
** Include after <cmocka.h>.
*/
#ifndef ANOM_TEST_FDCHECK_H
#define ANOM_TEST_FDCHECK_H

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

static __attribute__((unused)) float *fbuf(size_t count) {
  float *p = anom_malloc((count ? count : 1) * sizeof(float));
  assert_non_null(p);
  return p;
}

static __attribute__((unused)) void fill_value(float *p, size_t count, float v) {
  for(size_t i = 0; i < count; i++) p[i] = v;
}

static __attribute__((unused)) double dot(const float *a, const float *b, size_t count) {
  double acc = 0.0;
  for(size_t i = 0; i < count; i++) acc += (double)a[i] * b[i];
  return acc;
}

static __attribute__((unused)) void assert_floats(const float *got, const float *want, size_t count,
                          double tol) {
  for(size_t i = 0; i < count; i++){
    if( !(fabs((double)got[i] - want[i]) <= tol) ){
      print_error("element %zu: got %.9g, want %.9g\n", i, got[i], want[i]);
      fail();
    }
  }
}

typedef double (*objective_fn)(void *ctx);

typedef struct fd_check {
  const char *layer;
  double h;           /* step, a power of two */
  double atol, rtol;  /* pass when |analytic - fd| <= atol + rtol |fd| */
  double worst;       /* largest |analytic - fd| seen */
  double worst_fd;    /* the |fd| at that element */
  long checked;       /* elements compared */
} fd_check;

/* four-point central difference of f along *p; the steps are exact */
static __attribute__((unused)) double fd_grad(fd_check *ck, objective_fn f, void *ctx, float *p) {
  float v = *p;
  double h = ck->h, lp[2], lm[2];
  for(int j = 0; j < 2; j++){
    float up = (float)(v + (j + 1) * h), down = (float)(v - (j + 1) * h);
    if( (double)up - v != (j + 1) * h || v - (double)down != (j + 1) * h ){
      print_error("%s: %.9g +- %g is not exact: parameters must lie on the "
                  "grid\n", ck->layer, v, (j + 1) * h);
      fail();
    }
    *p = up;
    lp[j] = f(ctx);
    *p = down;
    lm[j] = f(ctx);
  }
  *p = v;
  return (8.0 * (lp[0] - lm[0]) - (lp[1] - lm[1])) / (12.0 * h);
}

/* every element of the analytic gradient g (count) of f along p */
static __attribute__((unused)) void check_grad(fd_check *ck, const char *what, objective_fn f,
                       void *ctx, float *p, const float *g, size_t count) {
  for(size_t i = 0; i < count; i++){
    double fd = fd_grad(ck, f, ctx, &p[i]);
    double err = fabs((double)g[i] - fd);
    if( !(err <= ck->atol + ck->rtol * fabs(fd)) ){
      print_error("%s: d%s[%zu] analytic %.9g, finite difference %.9g "
                  "(|err| %.3g)\n", ck->layer, what, i, g[i], fd, err);
      fail();
    }
    if( err > ck->worst ){
      ck->worst = err;
      ck->worst_fd = fabs(fd);
    }
    ck->checked++;
  }
}

static __attribute__((unused)) void report(const fd_check *ck) {
  print_message("  %-18s %6ld gradients, worst |err| %.2e at |fd| %.2e "
                "(h %g, tol %g + %g |fd|)\n", ck->layer, ck->checked,
                ck->worst, ck->worst_fd, ck->h, ck->atol, ck->rtol);
}

#endif /* ANOM_TEST_FDCHECK_H */
