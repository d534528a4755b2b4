#!/usr/bin/env bash
# The cost of deterministic gzip: containerDisk build (default gzip:3) of a
# ~1.5 GiB real-files disk (raw ext4 of /usr/lib/x86_64-linux-gnu, /usr/share/doc,
# /usr/bin, /usr/share/locale, /usr/share/man, /usr/lib/python3), by this
# imagepipe and by an earlier binary (one compressor reused per worker
# thread, layout 3), side by side in one run, fresh store each run.
# Usage: bench/one-compressor-per-block.sh OLD_IMAGEPIPE [RUNS]
#   Needs: hyperfine e2fsprogs
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
old="$(realpath "$1")"
runs="${2:-3}"
out="$PWD/bench/out/per-block"
mkdir -p "$out"
cargo build --release --locked -q
new="$PWD/target/release/imagepipe"
if [ ! -f "$out/real.ext4" ]; then
  real_files_ext4 "$out/real.ext4" 1536M
fi
cat >"$out/images.yml" <<'YML'
version: 1
images:
  - name: real
    os: { distro: none, version: "1" }
    source: { file: real.ext4 }
    format: containerdisk
YML
cd "$out"
hyperfine --runs "$runs" --prepare 'rm -rf .imagepipe' \
  --export-markdown "$out/result.md" \
  -n "layout 3 (reused compressor)" "$old build -q" \
  -n "layout 4 (one per block)" "$new build -q"
for bin in "$old" "$new"; do
  rm -rf .imagepipe
  "$bin" build -q
  echo "$bin: $(du -b .imagepipe/store/real/blobs/sha256 | cut -f1) bytes in the store"
done
