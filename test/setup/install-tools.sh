#!/usr/bin/env bash
# Installs the Debian packages the tests drive (real NBD peers, qemu, VM image parts) when any of
# their commands is missing. Needs root (apt-get); otherwise fails naming what is missing.
set -euo pipefail

# command -> Debian package
declare -A NEED=(
  [nbdinfo]=libnbd-bin [nbdcopy]=libnbd-bin [nbdfuse]=libnbd-bin [nbdsh]=python3-libnbd
  [nbdkit]=nbdkit [qemu-img]=qemu-utils [qemu-io]=qemu-utils [qemu-nbd]=qemu-utils
  [fio]=fio [qemu-system-x86_64]=qemu-system-x86 [nbd-client]=nbd-client
  [busybox]=busybox-static [mkfs.ext4]=e2fsprogs [losetup]=mount [fusermount3]=fuse3
  [cpio]=cpio [vagrant]=vagrant [modinfo]=kmod [git]=git [promtool]=prometheus [prometheus]=prometheus
  [systemd-analyze]=systemd [openssl]=openssl
  [chromium]=chromium
  [ceph-mon]=ceph-mon [ceph-mgr]=ceph-mgr [ceph-osd]=ceph-osd [radosgw]=radosgw [radosgw-admin]=radosgw
  [ceph]=ceph-common [monmaptool]=ceph-common [aws]=awscli [restic]=restic
)
# Packages installed without recommends (vagrant's pull in a kernel and an initramfs rebuild).
missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
# nbdsh's transcripts import libnbd's Python module into Debian's own python3.
/usr/bin/python3 -c 'import nbd' >/dev/null 2>&1 || missing+=(python3-libnbd)
# nbdkit's filters and plugins ship in the nbdkit package itself on Debian 12.
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
  echo "test tools missing; install as root: apt-get install ${pkgs[*]}" >&2
  exit 1
fi
echo "installing test tools: ${pkgs[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "still missing after install: $cmd (${NEED[$cmd]})" >&2; exit 1; }
done
/usr/bin/python3 -c 'import nbd' || { echo "still missing after install: python3 module nbd (python3-libnbd)" >&2; exit 1; }
