-- import_folder.sql - an MVTec-style folder of images into a table, with the
-- sqlite3 shell's own fsdir() (a folder tree as rows: name, mode, mtime, data).
--
--   cd parent-of-the-folder
--   sqlite3 tiles.db '.param set :root magnetic_tile' '.read import_folder.sql'
--
-- Layout read (MVTec AD's):
--   <root>/train/good/*.jpg            normal training images
--   <root>/test/<kind>/*.jpg           test images; kind 'good' or a defect type
--   <root>/ground_truth/<kind>/<stem>_mask.png
-- Result: images(id, path, split, kind, image) and masks(image_id, mask).
CREATE TABLE IF NOT EXISTS images(
  id    INTEGER PRIMARY KEY,
  path  TEXT UNIQUE NOT NULL,   -- relative to the root
  split TEXT NOT NULL,          -- 'train' or 'test'
  kind  TEXT NOT NULL,          -- 'good' or the defect type
  image BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS masks(image_id INTEGER PRIMARY KEY REFERENCES images(id), mask BLOB);

WITH files AS (
  SELECT substr(name, length(:root) + 2) AS rel, data
    FROM fsdir(:root)
   WHERE (name LIKE '%.jpg' OR name LIKE '%.png' OR name LIKE '%.bmp')
     AND name NOT LIKE '%/ground_truth/%'
), parts AS (
  SELECT rel, data,
         substr(rel, 1, instr(rel, '/') - 1) AS split,
         substr(rel, instr(rel, '/') + 1) AS rest
    FROM files
)
INSERT OR IGNORE INTO images(path, split, kind, image)
  SELECT rel, split, substr(rest, 1, instr(rest, '/') - 1), data
    FROM parts WHERE split IN ('train', 'test') ORDER BY rel;

-- masks: ground_truth/<kind>/<stem>_mask.png belongs to test/<kind>/<stem>.<ext>
-- (the stem is the path less 'test/' and less its extension: rtrim the letters,
-- then the dot)
WITH stems AS (
  SELECT id, substr(rtrim(rtrim(path, 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'), '.'), 6) AS stem
    FROM images WHERE split = 'test'
)
INSERT OR REPLACE INTO masks(image_id, mask)
  SELECT s.id, m.data
    FROM fsdir(:root || '/ground_truth') AS m
    JOIN stems AS s ON substr(m.name, length(:root) + 2) = 'ground_truth/' || s.stem || '_mask.png';

SELECT split, kind, count(*) AS images FROM images GROUP BY split, kind ORDER BY split DESC, kind;
SELECT count(*) AS masks FROM masks;
