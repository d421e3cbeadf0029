// Refused requests in the audit trail: each error answer at /token is an ITI-71 AuditEvent with a failure
// outcome (at /introspect ITI-102, at /revoke a revocation event), committed after the answer, holding the
// OAuth error and who asked but no credential.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, basicAuth, decodeJwt, exchangeCode, tokenRequest } from '../support/oauth.ts';
import { ASSERTION_TYPE, backendClient, type BackendClient } from '../support/backend.ts';
import { groupCommitFor } from '../../server/group-commit.ts';
import { addUser } from '../../server/oidc/users.ts';

const run = promisify(execFile);
const BIN = new URL('../../scripts/smart-auth.js', import.meta.url).pathname;
const SCOPE = 'launch/patient openid fhirUser offline_access patient/*.rs';
/** Low enough for the last test to reach it; the tests before it send far fewer token requests. */
const TOKEN_LIMIT = 60;

/** The refusal records (outcome 4) of a subtype whose X-Request-Id starts with `prefix`, once the records committed after their answers are in. */
async function refusalsOf(server: TestServer, subtype: string, prefix: string): Promise<any[]> {
  await groupCommitFor(server.db).idle();
  return (await server.audit.search({ subtype, outcome: '4' }) as any[])
    .filter((e) => e.entity.some((x: any) => x.type?.code === 'XrequestId' && String(x.what.identifier.value).startsWith(prefix)));
}
/** The one refusal record of the request sent with this X-Request-Id. */
async function refusalOf(server: TestServer, subtype: string, requestId: string): Promise<any> {
  const found = (await refusalsOf(server, subtype, requestId)).filter((e) => e.entity.some((x: any) => x.what?.identifier?.value === requestId));
  assert.equal(found.length, 1, `one refusal record for ${requestId}`);
  return found[0];
}
const detail = (event: any, type: string) => event.entity[0].detail.find((d: any) => d.type === type)?.valueString;
const clientAgent = (event: any) => event.agent.find((a: any) => a.type.coding[0].code === '110150');
const storedTrail = async (server: TestServer) => (await server.db('audit_events').select('event')).map((r: { event: string }) => r.event).join('\n');

describe('refused token requests in the audit trail', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  let backend: BackendClient;
  before(async () => {
    server = await startTestServer({ RATE_LIMIT_TOKEN_PER_MINUTE: String(TOKEN_LIMIT) });
    app = await server.addClient({ auth: { kind: 'secret' } });
    backend = await backendClient(server, 'system/Patient.rs');
  });
  after(() => server.stop());

  /** A token request sent with an X-Request-Id, to find its record by. */
  const send = (requestId: string, body: Record<string, string>, client?: { client_id: string; client_secret?: string }, path = '/token') =>
    tokenRequest(server.issuer, body, client, { 'x-request-id': requestId }, path);
  const recordOf = (requestId: string) => refusalOf(server, 'ITI-71', requestId);

  it('records a replayed code (invalid_grant) with the client and the user, and the grant is revoked', async () => {
    const launch = await authorize({ server, client: app, scope: SCOPE });
    const first = await exchangeCode(server.issuer, launch, app);
    assert.equal(first.res.status, 200);
    const replay = await send('replayed-code', { grant_type: 'authorization_code', code: launch.code!, redirect_uri: app.redirect_uri, code_verifier: launch.verifier }, app);
    assert.equal(replay.res.status, 400);
    assert.equal(replay.body.error, 'invalid_grant');

    const event = await recordOf('replayed-code');
    assert.equal(event.type.code, '110114');
    assert.equal(event.action, 'E');
    assert.match(event.outcomeDesc, /^invalid_grant: /);
    assert.deepEqual(clientAgent(event).who.identifier, { system: server.issuer, value: app.client_id });
    assert.equal(clientAgent(event).requestor, true);
    assert.equal(clientAgent(event).network.address, '127.0.0.1');
    assert.equal(detail(event, 'client_authenticated'), 'true');
    assert.equal(detail(event, 'grant_type'), 'authorization_code');
    const sub = decodeJwt(first.body.access_token).payload.sub;
    assert.ok(event.agent.some((a: any) => a.who?.identifier?.value === sub && a.requestor === false), 'the user whose code it was');
    assert.equal(detail(event, 'patient'), first.body.patient);

    // The reuse ended the grant: its access token and refresh token are refused from now on (and that refusal is recorded too).
    assert.equal((await fetch(`${server.fhirBase}/Patient/${first.body.patient}`, { headers: { authorization: `Bearer ${first.body.access_token}` } })).status, 401);
    const refresh = await send('refresh-of-revoked-grant', { grant_type: 'refresh_token', refresh_token: first.body.refresh_token }, app);
    assert.equal(refresh.res.status, 400);
    assert.equal((await recordOf('refresh-of-revoked-grant')).outcome, '4');

    const trail = await storedTrail(server);
    for (const secret of [launch.code!, launch.verifier, first.body.refresh_token, app.client_secret!]) assert.ok(!trail.includes(secret), 'no credential in the trail');
  });

  it('records a bad and a replayed client assertion as invalid_client from a client that did not authenticate, without the assertion', async () => {
    const wrongAudience = await backend.assertion({ claims: { aud: 'https://elsewhere.example/token' } });
    const body = (assertion: string) => ({ grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: ASSERTION_TYPE, client_assertion: assertion });
    const bad = await send('bad-assertion', body(wrongAudience));
    assert.equal(bad.res.status, 401);
    assert.equal(bad.body.error, 'invalid_client');
    const used = await backend.assertion();
    assert.equal((await send('first-use', body(used))).res.status, 200);
    const replayed = await send('replayed-assertion', body(used), undefined, '/Token/');
    assert.equal(replayed.res.status, 401, 'under another spelling of the path too');

    for (const requestId of ['bad-assertion', 'replayed-assertion']) {
      const event = await recordOf(requestId);
      assert.match(event.outcomeDesc, /^invalid_client: /);
      assert.deepEqual(clientAgent(event).who.identifier.value, backend.client_id, 'the client as the assertion named it');
      assert.equal(detail(event, 'client_authenticated'), 'false');
    }
    const trail = await storedTrail(server);
    for (const assertion of [wrongAudience, used]) {
      for (const part of assertion.split('.')) assert.ok(!trail.includes(part), 'no part of an assertion in the trail');
    }
  });

  it('records a wrong client secret without the secret, and a refresh token that is not one without the token', async () => {
    const wrong = { client_id: app.client_id, client_secret: 'wrong-secret-4f1c9a2b7d' };
    const refused = await send('wrong-secret', { grant_type: 'refresh_token', refresh_token: 'never-issued-7e3d1b5a9c' }, wrong);
    assert.equal(refused.res.status, 401);
    assert.equal(refused.body.error, 'invalid_client');
    const event = await recordOf('wrong-secret');
    assert.equal(clientAgent(event).who.identifier.value, app.client_id);
    assert.equal(detail(event, 'client_authenticated'), 'false');

    const invalid = await send('invalid-refresh', { grant_type: 'refresh_token', refresh_token: 'never-issued-7e3d1b5a9c' }, app);
    assert.equal(invalid.res.status, 400);
    assert.equal(invalid.body.error, 'invalid_grant');
    const refresh = await recordOf('invalid-refresh');
    assert.equal(detail(refresh, 'client_authenticated'), 'true');
    assert.equal(detail(refresh, 'grant_type'), 'refresh_token');

    const trail = await storedTrail(server);
    for (const secret of ['wrong-secret-4f1c9a2b7d', 'never-issued-7e3d1b5a9c']) assert.ok(!trail.includes(secret), `${secret} not in the trail`);
  });

  it('answers in JSON (RFC 6749 section 5.2) also a caller that accepts HTML, and records its OAuth error', async () => {
    const refused = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: 'never-issued-html' }, app, { 'x-request-id': 'html-caller', accept: 'text/html' });
    assert.equal(refused.res.status, 400);
    assert.equal(refused.body.error, 'invalid_grant');
    assert.match((await recordOf('html-caller')).outcomeDesc, /^invalid_grant: /);
    const introspection = await fetch(`${server.issuer}/introspect`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'text/html', authorization: basicAuth({ ...app, client_secret: 'wrong' }) },
      body: new URLSearchParams({ token: 'x' }),
    });
    assert.equal(introspection.status, 401);
    assert.equal((await introspection.json()).error, 'invalid_client');
  });

  it('records a refresh refused because the user may no longer assert its purpose, with the user and the patient', async () => {
    const doctor = { roles: [{ system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', code: 'doctor' }], purposes: ['TREAT', 'HPAYMT'], patients: ['pat-1', 'pat-3'] };
    const user = await addUser(server.db, { username: 'dr.refused', password: 'refused-password', fhirUser: 'Practitioner/dr-refused', attributes: doctor });
    const launch = await authorize({ server, client: app, scope: SCOPE, username: 'dr.refused', password: 'refused-password', patient: 'pat-3', purpose: 'HPAYMT' });
    const tokens = (await exchangeCode(server.issuer, launch, app)).body;
    await server.db('users').where({ id: user.id }).update({ attributes: JSON.stringify({ ...doctor, purposes: ['TREAT'] }) });
    const refused = await send('purpose-refused', { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, app);
    assert.equal(refused.res.status, 400);
    assert.equal(refused.body.error, 'invalid_grant');
    const event = await recordOf('purpose-refused');
    assert.equal(event.outcomeDesc, `invalid_grant: ${refused.body.error_description}`);
    assert.ok(event.agent.some((a: any) => a.who?.identifier?.value === user.id), 'the user');
    assert.equal(detail(event, 'patient'), 'pat-3');
    assert.ok(!(await storedTrail(server)).includes(tokens.refresh_token));
  });

  it('answers a request that names no client 401 invalid_client (RFC 6749 section 5.2), and records it', async () => {
    const refused = await send('no-client', { grant_type: 'client_credentials' });
    assert.equal(refused.res.status, 401);
    assert.equal(refused.body.error, 'invalid_client');
    assert.equal(refused.res.headers.get('www-authenticate'), `Basic realm="${server.issuer}"`);
    const basic = await tokenRequest(server.issuer, { grant_type: 'client_credentials' }, { client_id: '', client_secret: 'some-secret' });
    assert.equal(basic.res.status, 401, 'a Basic header with an empty client_id names no client either');
    assert.equal(basic.body.error, 'invalid_client');
    assert.match(basic.res.headers.get('www-authenticate') ?? '', /^Basic realm=/);
    const event = await recordOf('no-client');
    assert.equal(clientAgent(event).who, undefined);
    assert.equal(clientAgent(event).network.address, '127.0.0.1');
  });

  it('shows the refusals to an auditor at /fhir/AuditEvent, and the chain verifies', async () => {
    const auditorApp = await server.addClient({ auth: { kind: 'public' } });
    const launch = await authorize({ server, client: auditorApp, scope: 'openid fhirUser user/AuditEvent.rs', username: 'auditor', password: 'demo-password-4' });
    const auditor = (await exchangeCode(server.issuer, launch, auditorApp)).body.access_token;
    const res = await fetch(`${server.fhirBase}/AuditEvent?subtype=ITI-71&outcome=4&_count=1000`, { headers: { authorization: `Bearer ${auditor}` } });
    assert.equal(res.status, 200);
    const ids = (await res.json()).entry.map((e: any) => e.resource.id);
    for (const requestId of ['replayed-code', 'bad-assertion', 'wrong-secret', 'invalid-refresh']) assert.ok(ids.includes((await recordOf(requestId)).id), requestId);

    const { stdout } = await run(process.execPath, [BIN, 'audit', 'verify', '--json'], { env: { ...process.env, DATABASE_URL: server.config.databaseUrl, ISSUER: server.issuer } });
    assert.equal(JSON.parse(stdout).ok, true);
  });

  it('answers a refusal it cannot record as the same refusal (not 503, never a token)', async () => {
    await groupCommitFor(server.db).idle();
    await server.db.schema.renameTable('audit_events', 'audit_events_away');
    try {
      const refused = await send('unrecordable', { grant_type: 'refresh_token', refresh_token: 'never-issued-unrecorded' }, app);
      assert.equal(refused.res.status, 400);
      assert.equal(refused.body.error, 'invalid_grant');
      await groupCommitFor(server.db).idle();
    } finally {
      await server.db.schema.renameTable('audit_events_away', 'audit_events');
    }
  });

  it('answers a token request whose commit failed 500 server_error in JSON, hands out no token, and records it as the server\'s failure (outcome 8)', async () => {
    await groupCommitFor(server.db).idle();
    const postgres = server.db.client.config.client === 'pg';
    // The issuance record cannot be written (a full disk, a lost connection): the token's commit fails, the failure's record does not.
    if (postgres) {
      await server.db.raw(`CREATE FUNCTION fail_issuance() RETURNS trigger AS $$ BEGIN IF NEW.subtype_code = 'ITI-71' AND NEW.outcome = '0' THEN RAISE EXCEPTION 'disk full'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql`);
      await server.db.raw('CREATE TRIGGER fail_issuance BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION fail_issuance()');
    } else {
      await server.db.raw(`CREATE TRIGGER fail_issuance BEFORE INSERT ON audit_events WHEN NEW.subtype_code = 'ITI-71' AND NEW.outcome = '0' BEGIN SELECT RAISE(ABORT, 'disk full'); END`);
    }
    let failed;
    try {
      failed = await send('commit-failed', { grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: ASSERTION_TYPE, client_assertion: await backend.assertion() });
    } finally {
      await server.db.raw(`DROP TRIGGER fail_issuance${postgres ? ' ON audit_events' : ''}`);
      if (postgres) await server.db.raw('DROP FUNCTION fail_issuance()');
    }
    assert.equal(failed.res.status, 500);
    assert.deepEqual(failed.body, { error: 'server_error', error_description: 'An unexpected error occurred.' }, 'no token, no internals, in JSON to a client that accepts anything');
    await groupCommitFor(server.db).idle();
    const events = (await server.audit.search({ subtype: 'ITI-71' }) as any[])
      .filter((e) => e.entity.some((x: any) => x.type?.code === 'XrequestId' && x.what.identifier.value === 'commit-failed'));
    assert.deepEqual(events.map((e) => [e.outcome, e.outcomeDesc, detail(e, 'error'), detail(e, 'client_authenticated')]),
      [['8', 'server_error: An unexpected error occurred.', 'server_error', 'true']], 'one record: the server failed a client that authenticated');
    assert.equal(clientAgent(events[0]).who.identifier.value, backend.client_id);
  });

  it('records no request the token rate limit refused (429): the limit bounds the refusals a client can write', async () => {
    await groupCommitFor(server.db).idle();
    const answers: number[] = [];
    for (let i = 0; i <= TOKEN_LIMIT; i++) answers.push((await send(`flood-${i}`, { grant_type: 'client_credentials' })).res.status);
    assert.ok(answers.includes(429), 'the limit was reached');
    assert.equal((await refusalsOf(server, 'ITI-71', 'flood-')).length, answers.filter((s) => s !== 429).length);
  });
});

// The same for the introspection (ITI-102) and revocation endpoints, behind their own rate limits.
describe('refused introspection and revocation requests in the audit trail', () => {
  /** Low enough for the last test to reach them; the tests before it send fewer requests. */
  const LIMIT = 15;
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  let accessToken: string;
  before(async () => {
    server = await startTestServer({ RATE_LIMIT_TOKEN_PER_MINUTE: String(LIMIT), RATE_LIMIT_INTROSPECT_PER_MINUTE: String(LIMIT) });
    app = await server.addClient({ auth: { kind: 'secret' } });
    accessToken = (await (await backendClient(server, 'system/Patient.rs')).token('system/Patient.rs')).body.access_token;
  });
  after(() => server.stop());

  async function send(path: '/introspect' | '/revoke' | '/Revoke/', requestId: string, authorization?: string) {
    const res = await fetch(`${server.issuer}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-request-id': requestId, ...(authorization && { authorization }) },
      body: new URLSearchParams({ token: accessToken }),
    });
    return { status: res.status, body: await res.json().catch(() => undefined) };
  }
  const recordOf = (subtype: string, requestId: string) => refusalOf(server, subtype, requestId);

  it('records a refused introspection (wrong secret, unknown client, no client, a bearer token that is not one) as ITI-102 with a failure outcome, without a secret or token', async () => {
    const refused = {
      'introspect-wrong-secret': await send('/introspect', 'introspect-wrong-secret', basicAuth({ ...app, client_secret: 'wrong-secret-1f2e3d4c5b' })),
      'introspect-unknown-client': await send('/introspect', 'introspect-unknown-client', basicAuth({ client_id: 'nobody-at-all', client_secret: 'unknown-secret-6a7b8c9d' })),
      'introspect-no-client': await send('/introspect', 'introspect-no-client'),
      'introspect-bad-bearer': await send('/introspect', 'introspect-bad-bearer', 'Bearer not-a-token-0a9b8c7d6e'),
    };
    for (const [requestId, answer] of Object.entries(refused)) {
      assert.equal(answer.status, 401, requestId);
      const event = await recordOf('ITI-102', requestId);
      assert.deepEqual([event.type.code, event.action, event.outcome], ['110114', 'E', '4'], requestId);
      assert.equal(event.outcomeDesc.split(':')[0], answer.body.error, requestId);
      assert.equal(detail(event, 'client_authenticated'), 'false', requestId);
      assert.equal(clientAgent(event).network.address, '127.0.0.1');
    }
    assert.equal(clientAgent(await recordOf('ITI-102', 'introspect-wrong-secret')).who.identifier.value, app.client_id);
    assert.equal(clientAgent(await recordOf('ITI-102', 'introspect-unknown-client')).who.identifier.value, 'nobody-at-all');
    assert.equal(clientAgent(await recordOf('ITI-102', 'introspect-no-client')).who, undefined);
    const trail = await storedTrail(server);
    for (const secret of ['wrong-secret-1f2e3d4c5b', 'unknown-secret-6a7b8c9d', 'not-a-token-0a9b8c7d6e', ...accessToken.split('.')]) {
      assert.ok(!trail.includes(secret), `${secret.slice(0, 20)} not in the trail`);
    }
  });

  it('records a refused revocation (wrong secret, no client) as a revocation (110113/110135, action D) with a failure outcome, and revokes nothing', async () => {
    const wrong = await send('/revoke', 'revoke-wrong-secret', basicAuth({ ...app, client_secret: 'wrong-secret-2b3c4d5e6f' }));
    const none = await send('/Revoke/', 'revoke-no-client');
    for (const [requestId, answer] of [['revoke-wrong-secret', wrong], ['revoke-no-client', none]] as const) {
      assert.equal(answer.status, 401, requestId);
      assert.equal(answer.body.error, 'invalid_client');
      const event = await recordOf('110135', requestId);
      assert.deepEqual([event.type.code, event.action, event.outcome], ['110113', 'D', '4'], requestId);
      assert.match(event.outcomeDesc, /^invalid_client: /);
    }
    assert.equal(clientAgent(await recordOf('110135', 'revoke-wrong-secret')).who.identifier.value, app.client_id);
    const trail = await storedTrail(server);
    for (const secret of ['wrong-secret-2b3c4d5e6f', ...accessToken.split('.')]) assert.ok(!trail.includes(secret), `${secret.slice(0, 20)} not in the trail`);
    const rs = await server.addClient({ name: 'FHIR server', redirectUris: [], auth: { kind: 'secret' }, resourceServer: true });
    assert.equal((await send('/introspect', 'still-active', basicAuth(rs))).body.active, true, 'nothing was revoked');
  });

  it('records no request the rate limits refused (429): /introspect on its own budget, /revoke on the token one', async () => {
    await groupCommitFor(server.db).idle();
    for (const [path, subtype] of [['/introspect', 'ITI-102'], ['/revoke', '110135']] as const) {
      const answers: number[] = [];
      for (let i = 0; i <= LIMIT; i++) answers.push((await send(path, `flood-${subtype}-${i}`)).status);
      assert.ok(answers.includes(429), `the limit was reached at ${path}`);
      assert.equal((await refusalsOf(server, subtype, `flood-${subtype}-`)).length, answers.filter((s) => s !== 429).length, path);
    }
  });
});
