#!/usr/bin/env bash
# The Python client example against a real vocoderd: it streams, stitches
# gap-free and writes a WAV of exactly 960 samples per token.
set -euo pipefail
vocoderd=$1 python=$2 root=$3 model=$4
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
"$vocoderd" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --model-dir "$model" >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 300); do grep -q "serving on port" "$work/out" && break; sleep 0.1; done
port=$(grep -o 'serving on port [0-9]*' "$work/out" | grep -o '[0-9]*$')
[[ -n $port ]] || { cat "$work/err"; exit 1; }
"$python" "$root/tools/vocoder_client.py" --target "127.0.0.1:$port" --tokens 70 --chunk 20 \
  --wav "$work/out.wav" | tee "$work/client"
grep -q "70 tokens -> 2.80 s of audio (67200 samples)" "$work/client"
"$python" -c "import wave,sys; w=wave.open(sys.argv[1]); assert w.getnframes()==67200 and w.getframerate()==24000" "$work/out.wav"
kill -TERM $pid
wait $pid
echo "python client test passed"
