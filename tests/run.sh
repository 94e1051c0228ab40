#!/bin/sh
# run.sh BIN... - run the test programs and shell checks, then print one
# closing line "N passed, N failed" and exit non-zero if anything failed.
# Each BIN is a cmocka program; its "[  PASSED  ] N test(s)." and
# "[  FAILED  ] N test(s)" lines are added up. A program that crashes or
# exits non-zero without a FAILED line counts as one failure. With VALGRIND
# set (make valgrind) each BIN runs under it and the shell checks are left out.
passed=0
failed=0
log=$(mktemp)
for bin in "$@"; do
  echo "== $bin"
  $VALGRIND "$bin" >"$log" 2>&1
  rc=$?
  cat "$log"
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
  passed=$((passed + ${p:-0}))
  if [ -n "$f" ]; then
    failed=$((failed + f))
  elif [ $rc -ne 0 ]; then
    echo "!! $bin exited with status $rc"
    failed=$((failed + 1))
  fi
done
rm -f "$log"
# the sqlite3 shell: the README's tour and the examples must run as written
for script in tests/sql/*.sh; do
  [ -n "$VALGRIND" ] && break
  if sh "$script"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
