// Graceful shutdown as a load balancer sees it: clients that keep their connections open (keep-alive).
import assert from 'node:assert/strict';
import { Agent, request } from 'node:http';
import { startTestServer } from '../support/server.ts';
import { backendClient } from '../support/backend.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function get(url: string, agent: Agent, token: string): Promise<{ status: number; connection?: string }> {
  return new Promise((resolve, reject) => {
    request(url, { agent, headers: { authorization: `Bearer ${token}` } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, connection: res.headers.connection }));
    }).on('error', reject).end();
  });
}

describe('graceful shutdown', () => {
  // Before: requests kept arriving on the open connections were served one after another, so SIGTERM under a
  // steady keep-alive load never finished (the instance stopped only once its clients went quiet).
  it('stops while keep-alive clients keep sending: each request it took is answered, then the connection closes', async () => {
    const server = await startTestServer();
    const backend = await backendClient(server, 'system/Patient.rs');
    const token = (await backend.token('system/Patient.rs')).body.access_token as string;
    const agent = new Agent({ keepAlive: true, maxSockets: 4 });
    const answered: { status: number; connection?: string }[] = [];
    let sending = true;
    let refused = 0;
    const clients = Array.from({ length: 4 }, async () => {
      while (sending) {
        try {
          answered.push(await get(`${server.url}/fhir/Patient/pat-1`, agent, token));
        } catch {
          refused++;
          await sleep(20);
        }
      }
    });
    await sleep(500);
    const before = answered.length;
    const stopped = server.stop().then(() => 'stopped');
    const outcome = await Promise.race([stopped, sleep(5000).then(() => 'still serving')]);
    sending = false;
    await Promise.all(clients);
    await stopped;
    agent.destroy();
    assert.equal(outcome, 'stopped', `served ${answered.length - before} requests after close began`);
    assert.ok(answered.length > before, 'the requests in flight were answered');
    assert.ok(answered.every((a) => a.status === 200), 'no request it took was refused');
    assert.ok(answered.slice(before).some((a) => a.connection === 'close'), 'the open connections were told to close');
    assert.ok(refused > 0, 'new connections were refused');
  });
});
