#!/usr/bin/env bash
# Runs the same benchmarks of two checkouts alternated in one invocation, with the BullMQ peer
# between them, so that a restructuring can be shown to cost nothing measurable:
#   bash bench/compare.sh /path/to/other/checkout [RUNS]
# Prints one JSON line per run, tagged with the checkout ("head" is this one), and the peer's.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
other="$(cd "$1" && pwd)"
runs="${2:-3}"
anchors="$here/.cache/anchors"
[ -d "$anchors/node_modules" ] || { echo "run npm run bench once first (installs the peers)" >&2; exit 1; }
run() { # tag dir script
  local out
  out="$(cd "$2" && node --import tsx "bench/$3" 2>/dev/null | grep '^{' | head -1)"
  echo "{\"tree\":\"$1\",\"bench\":\"$3\",\"figures\":$out}"
}
for i in $(seq "$runs"); do
  for script in e2e-inprocess.ts http-e2e.ts pg-e2e.ts webhook-throughput.ts; do
    if [ $((i % 2)) -eq 1 ]; then run other "$other" "$script"; run head "$here" "$script"
    else run head "$here" "$script"; run other "$other" "$script"; fi
  done
  echo "{\"tree\":\"peer\",\"bench\":\"bullmq\",\"figures\":$(cd "$anchors" && bash run.sh bullmq 2>/dev/null | grep '^{' | head -1)}"
done
