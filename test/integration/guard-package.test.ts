// The guard as a package: packages/guard/build.js (`npm run build`) compiles @smart-auth/guard, `npm pack` packs
// it, and fresh plain-JavaScript projects install the tarball (offline: their dependencies link to the ones
// already installed here) and run, on plain node without a loader, a node:http app with nothing but the
// package's own dependencies, and a Koa app that audits into the authorization server's chain (with the one
// database driver it needs: sqlite3, or pg under `npm run test:pg`).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startTestServer, type TestServer } from '../support/server.ts';
import { authorize, exchangeCode, revokeToken } from '../support/oauth.ts';
import { startDemoFhirServer, startScript, type ChildServer } from '../support/processes.ts';
import { assertUpstreamErrorsSafe, startHapiErrors, upstreamErrorsTold, type HapiErrors } from '../support/hapi-errors.ts';
import { assertIncludesTellNothing, storeIncludeProbes } from '../support/includes.ts';
import { addUser } from '../../server/oidc/users.ts';
import { knownSensitivities } from '../../server/hcs/label-vocabulary.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const PACKAGE = join(ROOT, 'packages/guard');
const APP_ORIGIN = 'https://app.example.org';

const KOA_APP = `
import Koa from 'koa';
import { allowOrigins, balpAudit, createDpopCheck, createGuardVerifier, httpUpstream, ruleOptions, smartGuard } from '@smart-auth/guard';
import { databaseAudit, openDatabase, sharedDatabase } from '@smart-auth/guard/database';

const { ISSUER, FHIR_BASE, UPSTREAM, PORT, DATABASE_URL } = process.env;
const upstream = httpUpstream({ baseUrl: UPSTREAM });
const db = openDatabase(DATABASE_URL);
const chain = databaseAudit(db);
const shared = sharedDatabase(db);
let audited = 0;
const app = new Koa();
app.use(smartGuard({
  issuer: ISSUER, base: FHIR_BASE, upstream, upstreamBase: UPSTREAM, allowOperations: ['meta-delete', 'validate'], pagingKey: 'the paging secret of every instance', pagingParams: ['next_token'],
  verify: createGuardVerifier({ issuer: ISSUER, audience: FHIR_BASE, mode: 'local', userPatients: shared.userPatients, auditor: shared.auditor, isRevoked: shared.isRevoked }),
  dpop: createDpopCheck({ replay: shared.dpopReplay }),
  allowedOrigins: allowOrigins([], shared.origins),
  ...ruleOptions(upstream),
  includes: process.env.GUARD_INCLUDES,
  audit: balpAudit(FHIR_BASE, async (events) => { await chain.append(events); audited += events.length; }),
}));
app.use((ctx) => { if (ctx.path === '/audited') ctx.body = { audited }; });
app.listen(Number(PORT), '127.0.0.1', () => console.log('listening'));
`;

const HTTP_APP = `
import { createServer } from 'node:http';
import { allowOrigins, balpAudit, createGuardVerifier, nodeGuard, ruleOptions, httpUpstream } from '@smart-auth/guard';

const { ISSUER, FHIR_BASE, UPSTREAM, PORT, INTROSPECTION_CLIENT_ID, INTROSPECTION_CLIENT_SECRET } = process.env;
const upstream = httpUpstream({ baseUrl: UPSTREAM });
// No database: revocation, a clinician's patients and the auditor attribute from the introspection answer.
const verify = createGuardVerifier({ issuer: ISSUER, audience: FHIR_BASE, mode: 'local+introspection',
  introspection: { endpoint: ISSUER + '/introspect', credentials: { clientId: INTROSPECTION_CLIENT_ID, clientSecret: INTROSPECTION_CLIENT_SECRET } } });
let audited = 0;
const guard = nodeGuard({
  issuer: ISSUER, base: FHIR_BASE, upstream, upstreamBase: UPSTREAM, allowOperations: ['meta-delete'], verify,
  allowedOrigins: allowOrigins(['${APP_ORIGIN}']),
  ...ruleOptions(upstream),
  includes: process.env.GUARD_INCLUDES,
  audit: balpAudit(FHIR_BASE, async (events) => { audited += events.length; }),
});
createServer((req, res) => {
  if (req.url === '/audited') return res.end(JSON.stringify({ audited }));
  guard(req, res);
}).listen(Number(PORT), '127.0.0.1', () => console.log('listening'));
`;

const EXPRESS_APP = `
import express from 'express';
import { allowOrigins, balpAudit, createGuardVerifier, nodeGuard, ruleOptions, httpUpstream } from '@smart-auth/guard';

const { ISSUER, FHIR_BASE, UPSTREAM, PORT, INTROSPECTION_CLIENT_ID, INTROSPECTION_CLIENT_SECRET } = process.env;
const upstream = httpUpstream({ baseUrl: UPSTREAM });
// No database: revocation, a clinician's patients and the auditor attribute from the introspection answer.
const verify = createGuardVerifier({ issuer: ISSUER, audience: FHIR_BASE, mode: 'local+introspection',
  introspection: { endpoint: ISSUER + '/introspect', credentials: { clientId: INTROSPECTION_CLIENT_ID, clientSecret: INTROSPECTION_CLIENT_SECRET } } });
let audited = 0;
const app = express();
app.get('/audited', (req, res) => res.json({ audited }));
// The guard first: it reads FHIR bodies itself, so that it answers and audits those it cannot take.
app.use(nodeGuard({
  issuer: ISSUER, base: FHIR_BASE, upstream, upstreamBase: UPSTREAM, allowOperations: ['meta-delete'], verify,
  allowedOrigins: allowOrigins(['${APP_ORIGIN}']),
  ...ruleOptions(upstream),
  includes: process.env.GUARD_INCLUDES,
  audit: balpAudit(FHIR_BASE, async (events) => { audited += events.length; }),
}));
app.use(express.json());
app.listen(Number(PORT), '127.0.0.1', () => console.log('listening'));
`;

// Under `npm run test:pg` only the Koa app, the one that keeps its audit trail and shared state in the database,
// is installed and run: the node:http and Express apps and the packaging checks use no database.
const ON_POSTGRES = process.env.TEST_DATABASE === 'postgres';
const ADAPTERS = ON_POSTGRES ? ['koa'] : ['koa', 'http', 'express'];

describe('the guard package (@smart-auth/guard), installed from its tarball into a plain JavaScript project', () => {
  let dir: string;
  let tarball: string;
  let upstream: ChildServer;
  let server: TestServer;
  const apps: Record<string, { base: string; process: ChildServer }> = {};
  // Each app once more with `includes: 'refuse'`.
  const refusing: Record<string, { base: string; process: ChildServer }> = {};
  const consumers: Record<string, string> = {};
  // The Koa app once more, in front of a FHIR server whose errors name other resources (as HAPI FHIR's do).
  let hapi: HapiErrors;
  let hapiApp: { base: string; process: ChildServer };

  before(async function () {
    this.timeout(120_000);
    dir = mkdtempSync(join(tmpdir(), 'smart-auth-package-'));
    // Built into a directory of its own: the SQLite and PostgreSQL suites run side by side in CI.
    const built = join(dir, 'package');
    execFileSync(process.execPath, [join(PACKAGE, 'build.js'), built], { stdio: 'pipe' });
    execFileSync('npm', ['pack', '--ignore-scripts', '--pack-destination', dir], { cwd: built, stdio: 'pipe' }); // built just now
    tarball = join(dir, readdirSync(dir).find((f) => f.endsWith('.tgz'))!);
    const linked = (name: string) => `file:${join(ROOT, 'node_modules', name)}`;
    const consumer = (name: string, deps: string[], app: string) => {
      const at = join(dir, name);
      execFileSync('mkdir', [at]);
      writeFileSync(join(at, 'package.json'), JSON.stringify({ name, private: true, type: 'module', dependencies: Object.fromEntries(deps.map((d) => [d, linked(d)])) }));
      execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', '--ignore-scripts', tarball], { cwd: at, stdio: 'pipe' });
      writeFileSync(join(at, `${name}.js`), app);
      return at;
    };
    // Only the driver of the database it audits into: on PostgreSQL, without sqlite3.
    consumers.koa = consumer('koa-app', ['koa', 'jose', '@koa/bodyparser', 'knex', ON_POSTGRES ? 'pg' : 'sqlite3'], KOA_APP);
    if (!ON_POSTGRES) {
      // The package's own dependencies are the only ones there: the guard's core needs nothing else.
      consumers.http = consumer('http-app', ['jose', '@koa/bodyparser'], HTTP_APP);
      consumers.express = consumer('express-app', ['express', 'jose', '@koa/bodyparser'], EXPRESS_APP);
    }

    upstream = await startDemoFhirServer(`sqlite:${join(dir, 'upstream.sqlite')}`);
    hapi = await startHapiErrors();
    const paths: Record<string, string> = { koa: '/fhir', http: '/r4', express: '/fhir/r4' };
    const bases: Record<string, string> = {};
    for (const name of ADAPTERS) bases[name] = `http://127.0.0.1:${await freePort()}${paths[name]}`;
    const refusingBases: Record<string, string> = {};
    for (const [name, base] of Object.entries(bases)) refusingBases[name] = base.replace(/:\d+\//, `:${await freePort()}/`);
    const hapiBase = `http://127.0.0.1:${await freePort()}/hapi`;
    server = await startTestServer({ ADDITIONAL_FHIR_BASES: [...Object.values(bases), ...Object.values(refusingBases), hapiBase].join(',') });
    // The Koa app learns this origin from the authorization server's database.
    await server.addClient({ auth: { kind: 'public' }, redirectUris: [`${APP_ORIGIN}/callback`] });
    const rs = await server.addClient({ name: 'Guard', redirectUris: [], auth: { kind: 'secret' }, resourceServer: true });
    for (const [started, at, includes] of [[apps, bases, 'strip'], [refusing, refusingBases, 'refuse']] as const) {
      for (const [name, base] of Object.entries(at)) {
        const env = {
          ISSUER: server.issuer, FHIR_BASE: base, UPSTREAM: upstream.url, PORT: new URL(base).port, DATABASE_URL: server.config.databaseUrl,
          INTROSPECTION_CLIENT_ID: rs.client_id, INTROSPECTION_CLIENT_SECRET: rs.client_secret!, GUARD_INCLUDES: includes,
        };
        started[name] = { base, process: await startScript(`${name}-app.js`, env, /listening/, { cwd: consumers[name] }) };
      }
    }
    const hapiEnv = { ISSUER: server.issuer, FHIR_BASE: hapiBase, UPSTREAM: hapi.url, PORT: new URL(hapiBase).port, DATABASE_URL: server.config.databaseUrl };
    hapiApp = { base: hapiBase, process: await startScript('koa-app.js', hapiEnv, /listening/, { cwd: consumers.koa }) };
  });
  after(async () => {
    for (const app of [...Object.values(apps), ...Object.values(refusing), hapiApp]) await app?.process.stop();
    await hapi?.stop();
    await server?.stop();
    await upstream?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('with @smart-auth/guard/database, knows what the bundled /fhir knows: a clinician\'s patients, who may read AuditEvents, revoked tokens', async () => {
    const { base } = apps.koa;
    const client = await server.addClient({ auth: { kind: 'secret' } });
    // dr.jones may reach pat-1 and pat-2 only.
    const launch = await authorize({ server, client, scope: 'openid fhirUser user/*.rs', username: 'dr.jones', password: 'demo-password-2', purpose: 'TREAT', aud: base });
    const token = (await exchangeCode(server.issuer, launch, client)).body.access_token as string;
    const read = (path: string) => fetch(`${base}/${path}`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal((await read('Patient/pat-1')).status, 200);
    assert.equal((await read('Patient/pat-3')).status, 404, 'a patient not on the clinician\'s list');
    assert.equal((await read('AuditEvent?patient=pat-1')).status, 403, 'not an auditor');
    const auditor = await authorize({ server, client, scope: 'openid fhirUser user/*.rs', username: 'auditor', password: 'demo-password-4', purpose: 'HOPERAT', aud: base });
    const auditorToken = (await exchangeCode(server.issuer, auditor, client)).body.access_token as string;
    assert.equal((await fetch(`${base}/AuditEvent?patient=pat-1`, { headers: { authorization: `Bearer ${auditorToken}` } })).status, 200, 'an auditor');
    const revoked = await revokeToken(server.issuer, client, token);
    assert.equal(revoked.status, 200);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const refused = await read('Patient/pat-1');
    assert.equal(refused.status, 401, 'revoked (within a second)');
    assert.match(refused.headers.get('www-authenticate') ?? '', /the access token has been revoked/);
  });

  it('keeps, in every adapter, the records the server writes out of every token\'s writes, and labels within what the writer may read', async () => {
    const client = await server.addClient({ auth: { kind: 'secret' } });
    for (const { base } of Object.values(apps)) {
      const writer = async (username: string, password: string, purpose: string) => {
        const launch = await authorize({ server, client, scope: 'openid fhirUser user/*.cruds', username, password, purpose, aud: base });
        const bearer = (await exchangeCode(server.issuer, launch, client)).body.access_token as string;
        return (method: string, path: string, body?: unknown) => fetch(`${base}/${path}`, {
          method, headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/fhir+json' }, ...(body !== undefined && { body: JSON.stringify(body) }),
        });
      };
      const refused = async (res: Response, why: RegExp, what: string) => {
        assert.equal(res.status, 403, `${base}: ${what}`);
        assert.match((await res.json()).issue[0].diagnostics, why, `${base}: ${what}`);
      };
      const amy = await writer('amy', 'demo-password-3', 'PATRQT');
      const event = { resourceType: 'AuditEvent', type: { code: 'rest' }, recorded: '2026-01-01T00:00:00Z', agent: [{ requestor: true, who: { reference: 'Patient/pat-1' } }], source: { observer: { display: 'x' } }, entity: [{ what: { reference: 'Patient/pat-1' } }] };
      await refused(await amy('POST', 'AuditEvent', event), /written by the server only/, 'a patient\'s AuditEvent');
      const smith = await writer('dr.smith', 'demo-password-1', 'TREAT');
      const provenance = { resourceType: 'Provenance', id: 'prov-1', target: [{ reference: 'Observation/obs-2b-pain' }], recorded: '2026-01-01T00:00:00Z', agent: [{ who: { reference: 'Practitioner/dr-jones' } }] };
      await refused(await smith('PUT', 'Provenance/prov-1', provenance), /written by the server only/, 'a clinician\'s Provenance');
      const jones = await writer('dr.jones', 'demo-password-2', 'TREAT'); // clearance N
      const { meta: _, ...pain } = await (await jones('GET', 'Observation/obs-2b-pain')).json();
      await refused(await jones('PUT', 'Observation/obs-2b-pain', { ...pain, meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }] } }), /labels the token may not read/, 'R by a clinician cleared for N');
      assert.equal((await jones('GET', 'Observation/obs-2b-pain')).status, 200, `${base}: nothing written`);
    }
  });

  it('answers, in every adapter, an update to a new id as one to a hidden id (404), unless the writer is the privacy office cleared for every label', async () => {
    await addUser(server.db, { username: 'pkg.office', password: 'pkg-office-pass', name: 'Pat Office', attributes: { purposes: ['HOPERAT'], privacyOfficer: true, clearance: 'V', sensitivities: knownSensitivities() } });
    const client = await server.addClient({ auth: { kind: 'secret' } });
    for (const [name, { base }] of Object.entries(apps)) {
      const bearer = async (extra: { scope: string } & Record<string, string>) => {
        const launch = await authorize({ server, client, aud: base, ...extra });
        return (await exchangeCode(server.issuer, launch, client)).body.access_token as string;
      };
      const observation = (id: string) => ({ resourceType: 'Observation', id, status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-1' } });
      const send = (token: string, method: string, path: string, body: unknown) => fetch(`${base}/${path}`, {
        method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/fhir+json' }, body: JSON.stringify(body),
      });
      const free = `pkg-put-free-${name}`;
      const answer = async (res: Response) => ({ status: res.status, body: JSON.stringify(await res.json()).replace(new RegExp(`obs-1-brca|${free}`, 'g'), '<id>') });
      const smith = await bearer({ scope: 'openid fhirUser user/*.cruds', username: 'dr.smith', password: 'demo-password-1', purpose: 'TREAT' }); // clearance R: obs-1-brca is V
      const created = await answer(await send(smith, 'PUT', `Observation/${free}`, observation(free)));
      assert.equal(created.status, 404, `${base}: a free id`);
      assert.deepEqual(await answer(await send(smith, 'PUT', 'Observation/obs-1-brca', observation('obs-1-brca'))), created, `${base}: a hidden id`);
      const batch = await send(smith, 'POST', '', { resourceType: 'Bundle', type: 'batch', entry: ['obs-1-brca', free].map((id) => ({ resource: observation(id), request: { method: 'PUT', url: `Observation/${id}` } })) });
      assert.deepEqual(((await batch.json()).entry ?? []).map((e: any) => e.response.status), ['404', '404'], `${base}: batch entries`);
      const office = await bearer({ scope: 'openid user/Observation.cruds', username: 'pkg.office', password: 'pkg-office-pass', purpose: 'HOPERAT' });
      const byOffice = await send(office, 'PUT', `Observation/${free}`, observation(free));
      assert.equal(byOffice.status, 201, `${base}: the privacy office cleared for every label: ${await byOffice.text()}`);
    }
  });

  it('hides, in every adapter, a resource holding what the token may not read: labels above its clearance, another patient\'s data', async () => {
    const hiv = { resourceType: 'Observation', id: 'hiv', status: 'final', code: { text: 'HIV viral load' }, subject: { reference: 'Patient/pat-2' },
      meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }, { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'HIV' }] } };
    const seeded = [
      { resourceType: 'Parameters', id: 'pkg-params-hiv', parameter: [{ name: 'result', resource: hiv }] },
      { resourceType: 'Observation', id: 'pkg-obs-1-holds-2', status: 'final', code: { text: 'panel' }, subject: { reference: 'Patient/pat-1' },
        contained: [{ resourceType: 'Observation', id: 'pain', status: 'final', code: { text: 'pain' }, subject: { reference: 'Patient/pat-2' } }], hasMember: [{ reference: '#pain' }] },
    ];
    for (const resource of seeded) {
      const res = await fetch(`${upstream.url}/${resource.resourceType}/${resource.id}`, { method: 'PUT', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(resource) });
      assert.ok(res.ok, `${resource.id}: ${res.status}`);
    }
    const client = await server.addClient({ auth: { kind: 'secret' } });
    for (const { base } of Object.values(apps)) {
      const bearer = async (extra: { scope: string } & Record<string, string>) => {
        const launch = await authorize({ server, client, aud: base, ...extra });
        return (await exchangeCode(server.issuer, launch, client)).body.access_token as string;
      };
      const read = async (path: string, token: string) => (await fetch(`${base}/${path}`, { headers: { authorization: `Bearer ${token}` } })).status;
      const jones = await bearer({ scope: 'openid fhirUser user/*.rs', username: 'dr.jones', password: 'demo-password-2', purpose: 'TREAT' }); // clearance N
      assert.equal(await read('Parameters/pkg-params-hiv', jones), 404, `${base}: an unlabelled Parameters holding R + HIV`);
      const patient = await bearer({ scope: 'launch/patient openid patient/*.rs', patient: 'pat-1' });
      assert.equal(await read('Observation/pkg-obs-1-holds-2', patient), 404, `${base}: pat-1's Observation containing pat-2's`);
      assert.equal(await read('Observation/obs-1a-hba1c', patient), 200, `${base}: pat-1's own`);
    }
  });

  it('lets, in every adapter, no token change or delete a stored container carrying what it may read but not write, nor delete by search', async () => {
    const pain = { resourceType: 'Observation', id: 'pain', status: 'final', code: { text: 'pain' }, subject: { reference: 'Patient/pat-1' } };
    const stored = { resourceType: 'Parameters', id: 'pkg-params-1', parameter: [{ name: 'result', resource: pain }] };
    const seeded = await fetch(`${upstream.url}/Parameters/pkg-params-1`, { method: 'PUT', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(stored) });
    assert.ok(seeded.ok, String(seeded.status));
    const client = await server.addClient({ auth: { kind: 'secret' } });
    for (const { base } of Object.values(apps)) {
      const launch = await authorize({ server, client, aud: base, scope: 'launch/patient openid patient/Parameters.cruds patient/Observation.rs', patient: 'pat-1' });
      const bearer = (await exchangeCode(server.issuer, launch, client)).body.access_token as string;
      const call = async (method: string, body?: unknown) => (await fetch(`${base}/Parameters/pkg-params-1`, {
        method, headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/fhir+json' }, ...(body !== undefined && { body: JSON.stringify(body) }),
      })).status;
      assert.equal(await call('GET'), 200, `${base}: the token may read it and the Observation it carries`);
      assert.equal(await call('PUT', { resourceType: 'Parameters', id: 'pkg-params-1', parameter: [] }), 403, `${base}: overwritten`);
      assert.equal(await call('DELETE'), 403, `${base}: deleted`);
      const bysearch = await fetch(`${base}/Parameters?_id=pkg-params-1`, { method: 'DELETE', headers: { authorization: `Bearer ${bearer}` } });
      assert.equal(bysearch.status, 400, `${base}: deleted by search (a conditional delete)`);
    }
    assert.deepEqual((await (await fetch(`${upstream.url}/Parameters/pkg-params-1`)).json()).parameter, stored.parameter, 'nothing was written');
  });

  it('answers, in every adapter, a write to a stored container the token may not read for what it carries as one to a free id', async () => {
    const pain = { resourceType: 'Observation', id: 'pain', status: 'final', code: { text: 'pain' }, subject: { reference: 'Patient/pat-1' } };
    const stored = { resourceType: 'Parameters', id: 'pkg-params-unseen', parameter: [{ name: 'result', resource: pain }] };
    const seeded = await fetch(`${upstream.url}/Parameters/pkg-params-unseen`, { method: 'PUT', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(stored) });
    assert.ok(seeded.ok, String(seeded.status));
    const client = await server.addClient({ auth: { kind: 'secret' } });
    for (const { base } of Object.values(apps)) {
      // No scope for Observations: the Parameters is hidden from it for the Observation it carries.
      const launch = await authorize({ server, client, aud: base, scope: 'launch/patient openid patient/Parameters.cruds', patient: 'pat-1' });
      const bearer = (await exchangeCode(server.issuer, launch, client)).body.access_token as string;
      const call = async (method: string, id: string, headers: Record<string, string> = {}) => {
        const res = await fetch(`${base}/Parameters/${id}`, {
          method, headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/fhir+json', ...headers },
          ...(method === 'PUT' && { body: JSON.stringify({ resourceType: 'Parameters', id, parameter: [] }) }),
        });
        return { status: res.status, body: (await res.text()).replaceAll(id, '<id>') };
      };
      assert.equal((await call('GET', 'pkg-params-unseen')).status, 404, `${base}: it may not read it`);
      for (const [method, headers] of [['PUT', {}], ['PUT', { 'if-match': 'W/"999"' }], ['DELETE', {}]] as const) {
        const hidden = await call(method, 'pkg-params-unseen', headers);
        assert.equal(hidden.status, 404, `${base}: ${method} ${JSON.stringify(headers)}: ${hidden.body}`);
        assert.deepEqual(await call(method, 'pkg-params-free', headers), hidden, `${base}: ${method} ${JSON.stringify(headers)} as for a free id`);
      }
    }
    assert.deepEqual((await (await fetch(`${upstream.url}/Parameters/pkg-params-unseen`)).json()).parameter, stored.parameter, 'nothing was written');
    assert.equal((await fetch(`${upstream.url}/Parameters/pkg-params-free`)).status, 404, 'nothing was created');
  });

  it('refuses, in every adapter, the search parameters that would tell of hidden data or bring answers it cannot read', async () => {
    const client = await server.addClient({ auth: { kind: 'secret' } });
    for (const { base } of Object.values(apps)) {
      const launch = await authorize({ server, client, aud: base, scope: 'openid fhirUser user/*.rs', username: 'dr.jones', password: 'demo-password-2', purpose: 'TREAT' });
      const jones = (await exchangeCode(server.issuer, launch, client)).body.access_token as string;
      const search = async (query: string) => (await fetch(`${base}/Observation?patient=Patient/pat-2&${query}`, { headers: { authorization: `Bearer ${jones}` } })).status;
      for (const query of ['_summary=count', '_has:Observation:patient:code=x', '_sort=patient.name', 'subject:below=Patient/pat-2', 'patient:mdm=Patient/pat-2']) {
        assert.equal(await search(query), 403, `${base}: ${query}`);
      }
      const form = await fetch(`${base}/Observation/_search`, { method: 'POST', headers: { authorization: `Bearer ${jones}`, 'content-type': 'application/x-www-form-urlencoded' }, body: 'subject:below=Patient/pat-2' });
      assert.equal(form.status, 403, `${base}: a hierarchy of references in a _search form`);
      assert.notEqual(await search('code:below=http://loinc.org|8480-6'), 403, `${base}: a code system's hierarchy`);
      assert.equal(await search('_format=xml'), 406, `${base}: _format=xml`);
      assert.equal(await search('_sort=-date'), 200, `${base}: a sort by the matches' own values`);
    }
  });

  it('refuses, in every adapter, with includes: \'refuse\', a search with includes whether what it would include is hidden or missing', async () => {
    await storeIncludeProbes(upstream.url);
    const client = await server.addClient({ auth: { kind: 'secret' } });
    for (const { base } of Object.values(refusing)) {
      const launch = await authorize({ server, client, aud: base, scope: 'launch/patient openid patient/*.rs', patient: 'pat-1' });
      await assertIncludesTellNothing(base, (await exchangeCode(server.issuer, launch, client)).body.access_token as string, base);
    }
  });

  it('shows, in every adapter, the AuditEvents the FHIR server keeps only to those who may read the audit trail, also as includes', async () => {
    const event = {
      resourceType: 'AuditEvent', id: 'pkg-ae-1', type: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110110' }, recorded: '2026-01-01T00:00:00Z',
      agent: [{ who: { reference: 'Practitioner/dr-smith' }, requestor: true }], source: { observer: { display: 'an audit repository' } }, entity: [{ what: { reference: 'Patient/pat-1' } }],
    };
    assert.ok((await fetch(`${upstream.url}/AuditEvent/pkg-ae-1`, { method: 'PUT', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(event) })).ok);
    const client = await server.addClient({ auth: { kind: 'secret' } });
    for (const { base } of Object.values(apps)) {
      const included = async (username: string, password: string, purpose: string) => {
        const launch = await authorize({ server, client, aud: base, scope: 'openid fhirUser user/*.rs', username, password, purpose });
        const bearer = (await exchangeCode(server.issuer, launch, client)).body.access_token as string;
        const bundle = await (await fetch(`${base}/Patient?_id=pat-1&_revinclude=AuditEvent:patient`, { headers: { authorization: `Bearer ${bearer}` } })).json();
        return (bundle.entry ?? []).some((e: any) => e.resource.id === 'pkg-ae-1');
      };
      assert.equal(await included('dr.smith', 'demo-password-1', 'TREAT'), false, `${base}: a clinician who is no auditor`);
      assert.equal(await included('auditor', 'demo-password-4', 'HOPERAT'), true, `${base}: an auditor`);
    }
  });

  it("names to a patient, in every adapter, no resource she may not read in the AuditEvents the FHIR server keeps, and her entity= search does not match through one", async () => {
    const event = {
      resourceType: 'AuditEvent', id: 'pkg-ae-brca', type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' }, recorded: '2026-01-02T00:00:00Z', outcome: '0',
      agent: [{ who: { identifier: { value: 'genetics-app' } }, requestor: true }], source: { observer: { display: 'an audit repository' } },
      entity: [
        { what: { reference: 'Patient/pat-1' }, role: { code: '1' } },
        { what: { reference: 'Observation/obs-1-brca' }, role: { code: '4' }, securityLabel: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'V' }] },
      ],
    };
    assert.ok((await fetch(`${upstream.url}/AuditEvent/pkg-ae-brca`, { method: 'PUT', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(event) })).ok);
    const client = await server.addClient({ auth: { kind: 'secret' } });
    for (const { base } of Object.values(apps)) {
      const launch = await authorize({ server, client, aud: base, scope: 'launch/patient openid fhirUser patient/*.rs', username: 'amy', password: 'demo-password-3' });
      const amy = (await exchangeCode(server.issuer, launch, client)).body.access_token as string;
      const search = async (query: string) => {
        const res = await fetch(`${base}/${query}`, { headers: { authorization: `Bearer ${amy}` } });
        assert.equal(res.status, 200, `${base}/${query}`);
        const { entry = [], total } = await res.json();
        return { ids: entry.map((e: any) => e.resource.id), total, text: JSON.stringify(entry) };
      };
      const trail = await search('AuditEvent?_count=1000');
      assert.ok(trail.ids.includes('pkg-ae-brca'), `${base}: the access is in her trail`);
      assert.doesNotMatch(trail.text, /obs-1-brca/, `${base}: without naming what she may not read`);
      const found = await search('AuditEvent?entity=Observation/obs-1-brca');
      const never = await search('AuditEvent?entity=Observation/never-read');
      assert.deepEqual([found.ids, found.total], [never.ids, never.total], `${base}: the search is no existence test`);
    }
  });

  it('passes on an error of the FHIR server by its coded part only, and logs its text: it may name a resource the token may not see', async () => {
    const client = await server.addClient({ auth: { kind: 'secret' } });
    const launch = await authorize({ server, client, aud: hapiApp.base, scope: 'launch/patient openid patient/*.cruds', patient: 'pat-1' });
    const bearer = (await exchangeCode(server.issuer, launch, client)).body.access_token as string;
    assertUpstreamErrorsSafe(await upstreamErrorsTold(hapiApp.base, bearer, async () => hapiApp.process.output()), 'package (Koa)');
  });

  it('ships compiled JavaScript with types and a files list, and needs none of the authorization server\'s dependencies', function () {
    if (ON_POSTGRES) this.skip();
    const listing = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).split('\n');
    assert.ok(listing.includes('package/dist/server/resource-server/index.js'));
    assert.ok(listing.includes('package/dist/server/resource-server/index.d.ts'));
    assert.ok(!listing.some((f) => f.endsWith('.ts') && !f.endsWith('.d.ts')), 'no TypeScript sources');
    assert.ok(!listing.some((f) => f.startsWith('package/test/')));
    const manifest = JSON.parse(execFileSync('tar', ['-xzOf', tarball, 'package/package.json'], { encoding: 'utf8' }));
    assert.ok(Array.isArray(manifest.files));
    // `npm pack` in packages/guard compiles first: a pack without `npm run build` before it shipped an old dist/, or none.
    assert.equal(manifest.scripts?.prepack, 'node build.js');
    const runtime = Object.keys(manifest.dependencies ?? {});
    for (const heavy of ['oidc-provider', 'knex', 'sqlite3', 'pg', 'pdfkit', 'tsx']) assert.ok(!runtime.includes(heavy), heavy);
    assert.ok(Object.keys(manifest.peerDependenciesMeta).every((name) => manifest.peerDependenciesMeta[name].optional), 'storage drivers only when auditing to a database');
    // The Node versions smart-auth runs and is tested on: the guard's code needs 20.18 or later (URL.parse).
    assert.equal(manifest.engines.node, JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).engines.node);
    const installed = readdirSync(join(consumers.http, 'node_modules'));
    assert.deepEqual(installed.filter((m) => !m.startsWith('.')).sort(), ['@koa', '@smart-auth', 'jose']);
    assert.ok(readFileSync(join(consumers.http, 'node_modules/@smart-auth/guard/dist/server/hcs/default-policy.json'), 'utf8').length > 0);
  });

  it('refuses, in plain JavaScript, a local verifier that cannot see revoked tokens unless told so, and a guard without a verifier', function () {
    if (ON_POSTGRES) this.skip();
    const run = (code: string) => execFileSync(process.execPath, ['--input-type=module', '-e', `import * as guard from '@smart-auth/guard'; ${code}`], { cwd: consumers.http, encoding: 'utf8' });
    const local = "{ issuer: 'https://auth.example.org', audience: 'https://fhir.example.org/r4', mode: 'local'";
    const refusal = (code: string) => run(`try { ${code}; } catch (err) { console.log(err.name + ': ' + err.message); }`);
    assert.match(refusal(`guard.createGuardVerifier(${local} })`), /^TypeError: verification mode local cannot see revoked tokens: give isRevoked/);
    assert.match(refusal("guard.createGuard({ base: 'https://fhir.example.org/r4', upstreamBase: 'http://upstream/fhir', issuer: 'https://auth.example.org' })"), /^TypeError: the guard needs `verify`/);
    // A setting the guard cannot follow stops it at construction, not each request.
    const options = "base: 'https://fhir.example.org/r4', upstreamBase: 'http://upstream/fhir', verify: async () => ({}), audit: false";
    // A guard that forgot its audit sink would serve every access unrecorded: it must name one, or say `false`.
    assert.match(refusal(`guard.createGuard({ ${options.replace(', audit: false', '')} })`), /^TypeError: the guard needs `audit`/);
    assert.match(refusal(`guard.createGuard({ ${options.replace('audit: false', "audit: 'on'")} })`), /^TypeError: the guard needs `audit`/);
    for (const [option, refused] of [
      ["allowOperations: ['everything', 'frob']", /^TypeError: allowOperations names operations the guard does not know: \$frob/],
      ["includes: 'Refuse'", /^TypeError: includes must be one of strip, refuse, got "Refuse"/],
      ["narratives: 'sanitise'", /^TypeError: narratives must be one of refuse, sanitize, got "sanitise"/],
      ["pagingParams: ['next token']", /^TypeError: pagingParams takes search parameter names other than _page, got next token/],
    ] as const) {
      assert.match(refusal(`guard.createGuard({ ${options}, ${option} })`), refused, option);
    }
    assert.equal(run(`console.log(typeof guard.createGuardVerifier(${local}, revocation: 'unchecked' }))`), 'function\n');
    // A verifier without an audience would take a token the issuer made for any other FHIR server; a mode it does not
    // know, or introspection without credentials, would leave revoked tokens unseen or every request failing.
    const introspection = "introspection: { endpoint: 'https://auth.example.org/introspect', credentials: { clientId: 'rs', clientSecret: 's' } }";
    for (const [verifier, refused] of [
      ["{ issuer: 'https://auth.example.org', audence: 'https://fhir.example.org/r4', mode: 'local', revocation: 'unchecked' }", /^TypeError: audience must be the FHIR base URL/],
      ["{ audience: 'https://fhir.example.org/r4', mode: 'local', revocation: 'unchecked' }", /^TypeError: issuer must be the authorization server's URL/],
      [`{ issuer: 'https://auth.example.org', audience: 'https://fhir.example.org/r4', mode: 'local+Introspection', ${introspection} }`, /^TypeError: mode must be one of local, introspection, local\+introspection, got "local\+Introspection"/],
      ["{ issuer: 'https://auth.example.org', audience: 'https://fhir.example.org/r4', mode: 'introspection', introspection: { endpoint: 'https://auth.example.org/introspect', credentials: { clientId: undefined, clientSecret: undefined } } }", /^TypeError: introspection needs credentials/],
    ] as const) {
      assert.match(refusal(`guard.createGuardVerifier(${verifier})`), refused, verifier);
    }
    // A rule setting it cannot follow would be followed as another: 'Deny' as permit, 'year' as truncate-month.
    for (const [rules, refused] of [
      ["{ withoutConsent: 'Deny' }", /^TypeError: withoutConsent must be one of permit, deny, got "Deny"/],
      ["{ deidentifyDates: 'year' }", /^TypeError: deidentifyDates must be one of truncate-year, truncate-month, shift, got "year"/],
      ["{ defaultConfidentiality: 'n' }", /^TypeError: defaultConfidentiality must be one of U, L, M, N, R, V, got "n"/],
      ["{ deidentifyPurposes: 'HRESCH' }", /^TypeError: deidentifyPurposes must be an array of purpose-of-use codes/],
      ["{ deidentificationKey: 'short' }", /^TypeError: deidentificationKey must be at least 16 characters/],
    ] as const) {
      assert.match(refusal(`guard.ruleOptions(guard.httpUpstream({ baseUrl: 'http://upstream/fhir' }), ${rules})`), refused, rules);
    }
  });

  for (const name of ADAPTERS) {
    it(`protects ${{ koa: 'a Koa', http: 'a node:http', express: 'an Express' }[name]} app: discovery without a token, the rules and an audit record for each access`, async () => {
      const { base } = apps[name];
      const smart = await fetch(`${base}/.well-known/smart-configuration`);
      assert.equal(smart.status, 200);
      assert.equal((await smart.json()).issuer, server.issuer);
      const metadata = await (await fetch(`${base}/metadata`)).json();
      assert.equal(metadata.rest[0].security.service[0].coding[0].code, 'SMART-on-FHIR');

      const refused = await fetch(`${base}/Patient/pat-2`);
      assert.equal(refused.status, 401);
      assert.match(refused.headers.get('www-authenticate') ?? '', /^Bearer realm=/);

      const client = await server.addClient({ auth: { kind: 'secret' } });
      const launch = await authorize({ server, client, scope: 'launch/patient openid patient/*.rs', patient: 'pat-2', aud: base });
      const token = (await exchangeCode(server.issuer, launch, client)).body.access_token as string;
      const before = (await (await fetch(`http://127.0.0.1:${new URL(base).port}/audited`)).json()).audited;
      const requestId = `package-${name}-${Date.now()}`;
      const read = (path: string) => fetch(`${base}/${path}`, { headers: { authorization: `Bearer ${token}`, origin: APP_ORIGIN, 'x-request-id': requestId } });
      const own = await read('Patient/pat-2');
      assert.equal(own.status, 200);
      assert.equal(own.headers.get('access-control-allow-origin'), APP_ORIGIN);
      assert.equal((await read('Patient/pat-1')).status, 404, 'another patient');
      const unchanged = await fetch(`${base}/Patient/pat-2`, { headers: { authorization: `Bearer ${token}`, 'if-none-match': own.headers.get('etag')! } });
      assert.equal(unchanged.status, 304, 'a conditional read of an unchanged resource the token sees');
      assert.equal(await unchanged.text(), '');
      const meta = { resourceType: 'Parameters', parameter: [{ name: 'meta', valueMeta: { tag: [{ system: 'urn:t', code: 'x' }] } }] };
      const metaDelete = await fetch(`${base}/Patient/pat-2/$meta-delete`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/fhir+json' }, body: JSON.stringify(meta) });
      assert.equal(metaDelete.status, 403, 'a writing operation with read scopes');
      assert.equal((await metaDelete.json()).resourceType, 'OperationOutcome');

      const jones = await authorize({ server, client, scope: 'openid fhirUser user/*.rs', username: 'dr.jones', password: 'demo-password-2', purpose: 'TREAT', aud: base });
      const jonesToken = (await exchangeCode(server.issuer, jones, client)).body.access_token as string;
      assert.equal((await fetch(`${base}/Observation/obs-2a-hiv-vl`, { headers: { authorization: `Bearer ${jonesToken}` } })).status, 404, 'R + HIV above dr.jones\'s clearance');
      // Told by the database (Koa) or by the introspection answer (node:http, Express) alike.
      const asJones = (path: string) => fetch(`${base}/${path}`, { headers: { authorization: `Bearer ${jonesToken}` } });
      assert.equal((await asJones('Patient/pat-1')).status, 200, 'a patient on dr.jones\'s list');
      assert.equal((await asJones('Patient/pat-3')).status, 404, 'one not on it');
      assert.equal((await asJones('AuditEvent?patient=pat-1')).status, 403, 'not an auditor');
      const page = await (await fetch(`${base}/Observation?patient=Patient/pat-2&_count=1`, { headers: { authorization: `Bearer ${jonesToken}` } })).json();
      const next = page.link.find((l: any) => l.relation === 'next').url;
      assert.ok(next.startsWith(`${base}/Observation?_page=`) && !next.includes('offset'), next);
      assert.equal((await fetch(next, { headers: { authorization: `Bearer ${jonesToken}` } })).status, 200, 'a sealed paging link, followed');
      for (const raw of ['_getpagesoffset=1', 'ct=x', ...(name === 'koa' ? ['next_token=x'] : [])]) {
        assert.equal((await asJones(`Observation?patient=Patient/pat-2&_count=1&${raw}`)).status, 400, `no offset of the client's: ${raw}`);
      }
      const after = (await (await fetch(`http://127.0.0.1:${new URL(base).port}/audited`)).json()).audited;
      assert.ok(after - before >= 3, `every access audited (${after - before})`);
      if (name === 'koa') {
        const events = await server.audit.search({ patient: 'pat-2', limit: 1000 });
        assert.ok(events.some((e: any) => e.entity?.some((x: any) => x.what?.identifier?.value === requestId)), 'the read is in the authorization server\'s chain');
        const labelled = `package-labels-${Date.now()}`;
        assert.equal((await fetch(`${base}/Observation/obs-2a-hiv-vl`, { headers: { authorization: `Bearer ${token}`, 'x-request-id': labelled } })).status, 200, 'R + HIV, within the clearance of dr.smith, who launched it');
        const [event] = (await server.audit.search({ entity: 'Observation/obs-2a-hiv-vl', limit: 1000 }) as any[]).filter((e) => JSON.stringify(e).includes(labelled));
        assert.deepEqual(event.entity.find((x: any) => x.role?.code === '4').securityLabel.map((l: any) => l.code).sort(), ['HIV', 'R'], 'the record keeps the labels the resource carried');
        assert.equal((await server.audit.verify()).ok, true);
      }

      const preflight = await fetch(`${base}/Patient/pat-2`, { method: 'OPTIONS', headers: { origin: APP_ORIGIN, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' } });
      assert.equal(preflight.status, 204);
      assert.equal(preflight.headers.get('access-control-allow-origin'), APP_ORIGIN);

      // The body read by Koa's parser in the guard, or by the guard itself (node:http, Express).
      const write = await fetch(`${base}/Patient/pat-2`, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: 'Patient', id: 'pat-2' }) });
      assert.equal(write.status, 403);
      assert.equal((await write.json()).resourceType, 'OperationOutcome');
      const audited = async () => (await (await fetch(`http://127.0.0.1:${new URL(base).port}/audited`)).json()).audited;
      const beforeBodies = await audited();
      for (const [type, body, status] of [['text/plain', JSON.stringify({ resourceType: 'Patient', id: 'pat-2' }), 415], ['application/fhir+json', '{"resourceType":', 400]] as const) {
        const res = await fetch(`${base}/Patient/pat-2`, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': type }, body });
        assert.equal(res.status, status, `${type}: the same answer in every adapter`);
        assert.equal((await res.json()).resourceType, 'OperationOutcome');
      }
      assert.equal(await audited(), beforeBodies + 2, 'a body the guard cannot take is refused and audited');
    });
  }
});
