#!/usr/bin/env bash
# `imagepipe plan` over a generated 500-image catalog (url sources, three
# registry targets and the local store): how long a CI fan-out waits for its plan.
# Usage: bench/plan.sh [IMAGES]   (needs hyperfine for the timing table)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-500}"
out=bench/out/plan
mkdir -p "$out"
cargo build --release --locked -q
bin="$PWD/target/release/imagepipe"
{
  echo "version: 1"
  echo "targets:"
  echo "  - { name: local, layout: ./.imagepipe/store }"
  for r in eu-west-2 us-east-2 cloudgouv-eu-west-1; do
    echo "  - { name: $r, registry: registry.$r.example.com, namespace: k8s-images }"
  done
  echo "images:"
  for i in $(seq 1 "$n"); do
    sum=$(printf '%064x' "$i")
    echo "  - name: image-$i"
    echo "    os: { distro: ubuntu, version: \"24.04\" }"
    echo "    source: { url: \"https://mirror.example.com/disks/image-$i.qcow2\", sha256: \"$sum\" }"
    echo "    format: containerdisk"
  done
} > "$out/images.yml"
items=$("$bin" plan --offline -c "$out/images.yml" --format json | grep -c '"image"')
echo "catalog: $n images, plan items: $items" >&2
if command -v hyperfine >/dev/null; then
  hyperfine --warmup 2 --runs 10 --export-markdown "$out/plan.md" \
    "$bin plan --offline -c $out/images.yml --format json" \
    "$bin validate -c $out/images.yml"
else
  time "$bin" plan --offline -c "$out/images.yml" --format json >/dev/null
fi
