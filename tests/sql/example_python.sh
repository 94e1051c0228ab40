#!/bin/sh
# example_python.sh - examples/python/score_folder.py through Debian's
# Python: the extension loads into its sqlite3 module, a folder of PNGs is
# imported and scored with anomaly_scan, most anomalous first. Skipped, with
# the reason printed, where that Python is missing or cannot load extensions.
py=/usr/bin/python3
case "$SANITIZE" in
  1|thread) echo "example_python: skipped under SANITIZE (python3 is not instrumented)"; exit 0 ;;
esac
if [ ! -x "$py" ] || ! "$py" -c "import sqlite3; sqlite3.connect(':memory:').enable_load_extension(True)" 2>/dev/null; then
  echo "example_python: skipped: $py cannot load SQLite extensions (apt-get install python3)"
  exit 0
fi
got=$(ANOMALY_EXT=${ANOMALY_EXT:-./anomaly} "$py" examples/python/score_folder.py tests/data/photos \
      tests/data/tiny-ganomaly.safetensors 2>&1) || { echo "example_python: failed: $got"; exit 1; }
want='2.png        0.6873
3.png        0.2686
1.png        0.0935
4.png        0.0154'
if [ "$got" != "$want" ]; then
  echo "example_python: output differs"
  echo "--- expected"; echo "$want"
  echo "--- got"; echo "$got"
  exit 1
fi
echo "example_python: ok"
