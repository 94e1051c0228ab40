#!/bin/sh
# folder_import.sh - examples/import_folder.sql on a small MVTec-style tree
# made here from the test photos: train/good, test/good, test/scratch and
# ground_truth/scratch masks. Checks the rows and the mask pairing.
set -e
root=build/folder-test/parts
rm -rf build/folder-test
mkdir -p "$root/train/good" "$root/test/good" "$root/test/scratch" "$root/ground_truth/scratch"
cp tests/data/photos/1.png "$root/train/good/a1.png"
cp tests/data/photos/4.png "$root/train/good/a2.png"
cp tests/data/photos/1.png "$root/test/good/b1.png"
cp tests/data/photos/3.png "$root/test/scratch/c1.png"
cp tests/data/photos/2.png "$root/ground_truth/scratch/c1_mask.png"
got=$(cd build/folder-test && sqlite3 t.db '.param set :root parts' '.read ../../examples/import_folder.sql' \
  "SELECT path || '|' || (SELECT count(*) FROM masks WHERE image_id = id) FROM images ORDER BY path;" 2>&1)
expected='train|good|2
test|good|1
test|scratch|1
1
test/good/b1.png|0
test/scratch/c1.png|1
train/good/a1.png|0
train/good/a2.png|0'
if [ "$got" != "$expected" ]; then
  echo "folder import: output differs"
  echo "--- expected"; echo "$expected"
  echo "--- got"; echo "$got"
  exit 1
fi
echo "folder import: ok"
