#!/bin/sh
# Writes imagepipe's job image rootfs into $IMAGEPIPE_OUTPUT_DIR/rootfs.tar:
# Debian bookworm (minbase) with qemu-utils, QEMU and genisoimage (for
# `imagepipe verify`), git and CA certificates, plus the
# imagepipe binary given as $1 in /usr/local/bin. Needs root (or fakeroot).
set -eu
binary="${1:?usage: build-rootfs.sh PATH-TO-IMAGEPIPE-BINARY}"
if [ ! -x "$binary" ]; then
  echo "build-rootfs.sh: $binary is not an executable imagepipe binary; copy the release build there first" >&2
  exit 1
fi
binary="$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")"
mmdebstrap --mode=root --variant=minbase \
  --include=ca-certificates,git,qemu-utils,qemu-system-x86,genisoimage,openssh-client \
  --customize-hook="copy-in $binary /usr/local/bin" \
  --customize-hook='chmod 0755 "$1/usr/local/bin/imagepipe"' \
  bookworm "$IMAGEPIPE_OUTPUT_DIR/rootfs.tar" "${IMAGEPIPE_VAR_DEBIAN_MIRROR:?}"
