#!/usr/bin/env bash
# Render a run's report.html to a PNG with headless Chromium: the picture of the report in the README.
#
#   benchmarks/render_report.sh                      # trains the moons preset into runs/readme-moons if needed
#   benchmarks/render_report.sh RUN_DIR OUT.png      # any run directory
#
# Needs `chromium` (Debian/Ubuntu: apt-get install chromium). PYTHON picks the interpreter (default: python).
set -euo pipefail
run=${1:-runs/readme-moons}
out=${2:-docs/report.png}
python=${PYTHON:-python}
if [ ! -f "$run/config.yaml" ]; then
  "$python" -m dann train --config moons --out "$run" --quiet --no-report
fi
"$python" -m dann report --run "$run"  # rebuilt from the run's files, so the picture shows the current report
mkdir -p "$(dirname "$out")"
# The report is one self-contained file (no scripts, no network): a plain screenshot of its top shows the answer,
# the checkpoint table and the training curves.
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --hide-scrollbars \
  --force-device-scale-factor=1 --window-size=1140,1900 \
  --screenshot="$(realpath "$out")" "file://$(realpath "$run/report.html")"
echo "wrote $out ($(du -k "$out" | cut -f1) KB) from $run/report.html"
