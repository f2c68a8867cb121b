#!/usr/bin/env bash
# Instructions the server executes per request, counted by valgrind's callgrind: the same
# figure run after run whatever else the machine is doing, so two builds compare on a noisy,
# shared machine where calls per second drift by a fifth between runs.
#
#   tools/instructions.sh BIN_DIR FRAME GRPC_PATH N [PER_REQUEST]
#
# Starts BIN_DIR/net-pathway under callgrind (decision log off unless LOG=on), sends the
# pre-framed FRAME (from `net-pathway-load --write-frames`) N times with h2load on one
# connection, one at a time, then starts it again with no requests, and prints
# (instructions with N - instructions with none) / (N x PER_REQUEST): per call for a unary
# frame, per patient for screen-cohort.grpc with PER_REQUEST=256. Start-up and policy load
# cancel out. KEEP=FILE keeps the loaded run's callgrind output for `callgrind_annotate`.
# Needs valgrind, curl and h2load.
#
# Instruction counts are not time: a memcpy or a cache miss costs more or less than its count
# says. Use them to compare builds on the same work, and calls per second for the rate.
set -euo pipefail
bin=${1:?usage: instructions.sh BIN_DIR FRAME GRPC_PATH N [PER_REQUEST]}
frame=${2:?frame file}
path=${3:?gRPC path, e.g. netpathway.v1.EligibilityService/EvaluateEligibility}
n=${4:?number of requests}
per=${5:-1}
port=${PORT:-50079}
health="$(mktemp)"
printf '\0\0\0\0\0' >"$health"

count() { # requests -> instructions
  local data out
  data="$(mktemp -d)"
  out="$(mktemp)"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin/net-pathway" \
    --listen "127.0.0.1:$port" --admin-listen off --data-dir "$data" \
    --decision-log "${LOG:-off}" >/dev/null 2>&1 &
  local server=$!
  local ready=""
  for _ in $(seq 1 300); do
    if curl -sf --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
      --data-binary "@$health" -o /dev/null "http://127.0.0.1:$port/grpc.health.v1.Health/Check"; then
      ready=yes
      break
    fi
    sleep 0.2
  done
  [ -n "$ready" ] || { echo "net-pathway did not start under valgrind" >&2; kill "$server"; exit 1; }
  if [ "$1" -gt 0 ]; then
    h2load -n "$1" -c 1 -m 1 -t 1 -d "$frame" -H 'content-type: application/grpc' \
      -H 'te: trailers' "http://127.0.0.1:$port/$path" | grep -q " $1 succeeded" ||
      { echo "h2load: not every request succeeded" >&2; kill "$server"; exit 1; }
  fi
  kill -TERM "$server"
  wait "$server" 2>/dev/null || true
  sed -n 's/^summary: //p' "$out"
  if [ "$1" -gt 0 ] && [ -n "${KEEP:-}" ]; then cp "$out" "$KEEP"; fi
  rm -rf "$data" "$out"*
}

with=$(count "$n")
without=$(count 0)
rm -f "$health"
echo "$(( (with - without) / (n * per) )) instructions per request$([ "$per" = 1 ] || echo " unit (of $per per request)") ($with with $n requests, $without with none)"
