-- walkthrough.sql - from a folder of images to a trained detector, its
-- AUROC and a picture of its worst cases, in the sqlite3 shell.
--
-- Run it from the sqlite-anomaly checkout (it loads ./anomaly.so and reads
-- examples/import_folder.sql from there); the folder can be anywhere:
--
--   make
--   sqlite3 tiles.db '.param set :root /data/magnetic_tile' '.read examples/walkthrough.sql'
--
-- The folder has MVTec AD's layout:
--   <root>/train/good/*.png|jpg             normal images, to train on
--   <root>/test/<kind>/*                    kind 'good' or a defect type
--   <root>/ground_truth/<kind>/<stem>_mask.png  where the defect is (optional)
--
-- Settings, each a shell parameter (.param set :NAME VALUE before the .read):
--   :root    the folder (required; no trailing slash)
--   :model   the model's name in anomaly_models          default 'tiles'
--   :method  ganomaly, skipganomaly, anogan, egbad, alad, defectgan, caae
--                                                         default 'ganomaly'
--   :epochs  training passes (more is better and slower)  default 3
--   :size    the model's input side in pixels             default 32
--   :seed    initial weights, hold-out split, shuffles    default 1
--   :options more training options as JSON, e.g. '{"nz": 64}' (docs/sql.md)
--                                                         default '{}'
--   :worst   images in the montage                        default 16
--   :ext     the extension to load                        default './anomaly'
--   :out     where the files go, a path prefix            default :root
-- It writes <out>-worst.png (the montage) and <out>-<model>.safetensors
-- (the model), by default next to the folder. Running it again reuses the
-- imported images and trains the model afresh.
.bail on
.mode box

-- 1. Settings: .param init makes the shell's parameter table; INSERT OR
--    IGNORE fills in a default wherever the caller set nothing.
.param init
INSERT OR IGNORE INTO temp.sqlite_parameters(key, value) VALUES
  (':model', 'tiles'), (':method', 'ganomaly'), (':epochs', 3), (':size', 32),
  (':seed', 1), (':options', '{}'), (':worst', 16), (':ext', './anomaly'),
  (':out', (SELECT value FROM temp.sqlite_parameters WHERE key = ':root'));
SELECT key AS setting, value FROM temp.sqlite_parameters ORDER BY key;

-- 2. Load the extension. load_extension() is the SQL form of .load; it
--    takes a parameter, so another build can be named with :ext.
SELECT load_extension(:ext) IS NULL AS loaded;
SELECT anomaly_version() AS version;

-- 3. Import the folder with the shell's fsdir() (a folder tree as rows):
--    images(id, path, split, kind, image) and masks(image_id, mask).
.read examples/import_folder.sql

-- 4. Train on the normal images. anomaly_train is an aggregate: the rows it
--    sees are the training set. It holds out 10% to calibrate a threshold
--    and registers the model in anomaly_models (in this database file).
--    A progress line shows on a terminal; Ctrl-C stops it, leaving no model.
SELECT r ->> 'images' AS images, r ->> 'epochs' AS epochs,
       printf('%.1f', r ->> 'seconds') AS seconds, printf('%.4f', r ->> 'threshold') AS threshold
  FROM (SELECT anomaly_train(:model, :method, image,
                 json_patch(json_object('epochs', :epochs, 'size', :size, 'seed', :seed,
                                        'replace', json('true')), :options)) AS r
          FROM images WHERE split = 'train' AND kind = 'good' ORDER BY id);
SELECT name, method, width, height, channels, params FROM anomaly_models WHERE name = :model;

-- 5. Score the test images: anomaly_scan runs a query and scores its
--    images in batches on every core; keep the scores in a table.
DROP TABLE IF EXISTS scores;
CREATE TABLE scores(image_id INTEGER PRIMARY KEY REFERENCES images(id), score REAL);
INSERT INTO scores(image_id, score)
  SELECT id, score FROM anomaly_scan(:model, 'SELECT id, image FROM images WHERE split = ''test''');

-- 6. How well the scores separate: the image AUROC (1 is perfect, 0.5 is
--    chance), over all defects and for each kind against the good images.
SELECT 'all' AS kind, sum(kind <> 'good') AS defects,
       printf('%.4f', anomaly_auroc(score, kind <> 'good')) AS auroc
  FROM scores JOIN images ON id = image_id
UNION ALL
SELECT d.kind, sum(i.kind <> 'good'), printf('%.4f', anomaly_auroc(score, i.kind <> 'good'))
  FROM (SELECT DISTINCT kind FROM images WHERE split = 'test' AND kind <> 'good') AS d
  JOIN images AS i ON i.split = 'test' AND i.kind IN ('good', d.kind)
  JOIN scores ON image_id = i.id
 GROUP BY d.kind;

-- 7. Where: the pixel AUROC of the anomaly maps against the masks (a test
--    image without a mask counts as all normal). Skipped without masks.
SELECT printf('%.4f', anomaly_pixel_auroc(image, :model, mask)) AS pixel_auroc
  FROM images LEFT JOIN masks ON image_id = id
 WHERE split = 'test' AND EXISTS (SELECT 1 FROM masks);

-- 8. A threshold: the model's own (the 99th percentile of its held-out
--    normal scores), and what it flags in each kind. Lower it to catch
--    more defects at the price of more false alarms.
SELECT kind, count(*) AS images,
       sum(score > (SELECT threshold FROM anomaly_models WHERE name = :model)) AS flagged,
       printf('%.0f%%', 100.0 * avg(score > (SELECT threshold FROM anomaly_models WHERE name = :model))) AS share
  FROM scores JOIN images ON id = image_id
 GROUP BY kind ORDER BY kind <> 'good', kind;

-- 9. The worst images on one sheet: each row the image, the model's repair
--    and the anomaly map, with the label and score (red over the threshold).
--    The subquery's ORDER BY is the order of the rows.
SELECT :out || '-worst.png' AS montage,
       writefile(:out || '-worst.png', anomaly_montage(image, :model, kind || ' ' || id)) AS bytes
  FROM (SELECT id, kind, image FROM scores JOIN images ON id = image_id
         ORDER BY score DESC LIMIT :worst);

-- 10. Save the model to a file with writefile(), load it back with
--     readfile() under another name, and check that it scores the same.
SELECT writefile(:out || '-' || :model || '.safetensors', model) AS model_bytes
  FROM anomaly_models WHERE name = :model;
INSERT OR REPLACE INTO anomaly_models(name, model)
  VALUES (:model || '-reloaded', readfile(:out || '-' || :model || '.safetensors'));
SELECT count(*) AS images,
       sum(anomaly_score(image, :model) = anomaly_score(image, :model || '-reloaded')) AS same_score
  FROM images WHERE split = 'test';
DELETE FROM anomaly_models WHERE name = :model || '-reloaded';
