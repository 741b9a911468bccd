#!/usr/bin/env bash
# Provisions a Debian 12 machine as a Linux NBD client of snapnbd (and able to run the server):
# the kernel's nbd driver loaded at boot, nbd-client, ext4 and util-linux tools, Node 20, and
# this project installed with its dependencies. The Vagrantfile runs it as root in the box.
#
# The Debian package list lives here and nowhere else: test/vm/build-image.sh builds the CI VM's
# initramfs from `provision-linux-client.sh --list-packages`, so the box and the VM cannot drift.
#
#   provision-linux-client.sh                   provision (root)
#   provision-linux-client.sh --list-packages   print the client's Debian packages, one a line
#   provision-linux-client.sh --project DIR     install the project from DIR (default: this repo)
set -euo pipefail

# What a Linux NBD client needs, by package. linux-image-amd64 ships nbd.ko (and ext4, virtio);
# nbd-client attaches /dev/nbdN; e2fsprogs makes and checks ext4; util-linux has fsfreeze and
# fstrim, which the snapshot and TRIM workflows use.
CLIENT_PACKAGES=(linux-image-amd64 nbd-client e2fsprogs util-linux)
# Only the box needs these: fetching and verifying Node, building the project.
BOX_PACKAGES=(ca-certificates curl xz-utils rsync)

NODE_MAJOR=20
NODE_DIST=https://nodejs.org/dist/latest-v${NODE_MAJOR}.x
NBD_MAX_DEVICES=16   # /dev/nbd0 … /dev/nbd15, the driver's own default, made explicit
PROJECT_HOME=/opt/snapnbd

project_src=$(cd "$(dirname "$0")/.." && pwd)

while [ $# -gt 0 ]; do
  case "$1" in
    --list-packages) printf '%s\n' "${CLIENT_PACKAGES[@]}"; exit 0 ;;
    --project) project_src=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "provision-linux-client.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "provision-linux-client.sh: run as root (it installs packages and loads a module)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# No recommends: keeps the box small and avoids pulling in a second kernel flavour.
apt-get install -y -qq --no-install-recommends "${CLIENT_PACKAGES[@]}" "${BOX_PACKAGES[@]}"

# The nbd driver: loaded now and at every boot, with a fixed number of devices.
echo "options nbd nbds_max=${NBD_MAX_DEVICES}" > /etc/modprobe.d/snapnbd-nbd.conf
echo nbd > /etc/modules-load.d/snapnbd-nbd.conf
if ! modprobe nbd; then
  # A kernel upgrade by the install above leaves the running kernel without its modules dir.
  echo "provision: 'modprobe nbd' failed on kernel $(uname -r); reboot the box (vagrant reload)" >&2
  exit 1
fi
[ -b /dev/nbd0 ] || { echo "provision: nbd loaded but /dev/nbd0 is missing" >&2; exit 1; }

# Node 20 from nodejs.org (Debian 12 ships Node 18), checked against the published SHA-256.
node_ok() { command -v node >/dev/null && node -e "process.exit(process.versions.node.split('.')[0]==='${NODE_MAJOR}'?0:1)"; }
if ! node_ok; then
  case "$(dpkg --print-architecture)" in
    amd64) node_arch=x64 ;;
    arm64) node_arch=arm64 ;;
    *) echo "provision: no Node ${NODE_MAJOR} build for $(dpkg --print-architecture)" >&2; exit 1 ;;
  esac
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  curl -fsSL "$NODE_DIST/SHASUMS256.txt" -o "$tmp/SHASUMS256.txt"
  tarball=$(awk -v a="linux-${node_arch}.tar.xz" '$2 ~ a"$" {print $2}' "$tmp/SHASUMS256.txt")
  [ -n "$tarball" ] || { echo "provision: no linux-${node_arch} tarball listed at $NODE_DIST" >&2; exit 1; }
  curl -fsSL "$NODE_DIST/$tarball" -o "$tmp/$tarball"
  (cd "$tmp" && grep " $tarball\$" SHASUMS256.txt | sha256sum -c --quiet -)
  tar -xJf "$tmp/$tarball" -C /usr/local --strip-components=1 --no-same-owner
  node_ok || { echo "provision: Node ${NODE_MAJOR} did not install" >&2; exit 1; }
fi

# The project: copied out of the synced folder (whose node_modules, if any, belong to the host's
# platform; tsx's esbuild binary is per platform), then its locked dependencies installed.
mkdir -p "$PROJECT_HOME"
rsync -a --delete --exclude .git/ --exclude node_modules/ --exclude /data/ --exclude test/vm/.cache/ \
  "$project_src/" "$PROJECT_HOME/"
(cd "$PROJECT_HOME" && npm ci --no-audit --no-fund --loglevel=error)
ln -sf "$PROJECT_HOME/bin/snapnbd" /usr/local/bin/snapnbd

echo "provision: nbd-client $(dpkg-query -W -f='${Version}' nbd-client), node $(node --version)," \
  "snapnbd in $PROJECT_HOME (run: snapnbd serve --listen 0.0.0.0:10809 --data-dir /var/lib/snapnbd)"
