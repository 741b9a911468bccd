// Real-peer tests name the tool they need (nbdkit's `requires`). The test command installs the
// tools first, so a missing one fails the test loudly, naming the Debian package; never a skip.
import { execFileSync } from 'node:child_process';

const PACKAGE_OF: Record<string, string> = {
  nbdinfo: 'libnbd-bin', nbdcopy: 'libnbd-bin', nbdfuse: 'libnbd-bin', nbdsh: 'python3-libnbd',
  nbdkit: 'nbdkit', 'qemu-img': 'qemu-utils', 'qemu-io': 'qemu-utils', 'qemu-nbd': 'qemu-utils',
  fio: 'fio', 'qemu-system-x86_64': 'qemu-system-x86', 'nbd-client': 'nbd-client',
  busybox: 'busybox-static', 'mkfs.ext4': 'e2fsprogs', losetup: 'mount', fusermount3: 'fuse3',
  cpio: 'cpio', vagrant: 'vagrant', modinfo: 'kmod', git: 'git', promtool: 'prometheus', prometheus: 'prometheus',
  'systemd-analyze': 'systemd',
  chromium: 'chromium',
  'ceph-mon': 'ceph-mon', 'ceph-osd': 'ceph-osd', radosgw: 'radosgw', 'radosgw-admin': 'radosgw',
  ceph: 'ceph-common', monmaptool: 'ceph-common', aws: 'awscli', restic: 'restic',
};

export function requires(...tools: string[]): void {
  for (const tool of tools) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      throw new Error(`required tool '${tool}' is missing: apt-get install ${PACKAGE_OF[tool] ?? tool} (npm test installs it when run as root)`);
    }
  }
}
