#!/usr/bin/env bash
# Render an edgeprof report in headless Chromium and screenshot it:  scripts/check_report.sh REPORT.html OUT.png
# Installs @sparticuz/chromium and puppeteer-core from the npm registry into scripts/report_check/ once.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
report="$(realpath "$1")" out="$(realpath -m "$2")"
[ -d "$here/report_check/node_modules" ] || (cd "$here/report_check" && npm install --silent --no-audit --no-fund)
cd "$here/report_check" && node screenshot.mjs "$report" "$out"
