#!/bin/sh
# deps.sh PKG... - make sure the Debian packages named are installed.
# As root: apt-get update, then apt-get install -y the missing ones.
# Otherwise: print the exact command to run and fail.
missing=""
for p in "$@"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "installing missing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq $missing >/dev/null || {
    echo "error: apt-get install -y$missing failed" >&2; exit 1; }
else
  echo "error: missing Debian packages:$missing" >&2
  echo "install them with:  sudo apt-get update && sudo apt-get install -y$missing" >&2
  exit 1
fi
