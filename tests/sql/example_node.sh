#!/bin/sh
# example_node.sh - examples/node/score_folder.js through Node and
# better-sqlite3 12: the extension loads into better-sqlite3's own SQLite,
# a folder of PNGs is imported and scored with anomaly_scan, most anomalous
# first, and the output must match example_python.sh's. better-sqlite3 is
# installed once into build/node-example (npm install, which builds its
# addon from source when no prebuilt binary can be fetched: a minute or two
# the first time). Skipped, with the reason printed, where Node or npm is
# missing or too old, or the install fails (no network, no compiler); once
# it is installed, a wrong output is a failure.
name=example_node
. tests/sql/lib/examples.sh
dir=build/node-example
log=$dir/npm-install.log
skip_uninstrumented node
have_node() { command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; }
if ! have_node && [ "$(id -u)" = 0 ]; then
  if command -v node >/dev/null 2>&1; then scripts/deps.sh npm; else scripts/deps.sh nodejs npm; fi
fi
have_node || skip "node or npm is missing (install them with: apt-get update && apt-get install -y nodejs npm)"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] 2>/dev/null ||
  skip "better-sqlite3 12 needs Node 20 or later, $(command -v node) is $(node --version) (Debian 12's nodejs is 18, Debian 13's is 20)"

# "ok VERSION" when better-sqlite3 12 is installed in $dir and its addon loads, else why not
state() {
  NODE_PATH=$dir/node_modules node -e '
    try {
      const v = require("better-sqlite3/package.json").version;
      new (require("better-sqlite3"))(":memory:").close();
      console.log(v.startsWith("12.") ? `ok ${v}` : `version ${v} is not 12`);
    } catch (e) { console.log(e.message.split("\n")[0]); }'
}
case "$(state)" in
  ok*) ;;
  *)
    mkdir -p "$dir" && cp examples/node/package.json "$dir/" &&
      rm -rf "$dir/node_modules" "$dir/package-lock.json" || exit 1
    (cd "$dir" && JOBS=2 timeout 300 npm install --no-audit --no-fund --loglevel=error \
       --fetch-retries=1 >npm-install.log 2>&1)
    rc=$?
    if [ $rc -ne 0 ]; then
      why=$(sed -n 's/^npm error //p' "$log" | grep -v -e 'complete log' -e '^ *at ' | grep -E 'Error|failed' | tail -n 1)
      [ -n "$why" ] || why=$(grep -v 'complete log' "$log" | tail -n 1)
      [ $rc -eq 124 ] && why="timed out after 300 s"
      rm -rf "$dir/node_modules"
      skip "npm install of better-sqlite3 12 failed or timed out: ${why:-no output} (log: $log)"
    fi
    s=$(state)
    case "$s" in ok*) ;; *) skip "better-sqlite3 12 did not install in $dir: $s (log: $log)" ;; esac
    ;;
esac

got=$(ANOMALY_EXT=${ANOMALY_EXT:-./anomaly} NODE_PATH=$dir/node_modules node examples/node/score_folder.js \
      tests/data/photos tests/data/tiny-ganomaly.safetensors 2>&1) || { echo "$name: failed: $got"; exit 1; }
expect_folder_scores "$got"
echo "$name: ok"
