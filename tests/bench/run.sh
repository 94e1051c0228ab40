#!/bin/sh
# run.sh - sqlite-anomaly's benchmarks (make bench), from the repository root
# after `make`. Builds the C helpers into build/bench/, then runs bench.py,
# which writes build/bench/report.md (and prints it) and build/bench/results.json.
# Part "peers" also needs node and npm (onnxruntime-node goes into
# build/bench/node on first use; without them its ONNX Runtime columns stay empty).
#
#   tests/bench/run.sh                  the full run (tens of minutes)
#   BENCH_QUICK=1 tests/bench/run.sh    a smoke run of a minute or two
#
# Every process runs with OPENBLAS_CORETYPE from scripts/blas_env.sh (Debian's
# OpenBLAS 0.3.21 falls back to slow generic kernels on CPUs it does not know)
# and BENCH_THREADS threads (default 1). See bench.py for the other settings.
set -e
cd "$(dirname "$0")/../.."
[ -f anomaly.so ] || { echo "run.sh: build ./anomaly.so first (make)" >&2; exit 1; }
command -v sqlite3 >/dev/null || { echo "run.sh: needs the sqlite3 shell (apt-get install sqlite3)" >&2; exit 1; }
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
command -v "$PY" >/dev/null || { echo "run.sh: needs python3" >&2; exit 1; }
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] ||
  { echo "run.sh: needs Fashion-MNIST (apt-get install dataset-fashion-mnist)" >&2; exit 1; }

OPENBLAS_CORETYPE=$(scripts/blas_env.sh)
export OPENBLAS_CORETYPE
export OPENBLAS_NUM_THREADS="${BENCH_THREADS:-1}"

CC=${CC:-cc}
CFLAGS="-std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -fno-trapping-math -fvect-cost-model=cheap -I. -Icore -I/usr/include/stb"
LIBS="-lopenblas -lcjson -lm -lpthread"
mkdir -p build/bench
# rebuild a helper when any C source is newer than it
build() {
  out=build/bench/$1; shift
  if [ ! -x "$out" ] || [ -n "$(find tests/bench/*.c core -name '*.[ch]' -newer "$out" | head -n 1)" ]; then
    echo "run.sh: building $out" >&2
    $CC $CFLAGS -o "$out" "$@" $LIBS
  fi
}
build baselines tests/bench/baselines.c core/idx.c core/image.c core/safetensors.c \
  core/common.c core/metrics.c
build bench_core tests/bench/bench_core.c core/*.c core/layers/*.c core/detectors/*.c
build roc_plot tests/bench/roc_plot.c core/font.c core/image.c core/safetensors.c core/common.c
build fma_peak tests/bench/fma_peak.c core/common.c

exec "$PY" tests/bench/bench.py
