// A client that sends DISC and sees the connection close has let go of the export: a delete or a
// rollback sent right after must not meet VOLUME_BUSY (the soak did exactly this and stopped).
import { afterAll, describe, expect, it } from 'vitest';
import { ControlClient } from '../../src/control/client.ts';
import { NbdTestClient } from '../helpers/control-nbd.ts';
import { startServer, type RunningServer } from '../helpers/server.ts';

const ROUNDS = 40;
let server: RunningServer | null = null;
let ctl: ControlClient | null = null;
afterAll(async () => {
  await ctl?.close();
  await server?.stop();
});

describe('an export is free once the client has seen its DISC answered', () => {
  it(`disconnect, then at once delete (x${ROUNDS}) and roll back without force`, async () => {
    server = await startServer({ args: ['--volume', 'v=4M'] });
    ctl = await ControlClient.connect(server.controlPath);
    await ctl.call('snapshot.create', { volume: 'v', name: 's' });
    const busy: string[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      await ctl.call('volume.clone', { volume: 'v', snapshot: 's', name: `c${i}` });
      const c = await NbdTestClient.connect(server.port, `c${i}`);
      await c.write(0, Buffer.alloc(4096, i));
      await c.read(0, 4096);
      await c.disconnect();
      await ctl.call('volume.delete', { name: `c${i}` }).catch((e: Error) => busy.push(`delete c${i}: ${e.message}`));
      const h = await NbdTestClient.connect(server.port, 'v');
      await h.read(0, 4096);
      await h.disconnect();
      await ctl.call('snapshot.rollback', { volume: 'v', name: 's' }).catch((e: Error) => busy.push(`rollback ${i}: ${e.message}`));
    }
    expect(busy).toEqual([]);
  });
});
