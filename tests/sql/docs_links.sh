#!/bin/sh
# docs_links.sh - every relative link of README.md, docs/*.md and the other
# READMEs leads to a file that exists, and every #anchor to a heading of
# its page (GitHub's rule: lower case, punctuation dropped, spaces to
# hyphens). Links to the web are left alone.
bad=0
links=0
for md in README.md docs/*.md models/README.md tests/bench/reference/README.md tests/fuzz/README.md; do
  [ -f "$md" ] || continue
  dir=$(dirname "$md")
  # ](target) pairs, outside code spans and fences
  for target in $(awk '/^```/ { fence = !fence; next } !fence { gsub(/`[^`]*`/, ""); print }' "$md" |
                  grep -o '](\([^)( ]*\))' | sed 's/^](//; s/)$//'); do
    case "$target" in http://*|https://*|mailto:*) continue ;; esac
    links=$((links + 1))
    file=${target%%#*}
    anchor=
    case "$target" in *#*) anchor=${target#*#} ;; esac
    if [ -z "$file" ]; then page=$md; else page=$dir/$file; fi
    if [ ! -e "$page" ]; then
      echo "docs_links: $md: $target: no such file"
      bad=$((bad + 1))
      continue
    fi
    [ -z "$anchor" ] && continue
    found=$(awk '/^```/ { fence = !fence; next } !fence && /^#+ / {
                   h = tolower($0); sub(/^#+ /, "", h)
                   gsub(/[^a-z0-9 _-]/, "", h); gsub(/ /, "-", h); print h }' "$page" |
            grep -cx -- "$anchor")
    if [ "$found" -eq 0 ]; then
      echo "docs_links: $md: $target: no heading for #$anchor in $page"
      bad=$((bad + 1))
    fi
  done
done
if [ "$bad" -ne 0 ]; then
  echo "docs_links: $bad broken of $links links"
  exit 1
fi
echo "docs_links: ok ($links links)"
