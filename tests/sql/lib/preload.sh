# preload.sh - sourced by the shell checks that load the extension into
# Debian's sqlite3 shell (. tests/sql/lib/preload.sh): an instrumented
# extension (SANITIZE=1 or thread) in the uninstrumented shell needs the
# sanitizer's runtime preloaded. A preload already set is kept.
if [ -z "$LD_PRELOAD" ]; then
  case "$SANITIZE" in
    1) export LD_PRELOAD="$(cc -print-file-name=libasan.so) $(cc -print-file-name=libubsan.so)"
       export ASAN_OPTIONS=detect_leaks=0 ;;
    thread) export LD_PRELOAD="$(cc -print-file-name=libtsan.so)" ;;
  esac
fi
