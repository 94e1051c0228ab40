-- schema.sql - the tables sqlite-anomaly's demos and benchmarks use.
--
-- fashion: Fashion-MNIST as an image archive, one PNG BLOB a row.
--   split  'train' (60,000 images) or 'test' (10,000)
--   idx    the image's position in its IDX file
--   label  0..9, named in fashion_classes
CREATE TABLE IF NOT EXISTS fashion(
  id    INTEGER PRIMARY KEY,
  split TEXT NOT NULL,
  idx   INTEGER NOT NULL,
  label INTEGER NOT NULL,
  image BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS fashion_split_label ON fashion(split, label);

CREATE TABLE IF NOT EXISTS fashion_classes(label INTEGER PRIMARY KEY, name TEXT);
INSERT OR IGNORE INTO fashion_classes VALUES
  (0, 'T-shirt/top'), (1, 'Trouser'), (2, 'Pullover'), (3, 'Dress'), (4, 'Coat'),
  (5, 'Sandal'), (6, 'Shirt'), (7, 'Sneaker'), (8, 'Bag'), (9, 'Ankle boot');
