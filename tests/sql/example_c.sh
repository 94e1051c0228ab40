#!/bin/sh
# example_c.sh - examples/c/inspect.c, the extension linked into a program:
# it scores the photos it has not seen, flags those over the threshold with
# an overlay heat map each, and on a second run scores only what is new.
# Always the plain build, whatever SANITIZE the suite runs under.
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
fail() { echo "example_c: $*"; exit 1; }
MAKEFLAGS= make -s SANITIZE= build/examples/inspect >"$d/log" 2>&1 ||
  { cat "$d/log"; fail "cannot build build/examples/inspect"; }
sqlite3 "$d/line.db" ".load ./anomaly" "
  CREATE TABLE photos(id INTEGER PRIMARY KEY, image BLOB);
  INSERT INTO photos(id, image)
    SELECT cast(substr(name, 19) AS INTEGER), data FROM fsdir('tests/data/photos') WHERE name LIKE '%.png';
  INSERT INTO anomaly_models(name, model)
    VALUES ('tiles', anomaly_model_from_file('tests/data/tiny-ganomaly.safetensors'));" ||
  fail "cannot make the database"
mkdir "$d/out"
got=$(build/examples/inspect "$d/line.db" tiles "$d/out" 0.2 2>&1) || fail "first run: $got"
want="2 0.6873 $d/out/flagged-2.png
3 0.2686 $d/out/flagged-3.png
inspected 4 new image(s), 2 flagged over 0.2000"
[ "$got" = "$want" ] || fail "first run printed:
$got"
for id in 2 3; do
  [ "$(head -c 8 "$d/out/flagged-$id.png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] ||
    fail "flagged-$id.png is not a PNG"
done
[ "$(ls "$d/out" | wc -l)" -eq 2 ] || fail "expected two heat maps"
got=$(build/examples/inspect "$d/line.db" tiles "$d/out" 0.2 2>&1) || fail "second run: $got"
[ "$got" = "inspected 0 new image(s), 0 flagged over 0.2000" ] || fail "second run printed: $got"
# a new photo arrives: only it is scored
sqlite3 "$d/line.db" "INSERT INTO photos(id, image) SELECT 9, image FROM photos WHERE id = 2" ||
  fail "cannot add a photo"
got=$(build/examples/inspect "$d/line.db" tiles "$d/out" 0.2 2>&1) || fail "third run: $got"
[ "$got" = "9 0.6873 $d/out/flagged-9.png
inspected 1 new image(s), 1 flagged over 0.2000" ] || fail "third run printed: $got"
[ "$(sqlite3 "$d/line.db" "SELECT count(*), sum(flagged) FROM inspected")" = "5|3" ] ||
  fail "inspected table"
# no threshold given and none stored: a clear error, status 1
got=$(build/examples/inspect "$d/line.db" tiles "$d/out" 2>&1) && fail "no threshold: status 0"
[ "$got" = "inspect: model 'tiles' has no threshold: give one" ] || fail "no threshold: $got"
echo "example_c: ok"
