// Who may use the console API, decided from request headers alone (pure, no I/O):
//  - a loopback listener answers only to loopback Host names (any port: an ssh tunnel may
//    forward another), so a page that re-points its own DNS name at 127.0.0.1 (DNS rebinding)
//    is refused;
//  - a browser request from another origin is refused (Origin and Sec-Fetch-Site), whatever it
//    carries: the API never answers cross-site, and sends no CORS headers;
//  - every API request carries the token as `Authorization: Bearer TOKEN`. There are no cookies,
//    so no other site can ride an ambient credential.
import { tokenMatches } from './token.ts';

export interface Refusal {
  status: number;
  code: string;
  message: string;
}

export const RefusalCode = {
  BadHost: 'BAD_HOST',
  CrossOrigin: 'CROSS_ORIGIN',
  NoToken: 'NO_TOKEN',
  BadToken: 'BAD_TOKEN',
} as const;

export interface RequestFacts {
  host: string | undefined;
  origin: string | undefined;
  secFetchSite: string | undefined;
  /** The console's own scheme (https when it has a certificate); http when absent. */
  scheme?: 'http' | 'https';
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** `loopbackOnly`: the listener is on a loopback address (a wider one answers to any name). */
export function checkHost(facts: RequestFacts, loopbackOnly: boolean): Refusal | null {
  if (facts.host === undefined) return { status: 400, code: RefusalCode.BadHost, message: 'missing Host header' };
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::\d{1,5})?$/.exec(facts.host);
  if (!m) return { status: 400, code: RefusalCode.BadHost, message: `malformed Host '${facts.host}'` };
  if (loopbackOnly && !isLoopbackHost(m[1]!)) {
    return { status: 403, code: RefusalCode.BadHost, message: `Host '${facts.host}' is not this console's address` };
  }
  return null;
}

/** API requests only: the static shell may be reached by following a link from anywhere. */
export function checkSameOrigin(facts: RequestFacts): Refusal | null {
  if (facts.secFetchSite !== undefined && facts.secFetchSite !== 'same-origin' && facts.secFetchSite !== 'none') {
    return { status: 403, code: RefusalCode.CrossOrigin, message: `cross-origin request refused (Sec-Fetch-Site: ${facts.secFetchSite})` };
  }
  if (facts.origin !== undefined) {
    const expected = `${facts.scheme ?? 'http'}://${facts.host ?? ''}`.toLowerCase();
    if (facts.origin.toLowerCase() !== expected) {
      return { status: 403, code: RefusalCode.CrossOrigin, message: `cross-origin request refused (Origin: ${facts.origin})` };
    }
  }
  return null;
}

export function checkToken(authorization: string | undefined, token: string): Refusal | null {
  const m = authorization === undefined ? null : /^Bearer ([!-~]{1,256})$/.exec(authorization);
  if (!m) return { status: 401, code: RefusalCode.NoToken, message: 'the console token is required (Authorization: Bearer TOKEN)' };
  if (!tokenMatches(token, m[1]!)) return { status: 401, code: RefusalCode.BadToken, message: 'wrong console token' };
  return null;
}
