# Shared by scripts/bench (CPU) and scripts/gpu/bench (GPU): start vocoderd
# for a server sweep and stop it again. Source it; needs bash.
#   start_vocoderd LOG CMD...   runs CMD... --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0,
#                               waits until it serves; sets VOCODERD_PID, GRPC_PORT, METRICS_PORT
#   stop_vocoderd               SIGTERM (drain), then wait
# VOCODERD_ARGS (environment): extra vocoderd flags, split on spaces and
# appended to every start, e.g. VOCODERD_ARGS="--scheduling step" to compare
# step scheduling against the default.

start_vocoderd() {
  local log=$1
  shift
  local extra=()
  read -r -a extra <<<"${VOCODERD_ARGS:-}"
  [[ ${#extra[@]} -eq 0 ]] || echo "[bench] extra vocoderd flags (VOCODERD_ARGS): ${extra[*]}" >&2
  "$@" "${extra[@]}" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 >"$log" 2>&1 &
  VOCODERD_PID=$!
  local line=""
  for _ in $(seq 1200); do
    line=$(grep -o 'serving on port [0-9]*, metrics on port [0-9]*' "$log" || true)
    [[ -n $line ]] && break
    if ! kill -0 "$VOCODERD_PID" 2>/dev/null; then
      echo "vocoderd exited while starting:" >&2
      tail -20 "$log" >&2
      return 1
    fi
    sleep 0.25
  done
  if [[ -z $line ]]; then
    echo "vocoderd did not start in 300 s" >&2
    return 1
  fi
  GRPC_PORT=$(awk '{print $4}' <<<"${line//,/}")
  METRICS_PORT=$(awk '{print $8}' <<<"${line//,/}")
}

stop_vocoderd() {
  [[ -n ${VOCODERD_PID:-} ]] || return 0
  kill -TERM "$VOCODERD_PID" 2>/dev/null || true
  wait "$VOCODERD_PID" 2>/dev/null || true
  VOCODERD_PID=""
}
