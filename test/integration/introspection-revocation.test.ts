// RFC 7662 introspection and RFC 7009 revocation, for JWT access tokens and refresh tokens.
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorizedTokens, basicAuth, decodeJwt, revokeToken, tokenRequest } from '../support/oauth.ts';
import { backendClient, ASSERTION_TYPE } from '../support/backend.ts';
import { groupCommitFor } from '../../server/group-commit.ts';
import { addUser } from '../../server/oidc/users.ts';
import { endAllSessions } from '../../server/auth/sessions.ts';
import { removeClient } from '../../server/oidc/clients.ts';
import { runCli } from '../support/cli.ts';

describe('introspection and revocation', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  let rs: Awaited<ReturnType<TestServer['addClient']>>;
  before(async () => {
    server = await startTestServer();
    app = await server.addClient({ auth: { kind: 'secret' } });
    rs = await server.addClient({ name: 'FHIR server', redirectUris: [], auth: { kind: 'secret' }, resourceServer: true });
  });
  after(() => server.stop());


  async function introspect(token: string, authorization?: string, extra: Record<string, string> = {}) {
    const res = await fetch(`${server.issuer}/introspect`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...(authorization ? { authorization } : {}) },
      body: new URLSearchParams({ token, ...extra }),
    });
    return { res, body: (await res.json()) as Record<string, any> };
  }
  async function launch(patient = 'pat-2') {
    return authorizedTokens({ server, client: app, scope: 'launch/patient openid fhirUser offline_access patient/*.rs', patient });
  }

  it('introspects a JWT access token with its scope, context and identity (SMART 2.2)', async () => {
    const tokens = await launch();
    const idToken = decodeJwt(tokens.id_token).payload;
    const { res, body } = await introspect(tokens.access_token, basicAuth(rs));
    assert.equal(res.status, 200);
    assert.equal(body.active, true);
    assert.equal(body.scope, tokens.scope);
    assert.equal(body.client_id, app.client_id);
    assert.equal(body.patient, 'pat-2');
    assert.equal(body.iss, idToken.iss);
    assert.equal(body.sub, idToken.sub);
    assert.equal(body.fhirUser, idToken.fhirUser);
    assert.equal(body.aud, server.fhirBase);
    assert.ok(Math.abs(body.exp - (Math.floor(Date.now() / 1000) + tokens.expires_in)) <= 5, 'exp agrees with expires_in');
  });

  it('introspects a refresh token, for its own client', async () => {
    const tokens = await launch('pat-3');
    const { body } = await introspect(tokens.refresh_token, basicAuth(app));
    assert.equal(body.active, true);
    assert.equal(body.client_id, app.client_id);
    assert.equal(body.patient, 'pat-3');
    assert.deepEqual(body.scope.split(' ').sort(), tokens.scope.split(' ').sort());
  });

  it('introspects a refresh token as inactive while a refresh would be refused: the patient no longer the user\'s, or an online_access sign-in ended', async () => {
    const user = await addUser(server.db, { username: 'dr.listed', password: 'listed-password', fhirUser: 'Practitioner/dr-listed', attributes: {
      roles: [{ system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', code: 'doctor' }], purposes: ['TREAT'], patients: ['pat-1', 'pat-3'],
    } });
    const signIn = { server, client: app, username: 'dr.listed', password: 'listed-password', patient: 'pat-3' };
    const offline = await authorizedTokens({ ...signIn, scope: 'launch/patient openid fhirUser offline_access patient/*.rs' });
    const online = await authorizedTokens({ ...signIn, scope: 'launch/patient openid fhirUser online_access patient/*.rs' });
    const active = async (token: string) => (await introspect(token, basicAuth(rs))).body;
    assert.equal((await active(offline.refresh_token)).active, true);
    assert.equal((await active(online.refresh_token)).active, true);
    const setPatients = (patients: string[]) => server.db('users').where({ id: user.id }).update({ attributes: JSON.stringify({ ...user.attributes, patients }) });
    await setPatients(['pat-1']);
    assert.deepEqual(await active(offline.refresh_token), { active: false });
    await setPatients(['pat-1', 'pat-3']);
    assert.equal((await active(offline.refresh_token)).active, true);
    await endAllSessions(server.db, user.id);
    assert.deepEqual(await active(online.refresh_token), { active: false });
    assert.equal((await active(offline.refresh_token)).active, true, 'offline_access outlives the sign-in');
  });

  it('answers exactly {"active": false} for unknown, malformed and foreign-client tokens', async () => {
    const tokens = await launch();
    const other = await server.addClient({ auth: { kind: 'secret' } });
    for (const [token, caller] of [['invalid_token_value', rs], [`${tokens.access_token}x`, rs], [tokens.access_token, other], [tokens.refresh_token, other]] as const) {
      const { res, body } = await introspect(token, basicAuth(caller));
      assert.equal(res.status, 200);
      assert.deepEqual(body, { active: false });
    }
  });

  it('requires credentials: none is 401 invalid_client, a wrong secret is 401', async () => {
    const tokens = await launch();
    const none = await introspect(tokens.access_token);
    assert.equal(none.res.status, 401);
    assert.equal(none.body.error, 'invalid_client');
    assert.equal(none.res.headers.get('www-authenticate'), `Basic realm="${server.issuer}", Bearer realm="${server.issuer}"`);
    assert.equal((await introspect(tokens.access_token, basicAuth({ ...rs, client_secret: 'wrong' }))).res.status, 401);
  });

  it('answers a revocation that names no client 401 invalid_client (RFC 7009 section 2.1, RFC 6749 section 5.2), and revokes nothing', async () => {
    const tokens = await launch();
    const res = await fetch(`${server.issuer}/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: tokens.access_token }) });
    assert.equal(res.status, 401);
    assert.deepEqual(await res.json(), { error: 'invalid_client', error_description: 'client authentication is required' });
    assert.equal(res.headers.get('www-authenticate'), `Basic realm="${server.issuer}"`);
    assert.equal((await introspect(tokens.access_token, basicAuth(rs))).body.active, true);
  });

  it('accepts a bearer token carrying the introspect scope, and refuses one without', async () => {
    const tokens = await launch();
    const { body: rsToken } = await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'introspect' }, rs);
    assert.equal(rsToken.scope, 'introspect');
    const ok = await introspect(tokens.access_token, `Bearer ${rsToken.access_token}`);
    assert.equal(ok.body.active, true);
    assert.equal(ok.body.patient, 'pat-2');
    const plain = await introspect(tokens.access_token, `Bearer ${tokens.access_token}`);
    assert.equal(plain.res.status, 403);
    const junk = await introspect(tokens.access_token, 'Bearer junk');
    assert.equal(junk.res.status, 401);
  });

  it('tells a guard (a resource server, a bearer of introspect) what it cannot read in the token: the user\'s patients and auditor attribute; the app itself not', async () => {
    const userToken = (username: string, password: string, purpose: string) =>
      authorizedTokens({ server, client: app, scope: 'openid fhirUser offline_access user/*.rs', username, password, purpose });
    const members = ({ user_patients, auditor }: Record<string, unknown>) => ({ user_patients, auditor });
    const jones = await userToken('dr.jones', 'demo-password-2', 'TREAT');
    assert.deepEqual(members((await introspect(jones.access_token, basicAuth(rs))).body), { user_patients: ['pat-1', 'pat-2'], auditor: false });
    assert.deepEqual(members((await introspect(jones.refresh_token, basicAuth(rs))).body), { user_patients: ['pat-1', 'pat-2'], auditor: false }, 'a refresh token too');
    const smith = await userToken('dr.smith', 'demo-password-1', 'TREAT');
    assert.deepEqual(members((await introspect(smith.access_token, basicAuth(rs))).body), { user_patients: '*', auditor: false }, 'no list: every patient');
    const auditor = await userToken('auditor', 'demo-password-4', 'HOPERAT');
    assert.deepEqual(members((await introspect(auditor.access_token, basicAuth(rs))).body), { user_patients: '*', auditor: true });
    const { body: introspector } = await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'introspect' }, rs);
    assert.deepEqual(members((await introspect(jones.access_token, `Bearer ${introspector.access_token}`)).body), { user_patients: ['pat-1', 'pat-2'], auditor: false });
    const own = (await introspect(jones.access_token, basicAuth(app))).body;
    assert.equal(own.active, true);
    assert.ok(!('user_patients' in own) && !('auditor' in own), 'an app introspecting its own token is not told');
    const amy = (await introspect((await userToken('amy', 'demo-password-3', 'PATRQT')).access_token, basicAuth(rs))).body;
    assert.deepEqual(members(amy), { user_patients: ['pat-1'], auditor: false }, 'a patient user: their own record');
  });

  it('answers inactive for the token of a user disabled since, at once', async () => {
    await addUser(server.db, { username: 'dr.leaving', password: 'leaving-password', fhirUser: 'Practitioner/dr-leaving', attributes: {
      roles: [{ system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', code: 'doctor' }], purposes: ['TREAT'],
    } });
    const { access_token: token } = await authorizedTokens({ server, client: app, scope: 'openid fhirUser user/*.rs', username: 'dr.leaving', password: 'leaving-password', purpose: 'TREAT' });
    assert.equal((await introspect(token, basicAuth(rs))).body.active, true);
    // Only the flag, as a change the revocation cache has not seen would leave it: the user is read on each introspection.
    await server.db('users').where({ username: 'dr.leaving' }).update({ disabled: true });
    assert.deepEqual((await introspect(token, basicAuth(rs))).body, { active: false });
  });

  it('revokes an access token: introspection and the FHIR server refuse it afterwards, though both verified it before', async () => {
    const tokens = await launch();
    const read = () => fetch(`${server.fhirBase}/Patient/pat-2`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    assert.equal((await read()).status, 200);
    assert.equal((await introspect(tokens.access_token, basicAuth(rs))).body.active, true);
    const res = await revokeToken(server.issuer, app, tokens.access_token);
    assert.equal(res.status, 200);
    assert.deepEqual((await introspect(tokens.access_token, basicAuth(rs))).body, { active: false });
    assert.equal((await read()).status, 401);
  });

  it('ignores a client revoking another client\'s tokens, answering 200', async () => {
    const tokens = await launch();
    const other = await server.addClient({ auth: { kind: 'secret' } });
    assert.equal((await revokeToken(server.issuer, other, tokens.access_token)).status, 200);
    assert.equal((await revokeToken(server.issuer, other, tokens.refresh_token)).status, 200);
    assert.equal((await introspect(tokens.access_token, basicAuth(rs))).body.active, true);
    assert.equal((await introspect(tokens.refresh_token, basicAuth(rs))).body.active, true);
  });

  it('revokes a refresh token with its whole grant: its access tokens go inactive too', async () => {
    const tokens = await launch();
    assert.equal((await revokeToken(server.issuer, app, tokens.refresh_token)).status, 200);
    assert.deepEqual((await introspect(tokens.refresh_token, basicAuth(rs))).body, { active: false });
    assert.deepEqual((await introspect(tokens.access_token, basicAuth(rs))).body, { active: false });
    const refresh = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, app);
    assert.equal(refresh.res.status, 400);
    assert.equal((await fetch(`${server.fhirBase}/Patient/pat-2`, { headers: { authorization: `Bearer ${tokens.access_token}` } })).status, 401);
  });

  it('makes every token of a grant inactive when a refresh token is reused', async () => {
    const tokens = await launch();
    const next = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, app);
    await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, app);
    assert.deepEqual((await introspect(next.body.access_token, basicAuth(rs))).body, { active: false });
    assert.equal((await fetch(`${server.fhirBase}/Patient/pat-2`, { headers: { authorization: `Bearer ${next.body.access_token}` } })).status, 401);
  });

  it('introspects a backend service token with its IUA attributes', async () => {
    const backend = await backendClient(server, 'system/Patient.rs');
    const b2b = { version: '1', organization_id: 'https://clinic.example.org/fhir/Organization/1', purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#TREAT'] };
    const { body } = await backend.token('system/Patient.rs', { claims: { extensions: { 'hl7-b2b': b2b } } });
    const result = (await introspect(body.access_token, basicAuth(rs))).body;
    assert.equal(result.active, true);
    assert.equal(result.client_id, backend.client_id);
    assert.deepEqual(result.extensions.ihe_iua.purpose_of_use, [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT', display: 'treatment' }]);
    // a backend service may revoke its own token, authenticating with an assertion
    const res = await fetch(`${server.issuer}/revoke`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: body.access_token, client_assertion_type: ASSERTION_TYPE, client_assertion: await backend.assertion({ claims: { aud: `${server.issuer}/token` } }) }),
    });
    assert.equal(res.status, 200);
    assert.equal((await introspect(body.access_token, basicAuth(rs))).body.active, false);
  });

  it('makes the tokens of a removed client inactive, a backend\'s too (they have no grant): at introspection and at /fhir', async () => {
    const backend = await backendClient(server, 'system/Patient.rs');
    const { body } = await backend.token('system/Patient.rs');
    const read = () => fetch(`${server.fhirBase}/Patient/pat-1`, { headers: { authorization: `Bearer ${body.access_token}` } });
    assert.equal((await introspect(body.access_token, basicAuth(rs))).body.active, true);
    assert.equal((await read()).status, 200);
    assert.equal(await removeClient(server.db, backend.client_id), true); // what `smart-auth client remove` does
    assert.deepEqual((await introspect(body.access_token, basicAuth(rs))).body, { active: false });
    const refused = await read();
    assert.equal(refused.status, 401);
    assert.match(refused.headers.get('www-authenticate') ?? '', /invalid_token/);
  });

  it('ends the tokens of a client whose organization binding changes (client update): the old organization is not credited with later accesses', async () => {
    const backend = await backendClient(server, 'system/Patient.rs', 'ES384', { organizationId: 'urn:oid:1.2.3', organizationName: 'Old Lab' });
    const tokenOf = async () => (await backend.token('system/Patient.rs')).body.access_token as string;
    const read = (token: string) => fetch(`${server.fhirBase}/Patient/pat-1`, { headers: { authorization: `Bearer ${token}` } });
    const organizationOf = async (token: string) => {
      const { body } = await introspect(token, basicAuth(rs));
      return body.active ? body.extensions.ihe_iua.subject_organization_id : 'inactive';
    };
    /** Another process changed it: the server trusts its last "not revoked" answer and its client cache for about a second. */
    const eventually = async (check: () => Promise<unknown>, expected: unknown) => {
      let value = await check();
      for (let i = 0; i < 40 && value !== expected; i++) {
        await new Promise((r) => setTimeout(r, 100));
        value = await check();
      }
      assert.equal(value, expected);
    };
    const old = await tokenOf();
    assert.equal(await organizationOf(old), 'urn:oid:1.2.3');
    assert.equal((await read(old)).status, 200);

    const moved = await runCli(server, 'client', 'update', backend.client_id, '--organization-id', 'urn:oid:1.2.4', '--organization', 'New Lab');
    assert.equal(moved.code, 0, moved.stderr);
    assert.match(moved.stdout, /its access tokens and grants issued before the change, and in the minute after it, have ended/);
    await eventually(() => organizationOf(old), 'inactive');
    await eventually(async () => (await read(old)).status, 401);
    // So do those issued in the next minute: a server may keep the client that long (the largest CLIENT_CACHE_MS).
    assert.equal(await organizationOf(await tokenOf()), 'inactive');
    // Once that minute is over (here: the client's denylist entry moved a minute back), a token carries the new organization, and works.
    await server.db('revoked_tokens').where({ jti: `client:${backend.client_id}` }).decrement('expires_at', 60);
    await eventually(async () => organizationOf(await tokenOf()), 'urn:oid:1.2.4');
    const current = await tokenOf();
    assert.equal((await read(current)).status, 200);
    const [accessed] = (await server.audit.search({ agent: backend.client_id }) as any[]).filter((e) => e.type.code === 'rest').slice(-1);
    assert.ok(accessed.agent.some((a: any) => a.who?.identifier?.value === 'urn:oid:1.2.4'), 'attributed to the new organization');

    const unbound = await runCli(server, 'client', 'update', backend.client_id, '--no-organization');
    assert.equal(unbound.code, 0, unbound.stderr);
    await eventually(() => organizationOf(current), 'inactive');
    await eventually(async () => (await read(current)).status, 401);
  });

  it('answers 503 and no answer while the audit store cannot take the record, and recovers (ITI-102 fails closed)', async () => {
    const tokens = await launch();
    const pg = process.env.TEST_DATABASE === 'postgres';
    // The store starts refusing every record (on PostgreSQL a check constraint new rows cannot meet).
    await server.db.raw(pg
      ? 'alter table audit_events add constraint refuse_all check (seq < 0) not valid'
      : "create trigger refuse_all before insert on audit_events begin select raise(abort, 'audit store down'); end");
    try {
      // Taken before its commit fails; the failure is then known.
      await introspect(tokens.access_token, basicAuth(rs));
      await groupCommitFor(server.db).idle();
      const tried: string[] = [];
      const watch = (q: { sql: string; bindings?: unknown[] }) => { if (/insert into .audit_events/.test(q.sql)) tried.push(JSON.stringify(q.bindings)); };
      server.db.on('query', watch);
      const { res, body } = await introspect(tokens.access_token, basicAuth(rs)).finally(() => server.db.off('query', watch));
      await groupCommitFor(server.db).idle();
      // The 503 is not recorded as a refused request too: that record would fail alike.
      assert.ok(tried.length > 0 && !tried.some((b) => b.includes('temporarily_unavailable')), 'only the introspection record was tried');
      assert.equal(res.status, 503);
      assert.equal(res.headers.get('retry-after'), '1');
      assert.deepEqual(Object.keys(body).sort(), ['error', 'error_description']);
      assert.equal(body.error, 'temporarily_unavailable');
    } finally {
      await server.db.raw(pg ? 'alter table audit_events drop constraint refuse_all' : 'drop trigger refuse_all');
    }
    const again = await introspect(tokens.access_token, basicAuth(rs));
    assert.equal(again.res.status, 200);
    assert.equal(again.body.active, true);
  });

  it('sees a grant ended by another instance within REVOCATION_CACHE_MS (1 s), though it cached "not revoked"', async () => {
    const tokens = await launch();
    assert.equal((await introspect(tokens.access_token, basicAuth(rs))).body.active, true, 'cached as not revoked');
    const { jti } = decodeJwt(tokens.access_token).payload;
    const { grant_id: grantId } = await server.db('token_grants').where({ jti }).first('grant_id');
    // Another instance ends the grant: straight in the shared database, unknown to this process.
    await server.db('oidc_payloads').where({ model: 'Grant', id: grantId }).delete();
    const ended = Date.now();
    let active = true;
    while (active && Date.now() - ended < 3000) {
      active = (await introspect(tokens.access_token, basicAuth(rs))).body.active;
      if (active) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(active, false);
    assert.ok(Date.now() - ended <= 1000 + 500, `seen after ${Date.now() - ended} ms`);
  });
});

describe('introspection of a refresh token for an ADDITIONAL_FHIR_BASES server', () => {
  const OTHER = 'https://other.example.org/fhir';
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  let rs: Awaited<ReturnType<TestServer['addClient']>>;
  before(async () => {
    server = await startTestServer({ ADDITIONAL_FHIR_BASES: OTHER });
    app = await server.addClient({ auth: { kind: 'secret' } });
    rs = await server.addClient({ name: 'FHIR server', redirectUris: [], auth: { kind: 'secret' }, resourceServer: true });
  });
  after(() => server.stop());

  const introspect = async (at: TestServer, token: string, authorization: string) =>
    (await (await fetch(`${at.issuer}/introspect`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization }, body: new URLSearchParams({ token }),
    })).json()) as Record<string, any>;
  const tokensFor = (aud: string) => authorizedTokens({ server, client: app, scope: 'openid offline_access user/*.rs', aud });

  // It said this server's own FHIR base whatever the grant was for.
  it('reports the audience of its grant, as its access tokens carry it, to the app, a resource server and a bearer of introspect', async () => {
    const { body: bearer } = await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'introspect' }, rs);
    for (const aud of [OTHER, server.fhirBase]) {
      const tokens = await tokensFor(aud);
      assert.equal(decodeJwt(tokens.access_token).payload.aud, aud);
      for (const authorization of [basicAuth(app), basicAuth(rs), `Bearer ${bearer.access_token}`]) {
        const body = await introspect(server, tokens.refresh_token, authorization);
        assert.equal(body.active, true);
        assert.equal(body.aud, aud, `${aud}, ${authorization.split(' ')[0]}`);
      }
      const { body: refreshed } = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, app);
      assert.equal(decodeJwt(refreshed.access_token).payload.aud, aud);
      assert.equal((await introspect(server, refreshed.refresh_token, basicAuth(rs))).aud, aud, `${aud} after a refresh`);
    }
  });

  it('answers inactive once the server no longer serves the audience (a refresh would be invalid_target)', async () => {
    const tokens = await tokensFor(OTHER);
    const without = await startTestServer({ DATABASE_URL: server.config.databaseUrl });
    try {
      assert.deepEqual(await introspect(without, tokens.refresh_token, basicAuth(rs)), { active: false });
      assert.equal((await introspect(server, tokens.refresh_token, basicAuth(rs))).active, true, 'still active where it is served');
      const { res, body: refused } = await tokenRequest(without.issuer, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, app);
      assert.equal(res.status, 400);
      assert.equal(refused.error, 'invalid_target');
    } finally {
      await without.close();
    }
  });

  // The refusal used the refresh token up (rotation consumed it first): back where the base is served, the same
  // token was a reuse, which ended the grant.
  it('refuses a refresh for a FHIR server no longer served without using the refresh token up: it works once the server is served again', async () => {
    const tokens = await tokensFor(OTHER);
    const without = await startTestServer({ DATABASE_URL: server.config.databaseUrl });
    try {
      for (const resource of [undefined, OTHER]) {
        const { res, body } = await tokenRequest(without.issuer, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, ...(resource && { resource }) }, app);
        assert.equal(res.status, 400, `resource ${resource}`);
        assert.equal(body.error, 'invalid_target');
      }
    } finally {
      await without.close();
    }
    const { res, body } = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, app);
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(decodeJwt(body.access_token).payload.aud, OTHER);
  });

  // fhirUser names the user's own record, on FHIR_BASE_URL, whatever server the token is for: at another server the
  // same id may be another person. The patient context is that server's patient (its picker, or a patient user
  // matched by id), so the IHE PCF patient URL is on the token's aud.
  it('names the user by their record on this server\'s FHIR base and the patient on the token\'s aud, in every answer about the user', async () => {
    const tokens = await authorizedTokens({
      server, client: app, scope: 'launch/patient openid fhirUser offline_access patient/*.rs', aud: OTHER, username: 'amy', password: 'demo-password-3',
    });
    const fhirUser = `${server.fhirBase}/Patient/pat-1`;
    const access = decodeJwt(tokens.access_token).payload;
    assert.equal(access.aud, OTHER);
    assert.equal(tokens.patient, 'pat-1');
    assert.equal(access.fhirUser, fhirUser);
    assert.equal(access.extensions.ihe_pcf.patient_id, `${OTHER}/Patient/pat-1`);
    assert.equal(decodeJwt(tokens.id_token).payload.fhirUser, fhirUser);
    const userinfo = await (await fetch(`${server.issuer}/userinfo`, { headers: { authorization: `Bearer ${tokens.access_token}` } })).json();
    assert.equal(userinfo.fhirUser, fhirUser);
    for (const token of [tokens.access_token, tokens.refresh_token]) {
      const body = await introspect(server, token, basicAuth(rs));
      assert.equal(body.active, true);
      assert.equal(body.aud, OTHER);
      assert.equal(body.fhirUser, fhirUser);
      assert.equal(body.extensions.ihe_pcf.patient_id, `${OTHER}/Patient/pat-1`, token === tokens.access_token ? 'access token' : 'refresh token');
    }
    const { body: refreshed } = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, app);
    for (const jwt of [refreshed.access_token, refreshed.id_token]) assert.equal(decodeJwt(jwt).payload.fhirUser, fhirUser);
    assert.equal(decodeJwt(refreshed.access_token).payload.extensions.ihe_pcf.patient_id, `${OTHER}/Patient/pat-1`);
  });
});
