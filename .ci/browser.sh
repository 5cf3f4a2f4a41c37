#!/usr/bin/env bash
# For tests/test_browser.py: Chromium from the distribution (Playwright's own browser download is not used)
# and Voila + Playwright for Python in the active environment. Run it inside the CI venv, before pytest.
set -euo pipefail
CHROMIUM="${SMA_CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$CHROMIUM" ]; then
  if ! command -v apt-get >/dev/null; then
    echo "error: no $CHROMIUM and no apt-get; install Chromium and set SMA_CHROMIUM to its path" >&2; exit 1
  fi
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
"$CHROMIUM" --version

python -m pip install -q voila playwright
python -c "import voila, playwright, ipywidgets; print('voila', voila.__version__)"
