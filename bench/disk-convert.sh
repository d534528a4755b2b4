#!/usr/bin/env bash
# The cost of `disk: { format: qcow2, resize: "+8G" }`: imagepipe's own qcow2
# reader and writer against what Kubespray runs (`qemu-img convert -O qcow2`
# then `qemu-img resize +8G`), side by side in one run, on a
# real-files disk (3 GiB, about 2 GiB of files) shipped as upstream ships it: a compressed qcow2
# (`qemu-img convert -c`, as Ubuntu's .img). imagepipe runs `build` with
# `compression: none`, with and without `disk:`; the difference is the
# conversion.
# Usage: bench/disk-convert.sh [RUNS]
#   Needs: hyperfine e2fsprogs qemu-utils
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs="${1:-3}"
out="$PWD/bench/out/disk-convert"
mkdir -p "$out"
cargo build --release --locked -q
bin="$PWD/target/release/imagepipe"
if [ ! -f "$out/upstream.img" ]; then
  real_files_ext4 "$out/real.ext4" 3G
  qemu-img convert -c -f raw -O qcow2 "$out/real.ext4" "$out/upstream.img"
  rm -f "$out/real.ext4"
fi
for with in plain disk; do
  mkdir -p "$out/$with"
  ln -sf ../upstream.img "$out/$with/upstream.img"
  extra=""
  [ "$with" = disk ] && extra='    disk: { format: qcow2, resize: "+8G" }'
  cat >"$out/$with/images.yml" <<YML
version: 1
images:
  - name: vm
    os: { distro: none, version: "1" }
    source: { file: upstream.img }
    format: containerdisk
    compression: none
$extra
YML
done
cd "$out"
hyperfine --runs "$runs" \
  --prepare 'rm -rf plain/.imagepipe disk/.imagepipe out.qcow2' \
  --export-markdown "$out/result.md" \
  -n "imagepipe build, no disk:" "$bin build -q -c plain/images.yml" \
  -n "imagepipe build, disk: qcow2 +8G" "$bin build -q -c disk/images.yml" \
  -n "qemu-img convert -O qcow2 + resize +8G" "qemu-img convert -f qcow2 -O qcow2 upstream.img out.qcow2 && qemu-img resize -q out.qcow2 +8G"
ls -l upstream.img
qemu-img info upstream.img | grep -E "virtual size|disk size"
