#!/bin/sh
# mvtec_tree.sh DIR [ROOTNAME] - a small MVTec-style tree made from
# Fashion-MNIST, for the tests and the tutorial: DIR/ROOTNAME (default
# "fashion") gets
#
#   train/good/<idx>.png              200 trousers (class 1)
#   test/good/<idx>.png                20 more trousers
#   test/sandal/<idx>.png              20 sandals (class 5), the "defects"
#   test/bag/<idx>.png                 20 bags (class 8)
#   ground_truth/<kind>/<idx>_mask.png 0/255, 255 where the defect image
#                                      differs from the mean trouser by more
#                                      than 64: the foreign item, and the
#                                      trouser that is missing
#
# the layout and mask naming of MVTec AD (and of magnetic_tile, whose images
# are JPEGs; these are the 28x28 grey PNGs of anomaly_idx). <idx> is the
# image's position in t10k-images-idx3-ubyte, 5 digits. All images come
# from the t10k file (the first of each class in file order; the mean
# trouser is that of the first 50 training ones), so the tree is the same
# on every run and takes a second or two to make.
#
#   sh tests/sql/lib/mvtec_tree.sh build/tutorial            -> build/tutorial/fashion
#   ANOMALY_EXT=build-san-1/anomaly sh tests/sql/lib/mvtec_tree.sh /tmp/t tiles
#
# Run it from the repository root (ANOMALY_EXT, default ./anomaly, is the
# extension the sqlite3 shell loads for anomaly_idx). It needs Debian's
# dataset-fashion-mnist. A tree already in DIR/ROOTNAME is replaced.
#
# How the masks are made with nothing but the sqlite3 shell: each PNG read
# (one IDAT chunk, as our encoder writes) is inflated with the shell's
# sqlar_uncompress(), its rows unfiltered (PNG's five row filters) by a
# recursive CTE; a mask is written as a PNG whose rows use filter 0,
# deflated by sqlar_compress() and checksummed by the CRC-32 that the
# shell's zipfile() aggregate computes (bytes 15-18 of a zip entry).
set -e
if [ -z "$1" ]; then
  echo "usage: sh tests/sql/lib/mvtec_tree.sh DIR [ROOTNAME]" >&2
  exit 2
fi
dir=$1
root=$dir/${2:-fashion}
ext=${ANOMALY_EXT:-./anomaly}
data=/usr/share/datasets/fashion-mnist
if [ ! -r "$data/t10k-images-idx3-ubyte.gz" ]; then
  echo "mvtec_tree: $data is missing (apt-get install dataset-fashion-mnist)" >&2
  exit 1
fi
. tests/sql/lib/preload.sh   # the sanitizer runtime for an instrumented extension
rm -rf "$root"
for d in train/good test/good test/sandal test/bag ground_truth/sandal ground_truth/bag; do
  mkdir -p "$root/$d"
done

# the 256 byte values as ('hex', value, one-byte BLOB) rows
bytes=$(i=0; while [ $i -lt 256 ]; do
  [ $i -gt 0 ] && printf ','
  printf "('%02X',%d,x'%02X')" $i $i $i
  i=$((i + 1))
done)

# pixel (p) of a 28x28 image: row p/28, column p%28; in the filtered rows
# (f, hex) byte row*29 is the row's filter type, then its 28 bytes
a='coalesce(A.v, 0)'
b='coalesce(B.v, 0)'
c='coalesce(C.v, 0)'
paeth="CASE WHEN abs($b - $c) <= abs($a - $c) AND abs($b - $c) <= abs($a + $b - 2 * $c) THEN $a
            WHEN abs($a - $c) <= abs($a + $b - 2 * $c) THEN $b ELSE $c END"
pixel="((X.v + CASE F.v WHEN 0 THEN 0 WHEN 1 THEN $a WHEN 2 THEN $b
                     WHEN 3 THEN ($a + $b) / 2 ELSE $paeth END) % 256)"
crc_be='substr(zip, 18, 1) || substr(zip, 17, 1) || substr(zip, 16, 1) || substr(zip, 15, 1)'

got=$(sqlite3 :memory: 2>&1 <<SQL
.bail on
.load $ext
CREATE TEMP TABLE hx(h TEXT PRIMARY KEY, v INTEGER, b BLOB);
INSERT INTO hx VALUES $bytes;

-- the first 220 trousers of t10k in file order (200 to train on, 20 good
-- to test) and the first 20 sandals and 20 bags, the "defects"
CREATE TEMP TABLE pick AS
  SELECT printf('%05d', idx) AS stem, image, n,
         CASE WHEN label = 1 AND n <= 200 THEN 'train' ELSE 'test' END AS split,
         CASE label WHEN 1 THEN 'good' WHEN 5 THEN 'sandal' ELSE 'bag' END AS kind
    FROM (SELECT idx, label, image, row_number() OVER (PARTITION BY label ORDER BY idx) AS n
            FROM anomaly_idx('$data/t10k-images-idx3-ubyte.gz', '$data/t10k-labels-idx1-ubyte.gz')
           WHERE label IN (1, 5, 8))
   WHERE n <= CASE label WHEN 1 THEN 220 ELSE 20 END;
CREATE TEMP TABLE written(what, n);
INSERT INTO written
  SELECT 'images', count(writefile('$root/' || split || '/' || kind || '/' || stem || '.png', image)) FROM pick;

-- the pixels of the defects and of the first 50 training trousers: each
-- PNG's filtered rows as hex (one IDAT: length at bytes 34-37, data from 42)
CREATE TEMP TABLE raw AS
  SELECT stem, kind,
         hex(sqlar_uncompress(substr(image, 42, (SELECT v FROM hx WHERE h = hex(substr(image, 36, 1))) * 256
                                              + (SELECT v FROM hx WHERE h = hex(substr(image, 37, 1)))),
                              28 * 29)) AS f
    FROM pick WHERE kind <> 'good' OR (split = 'train' AND n <= 50);
-- unfilter them pixel by pixel (px: the pixels so far, as hex)
CREATE TEMP TABLE pixels AS
WITH RECURSIVE u(stem, p, px) AS (
  SELECT stem, 0, '' FROM raw
  UNION ALL
  SELECT u.stem, u.p + 1, u.px || printf('%02X', $pixel)
    FROM u JOIN raw AS r ON r.stem = u.stem
    JOIN hx AS F ON F.h = substr(r.f, 2 * (u.p / 28 * 29) + 1, 2)
    JOIN hx AS X ON X.h = substr(r.f, 2 * (u.p / 28 * 29 + 1 + u.p % 28) + 1, 2)
    LEFT JOIN hx AS A ON u.p % 28 > 0 AND A.h = substr(u.px, 2 * (u.p - 1) + 1, 2)
    LEFT JOIN hx AS B ON u.p >= 28 AND B.h = substr(u.px, 2 * (u.p - 28) + 1, 2)
    LEFT JOIN hx AS C ON u.p % 28 > 0 AND u.p >= 28 AND C.h = substr(u.px, 2 * (u.p - 29) + 1, 2)
   WHERE u.p < 784
)
SELECT stem, kind, px FROM u JOIN raw USING (stem) WHERE p = 784;
-- the mean trouser, pixel by pixel
CREATE TEMP TABLE mean AS
WITH RECURSIVE k(p) AS (SELECT 0 UNION ALL SELECT p + 1 FROM k WHERE p < 783)
SELECT p, avg(v) AS v FROM k, pixels JOIN hx ON h = substr(px, 2 * p + 1, 2)
 WHERE kind = 'good' GROUP BY p;
-- a defect's mask: 255 where it differs from the mean trouser by more than
-- 64 (the foreign item, and the trouser that is missing), each row behind
-- a 0 (no filter)
CREATE TEMP TABLE rows AS
WITH RECURSIVE u(stem, p, m) AS (
  SELECT stem, 0, x'' FROM pixels WHERE kind <> 'good'
  UNION ALL
  SELECT u.stem, u.p + 1,
         u.m || CASE WHEN u.p % 28 = 0 THEN x'00' ELSE x'' END
             || CASE WHEN abs(hx.v - mean.v) > 64 THEN x'FF' ELSE x'00' END
    FROM u JOIN pixels USING (stem) JOIN mean ON mean.p = u.p
    JOIN hx ON hx.h = substr(px, 2 * u.p + 1, 2)
   WHERE u.p < 784
)
SELECT 'ground_truth/' || kind || '/' || stem || '_mask.png' AS path, cast(m AS BLOB) AS rows
  FROM u JOIN pixels USING (stem) WHERE p = 784;

-- PNGs of those rows: signature, IHDR (28x28, 8-bit grey), IDAT (the rows
-- deflated by sqlar_compress), IEND; each chunk's CRC-32 over its type and
-- data, big-endian
CREATE TEMP TABLE idat AS SELECT path, sqlar_compress(rows) AS z FROM rows;
CREATE TEMP TABLE ihdr AS
  SELECT $crc_be AS crc FROM (SELECT zipfile('c', cast('IHDR' || x'0000001C0000001C0800000000' AS BLOB)) AS zip);
CREATE TEMP TABLE crc AS
  SELECT path, $crc_be AS crc FROM (
    SELECT path, zipfile('c', cast('IDAT' || z AS BLOB)) AS zip FROM idat GROUP BY path);
INSERT INTO written
  SELECT 'masks', count(writefile('$root/' || path, cast(
           x'89504E470D0A1A0A0000000D' || 'IHDR' || x'0000001C0000001C0800000000' || (SELECT crc FROM ihdr)
           || x'0000' || (SELECT b FROM hx WHERE v = length(z) >> 8) || (SELECT b FROM hx WHERE v = length(z) & 255)
           || 'IDAT' || z || crc.crc
           || x'0000000049454E44AE426082' AS BLOB)))
    FROM idat JOIN crc USING (path) ;
SELECT group_concat(what || ' ' || n, ', ') FROM written;
SQL
) || { echo "mvtec_tree: $got" >&2; exit 1; }
if [ "$got" != "images 260, masks 40" ]; then
  echo "mvtec_tree: expected 260 images and 40 masks, got: $got" >&2
  exit 1
fi
