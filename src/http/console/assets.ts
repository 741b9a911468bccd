// The console's static files (HTML, CSS, and the JavaScript tsc compiled from browser/), read
// once at start into memory: a fixed set of names, so no request path ever reaches the file
// system. `npm run build` puts them all in dist/http/console/static/; a server run from the
// TypeScript sources (tsx) serves that same built set.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { extname, join, resolve } from 'node:path';

/** The file whose presence marks a complete, built asset directory. */
export const ENTRY_SCRIPT = 'app.js';
export const INDEX = 'index.html';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

export interface Asset {
  type: string;
  body: Buffer;
}

/** Where the built assets are: beside this module (dist/), else the build output (sources). */
export function findAssetDir(here: string = import.meta.dirname): string {
  const candidates = [join(here, 'static'), resolve(here, '..', '..', '..', 'dist', 'http', 'console', 'static')];
  for (const dir of candidates) if (existsSync(join(dir, ENTRY_SCRIPT)) && existsSync(join(dir, INDEX))) return dir;
  throw new Error(`the console's files are not built (looked in ${candidates.join(' and ')}); run npm run build`);
}

/** URL path (`/app.js`, and `/` for the index) → asset. */
export function loadAssets(dir: string): Map<string, Asset> {
  const out = new Map<string, Asset>();
  for (const name of readdirSync(dir)) {
    const type = TYPES[extname(name)];
    if (type === undefined) continue; // source maps and anything else stay private
    const asset = { type, body: readFileSync(join(dir, name)) };
    out.set(`/${name}`, asset);
    if (name === INDEX) out.set('/', asset);
  }
  return out;
}
