#!/usr/bin/env bash
# Cold publish of one containerDisk (build + push to an empty registry) on
# the two disks of bench/levels.sh, side by side in one run:
#   imagepipe publish (default gzip:3, and zstd:1) vs umoci insert + skopeo copy
# Every run starts from an empty registry (CNCF Distribution, Debian's
# docker-registry) and without skopeo's blob cache. Then the peak RSS of
# publishing a 4 GiB disk to two registries.
# Usage: bench/cold.sh [RUNS]   (run bench/levels.sh first for the disks)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1}"
out="$PWD/bench/out/cold"
disks="$PWD/bench/out/levels"
mkdir -p "$out"
cargo build --release --locked -q
bin="$PWD/target/release/imagepipe"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ports=("$(free_port)" "$(free_port)")
cat > "$out/reset.sh" <<SH
#!/usr/bin/env bash
# Restarts both registries with empty storage and drops skopeo's blob cache.
for i in 0 1; do
  [ -f "$out/registry\$i.pid" ] && kill "\$(cat "$out/registry\$i.pid")" 2>/dev/null
done
sleep 0.3
rm -rf /var/lib/containers/cache/blob-info-cache-v1.boltdb
i=0
for port in ${ports[*]}; do
  rm -rf "$out/registry\$i" && mkdir -p "$out/registry\$i"
  printf 'version: 0.1\nlog: { level: error }\nstorage:\n  filesystem: { rootdirectory: %s }\n  delete: { enabled: true }\nhttp: { addr: 127.0.0.1:%s }\n' "$out/registry\$i" "\$port" > "$out/registry\$i.yml"
  docker-registry serve "$out/registry\$i.yml" >/dev/null 2>&1 &
  echo \$! > "$out/registry\$i.pid"
  for _ in \$(seq 100); do (echo > /dev/tcp/127.0.0.1/\$port) 2>/dev/null && break; sleep 0.1; done
  i=\$((i + 1))
done
SH
chmod +x "$out/reset.sh"
trap 'for i in 0 1; do kill "$(cat "$out/registry$i.pid")" 2>/dev/null || true; done' EXIT
"$out/reset.sh"
host="127.0.0.1:${ports[0]}"

for disk in real-files compressed; do
  d="$out/$disk"
  rm -rf "$d" && mkdir -p "$d"
  cp --reflink=auto "$disks/$disk.qcow2" "$d/disk.qcow2"
  chown 107:107 "$d/disk.qcow2"
  args=()
  for c in default zstd:1; do
    w="$d/ip-${c/:/-}"
    mkdir -p "$w" && ln -sf ../disk.qcow2 "$w/disk.qcow2"
    comp=""; [ "$c" = default ] || comp="    compression: $c\n"
    printf "version: 1\ntargets:\n  - { name: r, registry: \"$host\", namespace: ip, insecure: true }\nimages:\n  - name: disk\n    os: { distro: bench, version: \"1\" }\n    source: { file: disk.qcow2 }\n    format: containerdisk\n$comp" > "$w/images.yml"
    args+=(-n "imagepipe publish $c" --prepare "$out/reset.sh && rm -rf $w/.imagepipe" "cd $w && $bin publish -q >/dev/null")
  done
  echo "== $disk" >&2
  hyperfine --runs "$runs" --export-json "$out/$disk.json" "${args[@]}" \
    -n "umoci insert + skopeo copy" --prepare "$out/reset.sh && rm -rf $d/L && umoci init --layout $d/L && umoci new --image $d/L:base" \
      "umoci insert --image $d/L:base --tag 1 $d/disk.qcow2 /disk/disk.qcow2 && skopeo copy -q --dest-tls-verify=false oci:$d/L:1 docker://$host/peer/x:1"
  rm -rf "$d/L"
done

# Peak RSS: a 4 GiB disk (half random, half text) to two registries.
big="$out/big"
mkdir -p "$big"
if [ ! -f "$big/disk.raw" ]; then
  python3 - "$big/disk.raw" <<'PY'
import os, sys
line = b"The quick brown fox jumps over the lazy dog. 0123456789\n"
text = (line * ((1 << 20) // len(line) + 1))[: 1 << 20]
with open(sys.argv[1], "wb") as f:
    for i in range(4096):
        f.write(os.urandom(1 << 20) if i % 2 == 0 else text)
PY
fi
printf "version: 1\ntargets:\n  - { name: a, registry: \"127.0.0.1:${ports[0]}\", namespace: a, insecure: true }\n  - { name: b, registry: \"127.0.0.1:${ports[1]}\", namespace: b, insecure: true }\nimages:\n  - name: disk\n    os: { distro: bench, version: \"1\" }\n    source: { file: disk.raw }\n    format: containerdisk\n" > "$big/images.yml"
"$out/reset.sh"
rm -rf "$big/.imagepipe"
(cd "$big" && /usr/bin/time -f "%M %e" "$bin" publish -q >/dev/null 2>"$out/big.rss") || true
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
for disk in ("real-files", "compressed"):
    res = {r["command"]: r["median"] for r in json.load(open(os.path.join(out, disk + ".json")))["results"]}
    peer = res["umoci insert + skopeo copy"]
    print(f"\n### {disk}\n\n| command | median s | vs umoci + skopeo |\n|---|---|---|")
    for cmd, t in res.items():
        print(f"| {cmd} | {t:.2f} | {t / peer:.2f}x |")
rss, secs = open(os.path.join(out, "big.rss")).read().split()[-2:]
print(f"\n4 GiB disk to two registries: peak RSS {int(rss) / 1024:.0f} MiB, {float(secs):.1f} s")
PY
