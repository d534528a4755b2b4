#!/usr/bin/env bash
# Installs a released imagepipe binary, checked against the release's SHA256SUMS.
# Used by the GitHub Action (action.yml) and usable on any Linux runner:
#
#   IMAGEPIPE_VERSION=v0.4.0 bash install.sh            # or `latest`
#
# Environment:
#   IMAGEPIPE_VERSION       a release tag (vX.Y.Z) or `latest` (default)
#   IMAGEPIPE_RELEASES_URL  the releases page (default https://github.com/imagepipe/imagepipe/releases);
#                           assets are read from $IMAGEPIPE_RELEASES_URL/download/<tag>/
#   IMAGEPIPE_INSTALL_DIR   where `imagepipe` goes (default ~/.local/bin)
#   GITHUB_OUTPUT           when set, `version` and `path` are written to it
set -euo pipefail
releases="${IMAGEPIPE_RELEASES_URL:-https://github.com/imagepipe/imagepipe/releases}"
releases="${releases%/}"
version="${IMAGEPIPE_VERSION:-latest}"
dir="${IMAGEPIPE_INSTALL_DIR:-$HOME/.local/bin}"
fail() { echo "imagepipe install: $*" >&2; exit 1; }

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64 | Linux/amd64) arch=amd64 ;;
  Linux/aarch64 | Linux/arm64) arch=arm64 ;;
  *) fail "no release binary for $(uname -s)/$(uname -m); build from source: cargo install --locked imagepipe" ;;
esac

if [ "$version" = latest ]; then
  # The releases page redirects /latest to /tag/<tag>.
  effective="$(curl -fsSL --retry 3 -o /dev/null -w '%{url_effective}' "$releases/latest")" ||
    fail "cannot reach $releases/latest to find the newest release"
  version="${effective##*/}"
fi
[[ "$version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$ ]] ||
  fail "'$version' is not a release tag; set IMAGEPIPE_VERSION to vX.Y.Z or latest"

asset="imagepipe-${version}-linux-${arch}.tar.gz"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for f in "$asset" SHA256SUMS; do
  curl -fsSL --retry 3 -o "$tmp/$f" "$releases/download/$version/$f" ||
    fail "cannot download $releases/download/$version/$f (does release $version exist?)"
done
# Every line naming the asset (GNU `sum  name` or binary `sum *name`), hex lowercased.
listed="$(awk -v a="$asset" '$2 == a || $2 == "*" a { print tolower($1) }' "$tmp/SHA256SUMS" | sort -u)"
[ -n "$listed" ] || fail "SHA256SUMS of $version does not list $asset"
[ "$(printf '%s\n' "$listed" | wc -l)" -eq 1 ] ||
  fail "SHA256SUMS of $version lists $asset with different checksums ($(echo $listed)); nothing was installed"
[[ "$listed" =~ ^[0-9a-f]{64}$ ]] ||
  fail "SHA256SUMS of $version gives '$listed' for $asset, which is not a sha256 (64 hex digits); nothing was installed"
expected="$listed"
actual="$(sha256sum "$tmp/$asset" | cut -d' ' -f1)"
[ "$expected" = "$actual" ] ||
  fail "checksum mismatch for $asset: SHA256SUMS says $expected, the download is $actual; nothing was installed"

member="imagepipe-${version}-linux-${arch}/imagepipe"
mkdir "$tmp/x"
tar -xzf "$tmp/$asset" -C "$tmp/x" --no-same-owner --no-same-permissions ||
  fail "$asset is not a readable gzip tar archive; nothing was installed"
# Only a regular file of the verified archive is installed: never what a
# symlink in it points at.
if [ -L "$tmp/x/${member%/*}" ] || [ -L "$tmp/x/$member" ] ||
  { [ -e "$tmp/x/$member" ] && [ ! -f "$tmp/x/$member" ]; }; then
  fail "$asset holds $member as a link or special file, not the binary; nothing was installed"
fi
[ -f "$tmp/x/$member" ] || fail "$asset has no $member; nothing was installed"
mkdir -p "$dir"
# Atomic: a concurrent job never runs a half-written binary.
install -m 0755 "$tmp/x/$member" "$dir/.imagepipe.$$"
mv -f "$dir/.imagepipe.$$" "$dir/imagepipe"
echo "imagepipe $version installed at $dir/imagepipe" >&2
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  { echo "version=$version"; echo "path=$dir/imagepipe"; } >>"$GITHUB_OUTPUT"
fi
