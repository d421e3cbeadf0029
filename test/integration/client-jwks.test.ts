// jwks_uri clients (SMART Backend Services): the key set is cached no longer than the client's Cache-Control allows,
// an unknown kid triggers one rate-limited refetch (key rollover), loopback jwks_uris work outside production,
// and an unreachable or broken jwks_uri gives invalid_client.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { lookup } from 'node:dns/promises';
import { hostname } from 'node:os';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { freePort, startTestServer, type TestServer } from '../support/server.ts';
import { tokenRequest } from '../support/oauth.ts';
import { cacheLifetime } from '../../server/oidc/client-jwks.ts';
import { createClientFetch, RefusedDestinationError } from '../../server/net/client-fetch.ts';
import { classifyAddress } from '../../server/net/address-class.ts';

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const SCOPE = 'system/Patient.rs';

interface Key { kid: string; privateKey: CryptoKey; jwk: JWK }

async function newKey(kid: string): Promise<Key> {
  const { publicKey, privateKey } = await generateKeyPair('ES384', { extractable: true });
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'ES384', use: 'sig' } };
}

/** What the test JWKS server answers for one path; the test changes it between requests. */
interface JwksEntry { keys: JWK[]; cacheControl?: string; status?: number; rawBody?: string; location?: string; hits: number }

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
      if (entry.location) headers.location = entry.location;
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

  it('does not follow a redirect from a jwks_uri (invalid_client; the target is never asked)', async () => {
    const key = await newKey('k1');
    const target = await backendClient({ keys: [key.jwk] });
    const targetPath = [...entries].find(([, e]) => e === target.served)![0];
    const redirecting = await backendClient({ keys: [], status: 302, location: targetPath });
    assertInvalidClient(await token(redirecting.clientId, key));
    assert.equal(redirecting.served.hits, 1);
    assert.equal(target.served.hits, 0);
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

describe('fetching a URL a client named (no server-side request forgery)', () => {
  // Only loopback traffic: a local server stands in for the client's; internal and public addresses are never contacted.
  let site: Server;
  let base: string;
  const hits: string[] = [];
  before(async () => {
    site = createServer((req, res) => {
      hits.push(req.url ?? '');
      if (req.url === '/redirect') res.writeHead(302, { location: '/jwks' }).end();
      else if (req.url === '/huge') res.writeHead(200, { 'content-type': 'application/json' }).end(`{"keys":[],"pad":"${'x'.repeat(200_000)}"}`);
      else if (req.url === '/slow') setTimeout(() => res.writeHead(200).end('{"keys":[]}'), 2000);
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{"keys":[]}');
    });
    await new Promise<void>((resolve) => site.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(site.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((resolve) => site.close(() => resolve())));
  beforeEach(() => { hits.length = 0; });

  it('refuses loopback (also by name, after DNS) when loopback is not allowed, without connecting', async () => {
    const fetchFor = createClientFetch({ allowLoopback: false });
    const port = new URL(base).port;
    for (const url of [`${base}/jwks`, `http://localhost:${port}/jwks`, `http://[::1]:${port}/jwks`, `http://[::ffff:127.0.0.1]:${port}/jwks`, `http://0.0.0.0:${port}/jwks`]) {
      await assert.rejects(fetchFor(url), RefusedDestinationError, url);
    }
    assert.deepEqual(hits, []);
  });

  it('fetches loopback when allowed, never follows a redirect, and bounds size and time', async () => {
    const fetchFor = createClientFetch({ allowLoopback: true, timeoutMs: 300 });
    const res = await fetchFor(`${base}/jwks`, { headers: { accept: 'application/json' } });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { keys: [] });
    const redirected = await fetchFor(`${base}/redirect`);
    assert.equal(redirected.status, 302);
    assert.deepEqual(hits, ['/jwks', '/redirect'], 'the redirect target was not requested');
    await assert.rejects(fetchFor(`${base}/huge`), /larger than/);
    const started = Date.now();
    await assert.rejects(fetchFor(`${base}/slow`));
    assert.ok(Date.now() - started < 1500, 'gave up at the time bound');
  });

  it('refuses schemes other than http(s)', async () => {
    await assert.rejects(createClientFetch({ allowLoopback: true })('file:///etc/passwd'), RefusedDestinationError);
  });

  describe('in production', () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer({
        NODE_ENV: 'production', ISSUER: 'https://auth.example.org', COOKIE_SECRETS: 'p'.repeat(40), KEY_ENCRYPTION_SECRET: 'k'.repeat(40),
      });
    });
    after(() => server.stop());

    it('refuses a jwks_uri on 127.0.0.1, [::1] or localhost at registration, and fetches none stored anyway (invalid_client)', async () => {
      const port = new URL(base).port;
      const key = await newKey('k1');
      for (const jwksUri of [`https://127.0.0.1:${port}/jwks`, `https://[::1]:${port}/jwks`, `https://localhost:${port}/jwks`, 'https://169.254.169.254/latest', 'https://[::ffff:a9fe:a9fe]/x']) {
        await assert.rejects(server.addClient({ name: 'Internal', redirectUris: [], auth: { kind: 'jwks-uri', jwksUri }, grantTypes: ['client_credentials'], scope: SCOPE }), /jwks_uri must name a public host/, jwksUri);
      }
      // A name that passes registration but resolves to loopback is refused after DNS, before connecting.
      const name = hostname();
      const resolved = await lookup(name, { all: true }).catch(() => []);
      assert.ok(resolved.length && resolved.every((a) => classifyAddress(a.address) === 'loopback'), `this test needs ${name} to resolve to loopback`);
      const { client_id: clientId } = await server.addClient({ name: 'Rebinding', redirectUris: [], auth: { kind: 'jwks-uri', jwksUri: `https://${name}:${port}/jwks` }, grantTypes: ['client_credentials'], scope: SCOPE });
      const assertion = await new SignJWT({ jti: randomUUID() }).setProtectedHeader({ alg: 'ES384', kid: key.kid, typ: 'JWT' })
        .setIssuer(clientId).setSubject(clientId).setAudience(`${server.issuer}/token`).setIssuedAt().setExpirationTime('4m').sign(key.privateKey);
      const { res, body } = await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: SCOPE, client_assertion_type: ASSERTION_TYPE, client_assertion: assertion });
      assert.equal(res.status, 401, JSON.stringify(body));
      assert.equal(body.error, 'invalid_client');
      assert.deepEqual(hits, [], 'nothing was sent to the loopback server');
    });
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
