#!/usr/bin/env bash
# Install Debian's chromium for the browser test of the search page (Playwright drives it with
# executable_path; Playwright's own browser download cannot work offline). Idempotent; where
# apt-get or root is missing it says so and the browser test skips.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "browser.sh: no apt-get here; the browser test will skip (install chromium to run it)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "browser.sh: not root; the browser test will skip (apt-get install chromium to run it)" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null; }
