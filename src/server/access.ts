// Per-export access rules (`serve --access FILE`, schema and examples in protocol/access.md): which
// client may see which export, read-write or read-only. An export no rule grants is invisible to
// that client: LIST leaves it out and INFO/GO/EXPORT_NAME answer as for an unknown export.
import { BlockList, isIP } from 'node:net';
import { readFileSync } from 'node:fs';
import { ReadOnlyDevice } from '../volumes/read-only-device.ts';
import type { BlockDevice } from '../storage/device.ts';
import type { ExportDescription, ExportLease, ExportResolver, ResolvedExport } from './exports.ts';

export const Grant = { None: 'none', ReadOnly: 'ro', ReadWrite: 'rw' } as const;
export type Grant = (typeof Grant)[keyof typeof Grant];

/** Rules in one file; more is a mistake, not a policy. */
export const MAX_RULES = 10_000;

/** Who a connection is: its address and, after TLS, its certificate names or PSK identity. */
export interface ClientIdentity {
  address: string;
  names: string[];
}

interface Rule {
  clients: ClientMatcher[];
  exports: RegExp[];
  grant: typeof Grant.ReadOnly | typeof Grant.ReadWrite;
}

type ClientMatcher = { kind: 'any' } | { kind: 'name'; name: string } | { kind: 'net'; list: BlockList };

export class AccessConfigError extends Error {}

export class AccessRules {
  private readonly rules: Rule[];

  private constructor(rules: Rule[]) {
    this.rules = rules;
  }

  static load(path: string): AccessRules {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      throw new AccessConfigError(`--access ${path}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new AccessConfigError(`--access ${path}: not JSON: ${(e as Error).message}`);
    }
    return AccessRules.parse(json, path);
  }

  static parse(json: unknown, where = 'access rules'): AccessRules {
    const bad = (msg: string): AccessConfigError => new AccessConfigError(`${where}: ${msg}`);
    if (typeof json !== 'object' || json === null || !Array.isArray((json as { rules?: unknown }).rules)) {
      throw bad('expected {"rules": [...]}');
    }
    const raw = (json as { rules: unknown[] }).rules;
    if (raw.length > MAX_RULES) throw bad(`more than ${MAX_RULES} rules`);
    return new AccessRules(raw.map((r, i) => {
      const at = `rule ${i + 1}`;
      if (typeof r !== 'object' || r === null) throw bad(`${at}: not an object`);
      const { clients, exports, access, ...rest } = r as Record<string, unknown>;
      const extra = Object.keys(rest);
      if (extra.length > 0) throw bad(`${at}: unknown field '${extra[0]}'`);
      if (!isStringList(clients)) throw bad(`${at}: "clients" must be a non-empty list of strings`);
      if (!isStringList(exports)) throw bad(`${at}: "exports" must be a non-empty list of strings`);
      if (access !== Grant.ReadOnly && access !== Grant.ReadWrite) throw bad(`${at}: "access" must be "rw" or "ro"`);
      return { clients: clients.map((c) => clientMatcher(c, () => bad(`${at}: client '${c}' is not a name, an address or a CIDR`))), exports: exports.map(exportPattern), grant: access };
    }));
  }

  /** The first rule naming both the client and the export decides; none: no access. */
  grant(client: ClientIdentity, exportName: string): Grant {
    for (const r of this.rules) {
      if (r.clients.some((c) => clientMatches(c, client)) && r.exports.some((p) => p.test(exportName))) return r.grant;
    }
    return Grant.None;
  }
}

function isStringList(v: unknown): v is string[] {
  return Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string' && x.length > 0);
}

function clientMatcher(s: string, bad: () => Error): ClientMatcher {
  if (s === '*') return { kind: 'any' };
  const cidr = /^([0-9a-fA-F:.]+)\/(\d{1,3})$/.exec(s);
  const addr = cidr ? cidr[1]! : s;
  const family = isIP(addr);
  if (family === 0) {
    if (cidr) throw bad();
    return { kind: 'name', name: s };
  }
  const prefix = cidr ? Number(cidr[2]) : family === 4 ? 32 : 128;
  if (prefix > (family === 4 ? 32 : 128)) throw bad();
  const list = new BlockList();
  list.addSubnet(addr, prefix, family === 4 ? 'ipv4' : 'ipv6');
  return { kind: 'net', list };
}

function clientMatches(m: ClientMatcher, c: ClientIdentity): boolean {
  switch (m.kind) {
    case 'any':
      return true;
    case 'name':
      return c.names.includes(m.name);
    case 'net': {
      const a = normalizeAddress(c.address);
      const family = isIP(a);
      return family !== 0 && m.list.check(a, family === 4 ? 'ipv4' : 'ipv6');
    }
  }
}

/** `::ffff:10.1.2.3` (an IPv4 client on a dual-stack socket) is 10.1.2.3. */
export function normalizeAddress(a: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  return m ? m[1]! : a;
}

/** `*` alone: every export; elsewhere `*` matches any run of characters except '@'. */
export function exportPattern(p: string): RegExp {
  if (p === '*') return /^.*$/s;
  const body = p.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^@]*');
  return new RegExp(`^${body}$`);
}

/** The exports one client may reach: the server's resolver seen through the rules. */
export class AccessView implements ExportResolver {
  private readonly inner: ExportResolver;
  private readonly grantOf: (name: string) => Grant;

  constructor(inner: ExportResolver, grantOf: (name: string) => Grant) {
    this.inner = inner;
    this.grantOf = grantOf;
  }

  list(): ExportDescription[] {
    return this.inner.list().filter((e) => this.grantOf(e.name) !== Grant.None);
  }

  lookup(name: string): ResolvedExport | undefined {
    const r = this.inner.lookup(name);
    if (!r) return undefined;
    const g = this.grantOf(r.name);
    if (g === Grant.None) return undefined;
    return g === Grant.ReadOnly ? { ...r, device: readOnly(r.device) } : r;
  }

  /** Why an export this client may see cannot be served; nothing for one it may not (names do not leak). */
  unavailable(name: string): string | undefined {
    if (this.grantOf(name) === Grant.None) return undefined;
    return this.inner.unavailable?.(name);
  }

  acquire(name: string, onRevoke: (reason: string) => void): ExportLease | undefined {
    const r = this.inner.lookup(name);
    if (!r) return undefined;
    const g = this.grantOf(r.name);
    if (g === Grant.None) return undefined;
    const lease = this.inner.acquire(name, onRevoke);
    if (!lease || g === Grant.ReadWrite) return lease;
    return { ...lease, device: readOnly(lease.device), release: () => lease.release() };
  }
}

function readOnly(d: BlockDevice): BlockDevice {
  return d.readOnly ? d : new ReadOnlyDevice(d);
}
