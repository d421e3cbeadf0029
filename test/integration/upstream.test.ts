// httpUpstream against a small node:http server whose answers each test sets; rewriteLinks.
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { freePort } from '../support/server.ts';
import {
  httpUpstream,
  inProcessUpstream,
  rewriteLinks,
  rewriteUrl,
  UpstreamError,
  type Upstream,
} from '../../server/resource-server/upstream.ts';

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

describe('resource-server upstream', () => {
  describe('httpUpstream', () => {
    let server: Server;
    let base: string;
    let handler: (req: IncomingMessage, res: ServerResponse, body: string) => void;
    const seen: Seen[] = [];

    before(async () => {
      server = createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8');
          seen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
          handler(req, res, body);
        });
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`;
    });
    after(async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    });
    beforeEach(() => {
      seen.length = 0;
      handler = (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/fhir+json' });
        res.end('{"resourceType":"Patient","id":"pat-1"}');
      };
    });

    const upstream = (options: Partial<Parameters<typeof httpUpstream>[0]> = {}): Upstream => httpUpstream({ baseUrl: `${base}/`, ...options });
    const rejectsWith = (promise: Promise<unknown>, status: number, message?: RegExp) =>
      assert.rejects(promise, (e: unknown) => e instanceof UpstreamError && e.status === status && (!message || message.test(e.message)));

    it('forwards the method, path, query, body and only the FHIR headers: never Authorization', async () => {
      handler = (_req, res) => {
        res.writeHead(201, {
          'content-type': 'application/fhir+json', etag: 'W/"1"', location: `${base}/Observation/o1/_history/1`, 'last-modified': 'Wed, 01 Apr 2026 12:00:00 GMT',
        });
        res.end('{"resourceType":"Observation","id":"o1"}');
      };
      const res = await upstream().send({
        method: 'POST',
        path: 'Observation?_pretty=true',
        headers: {
          Authorization: 'Bearer client-token', Cookie: 'session=1', 'Content-Type': 'application/fhir+json', 'If-Match': 'W/"3"',
          'if-none-match': 'W/"2"', Prefer: 'return=representation', 'X-Request-Id': 'req-42', 'X-Forwarded-For': '10.0.0.1', Host: 'evil.example',
        },
        body: { resourceType: 'Observation', status: 'final' },
      });
      assert.equal(seen.length, 1);
      const [request] = seen;
      assert.equal(request.method, 'POST');
      assert.equal(request.url, '/fhir/Observation?_pretty=true');
      assert.deepEqual(JSON.parse(request.body), { resourceType: 'Observation', status: 'final' });
      assert.equal(request.headers.accept, 'application/fhir+json');
      assert.equal(request.headers['content-type'], 'application/fhir+json');
      assert.equal(request.headers['if-match'], 'W/"3"');
      assert.equal(request.headers['if-none-match'], 'W/"2"');
      assert.equal(request.headers.prefer, 'return=representation');
      assert.equal(request.headers['x-request-id'], 'req-42');
      for (const name of ['authorization', 'cookie', 'x-forwarded-for']) assert.equal(request.headers[name], undefined, name);
      assert.equal(request.headers.host, new URL(base).host);

      assert.equal(res.status, 201);
      assert.deepEqual(res.body, { resourceType: 'Observation', id: 'o1' });
      assert.equal(res.headers.get('etag'), 'W/"1"');
      assert.equal(res.headers.get('location'), `${base}/Observation/o1/_history/1`);
      assert.equal(res.headers.get('last-modified'), 'Wed, 01 Apr 2026 12:00:00 GMT');
    });

    it('sends a form for URLSearchParams, nothing for GET, and returns undefined for an empty body', async () => {
      handler = (_req, res) => { res.writeHead(204); res.end(); };
      const res = await upstream().send({ method: 'POST', path: '/Observation/_search', body: new URLSearchParams({ patient: 'pat-1' }) });
      assert.equal(seen[0].headers['content-type'], 'application/x-www-form-urlencoded');
      assert.equal(seen[0].body, 'patient=pat-1');
      assert.equal(res.status, 204);
      assert.equal(res.body, undefined);
      await upstream().send({ method: 'GET', path: 'metadata' });
      assert.equal(seen[1].url, '/fhir/metadata');
      assert.equal(seen[1].body, '');
      assert.equal(seen[1].headers['content-type'], undefined);
    });

    it('sends a JSON Patch as application/json-patch+json and a FHIRPath Patch (Parameters) as FHIR JSON, whatever the client said', async () => {
      const patch = [{ op: 'replace', path: '/status', value: 'amended' }];
      await upstream().send({ method: 'PATCH', path: 'Observation/obs-1', headers: { 'content-type': 'application/fhir+json' }, body: patch });
      await upstream().send({ method: 'PATCH', path: 'Observation/obs-1', headers: { 'content-type': 'application/json-patch+json' }, body: { resourceType: 'Parameters' } });
      assert.deepEqual(seen.map((s) => [s.headers['content-type'], s.body]), [
        ['application/json-patch+json', JSON.stringify(patch)],
        ['application/fhir+json', '{"resourceType":"Parameters"}'],
      ]);
    });

    it('passes FHIR error answers through as responses', async () => {
      handler = (_req, res) => {
        res.writeHead(404, { 'content-type': 'application/fhir+json' });
        res.end('{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found"}]}');
      };
      const res = await upstream().send({ method: 'GET', path: 'Patient/nope' });
      assert.equal(res.status, 404);
      assert.equal((res.body as { resourceType: string }).resourceType, 'OperationOutcome');
    });

    it('times out with 504, waiting for headers or for the body', async () => {
      handler = () => { /* never answers */ };
      await rejectsWith(upstream({ timeoutMs: 200 }).send({ method: 'GET', path: 'Patient' }), 504, /upstream timed out/);
      handler = (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/fhir+json' });
        res.write('{"resourceType":"Bundle",');
      };
      await rejectsWith(upstream({ timeoutMs: 300 }).send({ method: 'GET', path: 'Patient' }), 504);
    });

    it('refuses a response over the size limit with 502, declared or streamed', async () => {
      const big = JSON.stringify({ resourceType: 'Basic', text: 'x'.repeat(5000) });
      handler = (_req, res) => { res.writeHead(200, { 'content-type': 'application/fhir+json', 'content-length': Buffer.byteLength(big) }); res.end(big); };
      await rejectsWith(upstream({ maxBodyBytes: 1000 }).send({ method: 'GET', path: 'Basic/1' }), 502, /larger than 1000 bytes/);
      handler = (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/fhir+json' }); // chunked: no content-length
        for (let i = 0; i < 10; i++) res.write(big.slice(i * 500, (i + 1) * 500));
        res.end(big.slice(5000));
      };
      await rejectsWith(upstream({ maxBodyBytes: 1000 }).send({ method: 'GET', path: 'Basic/1' }), 502, /larger than/);
      const ok = await upstream({ maxBodyBytes: 10_000 }).send({ method: 'GET', path: 'Basic/1' });
      assert.equal((ok.body as { text: string }).text.length, 5000);
    });

    it('refuses a request body over the size limit with 413, without sending it', async () => {
      await rejectsWith(upstream({ maxBodyBytes: 100 }).send({ method: 'POST', path: 'Basic', body: { resourceType: 'Basic', text: 'x'.repeat(200) } }), 413);
      assert.equal(seen.length, 0);
    });

    it('maps a refused connection to 502, without its address or error code', async () => {
      const port = await freePort();
      await assert.rejects(httpUpstream({ baseUrl: `http://127.0.0.1:${port}/fhir` }).send({ method: 'GET', path: 'metadata' }),
        (e: unknown) => e instanceof UpstreamError && e.status === 502 && e.message === 'the FHIR server could not be reached' && /ECONNREFUSED/.test(String((e.cause as Error).message)));
    });

    it('sends a read again when a kept-alive connection was closed by the upstream as it was reused; a write is not repeated', async () => {
      const used = new WeakSet<object>();
      handler = (req, res) => {
        // The upstream drops a connection it has answered on before, as one with a short keep-alive would.
        if (used.has(req.socket)) return void req.socket.destroy();
        used.add(req.socket);
        res.writeHead(200, { 'content-type': 'application/fhir+json' });
        res.end('{"resourceType":"Patient","id":"pat-1"}');
      };
      const client = upstream();
      assert.equal((await client.send({ method: 'GET', path: 'Patient/pat-1' })).status, 200);
      assert.equal((await client.send({ method: 'GET', path: 'Patient/pat-1' })).status, 200);
      assert.equal(seen.length, 3, 'the second read went again, on a new connection');
      await rejectsWith(client.send({ method: 'POST', path: 'Patient', body: { resourceType: 'Patient' } }), 502);
      assert.equal(seen.length, 4, 'the write was sent once');
    });

    it('maps bodies that are not FHIR JSON, and redirects, to 502', async () => {
      handler = (_req, res) => { res.writeHead(500, { 'content-type': 'text/html' }); res.end('<html>Internal error</html>'); };
      await rejectsWith(upstream().send({ method: 'GET', path: 'Patient' }), 502, /not JSON/);
      handler = (_req, res) => { res.writeHead(200, { 'content-type': 'application/json' }); res.end('[1,2]'); };
      await rejectsWith(upstream().send({ method: 'GET', path: 'Patient' }), 502, /not a FHIR resource/);
      handler = (_req, res) => { res.writeHead(302, { location: 'http://elsewhere.example/' }); res.end(); };
      await rejectsWith(upstream().send({ method: 'GET', path: 'Patient' }), 502, /redirect/);
      assert.equal(seen.length, 3, 'the redirect was not followed');
    });

    it('refuses paths that leave the FHIR base', async () => {
      for (const path of ['../admin', 'Patient/../../admin', '%2e%2e/admin', '/..//admin']) {
        await assert.rejects(() => upstream().send({ method: 'GET', path }), RangeError, path);
      }
      assert.equal(seen.length, 0);
    });
  });

  describe('inProcessUpstream', () => {
    it('calls the handler, and turns its failures into UpstreamError 502', async () => {
      const ok = inProcessUpstream(async (request) => ({ status: 200, headers: new Headers({ etag: 'W/"1"' }), body: { resourceType: 'Basic', id: request.path } }));
      const res = await ok.send({ method: 'GET', path: 'Basic/x' });
      assert.deepEqual(res.body, { resourceType: 'Basic', id: 'Basic/x' });
      const failing = inProcessUpstream(async () => { throw new Error('database is down'); });
      await assert.rejects(failing.send({ method: 'GET', path: 'Basic/x' }), (e: unknown) => e instanceof UpstreamError && e.status === 502);
      const timing = inProcessUpstream(async () => { throw new UpstreamError(504, 'upstream timed out'); });
      await assert.rejects(timing.send({ method: 'GET', path: 'Basic/x' }), (e: unknown) => e instanceof UpstreamError && e.status === 504);
    });
  });

  describe('rewriteLinks / rewriteUrl', () => {
    const FROM = 'http://127.0.0.1:8090/fhir';
    const TO = 'https://smart.example/fhir';

    it('rewrites Bundle links, fullUrls and response locations, nested Bundles too, without changing the input', () => {
      const bundle = {
        resourceType: 'Bundle', type: 'batch-response',
        link: [{ relation: 'self', url: `${FROM}/Observation?patient=pat-1` }, { relation: 'next', url: `${FROM}?_getpages=x` }],
        entry: [
          { fullUrl: `${FROM}/Patient/pat-1`, resource: { resourceType: 'Patient', id: 'pat-1', link: [{ other: { reference: `${FROM}/Patient/pat-2` } }] }, response: { status: '200 OK' } },
          { response: { status: '201 Created', location: `${FROM}/Basic/b/_history/1` } },
          { resource: { resourceType: 'Bundle', type: 'searchset', link: [{ relation: 'self', url: `${FROM}/Encounter` }], entry: [{ fullUrl: `${FROM}/Encounter/e` }] } },
          { fullUrl: 'urn:uuid:0c1c3ad3-3c1f-4b0c-9c5e-0d6b1ab4a6a1' },
          { fullUrl: `${FROM}2/Patient/x` },
          { fullUrl: 'https://other.example/fhir/Patient/y' },
        ],
      };
      const before = structuredClone(bundle);
      const out = rewriteLinks(bundle, `${FROM}/`, TO) as any;
      assert.deepEqual(bundle, before, 'input unchanged');
      assert.deepEqual(out.link.map((l: any) => l.url), [`${TO}/Observation?patient=pat-1`, `${TO}?_getpages=x`]);
      assert.deepEqual(out.entry.map((e: any) => e.fullUrl), [
        `${TO}/Patient/pat-1`, undefined, undefined, 'urn:uuid:0c1c3ad3-3c1f-4b0c-9c5e-0d6b1ab4a6a1', `${FROM}2/Patient/x`, 'https://other.example/fhir/Patient/y',
      ]);
      assert.equal(out.entry[0].resource.link[0].other.reference, `${FROM}/Patient/pat-2`, 'resource content is not touched');
      assert.equal(out.entry[1].response.location, `${TO}/Basic/b/_history/1`);
      assert.equal(out.entry[2].resource.link[0].url, `${TO}/Encounter`);
      assert.equal(out.entry[2].resource.entry[0].fullUrl, `${TO}/Encounter/e`);
      assert.equal('fullUrl' in out.entry[1], false, 'no key added');
    });

    it('rewrites the CapabilityStatement implementation URL and leaves other bodies as they are', () => {
      const cs = rewriteLinks({ resourceType: 'CapabilityStatement', implementation: { description: 'x', url: FROM } }, FROM, TO) as any;
      assert.equal(cs.implementation.url, TO);
      const patient = { resourceType: 'Patient', id: 'p' };
      assert.equal(rewriteLinks(patient, FROM, TO), patient);
      assert.equal(rewriteLinks(undefined, FROM, TO), undefined);
      assert.equal(rewriteLinks('text', FROM, TO), 'text');
    });

    it('rewriteUrl rewrites a Location header on the upstream base only', () => {
      assert.equal(rewriteUrl(`${FROM}/Observation/o1/_history/1`, FROM, `${TO}/`), `${TO}/Observation/o1/_history/1`);
      assert.equal(rewriteUrl(FROM, FROM, TO), TO);
      assert.equal(rewriteUrl(`${FROM}x/Observation/o1`, FROM, TO), `${FROM}x/Observation/o1`);
      assert.equal(rewriteUrl('Observation/o1', FROM, TO), 'Observation/o1');
    });
  });
});
