// The control layer's one mapping of a coded refusal to an RPC error, for each layer's coded
// error class, and the one guard of the methods over a service the server may not run.
import { describe, expect, it } from 'vitest';
import { BackupError, BackupErrorCode } from '../../src/backup/errors.ts';
import { StreamErrorCode, StreamFormatError } from '../../src/backup/stream-format.ts';
import { ImportError, ImportErrorCode } from '../../src/backup/stream-import.ts';
import { toRpcError } from '../../src/control/errors.ts';
import { callMethod } from '../../src/control/methods.ts';
import { ScheduleError, ScheduleErrorCode } from '../../src/schedule/scheduler.ts';
import { StoreError, StoreErrorCode } from '../../src/storage/types.ts';
import { CodedError } from '../../src/util/coded-error.ts';
import { VolumeRegistry } from '../../src/volumes/registry.ts';
import { FakeStore } from '../helpers/control-fake-store.ts';

describe('toRpcError', () => {
  const refusals: [string, CodedError<string>][] = [
    ['StoreError', new StoreError(StoreErrorCode.SnapshotBusy, 'snapshot vm1@a is exported')],
    ['BackupError', new BackupError(BackupErrorCode.TargetDenied, 'bucket b refused us')],
    ['StreamFormatError', new StreamFormatError(StreamErrorCode.Truncated, 'the stream ends early')],
    ['ImportError', new ImportError(ImportErrorCode.WrongBase, 'base is not the newest snapshot')],
    ['ScheduleError', new ScheduleError(ScheduleErrorCode.NotFound, "no schedule 's9'")],
  ];
  it.each(refusals)('passes a %s on as an application error with its code and message', (name, e) => {
    expect(e.name).toBe(name);
    expect(toRpcError(e).toObject()).toEqual({ code: -32000, message: e.message, data: { code: e.code } });
  });

  it('says only "internal error" for an error without a code', () => {
    expect(toRpcError(new TypeError('x is undefined')).toObject()).toEqual({ code: -32603, message: 'internal error (see the server log)', data: { code: 'INTERNAL' } });
  });
});

describe('methods over a service the server does not run', () => {
  const ctx = {
    registry: new VolumeRegistry(new FakeStore(), { defaultExport: 'vm1', readOnly: false }),
    serverInfo: () => ({ version: '0', listeners: [], startedAt: new Date() }),
  };
  const refusal = async (method: 'backup.targets' | 'job.list' | 'schedule.list'): Promise<unknown> =>
    callMethod(method, {}, ctx).then(() => 'answered', (e: unknown) => toRpcError(e).toObject().data.code);

  it('backup and job methods: UNKNOWN_TARGET (no backup targets)', async () => {
    expect(await refusal('backup.targets')).toBe('UNKNOWN_TARGET');
    expect(await refusal('job.list')).toBe('UNKNOWN_TARGET');
  });

  it('schedule methods: NOT_SUPPORTED (no scheduler)', async () => {
    expect(await refusal('schedule.list')).toBe('NOT_SUPPORTED');
  });
});
