// toNbdErrno: every failure of a request maps to the errno the client sees (spec "Error values",
// nbdkit's nbd_errno()). The precise cause stays in the log.
import { openSync, closeSync, writeSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CmdFlag, NbdErrno } from '../../src/protocol/constants.ts';
import { RequestError, toNbdErrno } from '../../src/protocol/errors.ts';
import { StorageError } from '../../src/storage/device.ts';

const DF = CmdFlag.DF;
const FZ = CmdFlag.FAST_ZERO;

describe('toNbdErrno', () => {
  it.each([
    // storage errno, command flags, NBD errno
    ['EROFS', 0, NbdErrno.EPERM],
    ['EPERM', 0, NbdErrno.EPERM],
    ['ENOSPC', 0, NbdErrno.ENOSPC],
    ['EDQUOT', 0, NbdErrno.ENOSPC],
    ['EFBIG', 0, NbdErrno.ENOSPC],
    ['ENOMEM', 0, NbdErrno.ENOMEM],
    ['EINVAL', 0, NbdErrno.EINVAL],
    ['ESHUTDOWN', 0, NbdErrno.ESHUTDOWN],
    ['EOVERFLOW', DF, NbdErrno.EOVERFLOW],
    ['EOVERFLOW', 0, NbdErrno.EINVAL], //           only a DF read may see EOVERFLOW
    ['EOVERFLOW', FZ, NbdErrno.EINVAL],
    ['ENOTSUP', FZ, NbdErrno.ENOTSUP],
    ['EOPNOTSUPP', FZ | CmdFlag.NO_HOLE, NbdErrno.ENOTSUP],
    ['ENOTSUP', 0, NbdErrno.EINVAL], //             only FAST_ZERO may see ENOTSUP
    ['ENOTSUP', DF, NbdErrno.EINVAL],
    ['EIO', 0, NbdErrno.EIO],
    ['EBADF', 0, NbdErrno.EIO], //                  unknown storage faults are EIO
    ['ENOENT', FZ | DF, NbdErrno.EIO],
    ['EWHATEVER', 0, NbdErrno.EIO],
  ])('StorageError(%s) flags %s -> %s', (code, flags, errno) => {
    expect(toNbdErrno(new StorageError(code, 'x'), flags)).toBe(errno);
  });

  it('a RequestError passes its errno through, whatever the flags', () => {
    for (const errno of Object.values(NbdErrno)) {
      expect(toNbdErrno(new RequestError(errno, 'x'), 0)).toBe(errno);
      expect(toNbdErrno(new RequestError(errno, 'x'), DF | FZ)).toBe(errno);
    }
  });

  it('non-errors and errors without a code are EIO', () => {
    for (const e of [new Error('plain'), 'a string', 42, null, undefined, {}, { code: 17 }]) expect(toNbdErrno(e, 0)).toBe(NbdErrno.EIO);
  });

  it('a code-only error object (Node style, no errno field) maps by its code', () => {
    expect(toNbdErrno(Object.assign(new Error('x'), { code: 'ENOSPC' }), 0)).toBe(NbdErrno.ENOSPC);
    expect(toNbdErrno(Object.assign(new Error('x'), { code: 'EROFS' }), 0)).toBe(NbdErrno.EPERM);
  });

  // Node's own fs errors carry a NUMERIC errno (-28) next to code 'ENOSPC'. A device that lets
  // one through unwrapped must still reach the client as ENOSPC, not EIO.
  it('a real ENOSPC from node:fs (writing /dev/full) maps to ENOSPC', () => {
    const fd = openSync('/dev/full', 'w');
    let err: unknown;
    try {
      writeSync(fd, Buffer.alloc(16));
    } catch (e) {
      err = e;
    } finally {
      closeSync(fd);
    }
    expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
    expect(typeof (err as NodeJS.ErrnoException).errno).toBe('number');
    expect(toNbdErrno(err, 0)).toBe(NbdErrno.ENOSPC);
  });

  it('a Node-style EPERM error (numeric errno, string code) maps to EPERM', () => {
    const e = Object.assign(new Error('EPERM: operation not permitted'), { errno: -1, code: 'EPERM', syscall: 'write' });
    expect(toNbdErrno(e, 0)).toBe(NbdErrno.EPERM);
  });
});
