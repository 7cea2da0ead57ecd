#!/usr/bin/env bash
# Debian's chromium for the report test (tests/test_browser.py), which drives it headless through
# Playwright's Python package (no browser download: Playwright is pointed at this binary).
# Installs it with apt-get when `chromium` is not on PATH, running apt-get update only when the
# package lists do not know it yet. Idempotent: an installed chromium is left as it is.
# Used by .ci/run; exits 3 when apt or root is missing.
set -euo pipefail

log() { echo "install-chromium: $*" >&2; }

if command -v chromium >/dev/null; then
  log "present: $(command -v chromium)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then log "chromium missing and this needs root (apt-get install chromium)"; exit 3; fi
if ! command -v apt-get >/dev/null; then log "chromium missing and no apt-get (install chromium yourself)"; exit 3; fi

export DEBIAN_FRONTEND=noninteractive
# An image with emptied /var/lib/apt/lists (the usual Docker cleanup) does not know the package.
updated=0
if ! apt-cache show chromium >/dev/null 2>&1; then
  log "apt-get update (the package lists do not know chromium)"
  apt-get update -qq >/dev/null
  updated=1
fi
log "installing chromium (apt-get, about a minute)"
if ! apt-get install -y -qq chromium >/dev/null; then
  # Stale lists name package versions the mirror no longer has: update once and retry.
  [ "$updated" = 1 ] && { log "apt-get install chromium failed"; exit 1; }
  log "apt-get install failed; apt-get update and retry"
  apt-get update -qq >/dev/null
  apt-get install -y -qq chromium >/dev/null
fi

if ! command -v chromium >/dev/null; then log "apt-get installed chromium but it is not on PATH"; exit 1; fi
log "installed: $(chromium --version 2>/dev/null)"
