// Dynamic client registration (RFC 7591) and management (RFC 7592) with SMART scopes.
import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { Adapter } from 'oidc-provider';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, authorizedTokens, Browser, exchangeCode, secretAccepted, tokenRequest } from '../support/oauth.ts';
import { ASSERTION_TYPE } from '../support/backend.ts';
import { issueInitialAccessToken } from '../../server/oidc/registration-privileges.ts';
import { removeClient, rotateClientSecret } from '../../server/oidc/clients.ts';
import { runCli } from '../support/cli.ts';

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

  describe('a backend service (SMART Backend Services) registers without redirect_uris or response_types (RFC 7591 section 2)', () => {
    const backendKeys = async () => {
      const { publicKey, privateKey } = await generateKeyPair('ES384');
      return { privateKey, jwks: { keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES384' }] } };
    };
    const backendToken = (iat: string, keys: Record<string, unknown>) => register({
      client_name: 'Backend', grant_types: ['client_credentials'], token_endpoint_auth_method: 'private_key_jwt', scope: 'system/Patient.rs', ...keys,
    }, { authorization: `Bearer ${iat}` });

    it('with jwks: stored with no redirect URIs and no response types, and gets a token at once', async () => {
      const iat = await issueInitialAccessToken(server.db, server.host.provider, 600, { systemScope: 'system/Patient.rs' });
      const { privateKey, jwks } = await backendKeys();
      const res = await backendToken(iat, { jwks });
      assert.equal(res.status, 201, await res.clone().text());
      const client = await res.json();
      assert.deepEqual([client.grant_types, client.response_types, client.redirect_uris], [['client_credentials'], [], []]);
      const stored = JSON.parse((await server.db('oidc_payloads').where({ model: 'Client', id: client.client_id }).first('payload')).payload);
      assert.deepEqual([stored.grant_types, stored.response_types, stored.redirect_uris], [['client_credentials'], [], []]);
      const now = Math.floor(Date.now() / 1000);
      const assertion = await new SignJWT({ iss: client.client_id, sub: client.client_id, aud: `${server.issuer}/token`, jti: randomUUID(), exp: now + 240 })
        .setProtectedHeader({ alg: 'ES384', kid: 'k1', typ: 'JWT' }).sign(privateKey);
      const { res: token, body } = await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: ASSERTION_TYPE, client_assertion: assertion });
      assert.equal(token.status, 200, JSON.stringify(body));
      assert.equal(body.scope, 'system/Patient.rs');
      // An RFC 7592 update that leaves them out again keeps it a backend.
      const updated = await fetch(client.registration_client_uri, {
        method: 'PUT', headers: { authorization: `Bearer ${client.registration_access_token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ client_id: client.client_id, client_name: 'Backend 2', grant_types: ['client_credentials'], token_endpoint_auth_method: 'private_key_jwt', jwks, scope: 'system/Patient.rs' }),
      });
      assert.equal(updated.status, 200, await updated.clone().text());
      assert.deepEqual((await updated.json()).response_types, []);
    });

    it('with jwks_uri', async () => {
      const iat = await issueInitialAccessToken(server.db, server.host.provider, 600, { systemScope: 'system/Patient.rs' });
      const res = await backendToken(iat, { jwks_uri: 'https://backend.example.org/jwks.json' });
      assert.equal(res.status, 201, await res.clone().text());
      const client = await res.json();
      assert.deepEqual([client.response_types, client.redirect_uris], [[], []]);
    });

    for (const [name, metadata] of [
      ['no grant_types (authorization_code by default)', {}],
      ['grant_types authorization_code', { grant_types: ['authorization_code', 'refresh_token'] }],
      ['response_types code beside client_credentials', { grant_types: ['client_credentials'], response_types: ['code'], token_endpoint_auth_method: 'client_secret_basic' }],
    ] as const) {
      it(`still refuses a client with ${name} and no redirect_uris: invalid_redirect_uri`, async () => {
        const iat = await issueInitialAccessToken(server.db, server.host.provider, 600, { systemScope: 'system/Patient.rs' });
        const res = await register({ client_name: 'No redirects', ...metadata }, { authorization: `Bearer ${iat}` });
        assert.equal(res.status, 400);
        assert.equal((await res.json()).error, 'invalid_redirect_uri');
      });
    }
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

  describe('RFC 7592 after a client secret rotation (clients cached for a minute)', () => {
    let cached: TestServer;
    before(async () => { cached = await startTestServer({ CLIENT_CACHE_MS: '60000' }); });
    after(() => cached.stop());

    /** A confidential client registered at /register whose old secret the server has just used (so it is cached). */
    async function registeredAndUsed() {
      const res = await register({ client_name: 'Rotated elsewhere', redirect_uris: ['https://rotated.example.org/cb'] }, {}, cached);
      const created = await res.json();
      assert.ok(await secretAccepted(cached.issuer, created.client_id, created.client_secret), 'the registered secret works, and is cached');
      return created as { client_id: string; client_secret: string; registration_access_token: string; registration_client_uri: string };
    }
    const put = (created: { registration_client_uri: string }, rat: string, metadata: Record<string, unknown>) => fetch(created.registration_client_uri, {
      method: 'PUT', headers: { authorization: `Bearer ${rat}`, 'content-type': 'application/json' }, body: JSON.stringify(metadata),
    });
    const storedSecret = async (clientId: string) => JSON.parse((await cached.db('oidc_payloads').where({ model: 'Client', id: clientId }).first('payload')).payload).client_secret;

    it('never restores the secret the CLI rotated out: the update answers with the current secret, and one carrying the old secret is refused', async () => {
      const created = await registeredAndUsed();
      const rotated = await runCli(cached, 'client', 'rotate-secret', created.client_id, '--json');
      assert.equal(rotated.code, 0, rotated.stderr || rotated.stdout);
      const secret = rotated.json.client_secret as string;

      const read = await (await fetch(created.registration_client_uri, { headers: { authorization: `Bearer ${created.registration_access_token}` } })).json();
      assert.equal(read.client_secret, secret, 'a read answers with the current secret, not the one cached');

      // The app sends back its metadata as it was returned, its old secret included (RFC 7592 section 2.2: it must match the current one).
      const stale = await put(created, created.registration_access_token, { client_id: created.client_id, client_secret: created.client_secret, client_name: 'Stale', redirect_uris: ['https://rotated.example.org/cb'] });
      assert.equal(stale.status, 400);
      assert.equal((await stale.json()).error, 'invalid_request');
      assert.equal(await storedSecret(created.client_id), secret, 'nothing stored');

      const updated = await put(created, created.registration_access_token, { client_id: created.client_id, client_name: 'Renamed', redirect_uris: ['https://rotated.example.org/cb'] });
      assert.equal(updated.status, 200, await updated.clone().text());
      const body = await updated.json();
      assert.equal(body.client_name, 'Renamed');
      assert.equal(body.client_secret, secret, 'the answer gives the secret that works: no new one is issued, the rotated one stays');
      assert.equal(await storedSecret(created.client_id), secret);
      assert.equal(await secretAccepted(cached.issuer, created.client_id, created.client_secret), false, 'the old secret stays refused');
      assert.ok(await secretAccepted(cached.issuer, created.client_id, secret));
    });

    /** Sends an update of `created` whose store is preceded by `meanwhile` (after oidc-provider read the client); the refusal it gets. */
    async function racedUpdate(created: { client_id: string; registration_access_token: string; registration_client_uri: string }, meanwhile: () => Promise<unknown>) {
      const { adapter } = cached.host.provider.Client as unknown as { adapter: Adapter }; // (not in the published types)
      const upsert = adapter.upsert;
      adapter.upsert = async (...args: Parameters<Adapter['upsert']>) => {
        adapter.upsert = upsert;
        await meanwhile();
        return upsert.apply(adapter, args);
      };
      try {
        const res = await put(created, created.registration_access_token, { client_id: created.client_id, client_name: 'Racing', redirect_uris: ['https://rotated.example.org/cb'] });
        assert.equal(res.status, 409, await res.clone().text());
        const body = await res.json();
        assert.equal(body.error, 'invalid_request');
        return body as { error_description: string };
      } finally {
        adapter.upsert = upsert;
      }
    }

    it('refuses an update whose client was read before a rotation stored meanwhile (409): the new secret stays', async () => {
      const created = await registeredAndUsed();
      let secret = '';
      const body = await racedUpdate(created, async () => { secret = await rotateClientSecret(cached.db, created.client_id); });
      assert.match(body.error_description, /changed meanwhile/);
      assert.ok(!JSON.stringify(body).includes(created.client_secret) && !JSON.stringify(body).includes(secret), 'no secret in the refusal');
      assert.equal(await storedSecret(created.client_id), secret, 'the rotated secret stays');
      assert.equal(await secretAccepted(cached.issuer, created.client_id, created.client_secret), false);
      assert.ok(await secretAccepted(cached.issuer, created.client_id, secret));
    });
    it('refuses an update of a client removed meanwhile (409): it does not come back', async () => {
      const created = await registeredAndUsed();
      const body = await racedUpdate(created, () => removeClient(cached.db, created.client_id));
      assert.match(body.error_description, /is not registered/);
      assert.equal(await cached.db('oidc_payloads').where({ model: 'Client', id: created.client_id }).first('id'), undefined);
      assert.equal(await secretAccepted(cached.issuer, created.client_id, created.client_secret), false);
    });
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

// RFC 8252 section 7.3: a native app listens on a loopback port the operating system chose when it starts.
describe('redirect URI matching: loopback ports of native apps (RFC 8252)', () => {
  let server: TestServer;
  before(async () => { server = await startTestServer(); });
  after(() => server.stop());

  const registered = async (redirect: string, applicationType?: 'native') => {
    const res = await fetch(`${server.issuer}/register`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_name: 'Loopback app', redirect_uris: [redirect], token_endpoint_auth_method: 'none', ...(applicationType && { application_type: applicationType }) }),
    });
    assert.equal(res.status, 201, await res.clone().text());
    return (await res.json()).client_id as string;
  };

  /** Whether /authorize takes `redirect`: on to sign-in, rather than an error page that sends nobody anywhere. */
  async function accepted(clientId: string, redirect: string): Promise<boolean> {
    const query = new URLSearchParams({
      response_type: 'code', client_id: clientId, redirect_uri: redirect, scope: 'openid patient/*.rs', state: 's', aud: server.fhirBase,
      code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256',
    });
    const res = await fetch(`${server.issuer}/authorize?${query}`, { redirect: 'manual' });
    const location = res.headers.get('location') ?? '';
    if (res.status === 303 && location.startsWith('/interaction/')) return true;
    assert.equal(res.status, 400, `${redirect}: ${res.status} ${location}`);
    assert.match(await res.text(), /redirect_uri did not match/);
    return false;
  }

  const ANY_PORT = ['http://127.0.0.1:8765/cb', 'http://127.0.0.1:51234/cb', 'http://127.0.0.1/cb'];
  const OTHER_THAN_PORT = [
    'http://127.0.0.1:51234/cb/', 'http://127.0.0.1:51234/other', 'http://127.0.0.1:51234/cb?x=1', 'http://127.0.0.1:51234/CB',
    'https://127.0.0.1:51234/cb', 'http://[::1]:51234/cb', 'http://localhost:51234/cb', 'http://127.0.0.2:51234/cb',
    'http://user@127.0.0.1:51234/cb', 'http://127.0.0.1:51234/cb#f',
  ];

  it('lets a native app use any port of its registered loopback redirect URI, and nothing else', async () => {
    const app = await registered('http://127.0.0.1:8765/cb', 'native');
    for (const uri of ANY_PORT) assert.equal(await accepted(app, uri), true, uri);
    for (const uri of OTHER_THAN_PORT) assert.equal(await accepted(app, uri), false, uri);
  });

  it('matches the host as registered: [::1] and localhost are not 127.0.0.1, nor one another', async () => {
    const v6 = await registered('http://[::1]:8765/cb', 'native');
    assert.equal(await accepted(v6, 'http://[::1]:40000/cb'), true);
    for (const uri of ['http://127.0.0.1:40000/cb', 'http://localhost:40000/cb', 'http://[::1]:40000/cb2']) assert.equal(await accepted(v6, uri), false, uri);
    const named = await registered('http://localhost:8765/cb', 'native');
    assert.equal(await accepted(named, 'http://localhost:40000/cb'), true);
    for (const uri of ['http://127.0.0.1:40000/cb', 'http://[::1]:40000/cb']) assert.equal(await accepted(named, uri), false, uri);
  });

  it('gives a web app (the default application_type) exact matching: another port is refused', async () => {
    const web = await registered('http://127.0.0.1:8765/cb');
    assert.equal(await accepted(web, 'http://127.0.0.1:8765/cb'), true);
    for (const uri of ['http://127.0.0.1:51234/cb', 'http://127.0.0.1/cb', ...OTHER_THAN_PORT]) assert.equal(await accepted(web, uri), false, uri);
  });

  it('completes a native app\'s authorization on the port it chose, and the token request must name that same URI', async () => {
    const client = { client_id: await registered('http://127.0.0.1:8765/cb', 'native'), redirect_uri: 'http://127.0.0.1:51234/cb' };
    const launch = await authorize({ server, client, scope: 'openid patient/*.rs launch/patient' });
    assert.equal(launch.redirect.origin + launch.redirect.pathname, 'http://127.0.0.1:51234/cb');
    const registeredPort = await exchangeCode(server.issuer, launch, { ...client, redirect_uri: 'http://127.0.0.1:8765/cb' });
    assert.equal(registeredPort.body.error, 'invalid_grant');
    const again = await authorize({ server, client, scope: 'openid patient/*.rs launch/patient' });
    const { body } = await exchangeCode(server.issuer, again, client);
    assert.ok(body.access_token, JSON.stringify(body));
  });

  it('matches a native app\'s post_logout_redirect_uri the same way: any port, nothing else', async () => {
    const res = await fetch(`${server.issuer}/register`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_name: 'Loopback app', redirect_uris: ['http://127.0.0.1:8765/cb'], post_logout_redirect_uris: ['http://127.0.0.1:8765/bye'], token_endpoint_auth_method: 'none', application_type: 'native' }),
    });
    const client = { client_id: (await res.json()).client_id as string, redirect_uri: 'http://127.0.0.1:8765/cb' };
    const browser = new Browser();
    const launch = await authorize({ server, client, scope: 'openid patient/*.rs launch/patient', browser });
    const { body } = await exchangeCode(server.issuer, launch, client);
    const logout = (uri: string) => browser.fetch(`${server.issuer}/logout?${new URLSearchParams({ id_token_hint: body.id_token, post_logout_redirect_uri: uri })}`);
    assert.equal((await logout('http://127.0.0.1:51234/bye')).status, 200, 'the confirmation page');
    for (const uri of ['http://[::1]:51234/bye', 'http://127.0.0.1:51234/bye2']) {
      const refused = await logout(uri);
      assert.equal(refused.status, 400, uri);
      assert.match(await refused.text(), /post_logout_redirect_uri not registered/, uri);
    }
  });
});
