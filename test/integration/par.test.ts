// Pushed Authorization Requests (RFC 9126) for SMART launches, driven by openid-client as an app would:
// the long SMART request (aud, launch, PKCE, scopes) goes to the PAR endpoint, the browser gets only
// client_id and request_uri.
import assert from 'node:assert/strict';
import * as oidc from 'openid-client';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, form } from '../support/oauth.ts';
import { mintLaunch } from '../../server/launcher.ts';

const CATEGORY = 'http://terminology.hl7.org/CodeSystem/observation-category';
// Category scopes make SMART scope strings long: the reason to push them rather than put them in a URL.
const LONG_SCOPE = ['launch', 'openid', 'fhirUser', 'offline_access', 'patient/Patient.rs', 'patient/Encounter.rs', 'patient/Condition.rs',
  ...['laboratory', 'vital-signs', 'social-history', 'survey', 'procedure', 'imaging', 'exam', 'therapy', 'activity']
    .map((c) => `patient/Observation.rs?category=${CATEGORY}|${c}`)].join(' ');

describe('PAR (RFC 9126) SMART launches with openid-client', function () {
  this.timeout(30_000);
  let server: TestServer;
  before(async () => { server = await startTestServer(); });
  after(() => server.stop());

  async function appConfig(client: { client_id: string; client_secret?: string }) {
    const auth = client.client_secret ? oidc.ClientSecretBasic(client.client_secret) : oidc.None();
    return oidc.discovery(new URL(server.issuer), client.client_id, undefined, auth, { execute: [oidc.allowInsecureRequests] });
  }

  it('is advertised in discovery', async () => {
    const discovery = await (await fetch(`${server.issuer}/.well-known/openid-configuration`)).json();
    assert.equal(discovery.pushed_authorization_request_endpoint, `${server.issuer}/request`);
  });

  for (const kind of ['public', 'secret'] as const) {
    it(`runs an EHR launch through PAR for a ${kind} client: aud, launch, PKCE and long scopes stay off the URL`, async () => {
      const client = await server.addClient({ auth: { kind } });
      const config = await appConfig(client);
      const verifier = oidc.randomPKCECodeVerifier();
      const state = oidc.randomState();
      const launch = await mintLaunch(server.db, server.config, { patient: 'pat-2', encounter: 'enc-2a' });
      const url = await oidc.buildAuthorizationUrlWithPAR(config, {
        redirect_uri: client.redirect_uri, scope: LONG_SCOPE, state, aud: server.fhirBase, launch,
        code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
      });
      assert.deepEqual([...url.searchParams.keys()].sort(), ['client_id', 'request_uri']);
      assert.match(url.searchParams.get('request_uri')!, /^urn:ietf:params:oauth:request_uri:/);

      const result = await authorize({ server, client, scope: LONG_SCOPE, startUrl: url.href });
      assert.ok(result.code, `no code: ${result.redirect}`);
      const tokens = await oidc.authorizationCodeGrant(config, result.redirect, { pkceCodeVerifier: verifier, expectedState: state });
      assert.equal(tokens.patient, 'pat-2');
      assert.equal(tokens.encounter, 'enc-2a');
      assert.ok(tokens.scope!.includes(`patient/Observation.rs?category=${CATEGORY}|laboratory`), tokens.scope);
      assert.ok(tokens.refresh_token);
      const read = await fetch(`${server.fhirBase}/Patient/pat-2`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
      assert.equal(read.status, 200);
    });
  }

  it('runs a standalone patient launch through PAR', async () => {
    const client = await server.addClient({ auth: { kind: 'public' } });
    const config = await appConfig(client);
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = await oidc.buildAuthorizationUrlWithPAR(config, {
      redirect_uri: client.redirect_uri, scope: 'launch/patient openid fhirUser patient/*.rs', state, aud: server.fhirBase,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    const result = await authorize({ server, client, scope: '', startUrl: url.href, patient: 'pat-3' });
    const tokens = await oidc.authorizationCodeGrant(config, result.redirect, { pkceCodeVerifier: verifier, expectedState: state });
    assert.equal(tokens.patient, 'pat-3');
  });

  it('refuses at the PAR endpoint what /authorize would refuse, with the OAuth error', async () => {
    const client = await server.addClient({ auth: { kind: 'public' } });
    const base = {
      client_id: client.client_id, response_type: 'code', redirect_uri: client.redirect_uri, scope: 'launch openid patient/*.rs', state: 'abcdefgh12345678',
      aud: server.fhirBase, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256',
    };
    const push = (params: Record<string, string>) => fetch(`${server.issuer}/request`, { method: 'POST', body: form(params) });
    const { aud: _aud, ...noAud } = base;
    const { code_challenge: _c, code_challenge_method: _m, ...noPkce } = base;
    for (const [name, params, error] of [
      ['no aud', noAud, 'invalid_request'],
      ['an unknown aud', { ...base, aud: 'https://elsewhere.example.org/fhir' }, 'invalid_target'],
      ['an unknown launch', { ...base, launch: 'no-such-launch' }, 'invalid_request'],
      ['no PKCE', noPkce, 'invalid_request'],
      ['plain PKCE', { ...base, code_challenge_method: 'plain' }, 'invalid_request'],
      ['an unregistered redirect_uri', { ...base, redirect_uri: 'https://evil.example.org/cb' }, 'invalid_request'],
    ] as const) {
      const res = await push(params as Record<string, string>);
      assert.equal(res.status, 400, name);
      assert.equal((await res.json()).error, error, name);
    }
  });

  it('takes a request_uri once', async () => {
    const client = await server.addClient({ auth: { kind: 'public' } });
    const config = await appConfig(client);
    const verifier = oidc.randomPKCECodeVerifier();
    const url = await oidc.buildAuthorizationUrlWithPAR(config, {
      redirect_uri: client.redirect_uri, scope: 'launch/patient openid patient/*.rs', state: oidc.randomState(), aud: server.fhirBase,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    const first = await authorize({ server, client, scope: '', startUrl: url.href });
    assert.ok(first.code);
    const again = await fetch(url, { redirect: 'manual' });
    assert.notEqual(again.status, 200);
    const location = again.headers.get('location') ?? '';
    assert.ok(!location.includes('code='), 'no second code');
  });
});
