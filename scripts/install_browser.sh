#!/usr/bin/env bash
# Headless Chromium for the dashboard's browser test: the Debian `chromium` package (not Playwright's download,
# which needs the internet) plus the playwright Python package in .venv. Idempotent; says what it did.
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
PYTHON=${PYTHON:-.venv/bin/python}

if [[ -x "$CHROMIUM" ]]; then
  echo "chromium: present ($("$CHROMIUM" --version 2>/dev/null | head -n1))"
elif [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium: installing the Debian package"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  echo "chromium: installed ($("$CHROMIUM" --version 2>/dev/null | head -n1))"
else
  echo "chromium: missing and cannot install it here (needs root and apt-get); the browser test will fail until it is installed"
fi

if [[ ! -x "$PYTHON" ]]; then
  echo "playwright: no $PYTHON yet (run make install); skipped"
elif "$PYTHON" -c 'import playwright' 2>/dev/null; then
  echo "playwright: present ($("$PYTHON" -m pip show playwright 2>/dev/null | awk '/^Version:/ {print $2}'))"
else
  echo "playwright: installing into $PYTHON's environment"
  "$PYTHON" -m pip install -q 'playwright>=1.45'
  echo "playwright: installed (browsers are NOT downloaded: the test drives $CHROMIUM)"
fi
