// OpenID Connect Core 5.3 UserInfo with this server's access tokens (JWTs for a FHIR server): Bearer or DPoP,
// verified, not revoked, with `openid`, of a user who is still there; the claims the id_token carries.
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, authorizedTokens, decodeJwt, exchangeCode, revokeToken, tokenRequest } from '../support/oauth.ts';
import { backendClient } from '../support/backend.ts';
import { dpopKey } from '../support/dpop.ts';
import { addUser } from '../../server/oidc/users.ts';

const SCOPE = 'launch/patient openid fhirUser profile patient/*.rs';

describe('/userinfo', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  let tokens: Record<string, any>;
  before(async () => {
    server = await startTestServer();
    app = await server.addClient({ auth: { kind: 'secret' }, redirectUris: ['https://app.example.org/callback'] });
    tokens = await launch();
  });
  after(() => server.stop());

  async function launch(scope = SCOPE, user: { username?: string; password?: string; purpose?: string } = {}) {
    const { res, body } = await exchangeCode(server.issuer, await authorize({ server, client: app, scope, patient: 'pat-1', ...user }), app);
    assert.equal(res.status, 200, JSON.stringify(body));
    return body;
  }
  const userinfo = (init: RequestInit = {}, query = '') => fetch(`${server.issuer}/userinfo${query}`, init);
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

  async function refused(res: Response, status: 401 | 403, error: string, scheme = 'Bearer') {
    assert.equal(res.status, status);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const challenge = res.headers.get('www-authenticate') ?? '';
    assert.match(challenge, new RegExp(`^${scheme} .*error="${error}"`), challenge);
    assert.equal((await res.json()).error, error);
  }

  it('answers GET with a Bearer token: the id_token\'s sub, fhirUser and name, not to be cached', async () => {
    const res = await userinfo({ headers: bearer(tokens.access_token) });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const id = decodeJwt(tokens.id_token).payload;
    assert.ok(id.fhirUser && id.name, 'the id_token carries fhirUser and name');
    assert.deepEqual(await res.json(), { sub: id.sub, fhirUser: id.fhirUser, name: id.name });
  });

  it('answers POST with the token in the header or in the form body', async () => {
    const expected = await (await userinfo({ headers: bearer(tokens.access_token) })).json();
    const header = await userinfo({ method: 'POST', headers: bearer(tokens.access_token) });
    assert.equal(header.status, 200);
    assert.deepEqual(await header.json(), expected);
    const body = await userinfo({ method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ access_token: tokens.access_token }) });
    assert.equal(body.status, 200);
    assert.deepEqual(await body.json(), expected);
  });

  it('gives only the claims of the granted scopes', async () => {
    const only = await launch('launch/patient openid patient/*.rs');
    const res = await userinfo({ headers: bearer(only.access_token) });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { sub: decodeJwt(only.id_token).payload.sub });
  });

  it('refuses a request without a token with 401 and a challenge without an error code (RFC 6750 3.1)', async () => {
    for (const method of ['GET', 'POST']) {
      const res = await userinfo({ method });
      assert.equal(res.status, 401);
      assert.equal(res.headers.get('www-authenticate'), `Bearer realm="${server.issuer}"`);
      assert.equal(res.headers.get('cache-control'), 'no-store');
    }
  });

  it('does not take the token from the query string', async () => {
    const res = await userinfo({}, `?access_token=${tokens.access_token}`);
    assert.equal(res.status, 401);
    assert.equal(res.headers.get('www-authenticate'), `Bearer realm="${server.issuer}"`);
  });

  it('refuses a token sent two ways at once (RFC 6750 2)', async () => {
    const res = await userinfo({ method: 'POST', headers: { ...bearer(tokens.access_token), 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ access_token: tokens.access_token }) });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error, 'invalid_request');
  });

  it('refuses what is not an access token of this server', async () => {
    await refused(await userinfo({ headers: bearer('not-a-token') }), 401, 'invalid_token');
    const [h, , s] = tokens.access_token.split('.');
    const payload = { ...decodeJwt(tokens.access_token).payload, sub: 'someone-else' };
    await refused(await userinfo({ headers: bearer(`${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`) }), 401, 'invalid_token');
    // The id_token is signed by the same keys but is no access token.
    await refused(await userinfo({ headers: bearer(tokens.id_token) }), 401, 'invalid_token');
  });

  it('refuses a revoked token', async () => {
    const revokedTokens = await launch();
    assert.equal((await userinfo({ headers: bearer(revokedTokens.access_token) })).status, 200);
    const revoked = await revokeToken(server.issuer, app, revokedTokens.access_token);
    assert.equal(revoked.status, 200);
    await refused(await userinfo({ headers: bearer(revokedTokens.access_token) }), 401, 'invalid_token');
  });

  it('refuses the token of a user disabled since', async () => {
    await addUser(server.db, { username: 'dr.leaving', password: 'leaving-password', fhirUser: 'Practitioner/dr-leaving', attributes: {
      roles: [{ system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', code: 'doctor' }], purposes: ['TREAT'],
    } });
    const leaving = await authorizedTokens({ server, client: app, scope: 'openid fhirUser user/*.rs', username: 'dr.leaving', password: 'leaving-password', purpose: 'TREAT' });
    assert.equal((await userinfo({ headers: bearer(leaving.access_token) })).status, 200);
    await server.db('users').where({ username: 'dr.leaving' }).update({ disabled: true });
    await refused(await userinfo({ headers: bearer(leaving.access_token) }), 401, 'invalid_token');
  });

  it('refuses a token without openid with 403 insufficient_scope', async () => {
    const noOpenid = await launch('launch/patient fhirUser patient/*.rs');
    await refused(await userinfo({ headers: bearer(noOpenid.access_token) }), 403, 'insufficient_scope');
  });

  it('refuses a backend service\'s token (no user, never openid) with 403 insufficient_scope', async () => {
    const backend = await backendClient(server, 'system/Patient.rs');
    const { body } = await backend.token('system/Patient.rs');
    assert.ok(body.access_token, JSON.stringify(body));
    await refused(await userinfo({ headers: bearer(body.access_token) }), 403, 'insufficient_scope');
  });

  describe('with a DPoP-bound token', () => {
    let key: Awaited<ReturnType<typeof dpopKey>>;
    let bound: Record<string, any>;
    before(async () => {
      key = await dpopKey();
      const dpopApp = await server.addClient({ auth: { kind: 'public' } });
      const code = await authorize({ server, client: dpopApp, scope: SCOPE, patient: 'pat-1' });
      const { res, body } = await tokenRequest(server.issuer, {
        grant_type: 'authorization_code', code: code.code!, redirect_uri: dpopApp.redirect_uri, code_verifier: code.verifier,
      }, dpopApp, { dpop: await key.proof({ htm: 'POST', htu: `${server.issuer}/token` }) });
      assert.equal(res.status, 200, JSON.stringify(body));
      assert.equal(body.token_type, 'DPoP');
      bound = body;
    });
    const proof = (o: { htm?: string; htu?: string } = {}) => key.proof({ htm: o.htm ?? 'GET', htu: o.htu ?? `${server.issuer}/userinfo`, accessToken: bound.access_token });

    it('answers with the DPoP scheme and a proof for <ISSUER>/userinfo, GET and POST', async () => {
      for (const method of ['GET', 'POST']) {
        const res = await userinfo({ method, headers: { authorization: `DPoP ${bound.access_token}`, dpop: await proof({ htm: method }) } });
        assert.equal(res.status, 200, method);
        assert.equal((await res.json()).sub, decodeJwt(bound.id_token).payload.sub);
      }
    });

    it('refuses it as a Bearer token, in the header or the body', async () => {
      await refused(await userinfo({ headers: { ...bearer(bound.access_token), dpop: await proof() } }), 401, 'invalid_token', 'DPoP');
      await refused(await userinfo({ method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ access_token: bound.access_token }) }), 401, 'invalid_token', 'DPoP');
    });

    it('refuses it without a proof, with a proof for another URL or method, and a replayed proof', async () => {
      const dpop = (headers: Record<string, string>) => userinfo({ headers: { authorization: `DPoP ${bound.access_token}`, ...headers } });
      await refused(await dpop({}), 401, 'invalid_dpop_proof', 'DPoP');
      await refused(await dpop({ dpop: await proof({ htu: `${server.issuer}/token` }) }), 401, 'invalid_dpop_proof', 'DPoP');
      await refused(await dpop({ dpop: await proof({ htu: `${server.fhirBase}/userinfo` }) }), 401, 'invalid_dpop_proof', 'DPoP');
      await refused(await dpop({ dpop: await proof({ htm: 'POST' }) }), 401, 'invalid_dpop_proof', 'DPoP');
      const once = await proof();
      assert.equal((await dpop({ dpop: once })).status, 200);
      await refused(await dpop({ dpop: once }), 401, 'invalid_dpop_proof', 'DPoP');
    });

    it('refuses the DPoP scheme with an unbound token', async () => {
      const res = await userinfo({ headers: { authorization: `DPoP ${tokens.access_token}`, dpop: await key.proof({ htm: 'GET', htu: `${server.issuer}/userinfo`, accessToken: tokens.access_token }) } });
      await refused(res, 401, 'invalid_token', 'DPoP');
    });
  });

  it('allows the app\'s own origin (CORS, as the token endpoint), not another', async () => {
    const own = await userinfo({ headers: { ...bearer(tokens.access_token), origin: 'https://app.example.org' } });
    assert.equal(own.status, 200);
    assert.equal(own.headers.get('access-control-allow-origin'), 'https://app.example.org');
    const other = await userinfo({ headers: { ...bearer(tokens.access_token), origin: 'https://evil.example.org' } });
    assert.equal(other.headers.get('access-control-allow-origin'), null);
    const preflight = await userinfo({ method: 'OPTIONS', headers: { origin: 'https://app.example.org', 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' } });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get('access-control-allow-origin'), 'https://app.example.org');
    assert.match(preflight.headers.get('access-control-allow-headers') ?? '', /Authorization/i);
  });

  it('stays in the discovery document at <ISSUER>/userinfo', async () => {
    const doc = await (await fetch(`${server.issuer}/.well-known/openid-configuration`)).json();
    assert.equal(doc.userinfo_endpoint, `${server.issuer}/userinfo`);
  });
});
