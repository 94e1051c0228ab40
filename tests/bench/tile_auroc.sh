#!/bin/sh
# tile_auroc.sh METHOD [OPTIONS_JSON [TEST_OPTIONS_JSON]] - train one detector
# on the magnetic-tile set's defect-free training images with anomaly_train
# and print the image-level test AUROC of every score part (../shared/eval.md
# 1B). Run from the repository root after `make`:
#
#   tests/bench/tile_auroc.sh ganomaly
#   tests/bench/tile_auroc.sh anogan '{"steps": 100}'
#
# The folder is MVTec AD's layout (train/good, test/<kind>, ground_truth/);
# TILE_DIR names it (default ../shared/data/magnetic_tile, beside the
# repository). OPTIONS_JSON is merged into {"epochs": 15, "size": 64,
# "seed": 0}: the grey JPEGs (about 250x300) resized to 64x64. The images
# are imported once into build/bench/tiles.db with the shell's fsdir()
# (examples/import_folder.sql); each method's model goes to
# build/bench/tiles-METHOD.db.
set -e
method=$1 extra=${2:-"{}"} score_opts=${3:-""}
dir=${TILE_DIR:-../shared/data/magnetic_tile}
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-$(scripts/blas_env.sh)}"
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
if [ ! -d "$dir/train/good" ]; then
  echo "tile_auroc.sh: no magnetic-tile folder at $dir (set TILE_DIR)" >&2
  exit 2
fi
mkdir -p build/bench
src=build/bench/tiles.db
if [ ! -s "$src" ]; then
  root=$(basename "$dir")
  (cd "$(dirname "$dir")" && sqlite3 "$OLDPWD/$src.tmp" ".param set :root $root" \
      ".read $OLDPWD/examples/import_folder.sql" >/dev/null)
  mv "$src.tmp" "$src"
fi
db=build/bench/tiles-$method.db
rm -f "$db"
cp "$src" "$db"
opts=$(sqlite3 :memory: "SELECT json_patch('{\"epochs\": 15, \"size\": 64, \"seed\": 0, \"quiet\": true}', '$extra')")
sarg=""
[ -n "$score_opts" ] && sarg=", '$score_opts'"
t0=$(date +%s)
sqlite3 "$db" '.bail on' '.load ./anomaly' \
  "SELECT anomaly_train('m', '$method', image, '$opts') FROM images
    WHERE split = 'train' ORDER BY id;"
t1=$(date +%s)
sqlite3 "$db" '.bail on' '.load ./anomaly' \
  "CREATE TABLE scored AS SELECT id, kind, anomaly_scores(image, 'm'$sarg) AS j FROM images
    WHERE split = 'test';" \
  "SELECT key, printf('%.4f', anomaly_auroc(value, kind <> 'good'))
     FROM scored, json_each(scored.j) GROUP BY key ORDER BY key = 'score' DESC, key;" \
  "SELECT 'f1_at_threshold', printf('%.4f', 2.0 * tp / (2 * tp + fp + fn)) FROM (
     SELECT sum(flag AND bad) AS tp, sum(flag AND NOT bad) AS fp, sum(NOT flag AND bad) AS fn
       FROM (SELECT (j ->> 'score') > (SELECT threshold FROM anomaly_models WHERE name = 'm') AS flag,
                    kind <> 'good' AS bad FROM scored));"
t2=$(date +%s)
echo "$method on magnetic tiles, options $opts, 772 test images: training and calibration $((t1 - t0)) s, scoring $((t2 - t1)) s ($OPENBLAS_CORETYPE, OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS)"
