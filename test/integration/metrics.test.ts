// Issue 16, metrics: `serve --metrics HOST:PORT` serves /metrics in the Prometheus text format.
// Real clients (qemu-io, our NBD test client, the control socket) do work; the scrape must count
// it exactly, pass `promtool check metrics` (Debian's prometheus package), and a real Prometheus
// server scraping the running snapnbd must answer a query for one of our series.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlClient } from '../../src/control/client.ts';
import { parseExposition, type ParsedFamily } from '../../src/http/prom-text.ts';
import { NbdTestClient } from '../helpers/control-nbd.ts';
import { requires } from '../helpers/requires.ts';
import { startServer, tempDir, type RunningServer } from '../helpers/server.ts';

const run = promisify(execFile);
const VOLUME_BYTES = 64 * 2 ** 20;
const MiB = 2 ** 20;
/** Prometheus' first scrape and query: generous for a loaded 2-core CI machine. */
const PROMETHEUS_WAIT_MS = 60_000;

async function scrape(port: number): Promise<{ status: number; type: string; text: string }> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`);
  return { status: r.status, type: r.headers.get('content-type') ?? '', text: await r.text() };
}

function value(families: Map<string, ParsedFamily>, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) return s.value;
    }
  }
  return undefined;
}

/** The TCP port the OS hands out next; the kernel may reuse it, but not within a test's time. */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('serve --metrics', () => {
  let server: RunningServer;
  let prometheus: ChildProcess | null = null;
  let prometheusDir: string | null = null;

  beforeAll(async () => {
    requires('qemu-io', 'promtool', 'prometheus');
    server = await startServer({ args: ['--volume', `v=${VOLUME_BYTES}`, '--metrics', '127.0.0.1:0'] });
    expect(server.metricsPort).toBeGreaterThan(0);
  });

  afterAll(async () => {
    if (prometheus && prometheus.exitCode === null) {
      prometheus.kill('SIGTERM');
      await once(prometheus, 'exit');
    }
    await server?.stop();
    if (prometheusDir) rmSync(prometheusDir, { recursive: true, force: true });
  });

  it('counts requests, bytes, errors, volumes, snapshots and commits exactly, and passes promtool', async () => {
    await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 1M', '-c', 'read -P 0x5a 0 1M', server.uri('v')]);
    // A write past the end: ENOSPC for that request, the session goes on.
    const c = await NbdTestClient.connect(server.port, 'v');
    await expect(c.write(VOLUME_BYTES, Buffer.alloc(4096))).rejects.toThrow();
    await c.write(0, Buffer.alloc(4096, 1));
    await c.disconnect();
    const ctl = await ControlClient.connect(server.controlPath);
    await ctl.call('snapshot.create', { volume: 'v', name: 's1' });
    ctl.close();

    const r = await scrape(server.metricsPort);
    expect(r.status).toBe(200);
    expect(r.type).toBe('text/plain; version=0.0.4; charset=utf-8');
    const m = parseExposition(r.text);
    const v = { export: 'v' };
    expect(value(m, 'snapnbd_export_bytes_total', { ...v, command: 'write' })).toBe(MiB + 4096);
    expect(value(m, 'snapnbd_export_bytes_total', { ...v, command: 'read' })).toBeGreaterThanOrEqual(MiB);
    expect(value(m, 'snapnbd_export_errors_total', { ...v, command: 'write', errno: 'ENOSPC' })).toBe(1);
    // Every write request is counted, the failed one too; the histogram saw each of them.
    const writes = value(m, 'snapnbd_export_requests_total', { ...v, command: 'write' })!;
    expect(writes).toBeGreaterThanOrEqual(3);
    expect(value(m, 'snapnbd_export_request_duration_seconds_count', { ...v, command: 'write' })).toBe(writes);
    expect(value(m, 'snapnbd_export_request_duration_seconds_bucket', { ...v, command: 'write', le: '+Inf' })).toBe(writes);
    expect(value(m, 'snapnbd_export_requests_in_flight', v)).toBe(0);
    expect(value(m, 'snapnbd_export_connections', v)).toBe(0);
    expect(value(m, 'snapnbd_connections_accepted_total')).toBeGreaterThanOrEqual(2);
    expect(value(m, 'snapnbd_volume_size_bytes', { volume: 'v' })).toBe(VOLUME_BYTES);
    expect(value(m, 'snapnbd_volume_snapshots', { volume: 'v' })).toBe(1);
    expect(value(m, 'snapnbd_volume_state', { volume: 'v', state: 'ready' })).toBe(1);
    expect(value(m, 'snapnbd_volume_referenced_bytes', { volume: 'v' })).toBeGreaterThanOrEqual(MiB);
    expect(value(m, 'snapnbd_store_snapshots')).toBe(1);
    expect(value(m, 'snapnbd_store_live_bytes')).toBeGreaterThanOrEqual(MiB);
    expect(value(m, 'snapnbd_store_filesystem_free_bytes')).toBeGreaterThan(0);
    // qemu-io flushes, the snapshot commits: both are store commits.
    expect(value(m, 'snapnbd_store_commits_total')).toBeGreaterThanOrEqual(2);
    expect(value(m, 'snapnbd_store_commit_duration_seconds_count')).toBe(value(m, 'snapnbd_store_commits_total'));
    expect(value(m, 'snapnbd_operation_duration_seconds_count', { operation: 'snapshot_create' })).toBe(1);
    expect(value(m, 'snapnbd_operation_failures_total', { operation: 'snapshot_create' })).toBe(0);
    expect(value(m, 'process_resident_memory_bytes')).toBeGreaterThan(10 * MiB);
    expect(value(m, 'snapnbd_build_info')).toBe(1);

    // promtool: valid exposition text and no naming-convention complaint.
    const check = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    check.stdout.on('data', (d: Buffer) => (out += d));
    check.stderr.on('data', (d: Buffer) => (out += d));
    check.stdin.end(r.text);
    const [code] = (await once(check, 'exit')) as [number];
    expect(out).toBe('');
    expect(code).toBe(0);
  });

  it('answers only GET and HEAD /metrics; garbage gets a 400 and the server keeps serving', async () => {
    const base = `http://127.0.0.1:${server.metricsPort}`;
    expect((await fetch(`${base}/`)).status).toBe(404);
    expect((await fetch(`${base}/metrics`, { method: 'POST', body: 'x' })).status).toBe(405);
    const head = await fetch(`${base}/metrics`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
    const sock = net.connect(server.metricsPort, '127.0.0.1');
    sock.end('\x16\x03\x01 not http at all\r\n\r\n');
    let answer = '';
    sock.setEncoding('utf8').on('data', (d: string) => (answer += d));
    await once(sock, 'close');
    expect(answer).toMatch(/^HTTP\/1\.1 400/);
    expect((await scrape(server.metricsPort)).status).toBe(200);
  });

  it('a real Prometheus server scrapes it and answers a query for one of our series', async () => {
    const dir = (prometheusDir = tempDir('snapnbd-prometheus-'));
    const port = await freePort();
    writeFileSync(join(dir, 'prometheus.yml'), [
      'global:', '  scrape_interval: 1s', '  scrape_timeout: 1s',
      'scrape_configs:', '  - job_name: snapnbd', '    static_configs:', `      - targets: ['127.0.0.1:${server.metricsPort}']`, '',
    ].join('\n'));
    let log = '';
    prometheus = spawn('prometheus', [
      `--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    prometheus.stderr!.on('data', (d: Buffer) => (log += d));
    const query = encodeURIComponent('snapnbd_volume_size_bytes{volume="v"}');
    const deadline = Date.now() + PROMETHEUS_WAIT_MS;
    let last = '';
    for (;;) {
      expect(prometheus.exitCode, `prometheus exited:\n${log}`).toBeNull();
      try {
        const r = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${query}`);
        last = await r.text();
        const body = JSON.parse(last) as { status: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
        if (body.status === 'success' && body.data.result.length > 0) {
          const [series] = body.data.result;
          expect(series!.metric).toMatchObject({ job: 'snapnbd', volume: 'v', instance: `127.0.0.1:${server.metricsPort}` });
          expect(Number(series!.value[1])).toBe(VOLUME_BYTES);
          break;
        }
      } catch (e) {
        if (e instanceof Error && e.name === 'AssertionError') throw e;
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`Prometheus never answered with our series; last answer: ${last}\n${log}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }, PROMETHEUS_WAIT_MS + 10_000);
});
