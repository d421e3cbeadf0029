// Forwarding the trail to an external FHIR audit repository: in order, idempotent, nothing lost while it is down.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { startTestServer, type TestServer } from '../support/server.ts';
import { decodeJwt } from '../support/oauth.ts';

describe('audit forwarding', () => {
  let repository: Server;
  let url: string;
  let down = true;
  let attempts = 0;
  const received = new Map<string, { id: string }>();
  let server: TestServer;

  before(async () => {
    repository = createServer((req, res) => {
      attempts++;
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => {
        if (down) { res.statusCode = 503; res.end(); return; }
        const id = decodeURIComponent(String(req.url).split('/').pop() ?? '');
        const event = JSON.parse(body);
        assert.equal(req.method, 'PUT');
        assert.equal(event.id, id);
        res.statusCode = received.has(id) ? 200 : 201;
        received.set(id, event);
        res.end();
      });
    });
    await new Promise<void>((r) => repository.listen(0, '127.0.0.1', () => r()));
    url = `http://127.0.0.1:${(repository.address() as { port: number }).port}/fhir`;
    server = await startTestServer({ AUDIT_FORWARD_URL: url });
  });
  after(async () => {
    await server.stop();
    repository.close();
  });

  it('loses nothing while the repository is down, and sends everything once it is back', async () => {
    for (let i = 0; i < 5; i++) await fetch(`${server.fhirBase}/Patient/pat-1`);
    // Polled, not a fixed wait: on a slow machine the first attempt came after 1.2 s, and the repository then
    // stayed down for the tests after this one too.
    for (let i = 0; i < 300 && attempts === 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(attempts > 0, 'it tried');
    assert.equal(received.size, 0);
    down = false;
    const stored = (await server.audit.search({ limit: 10_000 })).map((e) => e.id);
    for (let i = 0; i < 300 && stored.some((id) => !received.has(id)); i++) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(stored.filter((id) => !received.has(id)), [], 'every stored AuditEvent reached the repository');
  });

  it('sends every signed head of the chain too, as a Binary holding its JWS', async () => {
    const res = await fetch(`${server.fhirBase}/Patient/pat-3`);
    await res.arrayBuffer();
    await server.audit.checkpoint();
    const { seq, jws } = await server.db('audit_checkpoints').orderBy('seq', 'desc').first('seq', 'jws');
    const id = `audit-head-${seq}`;
    for (let i = 0; i < 300 && !received.has(id); i++) await new Promise((r) => setTimeout(r, 100));
    const binary = received.get(id) as unknown as { resourceType: string; contentType: string; data: string };
    assert.ok(binary, `${id} reached the repository`);
    assert.equal(binary.resourceType, 'Binary');
    assert.equal(binary.contentType, 'application/jose');
    assert.equal(Buffer.from(binary.data, 'base64').toString(), jws);
  });

  it('keeps forwarding what comes later', async () => {
    const res = await fetch(`${server.fhirBase}/Patient/pat-2`, { headers: { 'x-request-id': 'forward-later' } });
    await res.arrayBuffer();
    for (let i = 0; i < 300 && ![...received.values()].some((e) => JSON.stringify(e).includes('forward-later')); i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok([...received.values()].some((e) => JSON.stringify(e).includes('forward-later')));
  });
});

describe('signed heads in the log', () => {
  it('writes an "audit checkpoint" line with the head signed at shutdown', async () => {
    const server = await startTestServer({ LOG_LEVEL: 'info' });
    await (await fetch(`${server.fhirBase}/Patient/pat-1`)).arrayBuffer();
    const head = await server.db('audit_chain_head').where('id', 1).first('seq', 'hash');
    const lines: string[] = [];
    const write = process.stdout.write;
    process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      lines.push(String(chunk));
      return (write as (...args: unknown[]) => boolean).call(process.stdout, chunk, ...rest);
    }) as typeof process.stdout.write;
    try {
      await server.stop();
    } finally {
      process.stdout.write = write;
    }
    const logged = lines.flatMap((l) => l.split('\n')).filter((l) => l.includes('"audit checkpoint"')).map((l) => JSON.parse(l));
    assert.equal(logged.length, 1, 'one head signed at shutdown');
    const [line] = logged;
    assert.deepEqual([line.level, line.seq, line.hash], ['info', Number(head.seq), head.hash]);
    const { payload } = decodeJwt(line.signature);
    assert.deepEqual([payload.seq, payload.hash], [Number(head.seq), head.hash]);
  });
});
