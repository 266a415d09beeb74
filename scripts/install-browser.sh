#!/usr/bin/env bash
# Headless Chromium for the browser tests of the results pages (make test-slow, docs/site.md): Debian's
# chromium and chromium-driver. Idempotent, and never fails: where they cannot be installed (no root, no
# apt-get, no network) it says so in one line and the browser tests skip, saying so too.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: chromium is not installed and this is not root with apt-get: the browser tests will skip"
  exit 0
fi
log="$(mktemp)"
if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >"$log" 2>&1; then
  echo "install-browser: installed $(chromium --version 2>/dev/null)"
else
  echo "install-browser: apt-get could not install chromium (last line: $(tail -n 1 "$log")): the browser tests will skip"
fi
rm -f "$log"
exit 0
