#!/usr/bin/env bash
# cleanup at scale against one local Distribution registry:
#   plan over one repository with 10,000 tags (dry run), beside the floor:
#     a bare keep-alive Python client making the same necessary requests
#     (the tag list, then one manifest GET per tag)
#   apply 1,000 deletions (tag by tag), vs one `skopeo delete` per tag
# Usage: bench/cleanup.sh [TAGS] [DELETIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
tags="${1:-10000}"
deletions="${2:-1000}"
out="$PWD/bench/out/cleanup"
rm -rf "$out" && mkdir -p "$out/registry"
cargo build --release --locked -q
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/imagepipe"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
host="127.0.0.1:$port"
printf 'version: 0.1\nlog: { level: error }\nstorage:\n  filesystem: { rootdirectory: %s }\n  delete: { enabled: true }\nhttp: { addr: %s }\n' "$out/registry" "$host" > "$out/registry.yml"
docker-registry serve "$out/registry.yml" >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

# Seeds REPO with N distinct imagepipe-made manifests tagged disk-<hash>, created in 2020.
cat > "$out/seed.py" <<'PY'
import hashlib, http.client, json, sys
host, port, repo, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
c = http.client.HTTPConnection(host, port)
def req(method, path, body=b"", headers=None):
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse(); r.read()
    return r
empty = b"{}"
ed = "sha256:" + hashlib.sha256(empty).hexdigest()
r = req("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
loc = r.getheader("Location")
loc = loc if loc.startswith("/") else "/" + loc.split("/", 3)[3]
req("PUT", f"{loc}{'&' if '?' in loc else '?'}digest={ed}", body=empty, headers={"Content-Type": "application/octet-stream"})
for i in range(n):
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": ed, "size": 2},
         "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": ed, "size": 2}],
         "annotations": {"io.imagepipe.image": "disk", "org.opencontainers.image.created": "2020-01-01T00:00:%02dZ" % (i % 60), "n": str(i)}}
    body = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
    tag = "disk-" + hashlib.sha256(body).hexdigest()[:12]
    r = req("PUT", f"/v2/{repo}/manifests/{tag}", body=body, headers={"Content-Type": m["mediaType"]})
    assert r.status == 201, r.status
    print(tag)
PY
echo "seeding $tags tags" >&2
python3 "$out/seed.py" 127.0.0.1 "$port" big/disk "$tags" > /dev/null
cat > "$out/images.yml" <<YML
version: 1
targets:
  - { name: big, registry: "$host", namespace: big, insecure: true }
  - { name: del, registry: "$host", namespace: del, insecure: true }
images:
  - name: disk
    os: { distro: bench, version: "1" }
    source: { file: disk.qcow2 }
    format: containerdisk
retention:
  keep_last: 0
  max_delete: 1000000
YML
cat > "$out/reseed.sh" <<SH
#!/usr/bin/env bash
# Fresh del/disk and sk/disk repositories with $deletions tags each.
python3 "$out/seed.py" 127.0.0.1 $port del/disk $deletions > /dev/null
python3 "$out/seed.py" 127.0.0.1 $port sk/disk $deletions > "$out/sk-tags.txt"
SH
chmod +x "$out/reseed.sh"
cat > "$out/skopeo-delete.sh" <<SH
#!/usr/bin/env bash
while read -r t; do skopeo delete --tls-verify=false "docker://$host/sk/disk:\$t"; done < "$out/sk-tags.txt"
SH
cat > "$out/floor.py" <<'PY'
# The request floor of a dry run: the tag list, then one manifest GET per
# tag, sequentially over one keep-alive connection.
import http.client, json, sys
host, port, repo = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection(host, port)
c.request("GET", f"/v2/{repo}/tags/list")
tags = json.loads(c.getresponse().read())["tags"]
accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
for t in tags:
    c.request("GET", f"/v2/{repo}/manifests/{t}", headers={"Accept": accept})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
hyperfine --runs 3 --export-json "$out/plan.json" --export-markdown "$out/plan.md" \
  -n "imagepipe cleanup (dry run, $tags tags)" "$bin cleanup -c $out/images.yml --target big --format json > /dev/null 2>&1" \
  -n "bare keep-alive client, same requests" "python3 $out/floor.py 127.0.0.1 $port big/disk"
hyperfine --runs 2 --export-json "$out/apply.json" --export-markdown "$out/apply.md" \
  -n "imagepipe cleanup --apply ($deletions deletions)" --prepare "$out/reseed.sh" "$bin cleanup -c $out/images.yml --target del --apply > /dev/null 2>&1" \
  -n "skopeo delete x$deletions" --prepare "$out/reseed.sh" "bash $out/skopeo-delete.sh"
cat "$out/plan.md" "$out/apply.md"
