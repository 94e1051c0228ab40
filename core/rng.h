/*
** rng.h - the one seeded random generator: xoshiro256** seeded by splitmix64.
**
** Everything random in training (initial weights, shuffles, the held-out
** split, synthetic defects, AnoGAN's initial z) draws from an rng passed
** down explicitly, so the same seed gives the same model.
**
**   rng r;
**   rng_seed(&r, 42);
**   float g = rng_normal(&r);      N(0, 1)
*/
#ifndef ANOM_RNG_H
#define ANOM_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct rng {
  uint64_t s[4];
  int has_spare;   /* Box-Muller makes normals in pairs */
  double spare;
} rng;

void rng_seed(rng *r, uint64_t seed);
uint64_t rng_next(rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double rng_uniform(rng *r);
/* Uniform integer in [0, n), unbiased; n >= 1. */
uint64_t rng_below(rng *r, uint64_t n);
/* Standard normal. */
double rng_normal(rng *r);
/* Fisher-Yates shuffle of idx[0..n). */
void rng_shuffle(rng *r, int *idx, int n);

#endif /* ANOM_RNG_H */
