#!/bin/sh
# method_auroc.sh METHOD CLASS [OPTIONS_JSON [TEST_LIMIT]] - train one detector
# on one Fashion-MNIST class with anomaly_train and print its test AUROC per
# score part: the rows of docs/benchmarks.md for the methods without
# pretrained models. Run from the repository root after `make`:
#
#   tests/bench/method_auroc.sh skipganomaly 1
#   tests/bench/method_auroc.sh anogan 1 '{"steps": 100}' 1000
#
# OPTIONS_JSON is merged into {"epochs": 15, "fit": "pad", "seed": 0}.
# TEST_LIMIT scores only the test images with idx below it (AnoGAN's search
# costs about a second an image); default: all 10,000.
#
# Leaves build/bench/METHOD-classCLASS.db (the model 'm' and the table
# scored(label, j): each test image's anomaly_scores) and
# build/bench/METHOD-classCLASS-scores.csv, one "score,label" line a scored
# image with label 1 for the other classes (the anomalies), for ROC curves
# (build/bench/roc_plot; bench.py's "figures" part).
set -e
method=$1 class=$2 extra=${3:-"{}"} limit=${4:-10000}
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-$(scripts/blas_env.sh)}"
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
mkdir -p build/bench
db=build/bench/$method-class$class.db
rm -f "$db"
sqlite3 "$db" '.load ./anomaly' '.read sql/import_fashion_mnist.sql'
opts=$(sqlite3 :memory: "SELECT json_patch('{\"epochs\": 15, \"fit\": \"pad\", \"seed\": 0, \"quiet\": true}', '$extra')")
t0=$(date +%s)
sqlite3 "$db" '.bail on' '.load ./anomaly' \
  "SELECT anomaly_train('m', '$method', image, '$opts') FROM fashion
    WHERE split = 'train' AND label = $class ORDER BY idx;"
t1=$(date +%s)
sqlite3 "$db" '.bail on' '.load ./anomaly' \
  "CREATE TABLE scored AS SELECT label, anomaly_scores(image, 'm') AS j FROM fashion
    WHERE split = 'test' AND idx < $limit;" \
  "SELECT key, printf('%.4f', anomaly_auroc(value, label <> $class))
     FROM scored, json_each(scored.j) GROUP BY key ORDER BY key = 'score' DESC, key;" \
  ".headers off" ".mode csv" ".once build/bench/$method-class$class-scores.csv" \
  "SELECT j ->> 'score', label <> $class FROM scored ORDER BY rowid;"
t2=$(date +%s)
echo "$method class $class, options $opts, test images idx < $limit: training and calibration $((t1 - t0)) s, scoring $((t2 - t1)) s ($OPENBLAS_CORETYPE, OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS)"
