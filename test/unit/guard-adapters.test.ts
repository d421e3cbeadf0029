// The guard's adapters take a request body the same way: Koa (the bundled /fhir, the guard proxy) and
// node:http (the package's nodeGuard, Express too). A body the guard cannot take is refused with the same
// status by both, and the refusal is audited with the token that sent it.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import express from 'express';
import { nodeGuard, smartGuard, type AccessRecord, type GuardOptions } from '../../server/resource-server/index.ts';
import { inProcessUpstream } from '../../server/resource-server/upstream.ts';
import { tokenContext } from '../../server/resource-server/verify-token.ts';

const BASE = 'http://fhir.example.org/fhir';

function options(records: AccessRecord[]): GuardOptions & { maxBodyBytes: number } {
  return {
    base: BASE, upstreamBase: 'http://upstream/fhir', maxBodyBytes: 1024,
    upstream: inProcessUpstream(async (request) => ({ status: 200, headers: new Headers({ 'content-type': 'application/fhir+json' }), body: { resourceType: 'Patient', id: request.path.split('/')[1] } })),
    verify: async () => tokenContext({ iss: 'https://auth.example.org', client_id: 'app', sub: 'app', jti: 'j', exp: 2e9, scope: 'system/*.cruds' }, BASE),
    audit: async (record) => { records.push(record); },
  };
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`;
}

describe('guard adapters: request bodies', () => {
  const shapes: Record<string, { base: string; records: AccessRecord[]; server: Server }> = {};
  before(async () => {
    for (const name of ['koa', 'node:http', 'express']) {
      const records: AccessRecord[] = [];
      let server: Server;
      if (name === 'koa') {
        const app = new Koa();
        app.use(smartGuard(options(records)));
        server = createServer(app.callback());
      } else if (name === 'express') {
        server = createServer(express().use(nodeGuard(options(records))));
      } else {
        server = createServer(nodeGuard(options(records)));
      }
      shapes[name] = { base: await listen(server), records, server };
    }
  });
  after(() => Promise.all(Object.values(shapes).map(({ server }) => new Promise((resolve) => server.close(resolve)))));

  const cases: [string, string, string, number, string][] = [
    ['another media type', 'text/plain', JSON.stringify({ resourceType: 'Patient', id: 'pat-1' }), 415, 'not-supported'],
    ['no media type', '', JSON.stringify({ resourceType: 'Patient', id: 'pat-1' }), 415, 'not-supported'],
    ['JSON that does not parse', 'application/fhir+json', '{"resourceType":', 400, 'invalid'],
    ['a body over the limit', 'application/fhir+json', JSON.stringify({ resourceType: 'Patient', id: 'pat-1', text: 'x'.repeat(2048) }), 413, 'too-costly'],
  ];
  for (const [what, type, body, status, code] of cases) {
    it(`refuses ${what} with ${status} in every adapter, and audits it with the token`, async () => {
      for (const [name, { base, records }] of Object.entries(shapes)) {
        const before = records.length;
        const res = await fetch(`${base}/Patient/pat-1`, { method: 'PUT', headers: { authorization: 'Bearer t', ...(type && { 'content-type': type }) }, body: type ? body : new Blob([body]) });
        assert.equal(res.status, status, name);
        const outcome = await res.json();
        assert.equal(outcome.issue[0].code, code, name);
        assert.doesNotMatch(JSON.stringify(outcome), /at [\w.<>]+ \(|node_modules/, name);
        assert.equal(records.length, before + 1, `${name}: audited`);
        assert.equal(records.at(-1)!.status, status, name);
        assert.equal(records.at(-1)!.token?.clientId, 'app', `${name}: with the token that sent it`);
      }
    });
  }

  it('takes FHIR JSON, plain JSON and JSON Patch bodies alike', async () => {
    for (const [name, { base }] of Object.entries(shapes)) {
      for (const type of ['application/fhir+json', 'application/json', 'application/fhir+json; charset=utf-8']) {
        const res = await fetch(`${base}/Patient/pat-1`, { method: 'PUT', headers: { authorization: 'Bearer t', 'content-type': type }, body: JSON.stringify({ resourceType: 'Patient', id: 'pat-1' }) });
        assert.equal(res.status, 200, `${name} ${type}`);
      }
      const patch = await fetch(`${base}/Patient/pat-1`, { method: 'PATCH', headers: { authorization: 'Bearer t', 'content-type': 'application/json-patch+json' }, body: JSON.stringify([{ op: 'add', path: '/active', value: true }]) });
      assert.equal(patch.status, 200, `${name} JSON Patch`);
    }
  });

  it('takes a body that Express parsed before the guard as it is', async () => {
    const records: AccessRecord[] = [];
    const seen: unknown[] = [];
    const guard = nodeGuard({
      ...options(records),
      upstream: inProcessUpstream(async (request) => {
        if (request.method === 'PUT') seen.push(request.body);
        return { status: 200, headers: new Headers({ 'content-type': 'application/fhir+json' }), body: { resourceType: 'Patient', id: 'pat-1' } };
      }),
    });
    const server = createServer(express().use(express.json({ type: 'application/fhir+json' })).use(guard));
    try {
      const base = await listen(server);
      const res = await fetch(`${base}/Patient/pat-1`, { method: 'PUT', headers: { authorization: 'Bearer t', 'content-type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: 'Patient', id: 'pat-1', active: true }) });
      assert.equal(res.status, 200);
      assert.deepEqual(seen, [{ resourceType: 'Patient', id: 'pat-1', active: true }]);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('guard adapters: an unexpected failure', () => {
  it('is a 500 OperationOutcome without its details in every adapter, recorded, and told to whoever runs the guard', async () => {
    const failing = (records: AccessRecord[], told: unknown[]): GuardOptions => ({
      ...options(records),
      verify: async () => { throw new Error('secret detail of the failure'); },
      onError: (err) => { told.push(err); },
    });
    const apps: Record<string, (records: AccessRecord[], told: unknown[]) => Server> = {
      koa: (records, told) => createServer(new Koa().use(smartGuard(failing(records, told))).callback()),
      'node:http': (records, told) => createServer(nodeGuard(failing(records, told))),
      express: (records, told) => createServer(express().use(nodeGuard(failing(records, told)))),
    };
    for (const [name, app] of Object.entries(apps)) {
      const records: AccessRecord[] = [];
      const told: unknown[] = [];
      const server = app(records, told);
      try {
        const res = await fetch(`${await listen(server)}/Patient/pat-1`, { headers: { authorization: 'Bearer t', 'x-request-id': `failure-${name}` } });
        assert.equal(res.status, 500, name);
        const text = await res.text();
        assert.doesNotMatch(text, /secret detail|at .*\.ts/, name);
        const outcome = JSON.parse(text);
        assert.equal(outcome.resourceType, 'OperationOutcome', name);
        assert.equal(outcome.issue[0].code, 'exception', name);
        assert.deepEqual(records.map((r) => [r.status, r.requestId]), [[500, `failure-${name}`]], `${name}: recorded`);
        assert.equal((told[0] as Error).message, 'secret detail of the failure', name);
      } finally {
        await new Promise((resolve) => server.close(resolve));
      }
    }
  });
});
