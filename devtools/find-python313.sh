#!/usr/bin/env bash
# Prints the path of a working python3.13: PATH first (a pyenv shim may exist yet not run), then pyenv.
for candidate in "$(command -v python3.13 2>/dev/null)" \
  "$(pyenv root 2>/dev/null)"/versions/3.13*/bin/python3.13 \
  "$HOME"/.pyenv/versions/3.13*/bin/python3.13 /usr/local/bin/python3.13 /usr/bin/python3.13; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
    echo "$candidate"
    exit 0
  fi
done
exit 1
