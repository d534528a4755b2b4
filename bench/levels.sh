#!/usr/bin/env bash
# Compression levels and incompressible disks: `imagepipe build` time and
# layer size for none / gzip:1,3,6,9 / zstd:1,3 beside `umoci insert`, side
# by side in one run, on the two shapes of CI disks:
#   real-files:  qcow2 of an ext4 filesystem of real files (/usr/lib/x86_64-linux-gnu
#                and /usr/bin of this machine; compresses ~3x)
#   compressed:  the same disk through `qemu-img convert -c` (the shape of
#                upstream cloud images: nearly incompressible)
# Usage: bench/levels.sh [RUNS]   Needs: hyperfine umoci qemu-utils e2fsprogs
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1}"
out="$PWD/bench/out/levels"
mkdir -p "$out"
cargo build --release --locked -q
bin="$PWD/target/release/imagepipe"

if [ ! -f "$out/real-files.qcow2" ]; then
  stage="$out/stage"
  rm -rf "$stage" && mkdir -p "$stage"
  cp -a /usr/lib/x86_64-linux-gnu /usr/bin "$stage/"
  mkfs.ext4 -q -F -d "$stage" "$out/real-files.raw" "$(( $(du -sm "$stage" | cut -f1) * 13 / 10 + 64 ))M"
  qemu-img convert -O qcow2 "$out/real-files.raw" "$out/real-files.qcow2"
  rm -rf "$stage" "$out/real-files.raw"
fi
[ -f "$out/compressed.qcow2" ] || qemu-img convert -c -O qcow2 "$out/real-files.qcow2" "$out/compressed.qcow2"

levels=(none gzip:1 gzip:3 gzip:6 gzip:9 zstd:1 zstd:3)
for disk in real-files compressed; do
  d="$out/$disk"
  mkdir -p "$d"
  cp --reflink=auto "$out/$disk.qcow2" "$d/disk.qcow2"
  args=()
  for c in "${levels[@]}"; do
    w="$d/ip-${c/:/-}"
    mkdir -p "$w" && ln -sf ../disk.qcow2 "$w/disk.qcow2"
    printf 'version: 1\nimages:\n  - name: disk\n    os: { distro: bench, version: "1" }\n    source: { file: disk.qcow2 }\n    format: containerdisk\n    compression: %s\n' "$c" > "$w/images.yml"
    args+=(-n "imagepipe $c" --prepare "rm -rf $w/.imagepipe" "cd $w && $bin build -q >/dev/null")
  done
  echo "== $disk: $(stat -c %s "$d/disk.qcow2") bytes" >&2
  hyperfine --runs "$runs" --export-json "$out/$disk.json" "${args[@]}" \
    -n "umoci insert (gzip)" --prepare "rm -rf $d/L && umoci init --layout $d/L && umoci new --image $d/L:base" \
      "umoci insert --image $d/L:base --tag 1 $d/disk.qcow2 /disk/disk.qcow2"
  # Layer sizes (the largest blob of each store is the layer).
  for c in "${levels[@]}"; do
    w="$d/ip-${c/:/-}"
    rm -rf "$w/.imagepipe" && (cd "$w" && "$bin" build -q >/dev/null)
    echo "$c $(find "$w/.imagepipe/store/disk/blobs" -type f -printf '%s\n' | sort -n | tail -1)"
  done > "$out/$disk.sizes"
  echo "umoci $(find "$d/L/blobs" -type f -printf '%s\n' | sort -n | tail -1)" >> "$out/$disk.sizes"
  # Peak memory of the default.
  rm -rf "$d/ip-gzip-6/.imagepipe"
  (cd "$d/ip-gzip-6" && /usr/bin/time -f "%M" "$bin" build -q >/dev/null 2>"$out/$disk.rss") || true
  rm -rf "$d/L"
done
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
for disk in ("real-files", "compressed"):
    res = {r["command"]: r["median"] for r in json.load(open(os.path.join(out, disk + ".json")))["results"]}
    sizes = dict(l.split() for l in open(os.path.join(out, disk + ".sizes")))
    raw = os.path.getsize(os.path.join(out, disk + ".qcow2"))
    none = res["imagepipe none"]
    umoci = res["umoci insert (gzip)"]
    print(f"\n### {disk} ({raw / 1e6:.0f} MB)\n\n| command | median s | vs none | vs umoci | layer MB | layer / disk |\n|---|---|---|---|---|---|")
    for cmd, t in res.items():
        key = cmd.split()[-1] if cmd.startswith("imagepipe") else "umoci"
        size = int(sizes[key])
        print(f"| {cmd} | {t:.2f} | {t / none:.2f}x | {t / umoci:.2f}x | {size / 1e6:.0f} | {size / raw:.2f} |")
    rss = open(os.path.join(out, disk + ".rss")).read().strip().splitlines()[-1]
    print(f"\nPeak RSS, imagepipe gzip:6: {int(rss) / 1024:.0f} MiB")
PY
