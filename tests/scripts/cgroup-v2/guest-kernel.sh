#!/bin/sh
# Prints `<kernel> <initramfs>`: the paths of the cgroup v2 guest's kernel and initramfs,
# building them first when they are missing.
#
# The kernel is Debian 12's `linux-image-amd64` (its current dependency, e.g.
# linux-image-6.1.0-57-amd64), fetched with `apt-get download` and unpacked with
# `dpkg -x`: nothing is installed on the host. The cache directory is named after the
# package and the version apt gives, so a new Debian kernel makes a new directory and an
# unchanged one is reused. The initramfs holds busybox and the modules the guest needs
# to reach its root (virtio-pci, 9p, overlay), in dependency order.
#
# Environment: TETHER_CGV2_CACHE (default /var/cache/tether/cgroup-v2).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${TETHER_CGV2_CACHE:-/var/cache/tether/cgroup-v2}
busybox=/bin/busybox

# The modules the initramfs loads, by name; their `depends=` are added before them.
# bridge and veth: the CNI bridge of the CRI test bed, which the kubelet node test runs in
# the guest (tests/scripts/kubelet/systemd-guest.sh): the guest has no /lib/modules.
MODULES="virtio_pci 9pnet_virtio 9p overlay bridge veth"

pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$pkg" ] || { echo "guest-kernel: apt-cache knows no linux-image-amd64 (apt-get update?)" >&2; exit 1; }
version=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')
[ -n "$version" ] && [ "$version" != "(none)" ] || { echo "guest-kernel: no candidate for $pkg" >&2; exit 1; }
dir=$cache_root/${pkg}_$version
# The initramfs is rebuilt when its /init or this script changes.
init_sum=$(cat "$here/initramfs-init.sh" "$0" | sha256sum | cut -c1-16)

if [ -f "$dir/vmlinuz" ] && [ -f "$dir/initrd-$init_sum.img" ]; then
  echo "$dir/vmlinuz $dir/initrd-$init_sum.img"
  exit 0
fi

mkdir -p "$cache_root"
# One builder at a time; a second caller waits and then finds the result.
exec 9>"$cache_root/.lock"
flock 9
if [ -f "$dir/vmlinuz" ] && [ -f "$dir/initrd-$init_sum.img" ]; then
  echo "$dir/vmlinuz $dir/initrd-$init_sum.img"
  exit 0
fi

[ -x "$busybox" ] || { echo "guest-kernel: $busybox missing (apt-get install busybox-static)" >&2; exit 1; }
work=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM HUP

echo "guest-kernel: fetching $pkg $version" >&2
(cd "$work" && apt-get download -q "$pkg=$version" >&2)
dpkg -x "$work"/"${pkg}"_*.deb "$work/x"
kver=${pkg#linux-image-}
moddir=$work/x/lib/modules/$kver

# Resolves a module name to its .ko and prints it after its dependencies (depth first).
seen=" "
resolve() {
  local ko deps d
  case "$seen" in *" $1 "*) return ;; esac
  seen="$seen$1 "
  ko=$(find "$moddir/kernel" -name "$1.ko" | head -n1)
  [ -n "$ko" ] || { echo "guest-kernel: module $1 not in $pkg" >&2; exit 1; }
  deps=$(tr '\0' '\n' <"$ko" | sed -n 's/^depends=//p' | tr ',' ' ')
  for d in $deps; do resolve "$d"; done
  echo "$ko"
}
order=$work/order
: >"$order"
for m in $MODULES; do resolve "$m" >>"$order"; done

root=$work/initramfs
mkdir -p "$root/bin" "$root/modules" "$root/dev" "$root/proc" "$root/sys" "$root/newroot"
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
i=0
while read -r ko; do
  i=$((i + 1))
  cp "$ko" "$root/modules/$(printf %02d "$i")-$(basename "$ko")"
done <"$order"
cp "$here/initramfs-init.sh" "$root/init"
chmod 0755 "$root/init"

mkdir -p "$dir"
rm -f "$dir"/initrd-*.img
(cd "$root" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1) >"$dir/initrd-$init_sum.img.tmp"
mv "$dir/initrd-$init_sum.img.tmp" "$dir/initrd-$init_sum.img"
cp "$work/x/boot/vmlinuz-$kver" "$dir/vmlinuz.tmp"
mv "$dir/vmlinuz.tmp" "$dir/vmlinuz"
echo "guest-kernel: cached in $dir" >&2
echo "$dir/vmlinuz $dir/initrd-$init_sum.img"
