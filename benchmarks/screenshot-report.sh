#!/bin/sh
# Screenshot an HTML report as a person first sees it: headless Chromium, 1400 px wide, offline
# (docs/reports.md, "Looking at the page"). Chromium runs with --no-sandbox, so run it on reports you made.
#
# usage: benchmarks/screenshot-report.sh REPORT.html[#ANCHOR] OUT.png [HEIGHT]   (HEIGHT: 3000 px by default)
# With #ANCHOR (e.g. #s-copy-up) the page opens that scenario's folded section and scrolls to it.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 REPORT.html[#ANCHOR] OUT.png [HEIGHT]" >&2; exit 2; }
case "$1" in *"#"*) anchor="#${1#*#}" ;; *) anchor="" ;; esac
report=$(realpath "${1%%#*}")
out=$(realpath "$2")
height=${3:-3000}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "$0: no Chromium here (Debian: apt-get install -y chromium)" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# a fresh profile, no network (the page needs none), time for plotly.js to draw every figure
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
    --proxy-server=127.0.0.1:9 --virtual-time-budget=10000 \
    --window-size=1400,"$height" --screenshot="$out" "file://$report$anchor" 2>/dev/null
[ -s "$out" ] || { echo "$0: Chromium wrote no screenshot" >&2; exit 1; }
echo "$out"
