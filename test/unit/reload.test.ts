// SIGHUP's hooks and the settings file format: one failing hook neither stops the others nor
// changes its own setting; the file format is the /etc/default one.
import { afterEach, describe, expect, it } from 'vitest';
import { Reloader } from '../../src/cli/reload.ts';
import { parseSettings } from '../../src/cli/settings-file.ts';
import { logLevel, setLogFormat, setLogLevel, setLogSink, log } from '../../src/util/log.ts';

describe('settings file', () => {
  it('reads KEY=VALUE, quoted values, export, comments and blanks', () => {
    const s = parseSettings('# c\n\nA=1\nexport B="two words"\nC=\'x=y\'\n  D=\n', 'f');
    expect(s.get('A')).toBe('1');
    expect(s.get('B')).toBe('two words');
    expect(s.get('C')).toBe('x=y');
    expect(s.get('D')).toBe('');
  });
  it('names the file and line of anything else', () => {
    expect(() => parseSettings('A=1\nrm -rf /\n', '/etc/default/snapnbd')).toThrow('/etc/default/snapnbd:2: not KEY=VALUE');
  });
});

describe('Reloader', () => {
  const lines: string[] = [];
  const prev = setLogSink((l) => lines.push(l));
  afterEach(() => {
    setLogSink(prev);
    setLogFormat('text');
    setLogLevel('info');
  });

  it('runs every hook in order; a failure is reported and the others still run', async () => {
    setLogSink((l) => lines.push(l));
    const r = new Reloader();
    const ran: string[] = [];
    r.add({ name: 'a', reload: async () => { ran.push('a'); return 'x -> y'; } });
    r.add({ name: 'b', reload: async () => { ran.push('b'); throw new Error('bad file'); } });
    r.add({ name: 'c', reload: async () => { ran.push('c'); return null; } });
    expect(await r.reload()).toEqual([
      { name: 'a', changed: 'x -> y' }, { name: 'b', changed: null, error: 'bad file' }, { name: 'c', changed: null },
    ]);
    expect(ran).toEqual(['a', 'b', 'c']);
    expect(lines.join('')).toContain('reload: b: kept the current setting: bad file');
  });

  it('the JSON log format writes one object per line with fields and the error', () => {
    setLogSink((l) => lines.push(l));
    lines.length = 0;
    setLogFormat('json');
    setLogLevel('debug');
    expect(logLevel()).toBe('debug');
    log.warn('disk slow', new Error('EIO', { cause: new Error('sector 7') }), { volume: 'v', ms: 12 });
    log.debug('x\ny');
    expect(lines).toHaveLength(2);
    const o = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(o).toMatchObject({ level: 'warn', message: 'disk slow', fields: { volume: 'v', ms: 12 }, error: 'EIO', cause: 'sector 7' });
    expect(JSON.parse(lines[1]!)).toMatchObject({ level: 'debug', message: 'x\ny' });
  });
});
