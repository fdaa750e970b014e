#!/bin/sh
# Debian's chromium and chromium-driver for the dashboard's browser test (tests/e2e/test_dashboard_e2e.py).
# A no-op when both are installed; otherwise installed with apt-get (as root). Never fails the
# build: where they cannot be installed, the browser test skips and says why.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no apt-get here; install chromium and chromedriver yourself" \
         "(the dashboard browser test is skipped without them)" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-browser: not root and no sudo: cannot apt-get install chromium" \
             "chromium-driver (the dashboard browser test is skipped without them)" >&2
        exit 0
    fi
fi
echo "install-browser: apt-get install chromium chromium-driver" >&2
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get update -qq \
    && $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; then
    exit 0
fi
echo "install-browser: apt-get could not install chromium chromium-driver" \
     "(the dashboard browser test is skipped without them)" >&2
exit 0
