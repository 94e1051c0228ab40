#!/bin/sh
# walkthrough.sh - examples/walkthrough.sql as a user runs it, on a small
# MVTec-style tree made from Fashion-MNIST by tests/sql/lib/mvtec_tree.sh
# (trousers good; sandals and bags the defects, with masks). Checks what it
# left behind: the rows imported, the model, the scores and their AUROC, the
# montage's size, and the saved model file reloading with the same scores.
set -e
dir=build/walkthrough-test
ext=${ANOMALY_EXT:-./anomaly}
# The walkthrough's own model (ganomaly, 3 epochs, size 32, seed 1: 6
# training steps) is a lottery: seeds 1 to 6 gave image AUROC 0.79, 0.97,
# 0.99, 0.93, 0.99 and 0.20, and another CPU's OpenBLAS kernels round
# differently and draw another ticket. So its AUROC is only checked to be
# the scores' own, and the floor is held by the pretrained trousers model
# (models/fashion-ganomaly-class1) on the same tree: 0.998 measured.
floor=0.95
. tests/sql/lib/preload.sh   # the sanitizer runtime for an instrumented extension
export OPENBLAS_NUM_THREADS=1
fail() {
  echo "walkthrough: $1"
  [ -n "$2" ] && { echo "--- expected"; echo "$2"; echo "--- got"; echo "$3"; }
  exit 1
}
rm -rf "$dir"
mkdir -p "$dir"
ANOMALY_EXT=$ext sh tests/sql/lib/mvtec_tree.sh "$dir" tiles || fail "the tree could not be made"

if ! out=$(sqlite3 "$dir/tiles.db" ".param set :root $dir/tiles" ".param set :ext $ext" \
             '.read examples/walkthrough.sql' 2>&1); then
  echo "$out"
  fail "examples/walkthrough.sql failed"
fi

check() {  # check WHAT SQL EXPECTED: run SQL on the walkthrough's database
  got=$(sqlite3 "$dir/tiles.db" ".load $ext" "$2" 2>&1) || true
  [ "$got" = "$3" ] || { echo "$out"; fail "$1 differs" "$3" "$got"; }
}
check "the import" \
  "SELECT split, kind, count(*) FROM images GROUP BY 1, 2 ORDER BY 1 DESC, 2;
   SELECT count(*), sum(kind <> 'good') FROM masks JOIN images ON id = image_id;" \
  'train|good|200
test|bag|20
test|good|20
test|sandal|20
40|40'
check "the model" \
  "SELECT name, method, width, height, channels, threshold > 0 FROM anomaly_models;" \
  'tiles|ganomaly|32|32|1|1'
check "the scores" \
  "SELECT count(*), count(score), anomaly_auroc(score, kind <> 'good') BETWEEN 0 AND 1
     FROM scores JOIN images ON id = image_id;" \
  '60|60|1'
# the AUROC as printed (the first row of step 6, 'all') is the scores' own
auc=$(echo "$out" | sed -n 's/^│ all *│ *[0-9]* *│ *\([0-9.]*\) *│$/\1/p')
check "the printed AUROC ($auc)" \
  "SELECT printf('%.4f', anomaly_auroc(score, kind <> 'good')) = '$auc'
     FROM scores JOIN images ON id = image_id;" '1'
check "the pretrained model's AUROC on the tree" \
  "INSERT INTO anomaly_models(name, model)
     VALUES ('trousers', anomaly_model_from_file('models/fashion-ganomaly-class1.safetensors'));
   SELECT anomaly_auroc(score, kind <> 'good') >= $floor
     FROM anomaly_scan('trousers', 'SELECT id, image FROM images WHERE split = ''test''')
     JOIN images USING (id);" '1'
# the pixel AUROC as printed: a number from 0 to 1
pix=$(echo "$out" | sed -n '/pixel_auroc/{n;n;p}' | tr -d '│ ')
check "the pixel AUROC ($pix)" "SELECT '$pix' GLOB '0.[0-9][0-9][0-9][0-9]';" '1'
# the montage: 16 rows of 96-pixel tiles: 3 * 96 + 4 * 4 = 304 wide,
# 4 + 9 + 16 * (96 + 9 + 4) + 4 = 1761 high (PNG signature, then IHDR)
check "the montage's header" \
  "SELECT hex(substr(readfile('$dir/tiles-worst.png'), 1, 24));" \
  '89504E470D0A1A0A0000000D4948445200000130000006E1'
# the saved model: the registry's bytes, and it scores as the model does
check "the saved model" \
  "SELECT readfile('$dir/tiles-tiles.safetensors') = model FROM anomaly_models WHERE name = 'tiles';
   INSERT INTO anomaly_models(name, model) VALUES ('again', readfile('$dir/tiles-tiles.safetensors'));
   SELECT count(*), sum(anomaly_score(image, 'tiles') = anomaly_score(image, 'again'))
     FROM images WHERE split = 'test';" \
  '1
60|60'
echo "walkthrough: ok"
