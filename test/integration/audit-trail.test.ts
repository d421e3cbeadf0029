// The audit trail through the real server: every guarded access and every security event of the
// authorization server, the FHIR view of the trail, failing closed, and the CLI over it.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, Browser, exchangeCode, form, hiddenValue } from '../support/oauth.ts';

const run = promisify(execFile);
const BIN = new URL('../../scripts/smart-auth.js', import.meta.url).pathname;

describe('audit trail', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  before(async () => {
    server = await startTestServer();
    app = await server.addClient({ auth: { kind: 'secret' } });
  });
  after(() => server.stop());

  const token = async (scope: string, who: { username?: string; password?: string; patient?: string } = {}) =>
    (await exchangeCode(server.issuer, await authorize({ server, client: app, scope, ...who }), app)).body.access_token as string;
  const fhir = (path: string, bearer?: string, headers: Record<string, string> = {}) =>
    fetch(`${server.fhirBase}/${path}`, { headers: { ...(bearer ? { authorization: `Bearer ${bearer}` } : {}), ...headers } });
  const eventsOf = (filter: Parameters<TestServer['audit']['search']>[0]) => server.audit.search(filter) as Promise<any[]>;
  const cli = async (...args: string[]) => {
    try {
      const { stdout } = await run(process.execPath, [BIN, ...args], { env: { ...process.env, DATABASE_URL: server.config.databaseUrl, ISSUER: server.issuer } });
      return { code: 0, stdout };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout + e.stderr };
    }
  };

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
    const tokens = (await exchangeCode(server.issuer, await authorize({ server, client: app, scope: 'launch/patient openid offline_access patient/*.rs', patient: 'pat-2' }), app)).body;
    const basic = `Basic ${Buffer.from(`${app.client_id}:${app.client_secret}`).toString('base64')}`;
    await fetch(`${server.issuer}/introspect`, { method: 'POST', headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: tokens.access_token }) });
    await fetch(`${server.issuer}/revoke`, { method: 'POST', headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: tokens.access_token }) });
    const after = (await eventsOf({})).slice(before);
    const subtypes = after.map((e: any) => e.subtype?.[0]?.code);
    for (const expected of ['110122', 'AuthZ-Consent', 'ITI-71', 'ITI-102', '110135']) assert.ok(subtypes.includes(expected), `${expected} in ${subtypes}`);
    const serialized = JSON.stringify(after);
    assert.ok(!serialized.includes(tokens.access_token) && !serialized.includes(tokens.refresh_token), 'no token value in the trail');
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

    it('shows a patient the events about themselves only', async () => {
      const amy = await token('launch/patient openid patient/AuditEvent.rs patient/Patient.rs', { username: 'amy', password: 'demo-password-3' });
      const bundle = await (await fhir('AuditEvent', amy)).json();
      assert.ok(bundle.entry.length > 0);
      for (const { resource } of bundle.entry) assert.ok(resource.entity.some((e: any) => e.what?.reference === 'Patient/pat-1'), resource.id);
      const other = await (await fhir('AuditEvent?patient=pat-2', amy)).json();
      assert.equal((other.entry ?? []).length, 0);
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

    it("exports a patient's accounting of disclosures: one line per request", async () => {
      const bearer = await token('launch/patient openid patient/*.rs', { patient: 'pat-3' });
      for (const id of ['exp-1', 'exp-2']) await fhir('Observation?patient=pat-3', bearer, { 'x-request-id': id });
      await fhir('Patient/pat-3', bearer, { 'x-request-id': 'exp-3' });
      const json = await cli('audit', 'export', '--patient', 'pat-3', '--format', 'json');
      assert.equal(json.code, 0, json.stdout);
      const lines = JSON.parse(json.stdout);
      const ours = lines.filter((l: any) => ['exp-1', 'exp-2', 'exp-3'].includes(l.request_id));
      assert.equal(ours.length, 3);
      assert.deepEqual(Object.keys(ours[0]), ['date', 'recipient_role', 'recipient_organization', 'app', 'purpose_of_use', 'action', 'resources', 'break_glass', 'request_id']);
      assert.ok(ours.every((l: any) => l.recipient_organization === 'Example Hospital' && l.purpose_of_use === 'TREAT' && l.break_glass === false));
      const csv = await cli('audit', 'export', '--patient', 'pat-3', '--format', 'csv');
      assert.match(csv.stdout.split('\n')[0], /^date,recipient_role,recipient_organization,app,purpose_of_use,action,resources,break_glass,request_id/);
      const pdf = await run(process.execPath, [BIN, 'audit', 'export', '--patient', 'pat-3', '--format', 'pdf'], { env: { ...process.env, DATABASE_URL: server.config.databaseUrl }, encoding: 'buffer' });
      assert.equal(pdf.stdout.subarray(0, 5).toString(), '%PDF-');
    });

    it('purges old records but keeps those under a privacy hold, and the chain still verifies', async () => {
      assert.equal((await cli('audit', 'hold', '--patient', 'pat-1', '--reason', 'litigation')).code, 0);
      const heldBefore = (await eventsOf({ patient: 'pat-1' })).length;
      const purge = await cli('audit', 'purge', '--before', new Date(Date.now() + 60_000).toISOString(), '--json');
      assert.equal(purge.code, 0, purge.stdout);
      assert.ok(JSON.parse(purge.stdout).removed > 0);
      assert.equal((await eventsOf({ patient: 'pat-1' })).length, heldBefore, 'held records are kept');
      assert.equal((await eventsOf({ patient: 'pat-2' })).length, 0);
      const verified = await cli('audit', 'verify', '--json');
      assert.equal(verified.code, 0, verified.stdout);
      assert.equal((await cli('audit', 'release', '--patient', 'pat-1')).code, 0);
      assert.equal((await cli('audit', 'purge', '--before', 'not-a-date')).code, 2);
      assert.match((await cli('audit', 'purge')).stdout, /AUDIT_RETENTION_DAYS/);
    });
  });
});
