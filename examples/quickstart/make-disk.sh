#!/bin/sh
# Writes an empty qcow2 disk of the given size into imagepipe's output directory.
set -eu
qemu-img create -q -f qcow2 "${IMAGEPIPE_OUTPUT_DIR}/disk.qcow2" "${1:-64M}"
