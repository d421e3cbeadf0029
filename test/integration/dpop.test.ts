// DPoP (RFC 9449) end to end: a proof at /token binds the tokens to the client's key, and the bundled
// guard then accepts the access token only as `Authorization: DPoP` with a fresh proof for the request.
import assert from 'node:assert/strict';
import * as oidc from 'openid-client';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, decodeJwt, introspectToken, postWithHost, tokenRequest, withHost } from '../support/oauth.ts';
import { dpopKey, type DpopKey } from '../support/dpop.ts';

const SCOPE = 'launch/patient openid fhirUser offline_access patient/*.rs';

describe('DPoP', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  let key: DpopKey;
  let bound: Record<string, any>;
  before(async () => {
    server = await startTestServer();
    app = await server.addClient({ auth: { kind: 'public' } });
    key = await dpopKey();
    const launch = await authorize({ server, client: app, scope: SCOPE, patient: 'pat-1' });
    const proof = await key.proof({ htm: 'POST', htu: `${server.issuer}/token` });
    const { res, body } = await tokenRequest(server.issuer, {
      grant_type: 'authorization_code', code: launch.code!, redirect_uri: app.redirect_uri, code_verifier: launch.verifier,
    }, app, { dpop: proof });
    assert.equal(res.status, 200, JSON.stringify(body));
    bound = body;
  });
  after(() => server.stop());

  const url = (path: string) => `${server.fhirBase}/${path}`;
  const read = (path: string, headers: Record<string, string>) => fetch(url(path), { headers });
  async function refused(res: Response, error: 'invalid_token' | 'invalid_dpop_proof') {
    assert.equal(res.status, 401);
    const challenge = res.headers.get('www-authenticate') ?? '';
    assert.match(challenge, new RegExp(`^DPoP error="${error}"`), challenge);
    assert.match(challenge, /algs="[^"]*ES256/);
    assert.equal((await res.json()).resourceType, 'OperationOutcome');
  }

  it('advertises dpop_signing_alg_values_supported in both discovery documents', async () => {
    for (const path of ['/.well-known/openid-configuration', '/.well-known/smart-configuration', '/fhir/.well-known/smart-configuration']) {
      const doc = await (await fetch(`${server.issuer}${path}`)).json();
      assert.ok(doc.dpop_signing_alg_values_supported?.includes('ES256'), path);
    }
  });

  it('issues a DPoP token bound to the proof key', () => {
    assert.equal(bound.token_type, 'DPoP');
    assert.equal(decodeJwt(bound.access_token).payload.cnf?.jkt, key.jkt);
  });

  it('reads with the DPoP scheme and a valid proof; the query is not part of htu', async () => {
    const proof = await key.proof({ htm: 'GET', htu: url('Patient/pat-1'), accessToken: bound.access_token });
    assert.equal((await read('Patient/pat-1', { authorization: `DPoP ${bound.access_token}`, dpop: proof })).status, 200);
    const search = await key.proof({ htm: 'GET', htu: url('Observation'), accessToken: bound.access_token });
    assert.equal((await read('Observation?patient=pat-1&_count=1', { authorization: `DPoP ${bound.access_token}`, dpop: search })).status, 200);
  });

  it('refuses the bound token as a Bearer token, with or without a proof', async () => {
    await refused(await read('Patient/pat-1', { authorization: `Bearer ${bound.access_token}` }), 'invalid_token');
    const proof = await key.proof({ htm: 'GET', htu: url('Patient/pat-1'), accessToken: bound.access_token });
    await refused(await read('Patient/pat-1', { authorization: `Bearer ${bound.access_token}`, dpop: proof }), 'invalid_token');
  });

  it('refuses the DPoP scheme with an unbound token', async () => {
    const plainApp = await server.addClient({ auth: { kind: 'secret' } });
    const launch = await authorize({ server, client: plainApp, scope: SCOPE, patient: 'pat-1' });
    const { body } = await tokenRequest(server.issuer, { grant_type: 'authorization_code', code: launch.code!, redirect_uri: plainApp.redirect_uri, code_verifier: launch.verifier }, plainApp);
    assert.equal(body.token_type, 'Bearer');
    const proof = await key.proof({ htm: 'GET', htu: url('Patient/pat-1'), accessToken: body.access_token });
    await refused(await read('Patient/pat-1', { authorization: `DPoP ${body.access_token}`, dpop: proof }), 'invalid_token');
  });

  const BAD_PROOFS: [string, () => Promise<string | undefined>][] = [
    ['no proof', async () => undefined],
    ['a proof signed by another key', async () => (await dpopKey()).proof({ htm: 'GET', htu: url('Patient/pat-1'), accessToken: bound.access_token })],
    ['a proof whose header names another key than the signer', async () => key.proof({ htm: 'GET', htu: url('Patient/pat-1'), accessToken: bound.access_token, header: { jwk: (await dpopKey()).jwk } })],
    ['a wrong htm', async () => key.proof({ htm: 'POST', htu: url('Patient/pat-1'), accessToken: bound.access_token })],
    ['a wrong htu', async () => key.proof({ htm: 'GET', htu: url('Patient/pat-2'), accessToken: bound.access_token })],
    ['an htu of another server', async () => key.proof({ htm: 'GET', htu: `https://elsewhere.example.org/fhir/Patient/pat-1`, accessToken: bound.access_token })],
    ['a stale iat', async () => key.proof({ htm: 'GET', htu: url('Patient/pat-1'), accessToken: bound.access_token, claims: { iat: Math.floor(Date.now() / 1000) - 600 } })],
    ['an iat in the future', async () => key.proof({ htm: 'GET', htu: url('Patient/pat-1'), accessToken: bound.access_token, claims: { iat: Math.floor(Date.now() / 1000) + 600 } })],
    ['no ath', async () => key.proof({ htm: 'GET', htu: url('Patient/pat-1') })],
    ['a wrong ath', async () => key.proof({ htm: 'GET', htu: url('Patient/pat-1'), accessToken: `${bound.access_token}x` })],
    ['no jti', async () => key.proof({ htm: 'GET', htu: url('Patient/pat-1'), accessToken: bound.access_token, omit: ['jti'] })],
    ['typ JWT', async () => key.proof({ htm: 'GET', htu: url('Patient/pat-1'), accessToken: bound.access_token, header: { typ: 'JWT' } })],
    ['not a JWT', async () => 'not.a.jwt'],
  ];
  for (const [name, make] of BAD_PROOFS) {
    it(`refuses ${name} with invalid_dpop_proof`, async () => {
      const proof = await make();
      await refused(await read('Patient/pat-1', { authorization: `DPoP ${bound.access_token}`, ...(proof && { dpop: proof }) }), 'invalid_dpop_proof');
    });
  }

  it('refuses a replayed proof, and records seen proofs in the database (shared by every instance)', async () => {
    const proof = await key.proof({ htm: 'GET', htu: url('Patient/pat-1'), accessToken: bound.access_token });
    const headers = { authorization: `DPoP ${bound.access_token}`, dpop: proof };
    assert.equal((await read('Patient/pat-1', headers)).status, 200);
    await refused(await read('Patient/pat-1', headers), 'invalid_dpop_proof');
    assert.ok(Number((await server.db('oidc_payloads').where('model', 'DPoPProof').count({ n: '*' }))[0].n) > 0);
  });

  it('introspects a bound token with its cnf and token_type DPoP', async () => {
    const rs = await server.addClient({ name: 'Resource server', redirectUris: [], auth: { kind: 'secret' }, resourceServer: true });
    const res = await introspectToken(server.issuer, rs, bound.access_token);
    const body = await res.json();
    assert.equal(body.active, true);
    assert.equal(body.token_type, 'DPoP');
    assert.deepEqual(body.cnf, { jkt: key.jkt });
  });

  it('refuses a bound token as the Bearer credential of the introspection and launch APIs, which take no proof', async () => {
    const rs = await server.addClient({ name: 'Bound RS', redirectUris: [], auth: { kind: 'secret' }, resourceServer: true, scope: 'system/Patient.rs' });
    const { body } = await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'introspect system/Patient.rs' }, rs,
      { dpop: await key.proof({ htm: 'POST', htu: `${server.issuer}/token` }) });
    assert.equal(body.token_type, 'DPoP', JSON.stringify(body));
    const introspect = await fetch(`${server.issuer}/introspect`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${body.access_token}` },
      body: new URLSearchParams({ token: bound.access_token }),
    });
    assert.equal(introspect.status, 401);
    const launch = await fetch(`${server.issuer}/api/launch`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${body.access_token}` }, body: JSON.stringify({ patient: 'pat-1' }),
    });
    assert.equal(launch.status, 401);
  });

  it('binds a public client\'s refresh token: refreshing needs a proof by the same key', async () => {
    const refresh = (headers: Record<string, string>) => tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: bound.refresh_token }, app, headers);
    const without = await refresh({});
    assert.equal(without.res.status, 400);
    const other = await refresh({ dpop: await (await dpopKey()).proof({ htm: 'POST', htu: `${server.issuer}/token` }) });
    assert.equal(other.res.status, 400);
    const same = await refresh({ dpop: await key.proof({ htm: 'POST', htu: `${server.issuer}/token` }) });
    assert.equal(same.res.status, 200, JSON.stringify(same.body));
    assert.equal(decodeJwt(same.body.access_token).payload.cnf?.jkt, key.jkt);
  });

  it('refuses at /token a proof made for another server\'s token endpoint, also sent with that server as Host, and changes nothing', async () => {
    // A client that uses one key with two servers: the other server holds its proofs, and has stolen a refresh token of ours.
    const launch = await authorize({ server, client: app, scope: SCOPE, patient: 'pat-1' });
    const { body: tokens } = await tokenRequest(server.issuer, {
      grant_type: 'authorization_code', code: launch.code!, redirect_uri: app.redirect_uri, code_verifier: launch.verifier,
    }, app, { dpop: await key.proof({ htm: 'POST', htu: `${server.issuer}/token` }) });
    const other = 'other-as.example';
    const proof = await key.proof({ htm: 'POST', htu: `http://${other}/token` });
    const answer = await postWithHost(`${server.issuer}/token`, other, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: app.client_id }, { dpop: proof });
    assert.equal(answer.status, 400, answer.body.slice(0, 200));
    assert.equal(JSON.parse(answer.body).error, 'invalid_dpop_proof');
    const own = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, app, { dpop: await key.proof({ htm: 'POST', htu: `${server.issuer}/token` }) });
    assert.equal(own.res.status, 200, 'the refresh token was not used up');
  });

  it('refuses at /userinfo a proof made for another server\'s userinfo endpoint, also sent with that server as Host (its htu comes from ISSUER)', async () => {
    const other = 'other-as.example';
    const token = bound.access_token;
    const own = await withHost(`${server.issuer}/userinfo`, new URL(server.issuer).host, {
      headers: { authorization: `DPoP ${token}`, dpop: await key.proof({ htm: 'GET', htu: `${server.issuer}/userinfo`, accessToken: token }) },
    });
    const foreign = await withHost(`${server.issuer}/userinfo`, other, {
      headers: { authorization: `DPoP ${token}`, dpop: await key.proof({ htm: 'GET', htu: `http://${other}/userinfo`, accessToken: token }) },
    });
    assert.equal(own.status, 200, own.body.slice(0, 200));
    assert.equal(foreign.status, 401, foreign.body.slice(0, 200));
    assert.equal(JSON.parse(foreign.body).error, 'invalid_dpop_proof');
  });

  it('works with a real client library: openid-client gets a bound token and reads /fhir with it', async () => {
    const config = await oidc.discovery(new URL(server.issuer), app.client_id, undefined, oidc.None(), { execute: [oidc.allowInsecureRequests] });
    const launch = await authorize({ server, client: app, scope: SCOPE, patient: 'pat-1' });
    const DPoP = oidc.getDPoPHandle(config, await oidc.randomDPoPKeyPair('ES256'));
    const tokens = await oidc.authorizationCodeGrant(config, launch.redirect, { pkceCodeVerifier: launch.verifier, expectedState: launch.state }, undefined, { DPoP });
    assert.equal(tokens.token_type, 'dpop');
    assert.ok(decodeJwt(tokens.access_token).payload.cnf?.jkt);
    const res = await oidc.fetchProtectedResource(config, tokens.access_token, new URL(url('Patient/pat-1')), 'GET', undefined, undefined, { DPoP });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).id, 'pat-1');
  });
});
