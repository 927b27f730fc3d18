#!/usr/bin/env bash
# Installs the Debian packages mmrag needs when they are missing: tesseract-ocr with English + OSD, and
# docker-compose, with which the tests check infra/compose.yaml (it parses the file; no Docker engine needed),
# and chromium + chromium-driver, in which the tests drive the query service's search page (headless).
set -euo pipefail
need=()
command -v tesseract >/dev/null 2>&1 || need+=(tesseract-ocr)
if command -v tesseract >/dev/null 2>&1; then
  langs=$(tesseract --list-langs 2>/dev/null || true)
  grep -qx eng <<<"$langs" || need+=(tesseract-ocr-eng)
  grep -qx osd <<<"$langs" || need+=(tesseract-ocr-osd)
fi
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing Debian packages: ${need[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
