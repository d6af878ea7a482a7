#!/usr/bin/env bash
# A live scrape of vocoderd after real traffic: `promtool check metrics`
# accepts it, and every series docs/metrics.md documents is exposed.
set -euo pipefail
vocoderd=$1 client=$2 root=$3 model=$4
command -v promtool >/dev/null || { echo "promtool missing: run scripts/deps"; exit 1; }
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
"$vocoderd" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --model-dir "$model" \
  >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 300); do grep -q "serving on port" "$work/out" && break; sleep 0.1; done
port=$(grep -o 'serving on port [0-9]*' "$work/out" | grep -o '[0-9]*$')
mport=$(grep -o 'metrics on port [0-9]*' "$work/out" | grep -o '[0-9]*$')
[[ -n $port && -n $mport ]] || { cat "$work/err"; exit 1; }
"$client" --target "127.0.0.1:$port" --tokens 60 --streams 4 >/dev/null
curl -fsS "http://127.0.0.1:$mport/metrics" >"$work/metrics"
promtool check metrics <"$work/metrics"
missing=0
for name in $(grep -o '^| `vocoder_[a-z_]*`' "$root/docs/metrics.md" | tr -d '|` '); do
  grep -q "^$name" "$work/metrics" || { echo "not exposed: $name"; missing=1; }
done
grep -q 'vocoder_batches_total{.*trigger="all_ready"} [1-9]' "$work/metrics" ||
  grep -q 'vocoder_batches_total{.*} [1-9]' "$work/metrics" || { echo "no batch counted"; missing=1; }
kill -TERM $pid
wait $pid
[[ $missing == 0 ]] && echo "promtool check metrics: ok; all documented series exposed"
