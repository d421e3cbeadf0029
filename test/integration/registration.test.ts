// Dynamic client registration (RFC 7591) and management (RFC 7592) with SMART scopes.
import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair } from 'jose';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, authorizedTokens, exchangeCode } from '../support/oauth.ts';
import { issueInitialAccessToken } from '../../server/oidc/registration-privileges.ts';

describe('dynamic client registration', () => {
  let server: TestServer;
  before(async () => { server = await startTestServer(); });
  after(() => server.stop());

  const register = (metadata: Record<string, unknown>, headers: Record<string, string> = {}, target = server) =>
    fetch(`${target.issuer}/register`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(metadata) });

  it('registers a public SMART app with SMART scopes in scope, usable at once', async () => {
    const res = await register({
      client_name: 'Registered app', redirect_uris: ['http://127.0.0.1:9999/callback'], token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'], scope: 'openid fhirUser launch/patient offline_access patient/*.rs',
    });
    assert.equal(res.status, 201);
    const client = await res.json();
    assert.equal(client.scope, 'openid fhirUser launch/patient offline_access patient/*.rs');
    assert.equal(client.smart_scope, undefined);
    assert.equal(client.client_secret, undefined);
    assert.ok(client.registration_access_token && client.registration_client_uri);
    const launch = await authorize({ server, client: { client_id: client.client_id, redirect_uri: 'http://127.0.0.1:9999/callback' }, scope: 'launch/patient openid patient/*.rs user/*.rs' });
    const { body } = await exchangeCode(server.issuer, launch, { client_id: client.client_id, redirect_uri: 'http://127.0.0.1:9999/callback' });
    assert.deepEqual(body.scope.split(' ').sort(), ['launch/patient', 'openid', 'patient/*.rs'], 'scopes outside the registered scope are not granted');
  });

  it('registers symmetric and asymmetric clients', async () => {
    const secret = await (await register({ client_name: 'Confidential', redirect_uris: ['https://app.example.org/cb'] })).json();
    assert.ok(secret.client_secret);
    const { publicKey } = await generateKeyPair('ES384');
    // A backend service needs an initial access token that allows its system/ scopes (registration-privileges.test.ts).
    const iat = await issueInitialAccessToken(server.db, server.host.provider, 600, { systemScope: 'system/Patient.rs' });
    const res = await register({
      client_name: 'Backend', redirect_uris: [], grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'private_key_jwt',
      jwks: { keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES384' }] }, scope: 'system/Patient.rs',
    }, { authorization: `Bearer ${iat}` });
    assert.equal(res.status, 201, await res.clone().text());
    assert.equal((await res.json()).scope, 'system/Patient.rs');
  });

  it('reads, updates and deletes a client with its registration access token', async () => {
    const created = await (await register({ client_name: 'Managed', redirect_uris: ['https://app.example.org/cb'], scope: 'openid patient/*.rs' })).json();
    const auth = { authorization: `Bearer ${created.registration_access_token}` };
    const read = await fetch(created.registration_client_uri, { headers: auth });
    assert.equal(read.status, 200);
    assert.equal((await read.json()).scope, 'openid patient/*.rs');
    const updated = await fetch(created.registration_client_uri, {
      method: 'PUT', headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: created.client_id, client_secret: created.client_secret, client_name: 'Managed 2', redirect_uris: ['https://app.example.org/cb2'], scope: 'openid patient/Patient.rs' }),
    });
    assert.equal(updated.status, 200, await updated.clone().text());
    const body = await updated.json();
    assert.equal(body.client_name, 'Managed 2');
    assert.equal(body.scope, 'openid patient/Patient.rs');
    const rat = body.registration_access_token;
    assert.notEqual(rat, created.registration_access_token, 'the registration access token rotates');
    assert.equal((await fetch(created.registration_client_uri, { headers: auth })).status, 401, 'the old one is gone');
    const records = (await server.audit.search({ type: '110113', subtype: '110129' }) as any[]).filter((e) => e.entity[0].what.identifier.value === created.client_id);
    assert.deepEqual(records.map((e) => [e.action, e.entity[0].detail?.map((d: any) => d.valueString).sort()]),
      [['C', Object.keys(created).filter((k) => !k.startsWith('registration_')).map((k) => (k === 'scope' ? 'smart_scope' : k)).sort()], ['U', ['client_name', 'redirect_uris', 'smart_scope']]],
      'each change names the fields it changed (never their values)');
    assert.equal((await fetch(created.registration_client_uri, { headers: { authorization: 'Bearer wrong' } })).status, 401);
    const removed = await fetch(created.registration_client_uri, { method: 'DELETE', headers: { authorization: `Bearer ${rat}` } });
    assert.equal(removed.status, 204);
    assert.equal((await fetch(created.registration_client_uri, { headers: { authorization: `Bearer ${rat}` } })).status, 401);
  });

  it('ends the grants of a client deleted through RFC 7592: its tokens stop working', async () => {
    const created = await (await register({ client_name: 'Short-lived', redirect_uris: ['http://127.0.0.1:9999/callback'], token_endpoint_auth_method: 'none' })).json();
    const client = { client_id: created.client_id, redirect_uri: 'http://127.0.0.1:9999/callback' };
    const body = await authorizedTokens({ server, client, scope: 'launch/patient openid patient/*.rs' });
    const read = () => fetch(`${server.fhirBase}/Patient/${body.patient}`, { headers: { authorization: `Bearer ${body.access_token}` } });
    assert.equal((await read()).status, 200);
    const removed = await fetch(created.registration_client_uri, { method: 'DELETE', headers: { authorization: `Bearer ${created.registration_access_token}` } });
    assert.equal(removed.status, 204);
    for (let i = 0; i < 20 && (await read()).status !== 401; i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal((await read()).status, 401);
  });

  for (const [name, metadata, message] of [
    ['a javascript: redirect URI', { redirect_uris: ['javascript:alert(1)'] }, /redirect_uris/],
    ['a redirect URI with a fragment', { redirect_uris: ['https://app.example.org/cb#x'] }, /fragment/],
    ['an http redirect URI that is not loopback', { redirect_uris: ['http://app.example.org/cb'] }, /https/],
    ['a custom-scheme redirect URI', { redirect_uris: ['com.example.app:/cb'] }, /redirect_uris/],
    ['a javascript: post-logout redirect URI', { redirect_uris: ['https://app.example.org/cb'], post_logout_redirect_uris: ['javascript:alert(1)'] }, /post_logout_redirect_uris/],
    ['an http post-logout redirect URI that is not loopback', { redirect_uris: ['https://app.example.org/cb'], post_logout_redirect_uris: ['http://evil.example.org/out'] }, /post_logout_redirect_uris must use https/],
    ['a non-SMART scope', { redirect_uris: ['https://app.example.org/cb'], scope: 'patient/*.bogus' }, /SMART scopes/],
    ['an http jwks_uri that is not loopback', { redirect_uris: [], grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'private_key_jwt', jwks_uri: 'http://keys.example.org/jwks' }, /https/],
    ['client_credentials for a public client', { redirect_uris: [], grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'none' }, /client authentication/],
    ['a resource server without a secret', { redirect_uris: [], grant_types: [], response_types: [], token_endpoint_auth_method: 'none', resource_server: true }, /confidential/],
    ['a non-boolean resource_server', { redirect_uris: [], grant_types: [], response_types: [], resource_server: 'yes' }, /boolean/],
  ] as const) {
    it(`refuses ${name} with invalid_client_metadata or invalid_redirect_uri`, async () => {
      const before = (await server.db('oidc_payloads').where('model', 'Client').count({ n: '*' }))[0].n;
      const res = await register({ client_name: 'Bad', ...metadata });
      assert.equal(res.status, 400);
      const body = await res.json();
      assert.ok(['invalid_client_metadata', 'invalid_redirect_uri'].includes(body.error), body.error);
      assert.match(body.error_description, message);
      const after = (await server.db('oidc_payloads').where('model', 'Client').count({ n: '*' }))[0].n;
      assert.equal(after, before, 'nothing is stored');
    });
  }

  it('refuses sector_identifier_uri without fetching it: subject identifiers are public, never pairwise', async () => {
    let connections = 0;
    const sector = createServer((socket) => { connections++; socket.destroy(); });
    await new Promise<void>((resolve) => sector.listen(0, '127.0.0.1', resolve));
    try {
      const res = await register({ client_name: 'Sector', redirect_uris: ['http://127.0.0.1:9999/callback'], token_endpoint_auth_method: 'none', sector_identifier_uri: `https://127.0.0.1:${(sector.address() as AddressInfo).port}/sector` });
      assert.equal(res.status, 400);
      const body = await res.json();
      assert.equal(body.error, 'invalid_client_metadata');
      assert.match(body.error_description, /sector_identifier_uri is not supported/);
      assert.equal(connections, 0, 'the server fetched nothing');
    } finally {
      await new Promise((resolve) => sector.close(resolve));
    }
  });

  it('refuses a body that is not JSON, and a body over the limit', async () => {
    const notJson = await fetch(`${server.issuer}/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{no' });
    assert.equal(notJson.status, 400);
    const huge = await register({ client_name: 'x'.repeat(2 * 1024 * 1024), redirect_uris: ['https://app.example.org/cb'] });
    assert.ok([400, 413].includes(huge.status), String(huge.status));
  });

  it('requires an initial access token when REGISTRATION=token', async () => {
    const closed = await startTestServer({ REGISTRATION: 'token' });
    try {
      const metadata = { client_name: 'Needs token', redirect_uris: ['https://app.example.org/cb'] };
      assert.equal((await register(metadata, {}, closed)).status, 401);
      assert.equal((await register(metadata, { authorization: 'Bearer bogus' }, closed)).status, 401);
      const iat = await new closed.host.provider.InitialAccessToken({}).save();
      assert.equal((await register(metadata, { authorization: `Bearer ${iat}` }, closed)).status, 201);
    } finally {
      await closed.stop();
    }
  });
});
