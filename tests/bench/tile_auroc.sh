#!/bin/sh
# tile_auroc.sh METHOD [OPTIONS_JSON [SCORE_OPTIONS_JSON]] - train one detector
# on the magnetic-tile set's defect-free training images with anomaly_train
# and evaluate it as ../shared/eval.md 1B says: the image-level test AUROC of
# every score part, the pixel AUROC of anomaly_map against the masks (at the
# original image size), and the F1 of the model's own calibrated threshold.
# Run from the repository root after `make`:
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
# build/bench/tiles-METHOD.db. TILE_REUSE=1 keeps a model trained before
# with the same options and only evaluates it.
#
# Output, one "key value" line each: image_auroc.PART, f1_at_threshold,
# threshold, pixel_auroc, train_seconds, score_seconds, pixel_seconds; and
# files build/bench/tiles-METHOD-scores.csv (score,label per test image, for
# ROC curves) and build/bench/tiles-METHOD-gallery.png (anomaly_montage of
# three good tiles and one of each defect kind, the same ones for every
# method).
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
out=build/bench/tiles-$method
opts=$(sqlite3 :memory: "SELECT json_patch('{\"epochs\": 15, \"size\": 64, \"seed\": 0, \"quiet\": true}', '$extra')")
have=""
if [ "${TILE_REUSE:-0}" = 1 ] && [ -s "$db" ]; then
  have=$(sqlite3 "$db" '.load ./anomaly' \
    "SELECT 1 FROM anomaly_models WHERE name = 'm' AND info -> '\$.calibration.map' IS NOT NULL
        AND EXISTS (SELECT 1 FROM train_options WHERE opts = '$opts')" 2>/dev/null || true)
fi
t0=$(date +%s)
if [ "$have" != 1 ]; then
  rm -f "$db"
  cp "$src" "$db"
  sqlite3 "$db" '.bail on' '.load ./anomaly' \
    "SELECT anomaly_train('m', '$method', image, '$opts') FROM images
      WHERE split = 'train' ORDER BY id;" \
    "CREATE TABLE train_options AS SELECT '$opts' AS opts;" >/dev/null
fi
t1=$(date +%s)
sarg="" parg=""
[ -n "$score_opts" ] && sarg=", '$score_opts'" && parg=", mask, '$score_opts'"
[ -z "$score_opts" ] && parg=", mask"
sqlite3 "$db" '.bail on' '.load ./anomaly' \
  ".separator ' '" "DROP TABLE IF EXISTS scored;" \
  "CREATE TABLE scored AS SELECT id, kind, anomaly_scores(image, 'm'$sarg) AS j FROM images
    WHERE split = 'test';" \
  "SELECT 'image_auroc.' || key, printf('%.4f', anomaly_auroc(value, kind <> 'good'))
     FROM scored, json_each(scored.j) GROUP BY key ORDER BY key = 'score' DESC, key;" \
  "SELECT 'threshold', printf('%.6g', threshold) FROM anomaly_models WHERE name = 'm';" \
  "SELECT 'f1_at_threshold', printf('%.4f', 2.0 * tp / (2 * tp + fp + fn)) FROM (
     SELECT sum(flag AND bad) AS tp, sum(flag AND NOT bad) AS fp, sum(NOT flag AND bad) AS fn
       FROM (SELECT (j ->> 'score') > (SELECT threshold FROM anomaly_models WHERE name = 'm') AS flag,
                    kind <> 'good' AS bad FROM scored));" \
  ".headers off" ".mode csv" ".once $out-scores.csv" \
  "SELECT j ->> 'score', kind <> 'good' FROM scored ORDER BY id;"
t2=$(date +%s)
sqlite3 "$db" '.bail on' '.load ./anomaly' ".separator ' '" \
  "SELECT 'pixel_auroc', printf('%.4f', anomaly_pixel_auroc(image, 'm'$parg))
     FROM images LEFT JOIN masks ON image_id = id WHERE split = 'test';" \
  "SELECT writefile('$out-gallery.png', anomaly_montage(image, 'm', kind)) > 0 FROM (
     SELECT image, kind, id FROM images WHERE id IN (
       SELECT id FROM (SELECT id FROM images WHERE split = 'test' AND kind = 'good' ORDER BY id LIMIT 3)
       UNION SELECT min(id) FROM images WHERE split = 'test' AND kind <> 'good' GROUP BY kind)
     ORDER BY kind <> 'good', kind, id);" >"$out-pixel.txt"
t3=$(date +%s)
grep '^pixel_auroc' "$out-pixel.txt"
echo "train_seconds $((t1 - t0))"
echo "score_seconds $((t2 - t1))"
echo "pixel_seconds $((t3 - t2))"
echo "# $method on magnetic tiles, options $opts${score_opts:+, scoring $score_opts}, 772 test images ($OPENBLAS_CORETYPE, OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS)"
