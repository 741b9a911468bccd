// Strict validation of JSON-RPC envelopes and named params. Unknown params, missing required
// ones and wrong types are -32602 (a misbehaving client, not a refused operation); names that
// are strings but not valid names are checked later, as INVALID_NAME application errors.
import { RpcCode, RpcError, ControlErrorCode, invalidParams } from './errors.ts';

export type RpcId = string | number | null;

export interface RpcRequest {
  /** undefined: a notification (no response). */
  id: RpcId | undefined;
  method: string;
  params: Record<string, unknown>;
  /** params came as an array: refused with -32602, since every method takes named params. */
  positional: boolean;
}

export type ParamType = 'string' | 'boolean' | 'integer';

export interface ParamSpec {
  type: ParamType;
  required: boolean;
  /** integer: smallest allowed value. */
  min?: number;
  /** integer: largest allowed value. */
  max?: number;
  /** string: most characters. */
  maxLength?: number;
}

export type ParamsSchema = Record<string, ParamSpec>;

type ValueOf<S extends ParamSpec> = S['type'] extends 'boolean' ? boolean : S['type'] extends 'integer' ? number : string;

/** The validated params object: required keys present, optional keys present only when given. */
export type Params<S extends ParamsSchema> =
  { [K in keyof S as S[K]['required'] extends true ? K : never]: ValueOf<S[K]> } &
  { [K in keyof S as S[K]['required'] extends true ? never : K]?: ValueOf<S[K]> };

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number' && !Number.isInteger(v)) return 'non-integer number';
  return typeof v;
}

/** Checks one request object (an element of a batch, or the whole line). */
export function parseRequest(msg: unknown): RpcRequest {
  if (!isPlainObject(msg)) throw invalidRequest('a request must be a JSON object');
  const idPresent = Object.hasOwn(msg, 'id');
  const id = msg.id;
  if (idPresent && !(typeof id === 'string' || typeof id === 'number' || id === null)) {
    throw invalidRequest('"id" must be a string, a number or null');
  }
  if (msg.jsonrpc !== '2.0') throw invalidRequest('"jsonrpc" must be "2.0"', idPresent ? (id as RpcId) : null);
  if (typeof msg.method !== 'string') throw invalidRequest('"method" must be a string', idPresent ? (id as RpcId) : null);
  for (const key of Object.keys(msg)) {
    if (key !== 'jsonrpc' && key !== 'id' && key !== 'method' && key !== 'params') {
      throw invalidRequest(`unknown member "${key}" in request`, idPresent ? (id as RpcId) : null);
    }
  }
  let params: Record<string, unknown> = {};
  let positional = false;
  if (Object.hasOwn(msg, 'params')) {
    // An array is a valid envelope per JSON-RPC (positional params); the method refuses it.
    if (Array.isArray(msg.params)) positional = true;
    else if (!isPlainObject(msg.params)) throw invalidRequest('"params" must be an object', idPresent ? (id as RpcId) : null);
    else params = msg.params;
  }
  return { id: idPresent ? (id as RpcId) : undefined, method: msg.method, params, positional };
}

/** An Invalid Request error that still knows the request's id when it had a usable one. */
export class InvalidRequestError extends RpcError {
  readonly requestId: RpcId;
  constructor(message: string, id: RpcId) {
    super(RpcCode.InvalidRequest, ControlErrorCode.InvalidRequest, message);
    this.requestId = id;
  }
}

function invalidRequest(message: string, id: RpcId = null): InvalidRequestError {
  return new InvalidRequestError(message, id);
}

export function validateParams<S extends ParamsSchema>(method: string, schema: S, params: Record<string, unknown>): Params<S> {
  for (const key of Object.keys(params)) {
    if (!Object.hasOwn(schema, key)) {
      const known = Object.keys(schema);
      throw invalidParams(`${method}: unknown parameter "${key}"${known.length ? ` (takes ${known.join(', ')})` : ' (takes none)'}`, key);
    }
  }
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(schema)) {
    const present = Object.hasOwn(params, key) && params[key] !== undefined;
    if (!present) {
      if (spec.required) throw invalidParams(`${method}: missing required parameter "${key}" (${spec.type})`, key);
      continue;
    }
    const v = params[key];
    switch (spec.type) {
      case 'string':
        if (typeof v !== 'string') throw invalidParams(`${method}: "${key}" must be a string, not ${typeName(v)}`, key);
        if (spec.maxLength !== undefined && v.length > spec.maxLength) {
          throw invalidParams(`${method}: "${key}" is longer than ${spec.maxLength} characters`, key);
        }
        break;
      case 'boolean':
        if (typeof v !== 'boolean') throw invalidParams(`${method}: "${key}" must be a boolean, not ${typeName(v)}`, key);
        break;
      case 'integer':
        if (typeof v !== 'number' || !Number.isSafeInteger(v)) {
          throw invalidParams(`${method}: "${key}" must be an integer, not ${typeName(v)}`, key);
        }
        if (spec.min !== undefined && v < spec.min) throw invalidParams(`${method}: "${key}" must be at least ${spec.min}`, key);
        if (spec.max !== undefined && v > spec.max) throw invalidParams(`${method}: "${key}" must be at most ${spec.max}`, key);
        break;
    }
    out[key] = v;
  }
  return out as Params<S>;
}
