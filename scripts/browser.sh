#!/usr/bin/env bash
# The browser the web-inbox test drives (tests/integration/test_gateway_browser.py): Debian's
# chromium and chromium-driver, installed once when missing (as root, or with sudo).
set -euo pipefail
LOCAL="$(cd "$(dirname "$0")/.." && pwd)/.local"

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "error: chromium and chromium-driver are missing" >&2
        echo "  fix: as root: apt-get update && apt-get install -y chromium chromium-driver" >&2
        exit 1
    }
    sudo="sudo"
fi
mkdir -p "$LOCAL"
echo "browser: installing Debian packages chromium chromium-driver (once)"
if ! { $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver ||
       { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends \
             chromium chromium-driver; }; } >"$LOCAL/apt-browser.log" 2>&1; then
    tail -5 "$LOCAL/apt-browser.log" >&2
    echo "error: apt-get could not install chromium chromium-driver (log: $LOCAL/apt-browser.log)" >&2
    echo "  fix: check the Debian mirror in /etc/apt/sources.list, then make tools again" >&2
    exit 1
fi
echo "browser: $(chromium --version 2>/dev/null | head -1)"
