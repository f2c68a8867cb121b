#!/usr/bin/env bash
# Trains a zstd dictionary for decision records from synthetic patients, as record-dictionary-1
# was made. A shipped dictionary never changes: records compressed with it need it to be read.
# A new one is a new file and a new record codec. Needs: a dist build (`cargo build --profile dist`), sqlite3, zstd.
# Usage: tools/record-dictionary/train.sh OUT.zdict
set -euo pipefail
out=${1:?usage: train.sh OUT.zdict}
here=$(cd "$(dirname "$0")" && pwd)
bin=$here/../../target/dist
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 "$here/synthetic-cohort.py" 1 400 "$work/cohort.jsonl"
"$bin/net-pathway" --listen 127.0.0.1:50071 --admin-listen off --data-dir "$work/data" --decision-log on >"$work/server.log" 2>&1 &
server=$!
sleep 1
load() { "$bin/net-pathway-load" --target http://127.0.0.1:50071 --duration 1 --warmup 0 --no-baseline --concurrency 4 --mix "$work/cohort.jsonl" "$@" >/dev/null; }
load --rpc screen --view basic
for rpc in eligibility funding; do for view in basic full; do load --rpc "$rpc" --view "$view"; done; done
mkdir "$work/samples"
# 1,200 screened patients and 200 records of each unary kind and view, decompressed.
n=0
for kind in 3 1 2; do
  limit=$([ "$kind" = 3 ] && echo 1200 || echo 400)
  for row in $(sqlite3 -separator : "$work/data/net-pathway.db" "SELECT record_codec, hex(record) FROM decisions WHERE kind = $kind ORDER BY random() LIMIT $limit"); do
    # Codec 1: zstd; codec 2: zstd with record-dictionary-1 (src/store).
    dictionary=()
    [ "${row%%:*}" = 2 ] && dictionary=(-D "$here/../../src/store/record-dictionary-1.zdict")
    echo "${row#*:}" | xxd -r -p | zstd -dcq "${dictionary[@]}" > "$work/samples/$n.bin"
    n=$((n + 1))
  done
done
zstd --train "$work"/samples/*.bin --maxdict=65536 -o "$out"
