#!/bin/sh
# train_fashion_models.sh CLASS... - train the pretrained GANomaly models of
# models/ with anomaly_train, one Fashion-MNIST class each, and report their
# test AUROC. Run from the repository root after `make`:
#
#   OPENBLAS_NUM_THREADS=1 tests/bench/train_fashion_models.sh 0 1 6
#
# Protocol (../shared/eval.md 1A): the 6,000 training images of the class,
# 10% held out (seeded) for calibration, the authors' settings (15 epochs,
# batch 64, Adam 2e-4, nz 100, ngf 64), 28x28 padded to 32x32, seed 0,
# final-epoch weights; test: the 10,000 test images, anomalous when the
# label differs.
set -e
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-$(scripts/blas_env.sh)}"
mkdir -p build/models models
# Debian's python3 (numpy, for the float16 conversion)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
for c in "$@"; do
  db=build/models/class$c.db
  rm -f "$db"
  sqlite3 "$db" '.load ./anomaly' '.read sql/import_fashion_mnist.sql'
  t0=$(date +%s)
  sqlite3 "$db" '.bail on' '.load ./anomaly' \
    "SELECT anomaly_train('class$c', 'ganomaly', image,
       '{\"epochs\": 15, \"fit\": \"pad\", \"seed\": 0, \"quiet\": true}')
     FROM fashion WHERE split = 'train' AND label = $c ORDER BY idx;" > build/models/class$c.json
  t1=$(date +%s)
  # trained in float32; shipped in float16 (half the size, see models/README.md)
  sqlite3 "$db" '.load ./anomaly' \
    "SELECT writefile('build/models/class$c-f32.safetensors', model) > 0 FROM anomaly_models;" >/dev/null
  "$PY" tests/bench/reference/to_f16.py build/models/class$c-f32.safetensors \
    models/fashion-ganomaly-class$c.safetensors
  sqlite3 "$db" '.load ./anomaly' "INSERT OR REPLACE INTO anomaly_models(name, model)
    VALUES ('class$c', anomaly_model_from_file('models/fashion-ganomaly-class$c.safetensors'));"
  auroc=$(sqlite3 "$db" '.load ./anomaly' \
    "SELECT printf('%.4f', anomaly_auroc(anomaly_score(image, 'class$c'), label <> $c))
       FROM fashion WHERE split = 'test';")
  echo "class $c: test AUROC $auroc (float16 model), training $((t1 - t0)) s ($OPENBLAS_CORETYPE, $(nproc) cores, OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-default})"
  cat build/models/class$c.json
done
