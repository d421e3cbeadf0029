// The audit trail through the real server: every guarded access and every security event of the
// authorization server, the FHIR view of the trail, failing closed, and the CLI over it.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorizedTokens, Browser, form, hiddenValue, introspectToken, revokeToken, tokenRequest } from '../support/oauth.ts';
import { addUser } from '../../server/oidc/users.ts';
import { auditEventUpstream } from '../../server/audit/fhir-upstream.ts';
import { emergencyOverrideStarted } from '../../server/audit/balp.ts';
import { runCliWithEnv } from '../support/cli.ts';

const run = promisify(execFile);

describe('audit trail', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  before(async () => {
    server = await startTestServer();
    app = await server.addClient({ auth: { kind: 'secret' } });
  });
  after(() => server.stop());

  const token = async (scope: string, who: { username?: string; password?: string; patient?: string } = {}) =>
    (await authorizedTokens({ server, client: app, scope, ...who })).access_token as string;
  const fhir = (path: string, bearer?: string, headers: Record<string, string> = {}) =>
    fetch(`${server.fhirBase}/${path}`, { headers: { ...(bearer ? { authorization: `Bearer ${bearer}` } : {}), ...headers } });
  const eventsOf = (filter: Parameters<TestServer['audit']['search']>[0]) => server.audit.search(filter) as Promise<any[]>;
  const cliWith = async (env: Record<string, string>, ...args: string[]) => {
    const { code, stdout, stderr } = await runCliWithEnv(server, env, ...args);
    return { code, stdout: code === 0 ? stdout : stdout + stderr };
  };
  const cli = (...args: string[]) => cliWith({}, ...args);

  it('records a read with its request id, the user, the app, the purpose and the patient (IHE BALP)', async () => {
    const bearer = await token('launch/patient openid patient/*.rs', { patient: 'pat-1' });
    const res = await fhir('Observation/obs-1a-hba1c', bearer, { 'x-request-id': 'req-read-1' });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-request-id'), 'req-read-1');
    const [event] = await eventsOf({ entity: 'Observation/obs-1a-hba1c' });
    assert.equal(event.type.code, 'rest');
    assert.equal(event.subtype[0].code, 'read');
    assert.equal(event.action, 'R');
    assert.equal(event.outcome, '0');
    const user = event.agent.find((a: any) => a.requestor);
    assert.equal(user.who.identifier.system, server.issuer);
    assert.equal(user.purposeOfUse[0].coding[0].code, 'TREAT');
    assert.match(user.policy[0], /^urn:ietf:params:oauth:jti:/);
    assert.ok(event.agent.some((a: any) => a.who?.identifier?.value === app.client_id));
    assert.ok(event.entity.some((e: any) => e.what?.reference === 'Patient/pat-1' && e.role.code === '1'));
    assert.ok(event.entity.some((e: any) => e.what?.identifier?.value === 'req-read-1'));
  });

  it('generates a request id when none is sent, and records one event per patient of a search', async () => {
    const bearer = await token('openid fhirUser user/*.rs', { username: 'dr.smith', password: 'demo-password-1' });
    const res = await fhir('Patient', bearer);
    const requestId = res.headers.get('x-request-id')!;
    assert.match(requestId, /^[0-9a-f-]{36}$/);
    const patients = (await res.json()).entry.map((e: any) => e.resource.id);
    const events = (await eventsOf({ subtype: 'search-type' })).filter((e) => e.entity.some((x: any) => x.what?.identifier?.value === requestId));
    assert.deepEqual(events.map((e) => e.entity.find((x: any) => x.role.code === '1').what.reference.slice('Patient/'.length)).sort(), [...patients].sort());
    assert.equal(new Set(events.map((e) => e.id)).size, events.length);
    assert.ok(events.every((e) => e.entity.some((x: any) => x.role.code === '24' && Buffer.from(x.query, 'base64').toString().includes('Patient'))));
  });

  it('records refused requests with their outcome', async () => {
    await fhir('Patient/pat-1', undefined, { 'x-request-id': 'req-no-token' });
    const bearer = await token('launch/patient openid patient/*.rs', { patient: 'pat-1' });
    await fhir('Patient/pat-2', bearer, { 'x-request-id': 'req-hidden' });
    const [unauthenticated] = (await eventsOf({ outcome: '4' })).filter((e) => e.entity.some((x: any) => x.what?.identifier?.value === 'req-no-token'));
    assert.ok(unauthenticated, 'a request without a token is in the trail');
    const [hidden] = (await eventsOf({ outcome: '4' })).filter((e) => e.entity.some((x: any) => x.what?.identifier?.value === 'req-hidden'));
    assert.match(hidden.outcomeDesc, /404/);
  });

  it("records the authorization server's own security events", async () => {
    const browser = new Browser();
    const start = await browser.follow(`${server.issuer}/authorize?${new URLSearchParams({
      response_type: 'code', client_id: app.client_id, redirect_uri: app.redirect_uri, scope: 'openid', state: 's', aud: server.fhirBase,
      code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256',
    })}`, server.issuer);
    const uid = /\/interaction\/([^/?]+)/.exec(start.url)![1];
    await browser.fetch(`${server.issuer}/interaction/${uid}/login`, { method: 'POST', body: form({ csrf: hiddenValue(await start.res.text(), 'csrf'), username: 'dr.smith', password: 'not-the-password' }) });
    const failed = (await eventsOf({ subtype: '110122', outcome: '4' })).at(-1)!;
    assert.ok(JSON.stringify(failed).includes('dr.smith'));
    assert.ok(!JSON.stringify(failed).includes('not-the-password'), 'never the password');

    const before = (await eventsOf({})).length;
    const tokens = await authorizedTokens({ server, client: app, scope: 'launch/patient openid offline_access patient/*.rs', patient: 'pat-2' });
    await introspectToken(server.issuer, app, tokens.access_token);
    await revokeToken(server.issuer, app, tokens.access_token);
    const after = (await eventsOf({})).slice(before);
    const subtypes = after.map((e: any) => e.subtype?.[0]?.code);
    for (const expected of ['110122', 'AuthZ-Consent', 'ITI-71', 'ITI-102', '110135']) assert.ok(subtypes.includes(expected), `${expected} in ${subtypes}`);
    const serialized = JSON.stringify(after);
    assert.ok(!serialized.includes(tokens.access_token) && !serialized.includes(tokens.refresh_token), 'no token value in the trail');
  });

  it("records a batch across patients in each patient's event with that patient's resources only", async () => {
    const bearer = await token('openid fhirUser user/*.rs', { username: 'dr.smith', password: 'demo-password-1' });
    const res = await fetch(server.fhirBase, {
      method: 'POST', headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/fhir+json', 'x-request-id': 'batch-two-patients' },
      body: JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: ['Patient/pat-1', 'Observation?patient=pat-2', 'Patient/pat-2'].map((url) => ({ request: { method: 'GET', url } })) }),
    });
    assert.equal(res.status, 200);
    const dataOf = async (patient: string) => (await eventsOf({ patient })).filter((e) => e.entity.some((x: any) => x.what?.identifier?.value === 'batch-two-patients'))
      .flatMap((e) => e.entity.filter((x: any) => x.role?.code === '4').map((x: any) => x.what.reference));
    const [one, two] = [await dataOf('pat-1'), await dataOf('pat-2')];
    assert.deepEqual(one, ['Patient/pat-1']);
    assert.ok(two.includes('Patient/pat-2') && two.some((r: string) => r.startsWith('Observation/')), two.join(' '));
    assert.ok(!two.includes('Patient/pat-1'));
    const lines = JSON.parse((await cli('audit', 'export', '--patient', 'pat-1', '--format', 'json')).stdout).filter((l: any) => l.request_id === 'batch-two-patients');
    assert.deepEqual(lines.map((l: any) => l.resources), ['Patient/pat-1'], "the patient's report names nothing of the other patient");
  });

  describe('every request at /fhir, and the patient a refused one aimed at', () => {
    const byRequest = async (id: string) => (await eventsOf({ limit: 100_000 })).filter((e) => e.entity.some((x: any) => x.what?.identifier?.value === id));
    const patientOfEvent = (e: any) => e.entity.find((x: any) => x.role?.code === '1')?.what?.reference;

    it('audits bodies refused as malformed (400), too large (413) or of another media type (415), with the token that sent them', async () => {
      const bearer = await token('launch/patient openid patient/*.cruds', { patient: 'pat-1' });
      const big = JSON.stringify({ resourceType: 'Observation', subject: { reference: 'Patient/pat-1' }, note: [{ text: 'x'.repeat(1_100_000) }] });
      for (const [id, type, body, status] of [
        ['body-400', 'application/fhir+json', '{not json', 400],
        ['body-413', 'application/fhir+json', big, 413],
        ['body-415', 'text/plain', 'hello', 415],
      ] as const) {
        const res = await fetch(`${server.fhirBase}/Observation`, { method: 'POST', headers: { authorization: `Bearer ${bearer}`, 'x-request-id': id, 'content-type': type }, body });
        assert.equal(res.status, status, id);
        assert.equal((await res.json()).resourceType, 'OperationOutcome', id);
        const [event] = await byRequest(id);
        assert.ok(event, `${id} is in the trail`);
        assert.equal(event.outcome, '4');
        assert.match(event.outcomeDesc, new RegExp(`^${status}`));
        assert.ok(event.agent.some((a: any) => a.requestor && a.policy?.[0]?.startsWith('urn:ietf:params:oauth:jti:')), `${id}: who sent it`);
      }
      const anonymous = await fetch(`${server.fhirBase}/Observation`, { method: 'POST', headers: { 'x-request-id': 'body-anonymous', 'content-type': 'application/fhir+json' }, body: big });
      assert.equal(anonymous.status, 413, 'the body is refused whatever the token');
      const [event] = await byRequest('body-anonymous');
      assert.equal(event?.outcome, '4', 'and audited without one');
    });

    it('audits 401s (no token, a token that does not verify) with the patient the request named', async () => {
      for (const [id, headers] of [['401-none', {}], ['401-bad', { authorization: 'Bearer not.a.token' }]] as const) {
        const res = await fhir('Patient/pat-2', undefined, { 'x-request-id': id, ...headers });
        assert.equal(res.status, 401);
        const [event] = await byRequest(id);
        assert.ok(event, `${id} is in the trail`);
        assert.equal(event.outcome, '4');
        assert.equal(patientOfEvent(event), 'Patient/pat-2', id);
      }
    });

    it('links refused accesses to their patient: in the privacy office\'s view and export, not in the accounting of disclosures', async () => {
      const amy = await token('launch/patient openid patient/*.rs', { username: 'amy', password: 'demo-password-3' });
      const jones = await token('openid fhirUser user/*.rs', { username: 'dr.jones', password: 'demo-password-2' });
      const amyNarrow = await token('launch/patient openid patient/Patient.rs', { username: 'amy', password: 'demo-password-3' });
      const tries = [
        ['aim-read', 'Patient/pat-2', amy],
        ['aim-compartment', 'Patient/pat-2/Observation', amy],
        ['aim-everything', 'Patient/pat-2/$everything', amy],
        ['aim-subject', 'Observation?subject=Patient/pat-3', amyNarrow],
        ['aim-stored', 'Observation/obs-2a-hiv-vl', jones],
      ] as const;
      for (const [id, path, bearer] of tries) {
        const res = await fhir(path, bearer, { 'x-request-id': id });
        assert.ok(res.status >= 400, `${id}: ${res.status}`);
        const events = await byRequest(id);
        assert.equal(events.length, 1, id);
        assert.equal(patientOfEvent(events[0]), `Patient/${id === 'aim-subject' ? 'pat-3' : 'pat-2'}`, id);
      }
      const auditor = await token('openid fhirUser user/AuditEvent.rs', { username: 'auditor', password: 'demo-password-4' });
      const view = await (await fhir('AuditEvent?patient=pat-2&outcome=4&_count=1000', auditor)).json();
      for (const [id] of tries.filter(([id]) => id !== 'aim-subject')) {
        assert.ok(view.entry.some((e: any) => e.resource.entity.some((x: any) => x.what?.identifier?.value === id)), `${id} in the privacy office's view`);
      }
      const attempts = JSON.parse((await cli('audit', 'export', '--patient', 'pat-2', '--format', 'json', '--attempts')).stdout);
      for (const [id] of tries.filter(([id]) => id !== 'aim-subject')) assert.ok(attempts.some((l: any) => l.request_id === id && l.outcome === 'refused'), `${id} in the export of attempts`);
      const disclosures = JSON.parse((await cli('audit', 'export', '--patient', 'pat-2', '--format', 'json')).stdout);
      assert.ok(!disclosures.some((l: any) => tries.some(([id]) => id === l.request_id)), 'nothing was disclosed');
    });
  });

  describe('/fhir/AuditEvent', () => {
    it('lets an auditor search the trail, refuses other clinicians, and audits the reading', async () => {
      const auditor = await token('openid fhirUser user/AuditEvent.rs', { username: 'auditor', password: 'demo-password-4' });
      const res = await fhir('AuditEvent?patient=pat-1&subtype=read', auditor, { 'x-request-id': 'req-audit-read' });
      assert.equal(res.status, 200);
      const bundle = await res.json();
      assert.ok(bundle.entry.length > 0);
      assert.ok(bundle.entry.every((e: any) => e.resource.subtype[0].code === 'read' && e.fullUrl.startsWith(`${server.fhirBase}/AuditEvent/`)));
      const one = await fhir(`AuditEvent/${bundle.entry[0].resource.id}`, auditor);
      assert.equal(one.status, 200);
      const readings = (await eventsOf({ subtype: 'search-type' })).filter((e) => e.entity.some((x: any) => x.what?.identifier?.value === 'req-audit-read'));
      assert.ok(readings.length > 0, 'reading the trail is itself audited');
      const clinician = await token('openid fhirUser user/AuditEvent.rs', { username: 'dr.smith', password: 'demo-password-1' });
      assert.equal((await fhir('AuditEvent?patient=pat-1', clinician)).status, 403);
      assert.equal((await fetch(`${server.fhirBase}/AuditEvent`, { method: 'POST', headers: { authorization: `Bearer ${auditor}`, 'content-type': 'application/fhir+json' }, body: '{"resourceType":"AuditEvent"}' })).status, 403);
    });

    it("keeps the trail from a backend service whose scopes name it only by `*` (bulk data covers clinical data, not who accessed what)", async () => {
      const backendToken = async (scope: string) => {
        const client = await server.addClient({ name: 'Warehouse', redirectUris: [], auth: { kind: 'secret' }, grantTypes: ['client_credentials'], scope });
        return (await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope }, client)).body.access_token as string;
      };
      const bulk = await backendToken('system/*.rs');
      assert.equal((await fhir('Patient/pat-1', bulk)).status, 200, 'its clinical data');
      const [event] = await eventsOf({ patient: 'pat-1', limit: 1 });
      for (const path of ['AuditEvent?patient=pat-1', `AuditEvent/${event.id}`, 'AuditEvent?subtype=110113']) {
        const refused = await fhir(path, bulk);
        assert.equal(refused.status, 403, path);
        assert.match((await refused.json()).issue[0].diagnostics, /AuditEvent/);
      }
      const batch = await fetch(server.fhirBase, {
        method: 'POST', headers: { authorization: `Bearer ${bulk}`, 'content-type': 'application/fhir+json' },
        body: JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: 'AuditEvent?patient=pat-1' } }] }),
      });
      assert.equal((await batch.json()).entry[0].response.status, '403', 'nor as a batch entry');
      const named = await backendToken('system/*.rs system/AuditEvent.rs');
      assert.equal((await fhir(`AuditEvent/${event.id}`, named)).status, 200, 'a scope naming AuditEvent reads it');
    });

    it('answers _count=0 with the total of every match and no entries (FHIR: as _summary=count), and never a false total', async () => {
      const auditor = await token('openid fhirUser user/AuditEvent.rs', { username: 'auditor', password: 'demo-password-4' });
      const smith = await token('openid fhirUser user/*.rs', { username: 'dr.smith', password: 'demo-password-1' });
      for (const id of ['count-1', 'count-2', 'count-3']) assert.equal((await fhir('Patient/pat-2', smith, { 'x-request-id': id })).status, 200);
      const search = 'AuditEvent?patient=pat-2&subtype=read';
      const all = await (await fhir(`${search}&_count=1000`, auditor)).json();
      assert.ok(all.entry.length >= 3);
      // The trail itself, as the guard's upstream: the total of every match.
      const trail = auditEventUpstream(server.audit, server.fhirBase, { send: async () => assert.fail('not the trail') });
      const counted = (await trail.send({ method: 'GET', path: `${search}&_count=0` })).body as any;
      assert.equal(counted.total, all.entry.length);
      assert.deepEqual(counted.entry ?? [], []);
      assert.deepEqual(counted.link.map((l: any) => l.relation), ['self']);
      assert.equal(((await trail.send({ method: 'GET', path: 'AuditEvent?patient=pat-1&patient=pat-2&_count=0' })).body as any).total, 0, 'two patients match nothing');
      assert.equal((await trail.send({ method: 'GET', path: 'AuditEvent?entity=Patient/pat-1&entity=Patient/pat-2' })).status, 400, 'a repeated entity is refused, not half-read');
      // Through the guard, which hides what the token may not see: a total only when it is true.
      const guarded = await (await fhir(`${search}&_count=0`, auditor)).json();
      assert.deepEqual(guarded.entry ?? [], []);
      assert.ok(guarded.total === undefined || guarded.total === all.entry.length, `total ${guarded.total}`);
    });

    it('reads a comma in type, subtype and outcome as "any of" (FHIR search), as in patient, agent and entity; a repeated one is refused', async () => {
      const auditor = await token('openid fhirUser user/AuditEvent.rs', { username: 'auditor', password: 'demo-password-4' });
      const bearer = await token('launch/patient openid patient/*.rs', { patient: 'pat-1' });
      assert.equal((await fhir('Patient/pat-1', bearer, { 'x-request-id': 'any-of-read' })).status, 200);
      assert.equal((await fhir('Observation?patient=pat-1', bearer, { 'x-request-id': 'any-of-search' })).status, 200);
      assert.equal((await fhir('Patient/pat-2', bearer, { 'x-request-id': 'any-of-refused' })).status, 404);
      const requestIds = async (query: string) => {
        const res = await fhir(`AuditEvent?${query}&_count=1000`, auditor);
        assert.equal(res.status, 200, query);
        return new Set(((await res.json()).entry ?? []).flatMap(({ resource }: any) => resource.entity
          .map((x: any) => x.what?.identifier?.value).filter((v: any) => typeof v === 'string' && v.startsWith('any-of-'))));
      };
      const all = ['any-of-read', 'any-of-refused', 'any-of-search'];
      assert.deepEqual([...await requestIds('subtype=read,search-type')].sort(), all);
      assert.deepEqual([...await requestIds('subtype=http://hl7.org/fhir/restful-interaction|search-type,read&outcome=4,0&type=110114,rest')].sort(), all);
      assert.deepEqual([...await requestIds('subtype=read&outcome=0,8')], ['any-of-read']);
      assert.deepEqual([...await requestIds('type=110100,110114')], [], 'not the accesses');
      for (const repeated of ['type=rest&type=110114', 'subtype=read&subtype=vread', 'outcome=0&outcome=4']) {
        const res = await fhir(`AuditEvent?${repeated}`, auditor);
        assert.equal(res.status, 400, repeated);
        assert.equal((await res.json()).resourceType, 'OperationOutcome');
      }
    });

    it('reads and searches by _id the event asked for, not another one', async () => {
      const auditor = await token('openid fhirUser user/AuditEvent.rs', { username: 'auditor', password: 'demo-password-4' });
      const amy = await token('launch/patient openid patient/AuditEvent.rs patient/Patient.rs', { username: 'amy', password: 'demo-password-3' });
      assert.equal((await fhir('Patient/pat-1', amy, { 'x-request-id': 'by-id-target' })).status, 200);
      const [target] = (await eventsOf({ patient: 'pat-1' })).filter((e) => e.entity.some((x: any) => x.what?.identifier?.value === 'by-id-target'));
      for (const bearer of [auditor, amy]) {
        const read = await fhir(`AuditEvent/${target.id}`, bearer);
        assert.equal(read.status, 200);
        assert.equal((await read.json()).id, target.id);
        const bundle = await (await fhir(`AuditEvent?_id=${target.id}`, bearer)).json();
        assert.deepEqual(bundle.entry.map((e: any) => e.resource.id), [target.id]);
      }
      assert.equal((await fhir('AuditEvent/no-such-event', auditor)).status, 404);
      assert.equal((await (await fhir('AuditEvent?_id=no-such-event', auditor)).json()).total, 0);
    });

    it('pages a search with next links, through the guard, to the last event and no further than the patient may see', async () => {
      const amy = await token('launch/patient openid patient/AuditEvent.rs patient/Patient.rs', { username: 'amy', password: 'demo-password-3' });
      for (const id of ['page-1', 'page-2', 'page-3']) assert.equal((await fhir('Patient/pat-1', amy, { 'x-request-id': id })).status, 200);
      const smith = await token('openid fhirUser user/*.rs', { username: 'dr.smith', password: 'demo-password-1' });
      assert.equal((await fhir('Patient/pat-2', smith)).status, 200);
      // Refused accesses are not shown to the patient (below).
      const stored = (await eventsOf({ patient: 'pat-1' })).filter((e) => e.type.code !== 'rest' || e.outcome === '0');
      assert.ok(stored.length > 2);
      const seen: any[] = [];
      let url: string | undefined = `${server.fhirBase}/AuditEvent?_count=2`;
      let last: any;
      for (let pages = 0; url && pages < 1000; pages++) {
        assert.ok(url.startsWith(`${server.fhirBase}/AuditEvent?`), url);
        last = await (await fetch(url, { headers: { authorization: `Bearer ${amy}` } })).json();
        assert.ok(last.entry.length <= 2);
        seen.push(...last.entry.map((e: any) => e.resource));
        url = last.link.find((l: any) => l.relation === 'next')?.url;
      }
      // The trail grows as it is read (each page read is recorded): every event there was at the start is seen.
      assert.deepEqual(seen.map((e) => e.id).slice(0, stored.length), stored.map((e) => e.id));
      assert.ok(seen.every((e) => e.entity.some((x: any) => x.what?.reference === 'Patient/pat-1')), 'only the patient\'s own');
      // As every filtered search through the guard: a total only when one page holds every match.
      assert.equal(last.total, undefined, 'no total over several pages');
      const one = await (await fetch(`${server.fhirBase}/AuditEvent?_count=1000`, { headers: { authorization: `Bearer ${amy}` } })).json();
      assert.equal(one.total, one.entry.length, 'one page holding every match has its total');
    });

    it('shows a patient the events about themselves only, and of a search across patients not the others it named', async () => {
      const smith = await token('openid fhirUser user/*.rs', { username: 'dr.smith', password: 'demo-password-1' });
      assert.equal((await fhir('Observation?patient=pat-1,pat-2', smith, { 'x-request-id': 'smith-searches-two' })).status, 200);
      const amy = await token('launch/patient openid patient/AuditEvent.rs patient/Patient.rs', { username: 'amy', password: 'demo-password-3' });
      const search = ((await (await fhir('AuditEvent?_count=1000', amy)).json()).entry ?? [])
        .filter(({ resource }: any) => resource.entity.some((e: any) => e.what?.identifier?.value === 'smith-searches-two'));
      assert.equal(search.length, 1, 'the search is in her trail');
      assert.doesNotMatch(JSON.stringify(search), /pat-2/);
      const bundle = await (await fhir('AuditEvent', amy)).json();
      assert.ok(bundle.entry.length > 0);
      for (const { resource } of bundle.entry) assert.ok(resource.entity.some((e: any) => e.what?.reference === 'Patient/pat-1'), resource.id);
      const other = await (await fhir('AuditEvent?patient=pat-2', amy)).json();
      assert.equal((other.entry ?? []).length, 0);
    });

    it('shows a token bound to two patients the events of both (the guard narrows to patient=a,b: an OR) and no third', async () => {
      const added = await cli('user', 'add', 'ward-auditor', '--password', 'ward-pass-1234', '--fhir-user', 'Practitioner/dr-jones', '--auditor', '--patients', 'pat-1,pat-2');
      assert.equal(added.code, 0, added.stdout);
      const reader = await token('openid fhirUser user/*.rs', { username: 'dr.smith', password: 'demo-password-1' });
      for (const id of ['pat-1', 'pat-2', 'pat-3']) assert.equal((await fhir(`Patient/${id}`, reader, { 'x-request-id': `two-bound-${id}` })).status, 200);
      const ward = await token('openid fhirUser user/AuditEvent.rs', { username: 'ward-auditor', password: 'ward-pass-1234' });
      const res = await fhir('AuditEvent?_count=1000', ward);
      assert.equal(res.status, 200);
      const seen = ((await res.json()).entry ?? []).map((e: any) => e.resource)
        .flatMap((e: any) => e.entity.filter((x: any) => x.what?.identifier?.value?.startsWith('two-bound-')).map((x: any) => x.what.identifier.value));
      assert.deepEqual([...new Set(seen)].sort(), ['two-bound-pat-1', 'two-bound-pat-2']);
      const one = await (await fhir('AuditEvent?patient=Patient/pat-2,Patient/pat-3&_count=1000', ward)).json();
      assert.ok(one.entry.length > 0 && one.entry.every((e: any) => e.resource.entity.some((x: any) => x.what?.reference === 'Patient/pat-2')), 'OR, then AND with the binding');
    });

    it("shows a patient staff by role and organization only, as the accounting of disclosures does (#14)", async () => {
      const smith = await token('launch/patient openid fhirUser patient/*.rs', { username: 'dr.smith', password: 'demo-password-1', patient: 'pat-1' });
      assert.equal((await fhir('Patient/pat-1', smith, { 'x-request-id': 'smith-reads-amy' })).status, 200);
      const { id: smithId } = await server.db('users').where('username', 'dr.smith').first('id');
      const amy = await token('launch/patient openid patient/AuditEvent.rs patient/Patient.rs', { username: 'amy', password: 'demo-password-3' });
      const bundle = await (await fhir('AuditEvent?patient=pat-1', amy)).json();
      const seen = bundle.entry.map((e: any) => e.resource).filter((e: any) => e.entity.some((x: any) => x.what?.identifier?.value === 'smith-reads-amy'));
      assert.equal(seen.length, 1);
      const text = JSON.stringify(bundle);
      for (const secret of ['Jane Smith', 'dr.smith', smithId, 'Practitioner/dr-smith']) assert.ok(!text.includes(secret), secret);
      const user = seen[0].agent.find((a: any) => a.requestor && a.role);
      assert.equal(user.role[0].coding[0].code, 'doctor', 'the role stays');
      assert.ok(seen[0].agent.some((a: any) => a.who?.display === 'Example Hospital'), 'the organization stays');
      assert.equal((await (await fhir(`AuditEvent/${seen[0].id}`, amy)).text()).includes('Jane Smith'), false, 'on read too');
      const auditor = await token('openid fhirUser user/AuditEvent.rs', { username: 'auditor', password: 'demo-password-4' });
      assert.ok((await (await fhir(`AuditEvent/${seen[0].id}`, auditor)).text()).includes('Jane Smith'), 'an auditor sees who');
      // Nor can the patient ask which events a given staff member is the agent of.
      for (const agent of ['Practitioner/dr-smith', smithId, 'dr-smith']) {
        const res = await fhir(`AuditEvent?patient=pat-1&agent=${encodeURIComponent(agent)}`, amy);
        assert.equal(res.status, 403, agent);
        assert.equal((await res.json()).resourceType, 'OperationOutcome');
      }
      assert.equal((await fhir('AuditEvent?patient=pat-1&agent:missing=false', amy)).status, 403, 'with a modifier too');
      assert.equal((await fhir('AuditEvent?agent=Practitioner/dr-smith', auditor)).status, 200, 'an auditor may');
    });
    it('shows a patient no staff user id in the entities of their trail: an EHR launch bound to a user', async () => {
      const { id: smithId } = await server.db('users').where('username', 'dr.smith').first('id');
      const created = await cli('launch', 'create', '--patient', 'pat-1', '--user', 'dr.smith', '--client', app.client_id, '--json');
      assert.equal(created.code, 0, created.stdout);
      assert.ok((await eventsOf({ patient: 'pat-1', type: '110100' })).some((e) => JSON.stringify(e).includes(smithId)), 'the trail keeps who');
      const amy = await token('launch/patient openid patient/AuditEvent.rs patient/Patient.rs', { username: 'amy', password: 'demo-password-3' });
      const res = await fhir('AuditEvent?type=110100&_count=1000', amy);
      assert.equal(res.status, 200);
      const text = await res.text();
      assert.ok(JSON.parse(text).entry?.length, 'the launch is in her trail');
      for (const secret of [smithId, 'dr.smith', 'sha256:']) assert.ok(!text.includes(secret), secret);
    });

    it("shows a patient a break-the-glass access by its coded purpose, never the clinician's free-text reason (it can name other people)", async () => {
      const reason = 'Paged by nurse Kim Lee: unconscious, brother Tom says allergic';
      await server.audit.append([emergencyOverrideStarted({
        issuer: server.issuer, recorded: new Date(), user: { sub: 'u-btg', name: 'Dr Jones', roles: [] },
        clientId: app.client_id, purpose: 'BTG', reason, jti: 'btg-jti-1', patient: 'pat-1',
      })]);
      const auditor = await token('openid fhirUser user/AuditEvent.rs', { username: 'auditor', password: 'demo-password-4' });
      assert.ok((await (await fhir('AuditEvent?type=110113&_count=1000', auditor)).text()).includes(reason), 'the privacy office keeps the reason');
      const amy = await token('launch/patient openid patient/AuditEvent.rs patient/Patient.rs', { username: 'amy', password: 'demo-password-3' });
      const bundle = await (await fhir('AuditEvent?type=110113&_count=1000', amy)).json();
      const alert = bundle.entry?.map((e: any) => e.resource).find((e: any) => e.purposeOfEvent?.[0]?.coding?.[0]?.code === 'BTG');
      assert.ok(alert, 'the emergency access is in her trail');
      assert.ok(!JSON.stringify(bundle).includes('Kim Lee'), 'not the reason');
      assert.deepEqual(alert.purposeOfEvent, [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'BTG', display: 'break the glass' }], text: 'emergency access' }]);
      assert.ok(!(await (await fhir(`AuditEvent/${alert.id}`, amy)).text()).includes('Kim Lee'), 'on read too');
    });

    it("shows a patient no refused access to their record: it would name data hidden from them (Observation/obs-1-brca, V), and tell that it exists", async () => {
      const amy = await token('launch/patient openid fhirUser patient/*.rs', { username: 'amy', password: 'demo-password-3' });
      assert.equal((await fhir('Observation/obs-1-brca', amy, { 'x-request-id': 'amy-tries-brca' })).status, 404, 'hidden from her');
      const smith = await token('openid fhirUser user/*.rs', { username: 'dr.smith', password: 'demo-password-1' });
      assert.equal((await fhir('Observation/obs-1-brca', smith, { 'x-request-id': 'smith-tries-brca' })).status, 404);
      const refused = (await eventsOf({ patient: 'pat-1', outcome: '4' })).filter((e) => JSON.stringify(e).includes('tries-brca'));
      assert.equal(refused.length, 2, 'both attempts are recorded against her');
      for (const query of ['AuditEvent?_count=1000', 'AuditEvent?outcome=4&_count=1000']) {
        const res = await fhir(query, amy);
        assert.equal(res.status, 200);
        assert.doesNotMatch(await res.text(), /obs-1-brca|tries-brca/, query);
      }
      for (const event of refused) assert.equal((await fhir(`AuditEvent/${event.id}`, amy)).status, 404, 'nor by id');
      const auditor = await token('openid fhirUser user/AuditEvent.rs', { username: 'auditor', password: 'demo-password-4' });
      assert.match(await (await fhir('AuditEvent?patient=pat-1&outcome=4&_count=1000', auditor)).text(), /smith-tries-brca/, 'the privacy office sees them');
    });

    describe('a record hidden from the patient (Observation/obs-1-brca, V), read by someone cleared for it', () => {
      let amy: string;
      before(async () => {
        await addUser(server.db, {
          username: 'dr.genetics', password: 'genetics-pass', name: 'Gene Tester, MD', fhirUser: 'Practitioner/dr-smith',
          attributes: { roles: [{ system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', code: 'doctor' }], purposes: ['TREAT'], clearance: 'V', sensitivities: [] },
        });
        const genetics = await token('openid fhirUser user/*.rs', { username: 'dr.genetics', password: 'genetics-pass' });
        assert.equal((await fhir('Observation/obs-1-brca', genetics, { 'x-request-id': 'genetics-reads-brca' })).status, 200);
        assert.equal((await fhir('Observation?patient=pat-1&_count=1000', genetics, { 'x-request-id': 'genetics-searches' })).status, 200);
        assert.equal((await fhir('Observation/obs-1a-hba1c', genetics)).status, 200);
        amy = await token('launch/patient openid fhirUser patient/*.rs', { username: 'amy', password: 'demo-password-3' });
        assert.equal((await fhir('Observation/obs-1-brca', amy)).status, 404, 'hidden from her');
      });

      it("is in her trail without being named: who, when and why; her search by entity finds it no more than an id never read; the privacy office sees it whole", async () => {
        const searched = async (query: string) => {
          const res = await fhir(query, amy);
          assert.equal(res.status, 200, query);
          const { entry = [], total } = await res.json();
          return { entries: entry.length, total };
        };
        assert.deepEqual(await searched('AuditEvent?entity=Observation/obs-1-brca'), await searched('AuditEvent?entity=Observation/never-read'), 'the search is no existence test');
        assert.deepEqual(await searched('AuditEvent?entity=Observation/obs-1-brca&_count=1'), await searched('AuditEvent?entity=Observation/never-read&_count=1'), 'nor on pages');
        assert.equal((await searched('AuditEvent?entity=Observation/obs-1a-hba1c')).entries > 0, true, 'her own readable records are still found');
        assert.equal((await fhir('AuditEvent?entity:Observation=obs-1-brca', amy)).status, 403, 'a modifier the guard cannot check is refused');

        const trail = await (await fhir('AuditEvent?patient=pat-1&_count=1000', amy)).text();
        assert.doesNotMatch(trail, /obs-1-brca/);
        const read = JSON.parse(trail).entry.map((e: any) => e.resource).find((e: any) => e.entity.some((x: any) => x.what?.identifier?.value === 'genetics-reads-brca'));
        assert.ok(read, 'the access is in her trail: who, when and why');
        assert.deepEqual(read.entity.filter((x: any) => x.role?.code === '4').map((x: any) => [x.what, x.description, x.securityLabel]), [[undefined, 'Observation(restricted)', undefined]]);
        assert.doesNotMatch(await (await fhir(`AuditEvent/${read.id}`, amy)).text(), /obs-1-brca/, 'nor on read');

        const auditor = await token('openid fhirUser user/AuditEvent.rs', { username: 'auditor', password: 'demo-password-4' });
        const full = await (await fhir('AuditEvent?entity=Observation/obs-1-brca', auditor)).json();
        const entity = full.entry.map((e: any) => e.resource).find((e: any) => e.id === read.id).entity.find((x: any) => x.role?.code === '4');
        assert.deepEqual([entity.what, entity.securityLabel], [{ reference: 'Observation/obs-1-brca' }, [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'V', display: 'very restricted' }]]);
      });

      it('is in her accounting of disclosures (page, CSV, PDF) as a restricted Observation, without its id; the export keeps it', async () => {
        const browser = new Browser();
        const login = await (await browser.fetch(`${server.issuer}/account/login?return_to=${encodeURIComponent('/account/disclosures')}`)).text();
        await browser.fetch(`${server.issuer}/account/login`, { method: 'POST', body: form({ csrf: hiddenValue(login, 'csrf'), username: 'amy', password: 'demo-password-3', return_to: hiddenValue(login, 'return_to') }) });
        const page = await (await browser.fetch(`${server.issuer}/account/disclosures`)).text();
        assert.doesNotMatch(page, /obs-1-brca/);
        assert.match(page, /Observation\(restricted\)/);
        const csv = await (await browser.fetch(`${server.issuer}/account/disclosures.csv`)).text();
        assert.doesNotMatch(csv, /obs-1-brca/);
        assert.match(csv, /,read,Observation\(restricted\),false,genetics-reads-brca,/);
        assert.match(csv, /,genetics-searches,/, 'the search that returned it too');
        const file = join(mkdtempSync(join(tmpdir(), 'disclosures-')), 'r.pdf');
        writeFileSync(file, Buffer.from(await (await browser.fetch(`${server.issuer}/account/disclosures.pdf`)).arrayBuffer()));
        const pdf = (await run('pdftotext', [file, '-'])).stdout;
        assert.match(pdf, /Observation\(restricted\)/);
        assert.doesNotMatch(pdf, /obs-1-brca/);
        assert.match((await cli('audit', 'export', '--patient', 'pat-1', '--format', 'csv')).stdout, /,Observation\/obs-1-brca,false,genetics-reads-brca,/, 'the privacy office\'s export names it');
      });
    });

    it('records a de-identified access for the real patient: their trail, report and export show it de-identified; the app sees pseudonyms only, in the trail too', async () => {
      await addUser(server.db, {
        username: 'research-auditor', password: 'research-pass', name: 'Rita Audit', fhirUser: 'Practitioner/dr-jones',
        attributes: { roles: [{ system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', code: 'researcher' }], purposes: ['HRESCH'], clearance: 'R', sensitivities: [], auditor: true },
      });
      const research = await token('openid fhirUser user/*.rs', { username: 'research-auditor', password: 'research-pass' });
      const found = await (await fhir('Patient?birthdate=1987', research, { 'x-request-id': 'deid-study' })).json(); // Amy Shaw, pat-1
      const pseudonym = found.entry[0].resource.id as string;

      const amy = await token('launch/patient openid patient/AuditEvent.rs patient/Patient.rs', { username: 'amy', password: 'demo-password-3' });
      const own = await (await fhir('AuditEvent?patient=pat-1&_count=1000', amy)).json();
      const event = own.entry.map((e: any) => e.resource).find((e: any) => e.entity.some((x: any) => x.what?.identifier?.value === 'deid-study'));
      assert.ok(event, "in the patient's own trail");
      assert.ok(event.entity.some((x: any) => x.securityLabel?.some((l: any) => l.code === 'PSEUDED')), 'marked pseudonymized');
      const exported = JSON.parse((await cli('audit', 'export', '--patient', 'pat-1', '--format', 'json')).stdout);
      assert.deepEqual(exported.filter((l: any) => l.request_id === 'deid-study').map((l: any) => [l.purpose_of_use, l.deidentified]), [['HRESCH', true]]);
      const browser = new Browser();
      const login = await (await browser.fetch(`${server.issuer}/account/login?return_to=${encodeURIComponent('/account/disclosures')}`)).text();
      await browser.fetch(`${server.issuer}/account/login`, { method: 'POST', body: form({ csrf: hiddenValue(login, 'csrf'), username: 'amy', password: 'demo-password-3', return_to: hiddenValue(login, 'return_to') }) });
      const report = await (await browser.fetch(`${server.issuer}/account/disclosures`)).text();
      assert.match(report, /class="flag deidentified">de-identified</, 'the report says the access was de-identified');

      const trail = await fhir(`AuditEvent?patient=${pseudonym}&_count=1000`, research);
      assert.equal(trail.status, 200);
      const text = await trail.text();
      const events = JSON.parse(text).entry.map((e: any) => e.resource);
      assert.ok(events.length > 0 && events.every((e: any) => e.entity.some((x: any) => x.what?.reference === `Patient/${pseudonym}`)), 'the app finds the trail under the pseudonym');
      // entity.query holds a request as sent, base64: amy's own search of her trail named pat-1.
      const queries = events.flatMap((e: any) => e.entity).filter((x: any) => x.query).map((x: any) => Buffer.from(x.query, 'base64').toString());
      for (const secret of ['pat-1', 'obs-1a-hba1c', 'enc-1a', 'Shaw', 'deid-study']) assert.ok(![text, ...queries].some((t) => t.includes(secret)), secret);
    });
  });

  it("records a patient's reading of their own report with the request's id and address", async () => {
    const browser = new Browser();
    const login = await (await browser.fetch(`${server.issuer}/account/login?return_to=${encodeURIComponent('/account/disclosures')}`)).text();
    const signedIn = await browser.fetch(`${server.issuer}/account/login`, {
      method: 'POST', body: form({ csrf: hiddenValue(login, 'csrf'), username: 'amy', password: 'demo-password-3', return_to: hiddenValue(login, 'return_to') }),
    });
    assert.equal(signedIn.status, 303);
    for (const path of ['/account/disclosures', '/account/disclosures.csv']) {
      const res = await browser.fetch(`${server.issuer}${path}`, { headers: { 'x-request-id': `report-${path.length}` } });
      assert.equal(res.status, 200);
      await res.arrayBuffer();
      const [event] = (await eventsOf({ patient: 'pat-1', type: 'rest' })).filter((e) => e.entity.some((x: any) => x.what?.identifier?.value === `report-${path.length}`));
      assert.ok(event, `${path} is recorded under the request's X-Request-Id`);
      assert.ok(event.agent.some((a: any) => a.network?.address === '127.0.0.1'), 'and where it came from');
    }
  });

  it('refuses with 503 when the access cannot be recorded, and works again afterwards', async () => {
    const bearer = await token('launch/patient openid patient/*.rs', { patient: 'pat-1' });
    await server.db.schema.renameTable('audit_events', 'audit_events_away');
    try {
      const res = await fhir('Patient/pat-1', bearer);
      assert.equal(res.status, 503);
      const body = await res.text();
      assert.match(body, /OperationOutcome/);
      assert.doesNotMatch(body, /audit_events|SQLITE|no such table/i, 'no internals');
    } finally {
      await server.db.schema.renameTable('audit_events_away', 'audit_events');
    }
    assert.equal((await fhir('Patient/pat-1', bearer)).status, 200);
  });

  it('answers a dynamic registration (RFC 7591) only once its record is committed, else 503 and keeps no client', async () => {
    const register = () => fetch(`${server.issuer}/register`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_name: 'Recorded app', redirect_uris: ['https://app.example.org/cb'], scope: 'openid patient/*.rs' }),
    });
    await server.db.schema.renameTable('audit_events', 'audit_events_away');
    try {
      const res = await register();
      assert.equal(res.status, 503);
      const body = await res.json();
      assert.equal(body.error, 'temporarily_unavailable');
      assert.doesNotMatch(JSON.stringify(body), /audit_events|SQLITE|no such table|client_secret/i, 'no internals, no credentials');
    } finally {
      await server.db.schema.renameTable('audit_events_away', 'audit_events');
    }
    const unrecorded = await server.db('oidc_payloads').where('model', 'Client').andWhereLike('payload', '%Recorded app%').count({ n: '*' }).first();
    assert.equal(Number(unrecorded?.n), 0, 'the client nobody was told of is not kept');
    const res = await register();
    assert.equal(res.status, 201);
    const { client_id: clientId } = await res.json();
    const [record] = (await eventsOf({ type: '110113', subtype: '110129' })).filter((e) => e.entity[0].what.identifier.value === clientId);
    assert.equal(record?.action, 'C', 'recorded by the time the answer came');
  });

  it('records an EHR launch minted with the CLI, with this server as requestor; the API answers no launch it could not record (503, none kept)', async () => {
    const created = await cli('launch', 'create', '--patient', 'pat-3', '--encounter', 'enc-3a', '--json');
    assert.equal(created.code, 0, created.stdout);
    const digest = createHash('sha256').update(JSON.parse(created.stdout).launch).digest('base64url');
    const [record] = (await eventsOf({ type: '110100', patient: 'pat-3' })).filter((e) => e.entity[1].what.identifier.value === `sha256:${digest}`);
    assert.equal(record?.action, 'C');
    assert.deepEqual(record.agent.filter((a: any) => a.requestor).map((a: any) => a.type.coding[0].code), ['AuthzOauthService']);
    const backend = await server.addClient({ name: 'EHR', redirectUris: [], auth: { kind: 'secret' }, grantTypes: ['client_credentials'], scope: 'system/Patient.r' });
    const { body: { access_token: ehrToken } } = await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'system/Patient.r' }, backend);
    const launches = await server.db('ehr_launches').count({ n: '*' }).first();
    await server.db.schema.renameTable('audit_events', 'audit_events_away');
    try {
      const res = await fetch(`${server.issuer}/api/launch`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json', authorization: `Bearer ${ehrToken}` }, body: JSON.stringify({ patient: 'pat-3' }) });
      assert.equal(res.status, 503);
      assert.equal(res.headers.get('retry-after'), '1');
      assert.deepEqual(await res.json(), { error: 'temporarily_unavailable', error_description: 'the audit trail cannot take the record of this launch now' }, 'no launch id, no internals');
    } finally {
      await server.db.schema.renameTable('audit_events_away', 'audit_events');
    }
    assert.deepEqual(await server.db('ehr_launches').count({ n: '*' }).first(), launches, 'the launch nobody was told of is not kept');
  });

  describe('the CLI', () => {
    it('verifies the chain, and names the record someone changed', async () => {
      const ok = await cli('audit', 'verify', '--json');
      assert.equal(ok.code, 0, ok.stdout);
      assert.equal(JSON.parse(ok.stdout).ok, true);
      const victim = await server.db('audit_events').orderBy('seq').offset(3).first('seq', 'id', 'event');
      await server.db('audit_events').where('seq', victim.seq).update({ event: victim.event.replace('"outcome":"0"', '"outcome":"4"').replace('"action":"R"', '"action":"E"') + ' ' });
      const broken = await cli('audit', 'verify');
      assert.equal(broken.code, 1);
      assert.match(broken.stdout, new RegExp(`AuditEvent/${victim.id}`));
      await server.db('audit_events').where('seq', victim.seq).update({ event: victim.event });
      assert.equal((await cli('audit', 'verify')).code, 0);
    });

    it('verifies against a signed head kept outside the database: its JWS, a log line, or a log file', async () => {
      await server.audit.checkpoint();
      const { jws, seq, hash } = await server.db('audit_checkpoints').orderBy('seq', 'desc').first('jws', 'seq', 'hash');
      const line = JSON.stringify({ time: new Date().toISOString(), level: 'info', msg: 'audit checkpoint', seq: Number(seq), hash, signature: jws });
      const file = join(mkdtempSync(join(tmpdir(), 'heads-')), 'smart-auth.log');
      writeFileSync(file, `{"msg":"request"}\n${line}\n`);
      for (const given of [jws, line, file]) {
        const ok = await cli('audit', 'verify', '--checkpoint', given, '--json');
        assert.equal(ok.code, 0, ok.stdout);
      }
      const [header, payload] = jws.split('.');
      const altered = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload, 'base64url').toString()), seq: Number(seq) + 1000 })).toString('base64url');
      const forged = await cli('audit', 'verify', '--checkpoint', `${header}.${altered}.${jws.split('.')[2]}`);
      assert.equal(forged.code, 1);
      assert.match(forged.stdout, /signed head given does not verify/);
      const nothing = await cli('audit', 'verify', '--checkpoint', '{"msg":"request"}');
      assert.equal(nothing.code, 2);
      assert.match(nothing.stdout, /no signed audit head found/);
    });

    it("exports a patient's accounting of disclosures: one line per request", async () => {
      const bearer = await token('launch/patient openid patient/*.rs', { patient: 'pat-3' });
      for (const id of ['exp-1', 'exp-2']) await fhir('Observation?patient=pat-3', bearer, { 'x-request-id': id });
      await fhir('Patient/pat-3', bearer, { 'x-request-id': 'exp-3' });
      const json = await cli('audit', 'export', '--patient', 'pat-3', '--format', 'json');
      assert.equal(json.code, 0, json.stdout);
      const lines = JSON.parse(json.stdout);
      const ours = lines.filter((l: any) => ['exp-1', 'exp-2', 'exp-3'].includes(l.request_id));
      assert.equal(ours.length, 3);
      assert.deepEqual(Object.keys(ours[0]), ['date', 'recipient_role', 'recipient_organization', 'app', 'purpose_of_use', 'action', 'resources', 'break_glass', 'request_id', 'network_address', 'outcome', 'deidentified']);
      assert.ok(ours.every((l: any) => l.network_address === '127.0.0.1' && l.outcome === 'disclosed'), 'where, and that it was disclosed');
      assert.ok(ours.every((l: any) => l.recipient_organization === 'Example Hospital' && l.purpose_of_use === 'TREAT' && l.break_glass === false));
      assert.ok(ours.every((l: any) => !('recipient_name' in l)), 'no names without --names');
      const named = JSON.parse((await cli('audit', 'export', '--patient', 'pat-3', '--format', 'json', '--names')).stdout)
        .filter((l: any) => ['exp-1', 'exp-2', 'exp-3'].includes(l.request_id));
      assert.deepEqual(named.map((l: any) => l.recipient_name), ['Jane Smith, MD', 'Jane Smith, MD', 'Jane Smith, MD'], '--names gives the staff member');
      const csv = await cli('audit', 'export', '--patient', 'pat-3', '--format', 'csv');
      assert.match(csv.stdout.split('\n')[0], /^date,recipient_role,recipient_organization,app,purpose_of_use,action,resources,break_glass,request_id,network_address,outcome,deidentified/);
      const pdf = await cli('audit', 'export', '--patient', 'pat-3', '--format', 'pdf');
      assert.equal(pdf.stdout.slice(0, 5), '%PDF-');
    });

    it("keeps another app's access on its own line when it reuses a request id (the client chooses it)", async () => {
      const other = await server.addClient({ auth: { kind: 'secret' } });
      const ours = await token('launch/patient openid patient/*.rs', { patient: 'pat-3' });
      const theirs = (await authorizedTokens({ server, client: other, scope: 'launch/patient openid patient/*.rs', patient: 'pat-3' })).access_token as string;
      assert.equal((await fhir('Patient/pat-3', ours, { 'x-request-id': 'shared-req' })).status, 200);
      assert.equal((await fhir('Observation?patient=pat-3', theirs, { 'x-request-id': 'shared-req' })).status, 200);
      const lines = JSON.parse((await cli('audit', 'export', '--patient', 'pat-3', '--format', 'json')).stdout).filter((l: any) => l.request_id === 'shared-req');
      const appOf = (name: string) => name.replace(/^.* \((.*)\)$/, '$1');
      assert.deepEqual(lines.map((l: any) => [appOf(l.app), l.action]), [[app.client_id, 'read'], [other.client_id, 'search']]);
    });

    it('keeps each access on its own line when one token sends the same request id again (one request is one line, not one id)', async () => {
      const bearer = await token('launch/patient openid patient/*.rs', { patient: 'pat-1' });
      for (const path of ['Patient/pat-1', 'Observation?patient=pat-1', 'Patient/pat-1']) {
        assert.equal((await fhir(path, bearer, { 'x-request-id': 'one-id-again' })).status, 200);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      const exported = JSON.parse((await cli('audit', 'export', '--patient', 'pat-1', '--format', 'json')).stdout).filter((l: any) => l.request_id === 'one-id-again');
      assert.deepEqual(exported.map((l: any) => l.action), ['read', 'search', 'read'], 'in the export');
      const browser = new Browser();
      const login = await (await browser.fetch(`${server.issuer}/account/login?return_to=${encodeURIComponent('/account/disclosures')}`)).text();
      await browser.fetch(`${server.issuer}/account/login`, {
        method: 'POST', body: form({ csrf: hiddenValue(login, 'csrf'), username: 'amy', password: 'demo-password-3', return_to: hiddenValue(login, 'return_to') }),
      });
      const csv = await (await browser.fetch(`${server.issuer}/account/disclosures.csv`)).text();
      assert.equal(csv.split('\r\n').filter((row) => row.includes(',one-id-again,')).length, 3, "in the patient's own report");
    });

    it('records each use of the trail by an administrator: an export, a privacy hold set and released, a purge (DICOM 110101)', async () => {
      const uses = async () => (await eventsOf({ type: '110101' })).map((e) => [e.action, e.entity.at(-1).description, e.entity.find((x: any) => x.what)?.what.reference,
        Object.fromEntries((e.entity.at(-1).detail ?? []).map((d: any) => [d.type, d.valueString]))]);
      const before = (await uses()).length;
      assert.equal((await cli('audit', 'export', '--patient', 'pat-3', '--format', 'csv', '--names')).code, 0);
      assert.equal((await cli('audit', 'hold', '--patient', 'pat-4', '--reason', 'complaint 17')).code, 0);
      assert.equal((await cli('audit', 'release', '--patient', 'pat-4')).code, 0);
      assert.equal((await cli('audit', 'release', '--patient', 'pat-4')).code, 2, 'no hold left: nothing released, nothing recorded');
      assert.equal((await cli('audit', 'purge', '--before', '2000-01-01')).code, 0);
      assert.deepEqual((await uses()).slice(before), [
        ['R', 'export', 'Patient/pat-3', { format: 'csv', names: 'true' }],
        ['U', 'hold', 'Patient/pat-4', { reason: 'complaint 17' }],
        ['U', 'release', 'Patient/pat-4', {}],
        ['D', 'purge', undefined, { before: '2000-01-01T00:00:00.000Z', removed: '0', kept: '0' }],
      ]);
      const [exported] = (await eventsOf({ type: '110101', patient: 'pat-3' }));
      assert.ok(exported, "an export is in the patient's trail");
      assert.equal((await eventsOf({ type: '110101', patient: 'pat-4' })).length, 0, 'a hold and its reason are not');
    });

    it('purges old records but keeps those under a privacy hold, and the chain still verifies', async () => {
      assert.equal((await cli('audit', 'hold', '--patient', 'pat-1', '--reason', 'litigation')).code, 0);
      const heldBefore = (await eventsOf({ patient: 'pat-1' })).length;
      const purge = await cli('audit', 'purge', '--before', new Date().toISOString(), '--json');
      assert.equal(purge.code, 0, purge.stdout);
      assert.ok(JSON.parse(purge.stdout).removed > 0);
      assert.equal((await eventsOf({ patient: 'pat-1' })).length, heldBefore, 'held records are kept');
      assert.equal((await eventsOf({ patient: 'pat-2' })).length, 0);
      const verified = await cli('audit', 'verify', '--json');
      assert.equal(verified.code, 0, verified.stdout);
      assert.equal((await cli('audit', 'release', '--patient', 'pat-1')).code, 0);
      assert.equal((await cli('audit', 'purge', '--before', 'not-a-date')).code, 2);
      const future = await cli('audit', 'purge', '--before', new Date(Date.now() + 86_400_000).toISOString());
      assert.equal(future.code, 2, 'a cut-off to come would take records still being written');
      assert.match(future.stdout, /is in the future/);
      const withinRetention = await cliWith({ AUDIT_RETENTION_DAYS: '30' }, 'audit', 'purge', '--before', new Date(Date.now() - 10 * 86_400_000).toISOString());
      assert.equal(withinRetention.code, 2, 'records the retention policy keeps');
      assert.match(withinRetention.stdout, /would remove records AUDIT_RETENTION_DAYS \(30\) keeps/);
      assert.match((await cli('audit', 'purge')).stdout, /AUDIT_RETENTION_DAYS/);
    });
  });
});
