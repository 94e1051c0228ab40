#!/bin/sh
# example_python.sh - examples/python/score_folder.py through Debian's
# Python: the extension loads into its sqlite3 module, a folder of PNGs is
# imported and scored with anomaly_scan, most anomalous first. Skipped, with
# the reason printed, where that Python is missing or cannot load extensions.
name=example_python
. tests/sql/lib/examples.sh
skip_uninstrumented python3
need_python
got=$(ANOMALY_EXT=${ANOMALY_EXT:-./anomaly} "$py" examples/python/score_folder.py tests/data/photos \
      tests/data/tiny-ganomaly.safetensors 2>&1) || { echo "$name: failed: $got"; exit 1; }
expect_folder_scores "$got"
echo "$name: ok"
