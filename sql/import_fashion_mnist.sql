-- import_fashion_mnist.sql - Fashion-MNIST from Debian's dataset-fashion-mnist
-- into the table fashion (see schema.sql), each image a PNG BLOB.
--
--   sqlite3 demo.db '.load ./anomaly' '.read sql/import_fashion_mnist.sql'
--
-- Runs once: a database that already holds the images is left as it is.
.read sql/schema.sql
INSERT INTO fashion(split, idx, label, image)
  SELECT 'train', idx, label, image FROM anomaly_idx(
    '/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz',
    '/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz')
  WHERE NOT EXISTS (SELECT 1 FROM fashion WHERE split = 'train');
INSERT INTO fashion(split, idx, label, image)
  SELECT 'test', idx, label, image FROM anomaly_idx(
    '/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz',
    '/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz')
  WHERE NOT EXISTS (SELECT 1 FROM fashion WHERE split = 'test');
