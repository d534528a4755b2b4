#!/usr/bin/env bash
# Publishing: imagepipe vs umoci+skopeo and buildah against one local
# Distribution registry (Debian's docker-registry), side by side in one run.
#   cold:   build + push of one containerDisk to an empty registry
#   rerun:  nothing changed, 20 images x 3 targets, vs `skopeo copy` per image and target
#   mount:  the same image to a second repository of the same registry
# Usage: bench/publish.sh [RUNS] [DISK]   (DISK defaults to bench/build.sh's real-files disk)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-2}"
out="$PWD/bench/out/publish"
disk="${2:-$PWD/bench/out/build/real-files.qcow2}"
[ -f "$disk" ] || { echo "no $disk: run bench/build.sh first, or pass a disk" >&2; exit 1; }
mkdir -p "$out"
cargo build --release --locked -q
bin="$PWD/target/release/imagepipe"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
host="127.0.0.1:$port"
cat > "$out/reset.sh" <<SH
#!/usr/bin/env bash
# Restarts the registry with empty storage and drops skopeo's blob cache.
[ -f "$out/registry.pid" ] && kill "\$(cat "$out/registry.pid")" 2>/dev/null && sleep 0.3
rm -rf "$out/registry" /var/lib/containers/cache/blob-info-cache-v1.boltdb
mkdir -p "$out/registry"
printf 'version: 0.1\nlog: { level: error }\nstorage:\n  filesystem: { rootdirectory: $out/registry }\n  delete: { enabled: true }\nhttp: { addr: $host }\n' > "$out/registry.yml"
docker-registry serve "$out/registry.yml" >/dev/null 2>&1 &
echo \$! > "$out/registry.pid"
for _ in \$(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && exit 0; sleep 0.1; done
echo "registry did not start" >&2; exit 1
SH
chmod +x "$out/reset.sh"
trap 'kill "$(cat "$out/registry.pid")" 2>/dev/null || true' EXIT
"$out/reset.sh"

# --- cold publish -------------------------------------------------------------
cold="$out/cold"
rm -rf "$cold" && mkdir -p "$cold"
cp "$disk" "$cold/disk.qcow2"
chown 107:107 "$cold/disk.qcow2"
for c in gzip:6 gzip:1 zstd:1; do
  d="$cold/ip-${c/:/-}"
  mkdir -p "$d" && ln -sf ../disk.qcow2 "$d/disk.qcow2"
  printf 'version: 1\ntargets:\n  - { name: r, registry: "%s", namespace: ip, insecure: true }\nimages:\n  - name: disk\n    os: { distro: bench, version: "1" }\n    source: { file: disk.qcow2 }\n    format: containerdisk\n    compression: %s\n' "$host" "$c" > "$d/images.yml"
done
printf 'FROM scratch\nADD --chown=107:107 disk.qcow2 /disk/\n' > "$cold/Dockerfile"
hyperfine --runs "$runs" --export-json "$out/cold.json" --export-markdown "$out/cold.md" \
  -n "imagepipe publish gzip:6" --prepare "$out/reset.sh && rm -rf $cold/ip-gzip-6/.imagepipe" "cd $cold/ip-gzip-6 && $bin publish >/dev/null" \
  -n "imagepipe publish gzip:1" --prepare "$out/reset.sh && rm -rf $cold/ip-gzip-1/.imagepipe" "cd $cold/ip-gzip-1 && $bin publish >/dev/null" \
  -n "imagepipe publish zstd:1" --prepare "$out/reset.sh && rm -rf $cold/ip-zstd-1/.imagepipe" "cd $cold/ip-zstd-1 && $bin publish >/dev/null" \
  -n "umoci insert + skopeo copy" --prepare "$out/reset.sh && rm -rf $cold/L && umoci init --layout $cold/L && umoci new --image $cold/L:base" \
    "umoci insert --image $cold/L:base --tag 1 $cold/disk.qcow2 /disk/disk.qcow2 && skopeo copy -q --dest-tls-verify=false oci:$cold/L:1 docker://$host/peer/x:1" \
  -n "buildah bud + push" --prepare "$out/reset.sh && rm -rf $cold/bR $cold/bRR" \
    "buildah --root $cold/bR --runroot $cold/bRR --storage-driver overlay bud --isolation chroot -q -t localhost/x:1 $cold >/dev/null && buildah --root $cold/bR --runroot $cold/bRR --storage-driver overlay push -q --tls-verify=false localhost/x:1 docker://$host/peer/b:1"
rm -rf "$cold/bR" "$cold/bRR" "$cold/L"

# --- no-op rerun: 20 images x 3 targets ---------------------------------------
"$out/reset.sh"
many="$out/many"
rm -rf "$many" && mkdir -p "$many"
{
  echo "version: 1"
  echo "targets:"
  for t in eu us gov; do echo "  - { name: $t, registry: \"$host\", namespace: $t, insecure: true }"; done
  echo "images:"
  for i in $(seq 1 20); do
    qemu-img create -q -f qcow2 "$many/d$i.qcow2" "$((i + 1))M"
    printf '  - name: d%s\n    os: { distro: bench, version: "1" }\n    source: { file: d%s.qcow2 }\n    format: containerdisk\n' "$i" "$i"
  done
} > "$many/images.yml"
(cd "$many" && "$bin" publish >/dev/null 2>&1)
copies=""
for i in $(seq 1 20); do for t in eu us gov; do
  copies+="skopeo copy -q --dest-tls-verify=false oci:$many/.imagepipe/store/d$i:latest docker://$host/$t/d$i:latest; "
done; done
echo "$copies" > "$many/skopeo.sh"
hyperfine --warmup 1 --runs "$((runs + 1))" --export-json "$out/rerun.json" --export-markdown "$out/rerun.md" \
  -n "imagepipe publish (no-op, 60 image-targets)" "cd $many && $bin publish >/dev/null 2>&1" \
  -n "skopeo copy x60 (all blobs present)" "bash $many/skopeo.sh"

# --- second repository on the same registry (cross-repository mount) ----------
"$out/reset.sh"
(cd "$cold/ip-gzip-1" && "$bin" publish >/dev/null 2>&1)
for n in 1 2 3 4 5 6; do
  # The image's targets: the repository that has it, and a new one on the same registry.
  sed "s/  - { name: r, registry: \"$host\", namespace: ip, insecure: true }/&\n  - { name: copy, registry: \"$host\", namespace: copy$n, insecure: true }/" "$cold/ip-gzip-1/images.yml" > "$cold/ip-gzip-1/copy$n.yml"
done
hyperfine --runs 1 --export-json "$out/mount-ip.json" --export-markdown "$out/mount-ip.md" \
  -n "imagepipe publish to a second repository" -P n 1 3 "cd $cold/ip-gzip-1 && $bin publish -c copy{n}.yml >/dev/null 2>&1"
hyperfine --runs 1 --export-json "$out/mount-skopeo.json" --export-markdown "$out/mount-skopeo.md" \
  -n "skopeo copy to a second repository" -P m 4 6 "skopeo copy -q --src-tls-verify=false --dest-tls-verify=false docker://$host/ip/disk:latest docker://$host/copy{m}/disk:latest"
cat "$out/cold.md" "$out/rerun.md" "$out/mount-ip.md" "$out/mount-skopeo.md"
