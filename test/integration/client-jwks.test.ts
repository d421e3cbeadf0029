// jwks_uri clients (SMART Backend Services): the key set is cached no longer than the client's Cache-Control allows,
// an unknown kid triggers one rate-limited refetch (key rollover), loopback jwks_uris work outside production,
// and an unreachable or broken jwks_uri gives invalid_client.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { freePort, startTestServer, type TestServer } from '../support/server.ts';
import { tokenRequest } from '../support/oauth.ts';
import { cacheLifetime, createClientJwksPolicy } from '../../server/oidc/client-jwks.ts';

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const SCOPE = 'system/Patient.rs';

interface Key { kid: string; privateKey: CryptoKey; jwk: JWK }

async function newKey(kid: string): Promise<Key> {
  const { publicKey, privateKey } = await generateKeyPair('ES384', { extractable: true });
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'ES384', use: 'sig' } };
}

/** What the test JWKS server answers for one path; the test changes it between requests. */
interface JwksEntry { keys: JWK[]; cacheControl?: string; status?: number; rawBody?: string; hits: number }

describe('jwks_uri clients: caching, key rollover, loopback', () => {
  let server: TestServer;
  let jwksServer: Server;
  let jwksBase: string;
  const entries = new Map<string, JwksEntry>();
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => { unhandled.push(reason); };

  before(async () => {
    process.on('unhandledRejection', onUnhandled);
    jwksServer = createServer((req, res) => {
      const entry = entries.get(req.url ?? '');
      if (!entry) { res.writeHead(404).end(); return; }
      entry.hits++;
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (entry.cacheControl) headers['cache-control'] = entry.cacheControl;
      res.writeHead(entry.status ?? 200, headers).end(entry.rawBody ?? JSON.stringify({ keys: entry.keys }));
    });
    await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
    jwksBase = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}`;
    server = await startTestServer();
  });

  after(async () => {
    await server.stop();
    await new Promise<void>((resolve) => jwksServer.close(() => resolve()));
    process.off('unhandledRejection', onUnhandled);
  });

  afterEach(() => assert.deepEqual(unhandled, [], 'no unhandled rejections'));

  /** A backend client whose jwks_uri serves `entry` (or is `jwksUri` when given). */
  async function backendClient(entry: Partial<JwksEntry>, jwksUri?: string) {
    const path = `/jwks/${randomUUID()}`;
    const served: JwksEntry = { keys: [], hits: 0, ...entry };
    entries.set(path, served);
    const { client_id } = await server.addClient({
      name: 'Backend service', redirectUris: [], auth: { kind: 'jwks-uri', jwksUri: jwksUri ?? `${jwksBase}${path}` },
      grantTypes: ['client_credentials'], scope: SCOPE,
    });
    return { clientId: client_id, served };
  }

  async function token(clientId: string, key: Key) {
    const clientAssertion = await new SignJWT({ jti: randomUUID() })
      .setProtectedHeader({ alg: 'ES384', kid: key.kid, typ: 'JWT' })
      .setIssuer(clientId).setSubject(clientId).setAudience(`${server.issuer}/token`)
      .setIssuedAt().setExpirationTime('4m').sign(key.privateKey);
    return tokenRequest(server.issuer, {
      grant_type: 'client_credentials', scope: SCOPE, client_assertion_type: ASSERTION_TYPE, client_assertion: clientAssertion,
    });
  }

  function assertOk(result: { res: Response; body: Record<string, any> }) {
    assert.equal(result.res.status, 200, JSON.stringify(result.body));
    assert.ok(result.body.access_token);
  }

  function assertInvalidClient(result: { res: Response; body: Record<string, any> }) {
    assert.equal(result.res.status, 401, JSON.stringify(result.body));
    assert.equal(result.body.error, 'invalid_client');
  }

  it('fetches a loopback jwks_uri outside production', async () => {
    const key = await newKey('k1');
    const { clientId, served } = await backendClient({ keys: [key.jwk] });
    assertOk(await token(clientId, key));
    assert.equal(served.hits, 1);
  });

  it('with max-age=3600, two requests fetch the key set once', async () => {
    const key = await newKey('k1');
    const { clientId, served } = await backendClient({ keys: [key.jwk], cacheControl: 'public, max-age=3600' });
    assertOk(await token(clientId, key));
    assertOk(await token(clientId, key));
    assert.equal(served.hits, 1);
  });

  it('key rollover: a new kid is fetched at once even with max-age=3600; another unknown kid right after is not', async () => {
    const oldKey = await newKey('old');
    const newer = await newKey('new');
    const unknown = await newKey('unknown');
    const { clientId, served } = await backendClient({ keys: [oldKey.jwk], cacheControl: 'max-age=3600' });
    assertOk(await token(clientId, oldKey));
    assert.equal(served.hits, 1);

    served.keys = [newer.jwk];
    assertOk(await token(clientId, newer));
    assert.equal(served.hits, 2, 'the unknown kid caused one refetch');

    // Within the refetch interval: neither an unknown kid nor the removed key fetches again.
    assertInvalidClient(await token(clientId, unknown));
    assertInvalidClient(await token(clientId, oldKey));
    assert.equal(served.hits, 2);
    assertOk(await token(clientId, newer));
  });

  it('with no-store, a key the client removed is refused on the next request', async () => {
    const first = await newKey('first');
    const second = await newKey('second');
    const { clientId, served } = await backendClient({ keys: [first.jwk, second.jwk], cacheControl: 'no-store' });
    assertOk(await token(clientId, first));
    assertOk(await token(clientId, second));
    assert.equal(served.hits, 2, 'fetched again before each use');

    served.keys = [second.jwk];
    assertInvalidClient(await token(clientId, first));
    assertOk(await token(clientId, second));
  });

  for (const cacheControl of ['no-cache', 'max-age=0']) {
    it(`with ${cacheControl}, the key set is fetched before each use`, async () => {
      const key = await newKey('k1');
      const { clientId, served } = await backendClient({ keys: [key.jwk], cacheControl });
      assertOk(await token(clientId, key));
      assertOk(await token(clientId, key));
      assert.equal(served.hits, 2);
    });
  }

  it('with max-age=1, a removed key is still cached within the second and refused after it', async () => {
    const first = await newKey('first');
    const second = await newKey('second');
    const { clientId, served } = await backendClient({ keys: [first.jwk, second.jwk], cacheControl: 'max-age=1' });
    assertOk(await token(clientId, second));
    served.keys = [second.jwk];
    assertOk(await token(clientId, first));
    assert.equal(served.hits, 1);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    assertInvalidClient(await token(clientId, first));
    assertOk(await token(clientId, second));
  });

  it('a jwks_uri that is down, answers 500 or is not JSON gives invalid_client, and the server keeps working', async () => {
    const key = await newKey('k1');
    const down = await backendClient({}, `http://127.0.0.1:${await freePort()}/jwks`);
    assertInvalidClient(await token(down.clientId, key));

    const failing = await backendClient({ keys: [key.jwk], status: 500 });
    assertInvalidClient(await token(failing.clientId, key));
    const notJson = await backendClient({ keys: [key.jwk], rawBody: '<html>not json</html>' });
    assertInvalidClient(await token(notJson.clientId, key));
    const notJwks = await backendClient({ keys: [key.jwk], rawBody: '{"keys": "nope"}' });
    assertInvalidClient(await token(notJwks.clientId, key));

    // Each failing request fetched once: the failure is not retried in a loop.
    assert.equal(failing.served.hits, 1);
    assert.equal(notJson.served.hits, 1);

    // Once the client's server recovers, the next request succeeds (a failed fetch is not cached).
    failing.served.status = 200;
    assertOk(await token(failing.clientId, key));

    const healthy = await backendClient({ keys: [key.jwk] });
    assertOk(await token(healthy.clientId, key));
  });
});

describe('createClientJwksPolicy().fetch', () => {
  const realFetch = globalThis.fetch;
  let seen: { url: string; init: RequestInit & { dispatcher?: unknown } }[] = [];
  beforeEach(() => {
    seen = [];
    globalThis.fetch = (async (url: string | URL, init: RequestInit & { dispatcher?: unknown }) => {
      seen.push({ url: String(url), init });
      return new Response('{"keys":[]}');
    }) as typeof fetch;
  });
  afterEach(() => { globalThis.fetch = realFetch; });

  it('drops the SSRF guard only for loopback URLs, and only when allowed', async () => {
    const guard = { ssrf: true };
    const allowed = createClientJwksPolicy({ allowLoopback: true });
    const refused = createClientJwksPolicy({ allowLoopback: false });
    for (const url of ['http://localhost:8080/jwks', 'http://127.0.0.1/jwks', 'http://[::1]:9/jwks', 'https://localhost/jwks']) {
      await allowed.fetch(url, { method: 'GET', dispatcher: guard });
      assert.equal(seen.at(-1)!.init.dispatcher, undefined, url);
      await refused.fetch(url, { method: 'GET', dispatcher: guard });
      assert.equal(seen.at(-1)!.init.dispatcher, guard, url);
    }
    for (const url of ['http://10.0.0.1/jwks', 'http://127.0.0.2/jwks', 'http://localhost.example.com/jwks', 'https://app.example.com/jwks']) {
      await allowed.fetch(new URL(url), { method: 'GET', dispatcher: guard });
      assert.equal(seen.at(-1)!.init.dispatcher, guard, url);
    }
  });
});

describe('cacheLifetime', () => {
  const at = (headers: Record<string, string>) => cacheLifetime(new Headers(headers), 300, 1_000_000);
  it('follows Cache-Control, bounded by Expires and Age, with a default', () => {
    assert.equal(at({}), 300);
    assert.equal(at({ 'cache-control': 'public' }), 300);
    assert.equal(at({ 'cache-control': 'max-age=60' }), 60);
    assert.equal(at({ 'cache-control': 'public, Max-Age="120"' }), 120);
    assert.equal(at({ 'cache-control': 'no-store' }), 0);
    assert.equal(at({ 'cache-control': 'no-cache, max-age=600' }), 0);
    assert.equal(at({ 'cache-control': 'max-age=0' }), 0);
    const date = new Date(1_000_000_000).toUTCString();
    assert.equal(at({ date, expires: new Date(1_000_030_000).toUTCString() }), 30);
    assert.equal(at({ 'cache-control': 'max-age=10', date, expires: new Date(1_000_030_000).toUTCString() }), 10);
    assert.equal(at({ expires: '0' }), 0);
    assert.equal(at({ 'cache-control': 'max-age=60', age: '50' }), 10);
    assert.equal(at({ 'cache-control': 'max-age=60', age: '90' }), 0);
  });
});
