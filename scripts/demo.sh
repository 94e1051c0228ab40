#!/bin/sh
# demo.sh [train] - the Fashion-MNIST demo (make demo, make demo TRAIN=1).
#
# Imports Fashion-MNIST into demo.db (once), registers the pretrained model
# for one class from models/ (or trains it with anomaly_train when asked),
# then prints the test AUROC and the ten most anomalous test images, and
# writes those images and their reconstructions into demo/.
set -e
# one BLAS thread a process: scoring goes one row at a time, and small
# matrices only lose to thread hand-offs
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-$(scripts/blas_env.sh)}"
class=${DEMO_CLASS:-1}
db=${DEMO_DB:-demo.db}
model=models/fashion-ganomaly-class$class.safetensors
mkdir -p demo
rm -f demo/*.png
t0=$(date +%s)
echo "importing Fashion-MNIST into $db (once) ..."
sqlite3 "$db" '.bail on' '.load ./anomaly' '.read sql/import_fashion_mnist.sql' \
  "SELECT '  ' || split || ': ' || count(*) || ' images' FROM fashion GROUP BY split ORDER BY split DESC;"
sqlite3 "$db" "CREATE TABLE IF NOT EXISTS demo_setup(label INTEGER); DELETE FROM demo_setup;
               INSERT INTO demo_setup VALUES ($class);"
if [ "$1" = train ]; then
  echo "training GANomaly on class $class (the authors' settings, 15 epochs) ..."
  sqlite3 "$db" '.bail on' '.load ./anomaly' \
    "SELECT anomaly_train('demo', 'ganomaly', image,
       '{\"epochs\": 15, \"size\": 32, \"fit\": \"pad\", \"seed\": 0, \"replace\": true}')
     FROM fashion WHERE split = 'train' AND label = $class ORDER BY idx;"
else
  if [ ! -f "$model" ]; then
    echo "error: no pretrained model $model; run 'make demo TRAIN=1' to train one" >&2
    exit 1
  fi
  echo "registering the pretrained model $model ..."
  sqlite3 "$db" '.bail on' '.load ./anomaly' \
    "INSERT OR REPLACE INTO anomaly_models(name, model)
       VALUES ('demo', anomaly_model_from_file('$model'));"
fi
echo "scoring the 10,000 test images ..."
sqlite3 "$db" '.bail on' '.load ./anomaly' '.read sql/demo.sql'
echo "done in $(( $(date +%s) - t0 )) s"
