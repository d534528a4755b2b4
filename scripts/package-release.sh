#!/usr/bin/env bash
# Packages a built imagepipe binary as a release archive:
#   scripts/package-release.sh BINARY VERSION ARCH OUTDIR
# writes OUTDIR/imagepipe-VERSION-linux-ARCH.tar.gz holding `imagepipe`,
# shell completions and man pages. The archive is reproducible: sorted names,
# fixed owner and mode, mtime SOURCE_DATE_EPOCH (default 0), gzip without a
# timestamp. The release workflow then lists every archive in SHA256SUMS.
set -euo pipefail
binary="${1:?usage: package-release.sh BINARY VERSION ARCH OUTDIR}"
version="${2:?missing VERSION (e.g. v0.4.0)}"
arch="${3:?missing ARCH (amd64 or arm64)}"
outdir="${4:?missing OUTDIR}"
case "$arch" in amd64 | arm64) ;; *) echo "package-release.sh: ARCH is amd64 or arm64, not $arch" >&2; exit 2 ;; esac
name="imagepipe-${version}-linux-${arch}"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name/completions" "$stage/$name/man" "$outdir"
install -m 0755 "$binary" "$stage/$name/imagepipe"
# Completions and man pages come from the binary's own CLI definition; an
# arm64 binary cannot run on an amd64 packager, so a native one can be given.
gen="${IMAGEPIPE_NATIVE:-$binary}"
for shell in bash zsh fish; do
  "$gen" completions "$shell" >"$stage/$name/completions/imagepipe.$shell"
done
"$gen" man --dir "$stage/$name/man"
cp README.md "$stage/$name/" 2>/dev/null || true
tar --sort=name --mtime="@${SOURCE_DATE_EPOCH:-0}" --owner=0 --group=0 --numeric-owner \
  --mode='u+rwX,go+rX,go-w' -C "$stage" -cf - "$name" | gzip -n >"$outdir/$name.tar.gz"
echo "$outdir/$name.tar.gz"
