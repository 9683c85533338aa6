#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (Playwright's own browser download
# needs the open internet). Install it when it is missing; say exactly what to
# do when this shell cannot.
set -euo pipefail

if [ -n "${DMHUB_CHROMIUM:-}" ] && [ -x "$DMHUB_CHROMIUM" ]; then
  exit 0
fi
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  exit 0
fi

packages="chromium fonts-liberation"
if [ "$(id -u)" = "0" ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "The browser tests need Chromium. Install it, then run 'make test' again:" >&2
  echo "    sudo apt-get install -y $packages        (Debian/Ubuntu)" >&2
  echo "or point DMHUB_CHROMIUM at a Chromium/Chrome binary." >&2
  [ -n "${DMHUB_CHROMIUM:-}" ] && exit 0
  exit 1
fi

echo "Installing Debian's Chromium for the browser tests..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $packages >/dev/null
command -v chromium >/dev/null
