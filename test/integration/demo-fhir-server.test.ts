// scripts/demo-fhir-server.ts as a separate process (the guard's independent upstream), driven over
// HTTP; and storeUpstream, the same dispatcher in process.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../support/server.ts';
import { migrate, openDatabase, type Db } from '../../server/db.ts';
import { createDbStore, seedDemoResources } from '../../server/fhir/store-db.ts';
import { storeUpstream } from '../../server/fhir/server.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SCRIPT = join(ROOT, 'scripts/demo-fhir-server.ts');

interface Running {
  child: ChildProcess;
  base: string;
  output: () => string;
  exited: Promise<number | null>;
}

async function startDemoServer(env: Record<string, string>): Promise<Running> {
  const child = spawn(process.execPath, ['--import', 'tsx', SCRIPT], {
    cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk) => { output += chunk; });
  child.stderr!.on('data', (chunk) => { output += chunk; });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const base = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line after 20 s:\n${output}`)), 20_000);
    child.stdout!.on('data', () => {
      const m = /demo FHIR server listening on (\S+)/.exec(output);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    void exited.then((code) => { clearTimeout(timer); reject(new Error(`exited with ${code}:\n${output}`)); });
  });
  return { child, base, output: () => output, exited };
}

async function stop(running: Running | undefined) {
  if (!running || running.child.exitCode !== null) return;
  running.child.kill('SIGTERM');
  await running.exited;
}

describe('demo FHIR server (scripts/demo-fhir-server.ts)', function () {
  this.timeout(60_000);
  let dir: string;
  let server: Running | undefined;
  let base: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'smart-auth-demo-fhir-'));
    server = await startDemoServer({ PORT: String(await freePort()), DATABASE_URL: `sqlite:${join(dir, 'fhir.sqlite')}` });
    base = server.base;
  });
  after(async () => {
    await stop(server);
    rmSync(dir, { recursive: true, force: true });
  });

  const fhir = (path: string, init: RequestInit = {}) => fetch(`${base}/${path}`, {
    ...init, headers: { accept: 'application/fhir+json', ...(init.body ? { 'content-type': 'application/fhir+json' } : {}), ...init.headers },
  });
  const json = async (res: Response) => res.json() as Promise<any>;
  const keys = (bundle: any, mode: string) => (bundle.entry ?? []).filter((e: any) => e.search?.mode === mode).map((e: any) => `${e.resource.resourceType}/${e.resource.id}`);

  it('logs one line and serves the CapabilityStatement of an unsecured server', async () => {
    assert.match(server!.output(), /^demo FHIR server listening on http:\/\/127\.0\.0\.1:\d+\/fhir\n$/);
    const res = await fhir('metadata');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type')!, /^application\/fhir\+json/);
    const cs = await json(res);
    assert.equal(cs.resourceType, 'CapabilityStatement');
    assert.equal(cs.implementation.url, base);
    assert.equal(cs.rest[0].security, undefined, 'no authorization here');
    assert.deepEqual(cs.rest[0].interaction, [{ code: 'batch' }]);
    const types = cs.rest[0].resource.map((r: any) => r.type);
    for (const type of ['Patient', 'Observation', 'Provenance']) assert.ok(types.includes(type), type);
  });

  it('reads with ETag and Last-Modified, answers If-None-Match with 304, and keeps only the current version', async () => {
    const res = await fhir('Patient/pat-1');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('etag'), 'W/"1"');
    assert.ok(res.headers.get('last-modified'));
    assert.equal((await json(res)).id, 'pat-1');
    const cached = await fhir('Patient/pat-1', { headers: { 'if-none-match': 'W/"1"' } });
    assert.equal(cached.status, 304);
    assert.equal((await fhir('Patient/pat-1/_history/1')).status, 200);
    const old = await fhir('Patient/pat-1/_history/2');
    assert.equal(old.status, 404);
    assert.equal((await json(old)).resourceType, 'OperationOutcome');
    const history = await json(await fhir('Patient/pat-1/_history'));
    assert.equal(history.type, 'history');
    assert.deepEqual(history.entry.map((e: any) => e.resource.id), ['pat-1']);
    const missing = await fhir('Patient/nobody');
    assert.equal(missing.status, 404);
    assert.equal((await json(missing)).issue[0].code, 'not-found');
  });

  it('searches with _include, _revinclude and paging, with links on its own base', async () => {
    const bundle = await json(await fhir('Observation?patient=pat-1&_include=Observation:subject&_revinclude=Provenance:target&_count=5'));
    assert.equal(bundle.type, 'searchset');
    assert.equal(bundle.total, 8);
    assert.equal(keys(bundle, 'match').length, 5);
    assert.ok(keys(bundle, 'include').includes('Patient/pat-1'));
    for (const e of bundle.entry) assert.equal(e.fullUrl, `${base}/${e.resource.resourceType}/${e.resource.id}`);
    const next = bundle.link.find((l: any) => l.relation === 'next').url;
    assert.ok(next.startsWith(`${base}/Observation?`));
    const second = await json(await fetch(next));
    assert.equal(keys(second, 'match').length, 3);
    assert.ok(!second.link.some((l: any) => l.relation === 'next'));
    const all = [...keys(bundle, 'match'), ...keys(second, 'match')];
    assert.equal(new Set(all).size, 8);
    const provenance = await json(await fhir('Observation?_id=obs-1a-hba1c&_revinclude=Provenance:target'));
    assert.deepEqual(keys(provenance, 'include'), ['Provenance/prov-1a-hba1c']);
  });

  it('searches with POST _search and a form body', async () => {
    const res = await fhir('Encounter/_search', {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'patient=pat-1&_include=Encounter%3Apatient',
    });
    assert.equal(res.status, 200);
    const bundle = await json(res);
    assert.deepEqual(keys(bundle, 'match').sort(), ['Encounter/enc-1a', 'Encounter/enc-1b']);
    assert.deepEqual(keys(bundle, 'include'), ['Patient/pat-1']);
  });

  it('creates (201, Location, ETag; the server picks the id) and updates with If-Match', async () => {
    const created = await fhir('Observation', {
      method: 'POST',
      body: JSON.stringify({ resourceType: 'Observation', id: 'client-chosen', status: 'final', code: { text: 'note' }, subject: { reference: 'Patient/pat-2' } }),
    });
    assert.equal(created.status, 201);
    assert.equal(created.headers.get('etag'), 'W/"1"');
    const body = await json(created);
    assert.notEqual(body.id, 'client-chosen');
    assert.equal(created.headers.get('location'), `${base}/Observation/${body.id}/_history/1`);
    assert.equal((await json(await fhir(`Observation/${body.id}`))).code.text, 'note');

    const put = (ifMatch: string | undefined, change: object, headers: Record<string, string> = {}) => fhir(`Observation/${body.id}`, {
      method: 'PUT', headers: { ...(ifMatch ? { 'if-match': ifMatch } : {}), ...headers }, body: JSON.stringify({ ...body, ...change }),
    });
    const updated = await put('W/"1"', { status: 'amended' });
    assert.equal(updated.status, 200);
    assert.equal(updated.headers.get('etag'), 'W/"2"');
    assert.equal((await json(updated)).meta.versionId, '2');
    const stale = await put('W/"1"', { status: 'cancelled' });
    assert.equal(stale.status, 412);
    assert.equal((await json(stale)).issue[0].code, 'conflict');
    assert.equal((await put('not an etag!', {})).status, 400);
    const minimal = await put(undefined, { status: 'final' }, { prefer: 'return=minimal' });
    assert.equal(minimal.status, 200);
    assert.equal(await minimal.text(), '');
    assert.equal(minimal.headers.get('etag'), 'W/"3"');

    const fresh = await fhir('Basic/made-by-put', { method: 'PUT', body: JSON.stringify({ resourceType: 'Basic', id: 'made-by-put', code: { text: 'note' } }) });
    assert.equal(fresh.status, 201);
    assert.equal(fresh.headers.get('location'), `${base}/Basic/made-by-put/_history/1`);
  });

  it('processes a batch entry by entry, and refuses a transaction', async () => {
    const res = await fhir('', {
      method: 'POST',
      body: JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: [
        { request: { method: 'GET', url: 'Patient/pat-1' } },
        { request: { method: 'GET', url: 'Patient/nobody' } },
        { request: { method: 'GET', url: 'Observation?patient=pat-2&_count=1' } },
        { request: { method: 'POST', url: 'Basic' }, resource: { resourceType: 'Basic', code: { text: 'note' } } },
        { request: { method: 'PUT', url: 'Patient/pat-3', ifMatch: 'W/"9"' }, resource: { resourceType: 'Patient', id: 'pat-3' } },
        { request: { method: 'DELETE', url: `${base}/Patient/pat-3` } },
        { request: { method: 'GET', url: 'https://elsewhere.example/fhir/Patient/pat-1' } },
        { resource: { resourceType: 'Basic' } },
      ] }),
    });
    assert.equal(res.status, 200);
    const bundle = await json(res);
    assert.equal(bundle.type, 'batch-response');
    assert.deepEqual(bundle.entry.map((e: any) => e.response.status), [
      '200 OK', '404 Not Found', '200 OK', '201 Created', '412 Precondition Failed', '405 Method Not Allowed', '400 Bad Request', '400 Bad Request',
    ]);
    assert.equal(bundle.entry[0].resource.id, 'pat-1');
    assert.equal(bundle.entry[0].fullUrl, `${base}/Patient/pat-1`);
    assert.equal(bundle.entry[0].response.etag, 'W/"1"');
    assert.equal(bundle.entry[1].response.outcome.resourceType, 'OperationOutcome');
    assert.equal(bundle.entry[2].resource.type, 'searchset');
    assert.equal(bundle.entry[2].resource.entry.length, 1);
    assert.match(bundle.entry[3].response.location, new RegExp(`^${base}/Basic/[0-9a-f-]{36}/_history/1$`));
    assert.equal((await json(await fhir('Patient/pat-3'))).meta.versionId, '1', 'the failed entry wrote nothing');

    const transaction = await fhir('', { method: 'POST', body: JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: [] }) });
    assert.equal(transaction.status, 400);
    assert.equal((await json(transaction)).issue[0].code, 'not-supported');
  });

  it('answers errors with OperationOutcomes', async () => {
    const big = JSON.stringify({ resourceType: 'Basic', text: { status: 'generated', div: 'x'.repeat(1_100_000) } });
    for (const [path, init, status] of [
      ['Observation?code:text=x', {}, 400],
      ['Observation?date=yesterday', {}, 400],
      ['Observation', { method: 'POST', body: '{not json' }, 400],
      ['Observation', { method: 'POST', body: '{"resourceType":"Patient"}' }, 400],
      ['Observation', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' }, 400],
      ['Observation/obs-1a-hba1c', { method: 'PUT', body: '{"resourceType":"Observation","id":"other"}' }, 400],
      ['Basic', { method: 'POST', body: big }, 413],
      ['Bundle', { method: 'POST', body: '{"resourceType":"Bundle","type":"collection"}' }, 422],
      ['Basic', { method: 'POST', body: '{"resourceType":"Basic","code":{"text":"x"},"meta":{"security":"R"}}' }, 400],
      ['Observation', { method: 'POST', body: '{"resourceType":"Observation","status":42,"subject":"not-a-reference"}' }, 400],
      ['lowercase', {}, 404],
      ['Patient/pat-1/extra/path/deep', {}, 404],
      ['Patient/pat-1%2F_history%2F1', {}, 404],
      ['Patient/pat-1', { method: 'DELETE' }, 405],
      ['Patient/pat-1', { method: 'PATCH', body: '[]' }, 405],
      ['Patient/pat-1/$everything', {}, 400],
      ['Patient/_history', {}, 400],
      ['', {}, 405],
    ] as const) {
      const res = await fhir(path, init as RequestInit);
      assert.equal(res.status, status, `${(init as RequestInit).method ?? 'GET'} ${path}`);
      assert.match(res.headers.get('content-type') ?? '', /^application\/fhir\+json/, path);
      const text = await res.text();
      assert.equal(JSON.parse(text).resourceType, 'OperationOutcome', path);
      assert.doesNotMatch(text, /at [\w.<>]+ \(|node_modules/);
    }
    assert.equal((await fetch(`${base.replace(/\/fhir$/, '')}/elsewhere`)).status, 404);
  });

  it('refuses a resource that is not valid FHIR R4, naming each problem by its FHIRPath location, and keeps nothing', async () => {
    const before = (await json(await fhir('Observation?_count=1'))).total;
    const res = await fhir('Observation', { method: 'POST', body: JSON.stringify({ resourceType: 'Observation', status: 42, subject: 'not-a-reference' }) });
    assert.equal(res.status, 400);
    const outcome = await json(res);
    assert.equal(outcome.resourceType, 'OperationOutcome');
    assert.deepEqual(outcome.issue.flatMap((i: any) => i.expression).sort(), ['Observation.code', 'Observation.status', 'Observation.subject']);
    const update = await fhir('Patient/pat-1', { method: 'PUT', body: JSON.stringify({ resourceType: 'Patient', id: 'pat-1', birthDate: 'last year', managingOrganization: { reference: 'org 1' } }) });
    assert.equal(update.status, 400);
    assert.deepEqual((await json(update)).issue.flatMap((i: any) => i.expression).sort(), ['Patient.birthDate', 'Patient.managingOrganization.reference']);
    assert.equal((await json(await fhir('Patient/pat-1'))).meta.versionId, '1', 'the refused update wrote nothing');
    assert.equal((await json(await fhir('Observation?_count=1'))).total, before, 'the refused create wrote nothing');
  });

  it('stops on SIGTERM and keeps its data for the next start', async () => {
    const created = await json(await fhir('Basic', { method: 'POST', body: JSON.stringify({ resourceType: 'Basic', code: { text: 'survives' } }) }));
    server!.child.kill('SIGTERM');
    assert.equal(await server!.exited, 0);
    await assert.rejects(() => fetch(`${base}/metadata`));

    const port = await freePort();
    server = await startDemoServer({ PORT: String(port), DATABASE_URL: `sqlite:${join(dir, 'fhir.sqlite')}`, FHIR_BASE_URL: 'https://public.example/r4/' });
    base = `http://127.0.0.1:${port}/fhir`;
    const again = await json(await fhir(`Basic/${created.id}`));
    assert.equal(again.code.text, 'survives');
    const bundle = await json(await fhir('Patient?_id=pat-1'));
    assert.equal(bundle.total, 1, 'not seeded twice');
    assert.equal(bundle.entry[0].fullUrl, 'https://public.example/r4/Patient/pat-1', 'FHIR_BASE_URL in links');
  });
});

describe('storeUpstream (the same dispatcher, in process)', () => {
  let db: Db;
  const BASE = 'http://in-process.example/fhir';
  beforeEach(async () => {
    db = openDatabase('sqlite::memory:');
    await migrate(db);
    await seedDemoResources(db);
  });
  afterEach(() => db.destroy());

  it('answers reads, searches and writes like the HTTP server, without HTTP', async () => {
    const upstream = storeUpstream(createDbStore(db), BASE);
    const read = await upstream.send({ method: 'GET', path: 'Patient/pat-1' });
    assert.equal(read.status, 200);
    assert.equal(read.headers.get('etag'), 'W/"1"');
    assert.equal((read.body as any).id, 'pat-1');

    const search = await upstream.send({ method: 'GET', path: '/Observation?patient=pat-1&_include=Observation:subject&_count=2' });
    const bundle = search.body as any;
    assert.equal(bundle.total, 8);
    assert.equal(bundle.entry.filter((e: any) => e.search.mode === 'match').length, 2);
    assert.ok(bundle.link.find((l: any) => l.relation === 'next').url.startsWith(`${BASE}/Observation?`));

    const form = await upstream.send({ method: 'POST', path: 'Encounter/_search', body: new URLSearchParams({ patient: 'pat-3' }) });
    assert.deepEqual((form.body as any).entry.map((e: any) => e.resource.id), ['enc-3a']);

    const created = await upstream.send({ method: 'POST', path: 'Observation', body: { resourceType: 'Observation', status: 'final', code: { text: 'note' }, subject: { reference: 'Patient/pat-1' } } });
    assert.equal(created.status, 201);
    assert.match(created.headers.get('location')!, new RegExp(`^${BASE}/Observation/`));
    const id = (created.body as any).id;
    const stale = await upstream.send({ method: 'PUT', path: `Observation/${id}`, headers: { 'If-Match': 'W/"7"' }, body: created.body });
    assert.equal(stale.status, 412);
    const ok = await upstream.send({ method: 'PUT', path: `Observation/${id}`, headers: { 'If-Match': 'W/"1"' }, body: created.body });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('etag'), 'W/"2"');

    const missing = await upstream.send({ method: 'GET', path: 'Observation/nope' });
    assert.equal(missing.status, 404);
    assert.equal((missing.body as any).resourceType, 'OperationOutcome');
  });

  it('passes only the headers httpUpstream would forward', async () => {
    const upstream = storeUpstream(createDbStore(db), BASE);
    // An If-Match under an unforwarded name would fail the update if it got through.
    const res = await upstream.send({
      method: 'PUT', path: 'Patient/pat-4', headers: { authorization: 'Bearer x', 'x-if-match': 'W/"9"' }, body: { resourceType: 'Patient', id: 'pat-4' },
    });
    assert.equal(res.status, 200);
  });

  it('turns a store failure into a 500 OperationOutcome', async () => {
    const upstream = storeUpstream(createDbStore(db), BASE);
    await db.destroy();
    const originalError = console.error;
    console.error = () => {};
    try {
      const res = await upstream.send({ method: 'GET', path: 'Patient/pat-1' });
      assert.equal(res.status, 500);
      assert.equal((res.body as any).issue[0].code, 'exception');
    } finally {
      console.error = originalError;
    }
    db = openDatabase('sqlite::memory:'); // for afterEach
  });
});
