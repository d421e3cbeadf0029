// How many SQL statements each hot path sends per request, counted on the real server's database
// handle (knex's `query` event, which the group commit's raw transactions announce too). Timing is
// noisy on shared machines; the statement count is not, so a path that starts reading or writing more
// fails here. Each request is measured warm (its client already cached), alone, and until the group
// commit is idle, so writes committed after the answer are counted too.
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, introspectToken, tokenRequest } from '../support/oauth.ts';
import { ASSERTION_TYPE, backendClient, type BackendClient } from '../support/backend.ts';
import { groupCommitFor } from '../../server/group-commit.ts';
import { auditEvents } from '../../server/audit/store.ts';

/** Statements per request; BEGIN and COMMIT of a write transaction count as statements. */
const EXPECTED = {
  client_credentials: 7,
  'authorization-code exchange': 11,
  refresh: 11,
  'refresh token introspection': 7,
  introspection: 6,
  // A user's token: their row too (a disabled user's token is inactive at once; a guard is told their patients and auditor attribute).
  'user token introspection': 7,
  'audited /fhir read': 7,
};

describe('statements per request on the hot paths', () => {
  let server: TestServer;
  let backend: BackendClient;
  let app: BackendClient & { redirect_uri: string };
  let rs: { client_id: string; client_secret?: string };
  before(async () => {
    // Long enough that no cached client expires between the warm request and the measured one.
    server = await startTestServer({ CLIENT_CACHE_MS: '60000' });
    backend = await backendClient(server, 'system/Patient.rs');
    rs = await server.addClient({ name: 'FHIR server', redirectUris: [], auth: { kind: 'secret' }, resourceServer: true });
    // A confidential app authenticating with private_key_jwt, as the benchmark's app does.
    const key = await backendClient(server, 'system/Patient.rs');
    const added = await server.addClient({
      name: 'App', auth: { kind: 'jwks', jwks: { keys: [await publicJwkOf(key)] } }, scope: 'launch/patient openid fhirUser offline_access patient/*.rs',
    });
    app = { ...key, client_id: added.client_id, redirect_uri: added.redirect_uri };
  });
  after(() => server.stop());

  async function publicJwkOf(client: BackendClient) {
    const { exportJWK } = await import('jose');
    const { d: _d, ...pub } = await exportJWK(client.privateKey);
    return { ...pub, kid: client.kid, alg: client.alg };
  }

  /** The statements `request` causes, up to the moment the group commit has nothing left to write. */
  async function statementsOf(request: () => Promise<void>): Promise<string[]> {
    await groupCommitFor(server.db).idle(); // what an earlier request left to commit is not counted
    const seen: string[] = [];
    const count = (q: { sql: string }) => seen.push(q.sql);
    server.db.on('query', count);
    try {
      await request();
      await groupCommitFor(server.db).idle();
    } finally {
      server.db.off('query', count);
    }
    return seen;
  }

  // The app signs with the key it shares with a backend client, so iss and sub name the app explicitly.
  const appAssertion = () => app.assertion({ claims: { iss: app.client_id, sub: app.client_id } });
  const clientCredentials = async () => {
    const { res, body } = await backend.token('system/Patient.rs');
    assert.equal(res.status, 200, JSON.stringify(body));
    return body.access_token as string;
  };
  /** The refresh token of the last code exchange or refresh (each refresh rotates it). */
  let refreshToken = '';
  /** The access token of the last code exchange or refresh: a user's. */
  let userAccessToken = '';
  const refresh = async () => {
    const { res, body } = await tokenRequest(server.issuer, {
      grant_type: 'refresh_token', refresh_token: refreshToken, client_assertion_type: ASSERTION_TYPE, client_assertion: await appAssertion(),
    });
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.patient, 'pat-1');
    refreshToken = body.refresh_token;
    userAccessToken = body.access_token;
  };
  const codeExchange = async () => {
    const launch = await authorize({ server, client: app, scope: 'launch/patient openid fhirUser offline_access patient/*.rs' });
    return async () => {
      const { res, body } = await tokenRequest(server.issuer, {
        grant_type: 'authorization_code', code: launch.code!, redirect_uri: app.redirect_uri, code_verifier: launch.verifier,
        client_assertion_type: ASSERTION_TYPE, client_assertion: await appAssertion(),
      });
      assert.equal(res.status, 200, JSON.stringify(body));
      assert.equal(body.patient, 'pat-1');
      refreshToken = body.refresh_token;
    };
  };
  const introspect = async (token: string) => {
    const res = await introspectToken(server.issuer, rs, token);
    assert.equal(res.status, 200);
    assert.equal((await res.json()).active, true);
  };
  const read = async (token: string) => {
    const res = await fetch(`${server.fhirBase}/Patient/pat-3`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
  };

  it('stays at the counted number for each path', async () => {
    const counts: Record<string, number> = {};
    const trace: string[] = [];
    const measure = async (name: string, request: () => Promise<void>) => {
      await request(); // warm: the client's metadata and the keys are cached after this
      const statements = await statementsOf(request);
      counts[name] = statements.length;
      trace.push(`${name}:`, ...statements.map((s) => `  ${s.slice(0, 160)}`));
    };
    await measure('client_credentials', async () => { await clientCredentials(); });
    const exchanges = [await codeExchange(), await codeExchange()];
    await measure('authorization-code exchange', () => exchanges.shift()!());
    await measure('refresh', refresh);
    await measure('refresh token introspection', () => introspect(refreshToken));
    const token = await clientCredentials();
    await measure('introspection', () => introspect(token));
    await measure('user token introspection', () => introspect(userAccessToken));
    await measure('audited /fhir read', () => read(token));
    assert.deepEqual(counts, EXPECTED, trace.join('\n'));
  });

  it('writes nothing of a code exchange whose client assertion was used before but its refusal: the code stays usable, no token issued', async () => {
    const launch = await authorize({ server, client: app, scope: 'launch/patient openid fhirUser offline_access patient/*.rs' });
    const used = await appAssertion();
    await clientCredentialsWith(used);
    const recorded = async (outcome: string) => {
      await groupCommitFor(server.db).idle(); // a refusal's record is committed after its answer
      return (await auditEvents(server.db, { subtype: 'ITI-71', outcome })).length;
    };
    const issued = () => recorded('0');
    const before = await issued();
    const refusalsBefore = await recorded('4');
    const exchange = (assertion: string) => tokenRequest(server.issuer, {
      grant_type: 'authorization_code', code: launch.code!, redirect_uri: app.redirect_uri, code_verifier: launch.verifier,
      client_assertion_type: ASSERTION_TYPE, client_assertion: assertion,
    });
    const replayed = await exchange(used);
    assert.equal(replayed.res.status, 401);
    assert.equal(replayed.body.error, 'invalid_client');
    assert.equal(await issued(), before);
    assert.equal(await recorded('4'), refusalsBefore + 1, 'the refusal is recorded');
    const fresh = await exchange(await appAssertion());
    assert.equal(fresh.res.status, 200, JSON.stringify(fresh.body));
    assert.equal(await issued(), before + 1);
  });

  /** Uses up an assertion of the app (its jti is stored) without a code: a client_credentials request it may not make. */
  async function clientCredentialsWith(assertion: string) {
    const { res } = await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: ASSERTION_TYPE, client_assertion: assertion });
    assert.equal(res.status, 400);
  }

  it('exchanges a code once, also when 4 requests with it race (single use is atomic)', async () => {
    const launch = await authorize({ server, client: app, scope: 'launch/patient openid fhirUser offline_access patient/*.rs' });
    const exchange = async () => tokenRequest(server.issuer, {
      grant_type: 'authorization_code', code: launch.code!, redirect_uri: app.redirect_uri, code_verifier: launch.verifier,
      client_assertion_type: ASSERTION_TYPE, client_assertion: await appAssertion(),
    });
    const assertions = await Promise.all([1, 2, 3, 4].map(() => appAssertion()));
    const results = await Promise.all(assertions.map((assertion) => tokenRequest(server.issuer, {
      grant_type: 'authorization_code', code: launch.code!, redirect_uri: app.redirect_uri, code_verifier: launch.verifier,
      client_assertion_type: ASSERTION_TYPE, client_assertion: assertion,
    })));
    assert.deepEqual(results.map((r) => r.res.status).sort(), [200, 400, 400, 400]);
    for (const r of results.filter((r) => r.res.status === 400)) assert.equal(r.body.error, 'invalid_grant');
    assert.equal((await exchange()).res.status, 400);
  });
});
