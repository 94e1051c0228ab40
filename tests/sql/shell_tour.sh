#!/bin/sh
# shell_tour.sh - the README's tour, run as written in Debian's sqlite3 shell:
# import a folder of images, register a model from a file, score (row by
# row and batched), map, export, delete. The output must match the expected text exactly.
mkdir -p build
db=build/tour.db
ext=${ANOMALY_EXT:-./anomaly}
. tests/sql/lib/preload.sh   # the sanitizer runtime for an instrumented extension
rm -f "$db" build/tour-export.safetensors
got=$(sqlite3 "$db" 2>&1 <<SQL
.bail on
.load $ext
SELECT anomaly_version();
CREATE TABLE photos(id INTEGER PRIMARY KEY, image BLOB);
INSERT INTO photos(id, image)
  SELECT cast(substr(name, 19) AS INTEGER), data FROM fsdir('tests/data/photos') WHERE name LIKE '%.png';
INSERT INTO anomaly_models(name, model)
  VALUES ('tiles', anomaly_model_from_file('tests/data/tiny-ganomaly.safetensors'));
SELECT name, method, width, height, channels, params, threshold FROM anomaly_models;
SELECT id, printf('%.4f', anomaly_score(image, 'tiles')) AS s FROM photos ORDER BY s DESC LIMIT 20;
SELECT anomaly_scores(image, 'tiles') ->> 'recon_l1' > 0 FROM photos WHERE id = 1;
SELECT id, printf('%.4f', score) FROM anomaly_scan('tiles', 'SELECT id, image FROM photos')
  ORDER BY score DESC LIMIT 2;
SELECT writefile('build/tour-heat.png', anomaly_map(image, 'tiles')) > 0 FROM photos WHERE id = 2;
SELECT writefile('build/tour-overlay.png', anomaly_map(image, 'tiles', '{"style": "overlay"}')) > 0 FROM photos WHERE id = 2;
SELECT writefile('build/tour-worst.png', anomaly_montage(image, 'tiles', id)) > 0
  FROM (SELECT id, image FROM photos ORDER BY anomaly_score(image, 'tiles') DESC LIMIT 16);
SELECT writefile('build/tour-export.safetensors', model) > 0 FROM anomaly_models WHERE name = 'tiles';
DELETE FROM anomaly_models WHERE name = 'tiles';
SELECT count(*) FROM anomaly_models;
SQL
)
expected='v0.1.0
tiles|ganomaly|32|32|1|66960|
2|0.6873
3|0.2686
1|0.0935
4|0.0154
1
2|0.6873
3|0.2686
1
1
1
1
0'
if [ "$got" != "$expected" ]; then
  echo "shell tour: output differs"
  echo "--- expected"; echo "$expected"
  echo "--- got"; echo "$got"
  exit 1
fi
if ! cmp -s build/tour-export.safetensors tests/data/tiny-ganomaly.safetensors; then
  echo "shell tour: the exported model differs from the file it came from"
  exit 1
fi
echo "shell tour: ok"
