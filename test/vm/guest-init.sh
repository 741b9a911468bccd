#!/bin/busybox sh
# /init of the test VM's initramfs: mounts the pseudo filesystems, loads the modules in the
# order build-image.sh resolved, brings up the slirp network, and hands the serial console to
# a plain (non-interactive, no echo) shell that test/vm/guest.ts drives line by line.
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
for m in $(cat /etc/modules.order); do
  insmod "/lib/modules/$m.ko" || echo "init: insmod $m failed"
done
# slirp's fixed addresses: the guest is 10.0.2.15, the gateway 10.0.2.2; the NBD server is
# reached through guestfwd at 10.0.2.100 (restrict=on: nothing else is reachable).
ip link set lo up
if ip link set eth0 up 2>/dev/null; then
  ip addr add 10.0.2.15/24 dev eth0
  ip route add default via 10.0.2.2
fi
hostname snapnbd-vm
# The host reads the serial console: no echo of what it types, no \r added to output.
stty -F /dev/ttyS0 -echo -onlcr 2>/dev/null || stty -echo -onlcr < /dev/ttyS0
echo "@@SNAPNBD-VM-READY $(uname -r)@@"
# No controlling tty and no prompt; line by line. The shell is not PID 1 (whose exit panics the
# kernel): if it ever ends, a marker says so and a new one takes the console.
export PS1= PS2=
while :; do
  sh < /dev/ttyS0 > /dev/ttyS0 2>&1
  echo "@@SNAPNBD-VM-SHELL-EXIT $?@@" > /dev/ttyS0
  sleep 1
done
