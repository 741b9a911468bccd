// Envelope and params validation: what is -32600, what is -32602, and what passes.
import { describe, expect, it } from 'vitest';
import { RpcCode, RpcError } from '../../src/control/errors.ts';
import { METHODS } from '../../src/control/methods.ts';
import { InvalidRequestError, parseRequest, validateParams } from '../../src/control/validate.ts';

function codeOf(fn: () => unknown): { code: number; data: string; message: string; id?: unknown } {
  try {
    fn();
  } catch (e) {
    if (e instanceof RpcError) {
      return { code: e.rpcCode, data: e.dataCode, message: e.message, ...(e instanceof InvalidRequestError ? { id: e.requestId } : {}) };
    }
    throw e;
  }
  throw new Error('did not throw');
}

describe('parseRequest', () => {
  it('accepts requests and notifications, named or absent params', () => {
    expect(parseRequest({ jsonrpc: '2.0', id: 7, method: 'volume.list' })).toEqual({ id: 7, method: 'volume.list', params: {}, positional: false });
    expect(parseRequest({ jsonrpc: '2.0', id: 'a', method: 'x', params: { v: 1 } })).toEqual({ id: 'a', method: 'x', params: { v: 1 }, positional: false });
    expect(parseRequest({ jsonrpc: '2.0', id: null, method: 'x' }).id).toBeNull();
    expect(parseRequest({ jsonrpc: '2.0', method: 'x' }).id).toBeUndefined();
    expect(parseRequest({ jsonrpc: '2.0', id: 1, method: 'x', params: [1] }).positional).toBe(true);
  });

  it.each([
    ['not an object', [1, 2], null],
    ['a string', 'hello', null],
    ['null', null, null],
    ['no jsonrpc', { id: 1, method: 'x' }, 1],
    ['jsonrpc 1.0', { jsonrpc: '1.0', id: 2, method: 'x' }, 2],
    ['method a number', { jsonrpc: '2.0', id: 3, method: 5 }, 3],
    ['id an object', { jsonrpc: '2.0', id: {}, method: 'x' }, null],
    ['params a string', { jsonrpc: '2.0', id: 4, method: 'x', params: 'p' }, 4],
    ['params null', { jsonrpc: '2.0', id: 5, method: 'x', params: null }, 5],
    ['unknown member', { jsonrpc: '2.0', id: 6, method: 'x', extra: 1 }, 6],
  ])('refuses %s with -32600, keeping a usable id', (_what, msg, id) => {
    const r = codeOf(() => parseRequest(msg));
    expect(r.code).toBe(RpcCode.InvalidRequest);
    expect(r.data).toBe('INVALID_REQUEST');
    expect(r.id).toBe(id);
  });
});

describe('validateParams', () => {
  const create = METHODS['volume.create'].params;

  it('returns exactly the params given, typed', () => {
    expect(validateParams('volume.create', create, { name: 'vm1', size: 1048576 })).toEqual({ name: 'vm1', size: 1048576 });
    expect(validateParams('volume.create', create, { name: 'vm1', size: 4096, chunkSize: 4096, backing: '/x' }))
      .toEqual({ name: 'vm1', size: 4096, chunkSize: 4096, backing: '/x' });
  });

  it.each([
    [{ name: 'vm1', size: 1, colour: 'red' }, 'colour', /unknown parameter "colour"/],
    [{ size: 1 }, 'name', /missing required parameter "name"/],
    [{ name: 5, size: 1 }, 'name', /"name" must be a string, not number/],
    [{ name: 'vm1', size: '1G' }, 'size', /"size" must be an integer, not string/],
    [{ name: 'vm1', size: 1.5 }, 'size', /"size" must be an integer, not non-integer number/],
    [{ name: 'vm1', size: 0 }, 'size', /"size" must be at least 1/],
    [{ name: 'vm1', size: 2 ** 60 }, 'size', /must be an integer/],
    [{ name: 'vm1', size: null }, 'size', /not null/],
  ])('refuses %j with -32602 naming the param', (params, param, msg) => {
    try {
      validateParams('volume.create', create, params as Record<string, unknown>);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(RpcError);
      const err = e as RpcError;
      expect(err.rpcCode).toBe(RpcCode.InvalidParams);
      expect(err.dataCode).toBe('INVALID_PARAMS');
      expect(err.extra).toEqual({ param });
      expect(err.message).toMatch(msg);
    }
  });

  it('checks booleans strictly and string lengths', () => {
    const del = METHODS['volume.delete'].params;
    expect(validateParams('volume.delete', del, { name: 'a', force: true })).toEqual({ name: 'a', force: true });
    expect(codeOf(() => validateParams('volume.delete', del, { name: 'a', force: 'yes' })).code).toBe(RpcCode.InvalidParams);
    expect(codeOf(() => validateParams('volume.delete', del, { name: 'a', force: 1 })).code).toBe(RpcCode.InvalidParams);
    const snap = METHODS['snapshot.create'].params;
    expect(codeOf(() => validateParams('snapshot.create', snap, { volume: 'a', description: 'x'.repeat(1025) })).message).toMatch(/longer than 1024/);
  });

  it('takes no params for server.info', () => {
    expect(validateParams('server.info', METHODS['server.info'].params, {})).toEqual({});
    expect(codeOf(() => validateParams('server.info', METHODS['server.info'].params, { verbose: true })).message).toMatch(/takes none/);
  });
});
