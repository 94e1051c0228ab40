#!/bin/sh
# install.sh - `make install` into a scratch DESTDIR: the loadable extension
# loads in the sqlite3 shell, a program links the static library through
# anomaly.h (and pkg-config, when it is there) and registers it with
# sqlite3_auto_extension, and `make uninstall` takes every file away again.
# Always the plain build, whatever SANITIZE the suite runs under.
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
fail() { echo "install: $*"; exit 1; }
MAKEFLAGS= make -s install SANITIZE= DESTDIR="$d" PREFIX=/usr >"$d/log" 2>&1 ||
  { cat "$d/log"; fail "make install failed"; }
for f in usr/lib/sqlite3/anomaly.so usr/lib/libsqlite_anomaly.a usr/include/anomaly.h \
         usr/lib/pkgconfig/sqlite-anomaly.pc; do
  [ -f "$d/$f" ] || fail "missing $f"
done
got=$(sqlite3 :memory: ".load $d/usr/lib/sqlite3/anomaly" "SELECT anomaly_version();" 2>&1)
[ "$got" = "v0.1.0" ] || fail "the installed extension: $got"
cat > "$d/app.c" <<'C'
#include <stdio.h>
#include <sqlite3.h>
#include <anomaly.h>

int main(void) {
  sqlite3 *db;
  sqlite3_stmt *st;
  sqlite3_auto_extension((void (*)(void))sqlite3_anomaly_init);
  if( sqlite3_open(":memory:", &db) ) return 1;
  if( sqlite3_prepare_v2(db, "SELECT anomaly_version(), anomaly_auroc(column1, column2) "
                         "FROM (VALUES (0.1, 0), (0.9, 1), (0.2, 0), (0.8, 1))",
                         -1, &st, 0) ) return 2;
  if( sqlite3_step(st) != SQLITE_ROW ) return 3;
  printf("%s %.1f\n", sqlite3_column_text(st, 0), sqlite3_column_double(st, 1));
  sqlite3_finalize(st);
  sqlite3_close(db);
  return 0;
}
C
flags="-I$d/usr/include $d/usr/lib/libsqlite_anomaly.a -lsqlite3 -lopenblas -lcjson -lm -lpthread"
if command -v pkg-config >/dev/null; then
  flags=$(PKG_CONFIG_SYSROOT_DIR="$d" PKG_CONFIG_PATH="$d/usr/lib/pkgconfig" \
          pkg-config --cflags --libs --static sqlite-anomaly) || fail "pkg-config"
fi
${CC:-cc} -o "$d/app" "$d/app.c" $flags || fail "cannot link the static library ($flags)"
got=$("$d/app") || fail "the linked program failed"
[ "$got" = "v0.1.0 1.0" ] || fail "the linked program printed: $got"
MAKEFLAGS= make -s uninstall SANITIZE= DESTDIR="$d" PREFIX=/usr >"$d/log" 2>&1 ||
  { cat "$d/log"; fail "make uninstall failed"; }
left=$(find "$d/usr" -type f | head -n 3)
[ -z "$left" ] || fail "uninstall left $left"
echo "install: ok"
