#!/bin/sh
# blas_env.sh - print the OPENBLAS_CORETYPE this CPU should use, or nothing.
#
# OpenBLAS picks its kernels from the CPU model it knows. Debian 12's
# OpenBLAS 0.3.21 predates recent Xeons (Sapphire and Emerald Rapids) and
# falls back to its generic Prescott kernels there, five times slower than
# its AVX-512 ones. When the CPU has AVX-512 (F, BW, DQ, VL) we name the
# SkylakeX kernels; with AVX2 and FMA only, Haswell. A value already in the
# environment is kept.
if [ -n "$OPENBLAS_CORETYPE" ]; then echo "$OPENBLAS_CORETYPE"; exit 0; fi
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
has() { case " $flags " in *" $1 "*) return 0;; esac; return 1; }
if has avx512f && has avx512bw && has avx512dq && has avx512vl; then
  echo SkylakeX
elif has avx2 && has fma; then
  echo Haswell
fi
