-- docs_fixture.sql - the database every file's SQL examples start from
-- (tests/sql/docs_sql.sh): the tables the docs talk about, filled with
-- a few Fashion-MNIST images so that every example, training included,
-- runs in seconds. No models: the examples register their own.
--
--   photos(id, image, label, day)      100 trousers 'good', 20 bags 'scratch'
--   fashion(split, idx, label, image)  train: 80 shirts and 40 others; test: 60
.bail on
.load ./anomaly
CREATE TABLE photos(id INTEGER PRIMARY KEY, image BLOB, label TEXT, day INTEGER);
CREATE TABLE fashion(split TEXT, idx INTEGER, label INTEGER, image BLOB);
CREATE TEMP TABLE train AS SELECT idx, label, image FROM anomaly_idx(
    '/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz',
    '/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz') WHERE idx < 2000;
INSERT INTO photos(id, image, label, day)
  SELECT row_number() OVER (ORDER BY label <> 1, idx), image,
         CASE label WHEN 1 THEN 'good' ELSE 'scratch' END, 0
    FROM (SELECT * FROM (SELECT * FROM temp.train WHERE label = 1 ORDER BY idx LIMIT 100)
          UNION ALL SELECT * FROM (SELECT * FROM temp.train WHERE label = 8 ORDER BY idx LIMIT 20));
UPDATE photos SET day = id % 7;
INSERT INTO fashion(split, idx, label, image)
  SELECT 'train', idx, label, image FROM (SELECT * FROM temp.train WHERE label = 6 ORDER BY idx LIMIT 80)
  UNION ALL SELECT 'train', idx, label, image FROM (SELECT * FROM temp.train WHERE label <> 6 ORDER BY idx LIMIT 40);
INSERT INTO fashion(split, idx, label, image)
  SELECT 'test', idx, label, image FROM anomaly_idx(
    '/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz',
    '/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz') WHERE idx < 60;
DROP TABLE temp.train;
SELECT (SELECT count(*) FROM photos) || ' photos, ' || (SELECT count(*) FROM fashion) || ' fashion rows';
