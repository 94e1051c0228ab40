#!/bin/sh
# docs_sql.sh - every ```sql block of README.md and docs/*.md, run in the
# sqlite3 shell, so that the docs cannot rot.
#
#   sh tests/sql/docs_sql.sh [FILE.md...]      (make test runs it on all)
#
# Each file's blocks run in order, as one script, in a database made by
# tests/sql/lib/docs_fixture.sql (photos, fashion), in a folder of their own
# under build/docs-sql/ where ./anomaly is the extension under test, and
# models/, tests/, examples/ and scripts/ are the repository's: files the
# examples write land there. magnetic_tile/ is a small MVTec-style tree
# (tests/sql/lib/mvtec_tree.sh) for the tutorial, or with DOCS_TREE=DIR a
# copy of DIR (the real magnetic tiles, for the tutorial's figures):
#
#   DOCS_TREE=../shared/data/magnetic_tile sh tests/sql/docs_sql.sh docs/tutorial.md
#   cat build/docs-sql/docs_tutorial/out.txt
#
# What a reader does not see, a file can say in a hidden block, run in its
# place among the others:
#   <!-- docs-sql
#   DELETE FROM anomaly_models;
#   -->
# A one-line SELECT (or WITH) whose comment is a single word, as in
#   SELECT anomaly_version();     -- v0.1.0
# must print exactly that word. Any error fails the file, named with the
# block it came from.
ext=${ANOMALY_EXT:-./anomaly}
root=$(pwd)
work=build/docs-sql${SANITIZE:+-san-$SANITIZE}
. tests/sql/lib/preload.sh   # the sanitizer runtime for an instrumented extension
files=${*:-README.md docs/*.md}
rm -rf "$work"
mkdir -p "$work/common"

# the fixture database and the MVTec-style tree, made once
ln -s "$root/$ext.so" "$work/common/anomaly.so"
if ! (cd "$work/common" && sqlite3 fixture.db <"$root/tests/sql/lib/docs_fixture.sql" >fixture.log 2>&1); then
  echo "docs_sql: the fixture failed:"; cat "$work/common/fixture.log"; exit 1
fi
if [ -n "$DOCS_TREE" ]; then
  cp -R "$DOCS_TREE" "$work/common/magnetic_tile"
elif ! sh tests/sql/lib/mvtec_tree.sh "$work/common" magnetic_tile >"$work/common/tree.log" 2>&1; then
  echo "docs_sql: the MVTec-style tree failed:"; cat "$work/common/tree.log"; exit 1
fi

# md -> script: blocks and hidden blocks in order, each preceded by a marker
# naming it; checked lines preceded by the word they must print
to_script() {
  awk -v file="$1" '
    /^```sql[ \t]*$/ { inb = 1; print ".print @@block " file ":" FNR; next }
    /^<!-- docs-sql[ \t]*$/ { inh = 1; print ".print @@block " file ":" FNR " (hidden)"; next }
    inb && /^```/ { inb = 0; next }
    inh && /^-->/ { inh = 0; next }
    inb && /^(SELECT|WITH) .*;[ \t]*--[ \t]*[^ \t]+[ \t]*$/ {
      w = $0; sub(/.*--[ \t]*/, "", w); sub(/[ \t]+$/, "", w)
      print ".print @@expect " w
    }
    inb || inh { print }
  ' "$1"
}

# the output of a script against its expectations: the line after
# "@@expect W" must be W; prints the mismatches
check_output() {
  awk '
    want != "" { if( $0 != want ){ print block ": expected " want ", got " $0; bad = 1 }; want = ""; next }
    /^@@block / { block = substr($0, 9); next }
    /^@@expect / { want = substr($0, 10); next }
    END { exit bad }
  ' "$1"
}

failed=0
checked=0
blocks=0
for md in $files; do
  n=$(grep -c '^```sql' "$md")
  [ "$n" -eq 0 ] && continue
  name=$(echo "$md" | tr '/' '_' | sed 's/\.md$//')
  dir=$work/$name
  mkdir -p "$dir"
  for d in models tests examples scripts; do ln -sfn "$root/$d" "$dir/$d"; done
  ln -sfn "$root/$ext.so" "$dir/anomaly.so"
  cp -R "$work/common/magnetic_tile" "$dir/magnetic_tile"    # fsdir() does not follow a link
  cp "$work/common/fixture.db" "$dir/docs.db"
  { echo ".bail on"; echo ".load ./anomaly"; to_script "$md"; } >"$dir/script.sql"
  if ! (cd "$dir" && sqlite3 docs.db <script.sql >out.txt 2>err.txt); then
    where=$(grep -a '^@@block ' "$dir/out.txt" | tail -n 1 | cut -c9-)
    echo "docs_sql: $md: the block at $where failed:"
    sed 's/^/  /' "$dir/err.txt"
    failed=$((failed + 1))
    continue
  fi
  if ! check_output "$dir/out.txt"; then
    echo "docs_sql: $md: an example printed something else than its comment says"
    failed=$((failed + 1))
    continue
  fi
  blocks=$((blocks + n))
  checked=$((checked + $(grep -ac '^@@expect ' "$dir/out.txt")))
done
if [ "$failed" -ne 0 ]; then
  echo "docs_sql: $failed file(s) failed"
  exit 1
fi
echo "docs_sql: ok ($blocks blocks, $checked printed values checked)"
