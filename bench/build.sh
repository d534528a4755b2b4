#!/usr/bin/env bash
# containerDisk build: imagepipe vs umoci insert, buildah bud and the bare
# compressors, side by side in one run, on two disks:
#   half-random: 1 GiB qcow2, alternating 1 MiB of random bytes and of text
#   real-files:  ext4 of real files (/usr/lib/x86_64-linux-gnu + /usr/share + /usr/bin) as qcow2
# Usage: bench/build.sh [RUNS]   Needs: hyperfine umoci buildah pigz zstd qemu-utils e2fsprogs
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
out="$PWD/bench/out/build"
mkdir -p "$out"
cargo build --release --locked -q
bin="$PWD/target/release/imagepipe"

if [ ! -f "$out/half-random.qcow2" ]; then
  python3 - "$out/half-random.raw" <<'PY'
import os, sys
line = b"The quick brown fox jumps over the lazy dog. 0123456789\n"
text = (line * ((1 << 20) // len(line) + 1))[: 1 << 20]
with open(sys.argv[1], "wb") as f:
    for i in range(1024):
        f.write(os.urandom(1 << 20) if i % 2 == 0 else text)
PY
  qemu-img convert -O qcow2 "$out/half-random.raw" "$out/half-random.qcow2"
  rm "$out/half-random.raw"
fi
if [ ! -f "$out/real-files.qcow2" ]; then
  stage="$out/stage"
  rm -rf "$stage" && mkdir -p "$stage"
  cp -a /usr/lib/x86_64-linux-gnu /usr/share /usr/bin "$stage/"
  mkfs.ext4 -q -F -d "$stage" "$out/real-files.raw" 2G
  qemu-img convert -O qcow2 "$out/real-files.raw" "$out/real-files.qcow2"
  rm -rf "$stage" "$out/real-files.raw"
fi

for disk in half-random real-files; do
  d="$out/$disk"
  mkdir -p "$d"
  cp --reflink=auto "$out/$disk.qcow2" "$d/disk.qcow2"
  chown 107:107 "$d/disk.qcow2"
  for c in gzip:6 gzip:1 zstd:1 zstd:3; do
    mkdir -p "$d/ip-${c/:/-}"
    ln -sf ../disk.qcow2 "$d/ip-${c/:/-}/disk.qcow2"
    printf 'version: 1\nimages:\n  - name: disk\n    os: { distro: bench, version: "1" }\n    source: { file: disk.qcow2 }\n    format: containerdisk\n    compression: %s\n' "$c" > "$d/ip-${c/:/-}/images.yml"
  done
  printf 'FROM scratch\nADD --chown=107:107 disk.qcow2 /disk/\n' > "$d/Dockerfile"
  size=$(stat -c %s "$d/disk.qcow2")
  echo "== $disk: $size bytes" >&2
  hyperfine --runs "$runs" --export-json "$out/$disk.json" --export-markdown "$out/$disk.md" \
    -n "imagepipe gzip:6" --prepare "rm -rf $d/ip-gzip-6/.imagepipe" "cd $d/ip-gzip-6 && $bin build" \
    -n "imagepipe gzip:1" --prepare "rm -rf $d/ip-gzip-1/.imagepipe" "cd $d/ip-gzip-1 && $bin build" \
    -n "imagepipe zstd:1" --prepare "rm -rf $d/ip-zstd-1/.imagepipe" "cd $d/ip-zstd-1 && $bin build" \
    -n "imagepipe zstd:3" --prepare "rm -rf $d/ip-zstd-3/.imagepipe" "cd $d/ip-zstd-3 && $bin build" \
    -n "umoci insert (gzip)" --prepare "rm -rf $d/L && umoci init --layout $d/L && umoci new --image $d/L:base" \
      "umoci insert --image $d/L:base --tag 1 $d/disk.qcow2 /disk/disk.qcow2" \
    -n "buildah bud (no push)" --prepare "rm -rf $d/bR $d/bRR" \
      "buildah --root $d/bR --runroot $d/bRR --storage-driver overlay bud --isolation chroot -q -t localhost/x:1 $d >/dev/null" \
    -n "pigz -6 -p2 (bare)" --prepare true "pigz -6 -p2 < $d/disk.qcow2 > $d/bare.out && sync $d/bare.out" \
    -n "pigz -1 -p2 (bare)" --prepare true "pigz -1 -p2 < $d/disk.qcow2 > $d/bare.out && sync $d/bare.out" \
    -n "zstd -1 -T2 (bare)" --prepare true "zstd -q -1 -T2 -c $d/disk.qcow2 > $d/bare.out && sync $d/bare.out" \
    -n "zstd -3 -T2 (bare)" --prepare true "zstd -q -3 -T2 -c $d/disk.qcow2 > $d/bare.out && sync $d/bare.out"
  # Peak memory of one imagepipe build.
  rm -rf "$d/ip-zstd-1/.imagepipe"
  ( cd "$d/ip-zstd-1" && /usr/bin/time -f "$disk imagepipe zstd:1 peak RSS %M KB" "$bin" build >/dev/null 2>"$out/$disk.rss.log" ) || true
  rm -rf "$d/ip-gzip-6/.imagepipe"
  ( cd "$d/ip-gzip-6" && /usr/bin/time -f "$disk imagepipe gzip:6 peak RSS %M KB" "$bin" build >/dev/null 2>>"$out/$disk.rss.log" ) || true
  grep "peak RSS" "$out/$disk.rss.log" >&2
  rm -rf "$d/bR" "$d/bRR" "$d/L" "$d/bare.out"
done
python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
for disk in ("half-random", "real-files"):
    res = {r["command"]: r["median"] for r in json.load(open(os.path.join(out, disk + ".json")))["results"]}
    print(f"\n### {disk}\n\n| command | median s | vs umoci | vs bare compressor |\n|---|---|---|---|")
    bare = {"imagepipe gzip:6": "pigz -6 -p2 (bare)", "imagepipe gzip:1": "pigz -1 -p2 (bare)",
            "imagepipe zstd:1": "zstd -1 -T2 (bare)", "imagepipe zstd:3": "zstd -3 -T2 (bare)"}
    for cmd, t in res.items():
        vs_umoci = t / res["umoci insert (gzip)"]
        vs_bare = f"{t / res[bare[cmd]]:.2f}x" if cmd in bare else ""
        print(f"| {cmd} | {t:.2f} | {vs_umoci:.2f}x | {vs_bare} |")
PY
