#!/usr/bin/env bash
# Builds the test VM (a Debian kernel and an initramfs) from Debian's packages only, and prints
# the directory holding `vmlinuz` and `initrd.gz`.
#
# The client packages come from scripts/provision-linux-client.sh --list-packages (the same list
# the Vagrant box installs), plus busybox-static for the shell. The result is cached under
# test/vm/.cache/<key>/, the key being a hash of the packages' versions, this script and the
# package list; a missing or partial cache entry is rebuilt. Runs as root (apt-get download; it
# installs cpio and kmod when missing).
#
#   test/vm/build-image.sh            build if needed; print the image directory on stdout
#   test/vm/build-image.sh --force    rebuild even when cached
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache_root="$here/.cache"
provision="$repo/scripts/provision-linux-client.sh"
force=0
[ "${1:-}" = "--force" ] && force=1

log() { echo "build-image: $*" >&2; }
die() { log "$*"; exit 1; }

# The modules the scenarios load; their dependencies are found with modinfo and loaded first.
# crc32c_generic is ext4's checksum (a soft dependency modinfo does not list).
WANTED_MODULES=(e1000 nbd crc32c_generic ext4 virtio_pci virtio_blk)
# Per client package, the files the image takes from it (paths inside the package).
declare -A PACKAGE_FILES=(
  [nbd-client]="sbin/nbd-client"
  [e2fsprogs]="sbin/mke2fs sbin/resize2fs etc/mke2fs.conf"
  [util-linux]="sbin/fsfreeze sbin/fstrim"
)
KERNEL_META=linux-image-amd64
EXTRA_PACKAGES=(busybox-static)

need_tool() { command -v "$1" >/dev/null 2>&1 || { log "installing $2"; apt-get install -y -qq --no-install-recommends "$2" >/dev/null; }; }
[ "$(id -u)" -eq 0 ] || die "run as root (apt-get download into the cache)"
need_tool cpio cpio
need_tool modinfo kmod
command -v apt-cache >/dev/null || die "needs apt (a Debian host)"

candidate() {  # the version apt would install, or nothing
  apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}' | grep -v '(none)' || true
}
# apt's lists may be missing on a fresh CI container.
[ -n "$(candidate busybox-static)" ] || { log "apt-get update"; apt-get update -qq; }

mapfile -t client_packages < <("$provision" --list-packages)
[ ${#client_packages[@]} -gt 0 ] || die "$provision --list-packages printed nothing"

packages=()
kernel_pkg=
for p in "${client_packages[@]}"; do
  if [ "$p" = "$KERNEL_META" ]; then
    # The metapackage's dependency is the versioned kernel (linux-image-6.1.0-NN-amd64).
    kernel_pkg=$(apt-cache depends "$KERNEL_META" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [ -n "$kernel_pkg" ] || die "cannot resolve $KERNEL_META to a kernel package"
    packages+=("$kernel_pkg")
  elif [ -n "${PACKAGE_FILES[$p]+x}" ]; then
    packages+=("$p")
  else
    die "client package '$p' (from $provision) has no files listed in build-image.sh PACKAGE_FILES"
  fi
done
[ -n "$kernel_pkg" ] || die "$provision lists no $KERNEL_META"
packages+=("${EXTRA_PACKAGES[@]}")

versions=""
for p in "${packages[@]}"; do
  v=$(candidate "$p")
  [ -n "$v" ] || die "no installable version of $p (apt-get update?)"
  versions+="$p=$v"$'\n'
done
key=$( { printf "%s" "$versions"; cat "$0" "$here/guest-init.sh"; } | sha256sum | cut -c1-16)
out="$cache_root/$key"
if [ $force -eq 0 ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.gz" ] && [ -f "$out/complete" ]; then
  echo "$out"
  exit 0
fi

log "building $out from: $(echo $versions)"
work=$(mktemp -d /tmp/snapnbd-vm-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 0777 "$work"   # apt-get download runs as _apt and writes here
mkdir -p "$work/debs" "$work/pkg" "$work/root"
chmod 0777 "$work/debs"
(cd "$work/debs" && apt-get download -qq "${packages[@]/%/}" 2>&1 | grep -v 'unsandboxed' >&2 || true)
for p in "${packages[@]}"; do
  deb=$(ls "$work/debs/${p}_"*.deb 2>/dev/null | head -1)
  [ -n "$deb" ] || die "apt-get download $p produced no .deb"
  mkdir -p "$work/pkg/$p"
  dpkg-deb -x "$deb" "$work/pkg/$p"
done

root=$work/root
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,mnt,lib/modules,root}
cp "$work/pkg/busybox-static/bin/busybox" "$root/bin/busybox"

# Client binaries and their files; shared libraries found with ldd, preferring the downloaded
# packages' own lib dirs, then the host's (a Debian 12 host: the same release's packages).
libpath=$(find "$work/pkg" -type d \( -path '*/lib/x86_64-linux-gnu' -o -path '*/usr/lib/x86_64-linux-gnu' \) | paste -sd: -)
for p in "${!PACKAGE_FILES[@]}"; do
  [ -d "$work/pkg/$p" ] || continue
  for f in ${PACKAGE_FILES[$p]}; do
    [ -e "$work/pkg/$p/$f" ] || die "$p has no $f"
    mkdir -p "$root/$(dirname "$f")"
    cp -L "$work/pkg/$p/$f" "$root/$f"
    if [[ $f == sbin/* ]]; then
      LD_LIBRARY_PATH=$libpath ldd "$root/$f" | grep -o '/[^ ]*' | while read -r lib; do
        [ -e "$root$lib" ] && continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
      done
    fi
  done
done
ln -s mke2fs "$root/sbin/mkfs.ext4"
# glibc finds libraries in /lib/x86_64-linux-gnu through ld.so.cache or these dirs.
mkdir -p "$root/lib64" "$root/etc"
printf '/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n' > "$root/etc/ld.so.conf"
ldconfig -r "$root" 2>/dev/null || true

# Kernel and modules: dependencies first (modinfo's `depends`), each module once.
kroot=$work/pkg/$kernel_pkg
kver=$(ls "$kroot/lib/modules")
cp "$kroot/boot/vmlinuz-$kver" "$work/vmlinuz"
declare -A loaded=()
order=()
add_module() {
  local m=$1 f dep
  [ -n "${loaded[$m]+x}" ] && return 0
  f=$(find "$kroot/lib/modules/$kver/kernel" \( -name "$m.ko" -o -name "${m//_/-}.ko" \) | head -1)
  [ -n "$f" ] || die "module $m not found in $kernel_pkg"
  for dep in $(modinfo -F depends "$f" | tr ',' ' '); do add_module "$dep"; done
  loaded[$m]=1
  cp "$f" "$root/lib/modules/$m.ko"
  order+=("$m")
}
for m in "${WANTED_MODULES[@]}"; do add_module "$m"; done
printf '%s\n' "${order[@]}" > "$root/etc/modules.order"

cp "$here/guest-init.sh" "$root/init"
chmod 0755 "$root/init"
printf '%s\n' "$versions" > "$root/etc/image-packages"

(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -6 > "$work/initrd.gz")
rm -rf "$out"
mkdir -p "$out"
cp "$work/vmlinuz" "$work/initrd.gz" "$out/"
printf '%s' "$versions" > "$out/packages"
printf '%s\n' "${order[@]}" > "$out/modules"
touch "$out/complete"
# Older builds (other package versions or scripts) are not used again.
find "$cache_root" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
log "done: $(du -sh "$out/initrd.gz" | cut -f1) initrd, kernel $kver, modules: ${order[*]}"
echo "$out"
