#!/usr/bin/env bash
# System packages the local runtime, the image builders, the native helpers and the microVM guest need (Debian 12).
set -euo pipefail
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v gcc >/dev/null || need+=(gcc)
dpkg -s libc6-dev >/dev/null 2>&1 || need+=(libc6-dev)
command -v ip >/dev/null || need+=(iproute2)
command -v ps >/dev/null || need+=(procps)
# sandbox disks: an XFS store with reflink holding one ext4 image per sandbox, on loop devices
command -v mkfs.xfs >/dev/null || need+=(xfsprogs)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v losetup >/dev/null || need+=(mount)
command -v fsfreeze >/dev/null || need+=(util-linux)
# the egress tests make a throwaway CA for their fake internet
command -v openssl >/dev/null || need+=(openssl)
# the dashboard's browser tests drive Debian's own Chromium headless (puppeteer-core, no browser download)
command -v chromium >/dev/null || need+=(chromium)
# the PostgreSQL store's tests start private clusters of Debian's server (no service is used)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# the Kubernetes manifests' tests render them with kubectl kustomize (Debian's 1.20 when none is installed)
command -v kubectl >/dev/null || need+=(kubernetes-client)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || true
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# microVM guests (src/runtime/microvm/): QEMU's microvm machine, Debian's cloud kernel (extracted to a
# PVH vmlinux with lz4) and busybox-static (above) for the initramfs; qemu-utils for disk images.
# Without recommends: the kernel would pull in firmware, QEMU a desktop stack.
vm_need=()
command -v qemu-system-x86_64 >/dev/null || vm_need+=(qemu-system-x86)
command -v qemu-img >/dev/null || vm_need+=(qemu-utils)
command -v lz4 >/dev/null || vm_need+=(lz4)
ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || vm_need+=(linux-image-cloud-amd64)
if [ ${#vm_need[@]} -gt 0 ]; then
  echo "installing: ${vm_need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  [ ${#need[@]} -gt 0 ] || apt-get update -qq || true
  apt-get install -y -qq --no-install-recommends "${vm_need[@]}" >/dev/null
fi
echo "system dependencies ok: $(bwrap --version), $(chromium --version 2>/dev/null | head -1), PostgreSQL $(ls /usr/lib/postgresql | sort -V | tail -1), kubectl $(kubectl version --client 2>/dev/null | head -1 | grep -oE 'v[0-9.]+'), $(mmdebstrap --version 2>/dev/null | head -1), gcc $(gcc -dumpversion), $(qemu-system-x86_64 --version | head -1)"
