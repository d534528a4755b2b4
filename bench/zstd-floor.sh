#!/usr/bin/env bash
# zstd against its physical floor, side by side in one run: a cold
# `imagepipe publish` with zstd:1 vs max(`zstd -1 -T2` of the disk, the
# upload of an already-zstd layout by `skopeo copy` to an empty registry).
# Usage: bench/zstd-floor.sh [RUNS]   (after bench/levels.sh and bench/cold.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-2}"
out="$PWD/bench/out/cold"
disk="$PWD/bench/out/levels/real-files.qcow2"
[ -x "$out/reset.sh" ] || { echo "run bench/cold.sh first" >&2; exit 1; }
cargo build --release --locked -q
bin="$PWD/target/release/imagepipe"
port=$(grep -o 'for port in [0-9 ]*' "$out/reset.sh" | awk '{print $4}')
host="127.0.0.1:$port"
w="$out/real-files/ip-zstd-1"
[ -d "$w" ] || { echo "run bench/cold.sh first" >&2; exit 1; }
"$out/reset.sh"
# The layout the upload floor copies: imagepipe's zstd:1 build of the disk.
rm -rf "$w/.imagepipe" && (cd "$w" && "$bin" build -q >/dev/null)
tag=$(cd "$w" && "$bin" plan --offline --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["tag"])')
trap 'for i in 0 1; do kill "$(cat "$out/registry$i.pid")" 2>/dev/null || true; done' EXIT
hyperfine --runs "$runs" --export-json "$out/zstd-floor.json" \
  -n "imagepipe publish zstd:1 (cold)" --prepare "$out/reset.sh && rm -rf $w/.imagepipe" "cd $w && $bin publish -q >/dev/null" \
  -n "zstd -1 -T2 (compress floor)" --prepare true "zstd -q -1 -T2 -c $disk > $out/floor.zst && sync $out/floor.zst" \
  -n "skopeo copy of the zstd layout (upload floor)" --prepare "$out/reset.sh && rm -rf $w/.imagepipe && cd $w && $bin build -q >/dev/null" \
    "skopeo copy -q --dest-tls-verify=false oci:$w/.imagepipe/store/disk:$tag docker://$host/floor/disk:1"
rm -f "$out/floor.zst"
python3 - "$out/zstd-floor.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
ip = r["imagepipe publish zstd:1 (cold)"]
floor = max(r["zstd -1 -T2 (compress floor)"], r["skopeo copy of the zstd layout (upload floor)"])
for k, v in r.items():
    print(f"| {k} | {v:.2f} |")
print(f"\nimagepipe / floor = {ip / floor:.2f}x")
PY
