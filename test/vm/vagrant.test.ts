// The Vagrantfile for macOS/Windows users: `vagrant validate` accepts it (no provider is
// installed in CI, hence --ignore-provider), rejects a broken copy (so the check can fail), and
// the provisioning script it runs is the one whose package list builds the CI VM.
import { describe, expect, it, afterAll } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { requires } from '../helpers/requires.ts';
import { REPO_ROOT, tempDir } from '../helpers/server.ts';

const VALIDATE_TIMEOUT_MS = 120_000;

function validate(cwd: string, home: string): { status: number | null; out: string } {
  const r = spawnSync('vagrant', ['validate', '--ignore-provider'], {
    cwd, encoding: 'utf8', timeout: VALIDATE_TIMEOUT_MS,
    env: { ...process.env, VAGRANT_HOME: home, VAGRANT_CHECKPOINT_DISABLE: '1', VAGRANT_NO_COLOR: '1' },
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('Vagrantfile', () => {
  const home = tempDir('snapnbd-vagrant-home-');
  const scratch = tempDir('snapnbd-vagrant-bad-');
  afterAll(() => {
    rmSync(home, { recursive: true, force: true });
    rmSync(scratch, { recursive: true, force: true });
  });

  it('passes vagrant validate in the repo root', () => {
    requires('vagrant');
    const r = validate(REPO_ROOT, home);
    expect(r.out).toMatch(/validated successfully/);
    expect(r.status).toBe(0);
  }, VALIDATE_TIMEOUT_MS);

  it('a copy with an unknown setting fails vagrant validate', () => {
    requires('vagrant');
    const text = readFileSync(join(REPO_ROOT, 'Vagrantfile'), 'utf8');
    writeFileSync(join(scratch, 'Vagrantfile'), text.replace('config.vm.hostname =', 'config.vm.no_such_setting = 1\n  config.vm.hostname ='));
    mkdirSync(join(scratch, 'scripts'), { recursive: true });
    copyFileSync(join(REPO_ROOT, 'scripts', 'provision-linux-client.sh'), join(scratch, 'scripts', 'provision-linux-client.sh'));
    const r = validate(scratch, home);
    expect(r.status).not.toBe(0);
    expect(r.out).toMatch(/no_such_setting/);
  }, VALIDATE_TIMEOUT_MS);

  it('provisions a Debian 12 box with the script whose package list the CI VM image is built from', () => {
    const text = readFileSync(join(REPO_ROOT, 'Vagrantfile'), 'utf8');
    expect(text).toMatch(/config\.vm\.box = "debian\/bookworm64"/);
    expect(text).toMatch(/provision "shell", path: "scripts\/provision-linux-client\.sh"/);
    expect(text).toMatch(/forwarded_port", guest: 10809/);
    expect(text).toMatch(/forwarded_port", guest: 22/);
    const list = execFileSync('bash', [join(REPO_ROOT, 'scripts', 'provision-linux-client.sh'), '--list-packages'], { encoding: 'utf8' })
      .trim().split('\n');
    expect(list).toEqual(expect.arrayContaining(['nbd-client', 'linux-image-amd64', 'e2fsprogs', 'util-linux']));
    const build = readFileSync(join(REPO_ROOT, 'test', 'vm', 'build-image.sh'), 'utf8');
    expect(build).toMatch(/provision-linux-client\.sh"?\s*\n?.*--list-packages|"\$provision" --list-packages/);
  });
});
