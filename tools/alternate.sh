#!/usr/bin/env bash
# Two servers measured in turn with h2load, run after run, so that both see the same spells of a
# shared machine whose speed drifts by a fifth within minutes: the fair way to compare two
# builds, or one build under two settings, in calls per second.
#
#   tools/alternate.sh "ENV_A" BIN_DIR_A "ENV_B" BIN_DIR_B FRAME GRPC_PATH [ROUNDS] [SECONDS]
#
# ENV_A and ENV_B are environment settings for each server ("RUST_LOG=warn", or "" for none);
# BIN_DIR_A and BIN_DIR_B hold net-pathway. Both servers run with the decision log off on
# 127.0.0.1:50071 and :50072. After a warm-up run each, ROUNDS rounds (default 8) run h2load
# against A then B for SECONDS each (default 3), with 4 connections and M calls each (M=16, or
# M=1 for a pre-framed ScreenCohort stream). Prints each run's calls (or streams) per second,
# the medians, B's median over A's, and each round's B/A. Needs h2load and curl.
set -euo pipefail
env_a=$1 bin_a=${2:?usage: alternate.sh ENV_A BIN_A ENV_B BIN_B FRAME GRPC_PATH [ROUNDS] [SECONDS]}
env_b=$3 bin_b=${4:?BIN_B}
frame=${5:?FRAME} path=${6:?GRPC_PATH} rounds=${7:-8} seconds=${8:-3}
data_a=$(mktemp -d) data_b=$(mktemp -d)
health=$(mktemp)
printf '\0\0\0\0\0' >"$health"

# shellcheck disable=SC2086 # ENV_A and ENV_B are word-split on purpose: "NAME=value ...".
env $env_a "$bin_a/net-pathway" --listen 127.0.0.1:50071 --admin-listen off \
  --data-dir "$data_a" --decision-log off >/dev/null 2>&1 &
server_a=$!
# shellcheck disable=SC2086
env $env_b "$bin_b/net-pathway" --listen 127.0.0.1:50072 --admin-listen off \
  --data-dir "$data_b" --decision-log off >/dev/null 2>&1 &
server_b=$!
trap 'kill $server_a $server_b 2>/dev/null; rm -rf "$data_a" "$data_b" "$health"' EXIT

for port in 50071 50072; do
  for _ in $(seq 1 100); do
    curl -sf --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
      --data-binary "@$health" -o /dev/null "http://127.0.0.1:$port/grpc.health.v1.Health/Check" &&
      break
    sleep 0.1
  done
done

rate() { # port -> requests per second of one h2load run
  h2load -D "$seconds" -c 4 -m "${M:-16}" -t 1 -d "$frame" -H 'content-type: application/grpc' \
    -H 'te: trailers' "http://127.0.0.1:$1/$path" | awk '/^finished in/ {gsub(",", "", $4); print $4}'
}

rate 50071 >/dev/null
rate 50072 >/dev/null
a=() b=()
for _ in $(seq 1 "$rounds"); do
  a+=("$(rate 50071)")
  b+=("$(rate 50072)")
done
python3 - "${a[*]}" "${b[*]}" <<'EOF'
import statistics
import sys

a = [float(x) for x in sys.argv[1].split()]
b = [float(x) for x in sys.argv[2].split()]
print("A", " ".join(f"{x:.0f}" for x in a), f"median {statistics.median(a):.0f}")
print("B", " ".join(f"{x:.0f}" for x in b), f"median {statistics.median(b):.0f}")
print(f"B/A {statistics.median(b) / statistics.median(a):.3f};",
      "each round:", " ".join(f"{y / x:.2f}" for x, y in zip(a, b)))
EOF
