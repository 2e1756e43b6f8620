#!/usr/bin/env bash
# Builds the 2015 dask.distributed system (dask 0.7.5 on Python 3.6) in a virtualenv for the
# legacy-client tests (tests/legacy_client.rs). dask 0.7.5 does not import on Python 3.7+.
# The venv goes to $ZASK_LEGACY_VENV (default $HOME/.cache/zask-legacy/py36); reruns are cheap.
# Fails, saying so, when no Python 3.6 can be found: the tests never skip silently.
set -euo pipefail
venv="${ZASK_LEGACY_VENV:-$HOME/.cache/zask-legacy/py36}"
# `import dask.distributed` writes log.client, log.scheduler and log.workers into the working
# directory: check imports from a scratch one.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -W ignore -c 'import dask.distributed, zmq, dill' 2>/dev/null; then
  echo "legacy venv ready: $venv"
  exit 0
fi
py=""
candidates=()
if command -v pyenv >/dev/null 2>&1; then
  candidates+=("$(pyenv root)/versions/3.6.15/bin/python")
  for d in "$(pyenv root)"/versions/3.6*/bin/python; do candidates+=("$d"); done
fi
candidates+=(/root/.pyenv/versions/3.6.15/bin/python "$HOME/.pyenv/versions/3.6.15/bin/python")
for c in "${candidates[@]}"; do
  if [ -x "$c" ] && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 6)' 2>/dev/null; then
    py="$c"
    break
  fi
done
if [ -z "$py" ]; then
  echo "error: no Python 3.6 found (looked in pyenv's versions): the legacy (dask 0.7.5) tests cannot run" >&2
  exit 1
fi
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$py" -m venv "$venv"
# Pinned to what legacy-protocol.md was recorded with (dill 0.3.4) and the newest that install
# on Python 3.6, so a rebuilt venv is the same venv.
"$venv/bin/pip" install -q "dask==0.7.5" "pyzmq==25.1.2" "dill==0.3.4" "toolz==0.12.0"
"$venv/bin/python" -W ignore -c 'import dask.distributed, zmq, dill' 
echo "legacy venv ready: $venv"
