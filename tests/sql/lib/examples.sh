# examples.sh - what the checks of examples/ share. Set name, then source
# it from the repository root:
#
#   name=example_python
#   . tests/sql/lib/examples.sh
#   skip_uninstrumented python3
#   need_python
#   expect_folder_scores "$("$py" examples/python/score_folder.py ...)"
#
#   skip REASON               print "NAME: skipped: REASON" and pass
#   skip_uninstrumented WHAT  skip under SANITIZE: WHAT is not instrumented, so
#                             it cannot load an instrumented extension
#   need_python               py=/usr/bin/python3, or skip where it is missing
#                             or its sqlite3 module cannot load extensions
#   expect_folder_scores GOT  GOT must be what every score_folder example
#                             prints for tests/data/photos scored by
#                             tests/data/tiny-ganomaly: name and score, most
#                             anomalous first; else print both and fail
skip() { echo "$name: skipped: $*"; exit 0; }

skip_uninstrumented() {
  case "$SANITIZE" in
    1|thread) skip "under SANITIZE ($1 is not instrumented)" ;;
  esac
}

need_python() {
  py=/usr/bin/python3
  if [ ! -x "$py" ] ||
     ! "$py" -c "import sqlite3; sqlite3.connect(':memory:').enable_load_extension(True)" 2>/dev/null; then
    skip "$py cannot load SQLite extensions (apt-get install python3)"
  fi
}

expect_folder_scores() {
  want='2.png        0.6873
3.png        0.2686
1.png        0.0935
4.png        0.0154'
  if [ "$1" != "$want" ]; then
    echo "$name: output differs"
    echo "--- expected"; echo "$want"
    echo "--- got"; echo "$1"
    exit 1
  fi
}
