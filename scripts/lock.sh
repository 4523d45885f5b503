#!/usr/bin/env bash
# The hashed locks, compiled by uv from the pinned top-level requirements:
#   requirements.txt      -> requirements.lock      (runtime: make run, the Dockerfile)
#   requirements-dev.txt  -> requirements-dev.lock  (tests and tools; held to the runtime lock's versions)
#
#   scripts/lock.sh                 refresh both locks (keeps every pin the inputs allow)
#   scripts/lock.sh --upgrade       resolve every transitive dependency anew
#   scripts/lock.sh --check         fail when a lock does not match its input (CI)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
UV="${UV:-.venv/bin/uv}"
# One resolution for every platform the image and developers' machines run (Linux x86_64/aarch64, macOS), on the
# Python the project targets.
FLAGS=(pip compile --quiet --universal --python-version 3.11 --generate-hashes --custom-compile-command "make lock")

compile() {  # compile OUT_DIR [EXTRA...]
  local out="$1"; shift
  "$UV" "${FLAGS[@]}" "$@" requirements.txt -o "$out/requirements.lock"
  "$UV" "${FLAGS[@]}" "$@" -c "$out/requirements.lock" requirements-dev.txt -o "$out/requirements-dev.lock"
}

case "${1:-}" in
  --check)
    tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
    cp requirements.lock requirements-dev.lock "$tmp/"
    compile "$tmp"
    status=0
    for lock in requirements.lock requirements-dev.lock; do
      # The dev lock names the runtime lock it was held to by its path; compare the rest.
      if ! diff -u <(sed "s#$tmp/#./#" "$tmp/$lock") "$lock" | head -40; then
        echo "$lock does not match its input: run 'make lock' and commit the result" >&2
        status=1
      fi
    done
    exit $status ;;
  --upgrade) compile . --upgrade ;;
  "") compile . ;;
  *) echo "usage: scripts/lock.sh [--check|--upgrade]" >&2; exit 2 ;;
esac
