// Two smart-auth processes on one PostgreSQL database, as behind a load balancer: a flow started at one
// finishes at the other; revocation, replay detection, key rotation and the audit chain are shared.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { freePort } from '../support/server.ts';
import { freshPostgresSchema, type PostgresSchema } from '../support/postgres.ts';
import { startScript, type ChildServer } from '../support/processes.ts';
import { dpopKey } from '../support/dpop.ts';
import { authorize, Browser, decodeJwt, exchangeCode, form, hiddenValue, introspectToken, revokeToken, tokenRequest } from '../support/oauth.ts';
import { loadConfig } from '../../server/config.ts';
import { migrate, openDatabase, type Db } from '../../server/db.ts';
import { addClient } from '../../server/oidc/clients.ts';
import { checkpointSigner, rotateSigningKeys } from '../../server/oidc/keys.ts';
import { createToolProvider } from '../../server/oidc/provider-host.ts';
import { keyPolicy } from '../../server/oidc/keys.ts';
import { createAuditStore } from '../../server/audit/audit-store.ts';

describe('several instances on PostgreSQL', function () {
  this.timeout(60_000);
  let pg: PostgresSchema | undefined;
  let db: Db;
  let a: ChildServer;
  let b: ChildServer;
  let urlA: string;
  let urlB: string;
  let env: Record<string, string>;

  before(async function () {
    const fresh = await freshPostgresSchema('mi');
    if (!fresh) return this.skip();
    pg = fresh;
    const [portA, portB] = [await freePort(), await freePort()];
    urlA = `http://127.0.0.1:${portA}`;
    urlB = `http://127.0.0.1:${portB}`;
    env = {
      DATABASE_URL: pg.url, ISSUER: urlA, HOST: '127.0.0.1',
      COOKIE_SECRETS: 'multi-instance-cookie-secret-0123456789abcdef', KEY_ROTATION_DELAY: '2', KEY_REFRESH_INTERVAL: '1', LOG_LEVEL: 'info',
      REVOCATION_CACHE_MS: '0',
    };
    db = openDatabase(env.DATABASE_URL);
    await migrate(db);
    a = await startScript('server/main.ts', { ...env, PORT: String(portA) }, /listening/);
    b = await startScript('server/main.ts', { ...env, PORT: String(portB) }, /listening/);
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await db?.destroy();
    await pg?.drop();
  });

  const config = () => loadConfig(env);
  const client = async (input: Parameters<typeof addClient>[2]) => addClient(db, await createToolProvider(config(), db), input);

  it('authorizes at one instance and exchanges the code at the other; refreshes and revokes across them', async () => {
    const app = await client({ name: 'spread', redirectUris: ['http://127.0.0.1:9999/callback'], auth: { kind: 'secret' } });
    const creds = { client_id: String(app.client_id), client_secret: String(app.client_secret), redirect_uri: 'http://127.0.0.1:9999/callback' };
    const launch = await authorize({ server: { issuer: urlA, fhirBase: `${urlA}/fhir` }, client: creds, scope: 'launch/patient openid offline_access patient/*.rs', patient: 'pat-2' });
    const exchanged = await exchangeCode(urlB, launch, creds);
    assert.equal(exchanged.res.status, 200, JSON.stringify(exchanged.body));
    assert.equal(exchanged.body.patient, 'pat-2');
    const read = await fetch(`${urlB}/fhir/Patient/pat-2`, { headers: { authorization: `Bearer ${exchanged.body.access_token}` } });
    assert.equal(read.status, 200, 'a token of instance A works at instance B');

    const revoked = await revokeToken(urlA, creds, exchanged.body.refresh_token);
    assert.equal(revoked.status, 200);
    const introspected = await (await introspectToken(urlB, creds, exchanged.body.access_token)).json();
    assert.deepEqual(introspected, { active: false }, 'revoked at A, inactive at B');
    assert.equal((await fetch(`${urlB}/fhir/Patient/pat-2`, { headers: { authorization: `Bearer ${exchanged.body.access_token}` } })).status, 401);
  });

  it('follows at one instance the paging links the other gave (the same KEY_ENCRYPTION_SECRET seals them)', async () => {
    const app = await client({ name: 'pages', redirectUris: ['http://127.0.0.1:9999/callback'], auth: { kind: 'secret' } });
    const creds = { client_id: String(app.client_id), client_secret: String(app.client_secret), redirect_uri: 'http://127.0.0.1:9999/callback' };
    const launch = await authorize({ server: { issuer: urlA, fhirBase: `${urlA}/fhir` }, client: creds, scope: 'launch/patient openid patient/*.rs', patient: 'pat-2' });
    const auth = { headers: { authorization: `Bearer ${(await exchangeCode(urlA, launch, creds)).body.access_token}` } };
    const first = await (await fetch(`${urlA}/fhir/Observation?_count=1`, auth)).json();
    const next: string = first.link.find((l: { relation: string }) => l.relation === 'next').url;
    assert.ok(next.startsWith(`${urlA}/fhir/Observation?_page=`), next);
    const second = await fetch(next.replace(urlA, urlB), auth);
    assert.equal(second.status, 200);
    const ids = [first, await second.json()].map((page) => page.entry[0].resource.id);
    assert.notEqual(ids[0], ids[1], 'the next page, not the first again');
  });

  it('shares /account sessions: signed in at A, signed out at B, the cookie no longer works at A', async () => {
    const browser = new Browser();
    const page = await (await browser.fetch(`${urlA}/account/login`)).text();
    await browser.fetch(`${urlA}/account/login`, { method: 'POST', body: form({ csrf: hiddenValue(page, 'csrf'), username: 'amy', password: 'demo-password-3' }) });
    const cookie = `smart_auth.account=${browser.cookie('smart_auth.account')}; smart_auth.account.sig=${browser.cookie('smart_auth.account.sig')}`;
    const apps = (url: string) => fetch(`${url}/account/apps`, { headers: { cookie }, redirect: 'manual' }).then((r) => r.status);
    assert.equal(await apps(urlB), 200, 'a session started at A works at B');
    const appsPage = await (await browser.fetch(`${urlB}/account/apps`)).text();
    await browser.fetch(`${urlB}/account/logout`, { method: 'POST', body: form({ csrf: hiddenValue(appsPage, 'csrf') }) });
    assert.equal(await apps(urlA), 303, 'signed out at B, refused at A');
  });

  it('accepts a client assertion once, even replayed at both instances at the same time', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES384', { extractable: true });
    const backend = await client({ name: 'replay', redirectUris: [], grantTypes: ['client_credentials'], scope: 'system/Patient.rs', auth: { kind: 'jwks', jwks: { keys: [{ ...(await exportJWK(publicKey)), kid: 'k', alg: 'ES384' }] } } });
    const id = String(backend.client_id);
    const now = Math.floor(Date.now() / 1000);
    const assertion = await new SignJWT({ iss: id, sub: id, aud: `${urlA}/token`, jti: randomUUID(), iat: now, exp: now + 240 }).setProtectedHeader({ alg: 'ES384', kid: 'k', typ: 'JWT' }).sign(privateKey);
    const body = { grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion };
    const results = await Promise.all([urlA, urlB, urlA, urlB, urlA, urlB].map((url) => tokenRequest(url, body)));
    assert.deepEqual(results.map((r) => r.res.status).sort(), [200, 401, 401, 401, 401, 401]);
  });

  it('refuses a DPoP proof replayed at the other instance', async () => {
    const app = await client({ name: 'dpop', redirectUris: ['http://127.0.0.1:9999/callback'], auth: { kind: 'public' } });
    const creds = { client_id: String(app.client_id), redirect_uri: 'http://127.0.0.1:9999/callback' };
    const launch = await authorize({ server: { issuer: urlA, fhirBase: `${urlA}/fhir` }, client: creds, scope: 'launch/patient openid patient/*.rs', patient: 'pat-2' });
    const key = await dpopKey();
    const { body } = await tokenRequest(urlA, { grant_type: 'authorization_code', code: launch.code!, redirect_uri: creds.redirect_uri, code_verifier: launch.verifier }, creds,
      { dpop: await key.proof({ htm: 'POST', htu: `${urlA}/token` }) });
    assert.equal(body.token_type, 'DPoP', JSON.stringify(body));
    // Both instances serve the public base ${urlA}/fhir (one ISSUER), so one proof is good at either, once.
    const headers = { authorization: `DPoP ${body.access_token}`, dpop: await key.proof({ htm: 'GET', htu: `${urlA}/fhir/Patient/pat-2`, accessToken: body.access_token }) };
    assert.equal((await fetch(`${urlA}/fhir/Patient/pat-2`, { headers })).status, 200);
    const replayed = await fetch(`${urlB}/fhir/Patient/pat-2`, { headers });
    assert.equal(replayed.status, 401);
    assert.match(replayed.headers.get('www-authenticate') ?? '', /invalid_dpop_proof/);
  });

  it('rotates a key at one and both sign with it after the delay; tokens of either verify at the other', async () => {
    const rotated = await rotateSigningKeys(db, keyPolicy(config()));
    const kid = rotated.find((k) => k.alg === 'ES256')!.kid;
    await new Promise((r) => setTimeout(r, 3500));
    const reader = await client({ name: 'rotation', redirectUris: [], auth: { kind: 'secret' }, grantTypes: ['client_credentials'], scope: 'system/Patient.rs' });
    const creds = { client_id: String(reader.client_id), client_secret: String(reader.client_secret) };
    for (const [issuedAt, usedAt] of [[urlA, urlB], [urlB, urlA]]) {
      const { body } = await tokenRequest(issuedAt, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, creds);
      assert.equal(decodeJwt(body.access_token).header.kid, kid, `${issuedAt} signs with the new key`);
      assert.equal((await fetch(`${usedAt}/fhir/Patient/pat-1`, { headers: { authorization: `Bearer ${body.access_token}` } })).status, 200);
    }
  });

  it('keeps one valid audit chain with both instances writing', async () => {
    const reader = await client({ name: 'load', redirectUris: [], auth: { kind: 'secret' }, grantTypes: ['client_credentials'], scope: 'system/Patient.rs' });
    const { body } = await tokenRequest(urlA, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, { client_id: String(reader.client_id), client_secret: String(reader.client_secret) });
    const statuses = await Promise.all(Array.from({ length: 40 }, (_, i) => fetch(`${i % 2 ? urlA : urlB}/fhir/Patient/pat-1`, { headers: { authorization: `Bearer ${body.access_token}` } }).then((r) => r.status)));
    assert.ok(statuses.every((s) => s === 200), `no 5xx: ${statuses}`);
    const verified = await createAuditStore(db, checkpointSigner(db, keyPolicy(config()))).verify();
    assert.equal(verified.ok, true, JSON.stringify(verified));
  });
});

describe('several instances started at once on an empty PostgreSQL schema', function () {
  this.timeout(120_000);
  let pg: PostgresSchema | undefined;
  let db: Db | undefined;
  const started: ChildServer[] = [];

  before(async function () {
    pg = await freshPostgresSchema('mistart');
    if (!pg) this.skip();
  });
  after(async () => {
    await Promise.all(started.map((s) => s.stop()));
    await db?.destroy();
    await pg?.drop();
  });

  it('all come up: the migrations run once, the others wait for them, and they share one set of signing keys', async () => {
    const ports = await Promise.all([freePort(), freePort(), freePort()]);
    const env = {
      DATABASE_URL: pg!.url, ISSUER: `http://127.0.0.1:${ports[0]}`, HOST: '127.0.0.1', COOKIE_SECRETS: 'multi-instance-cookie-secret-0123456789abcdef',
    };
    const results = await Promise.allSettled(ports.map((port) => startScript('server/main.ts', { ...env, PORT: String(port) }, /listening/)));
    for (const result of results) if (result.status === 'fulfilled') started.push(result.value);
    assert.deepEqual(results.map((r) => (r.status === 'rejected' ? String(r.reason).slice(0, 2000) : 'started')), ['started', 'started', 'started']);
    db = openDatabase(pg!.url);
    const applied: { name: string }[] = await db('knex_migrations').select('name');
    assert.equal(applied.length, new Set(applied.map((m) => m.name)).size, 'each migration ran once');
    assert.equal((await db('knex_migrations_lock').select('is_locked')).length, 1, 'one migration lock row: with two, every later migration would count as locked');
    const jwks = await Promise.all(ports.map(async (port) => (await (await fetch(`http://127.0.0.1:${port}/jwks`)).json()).keys.map((k: { kid: string }) => k.kid).sort()));
    assert.deepEqual(jwks[1], jwks[0], 'the same signing keys');
    assert.deepEqual(jwks[2], jwks[0], 'the same signing keys');
    for (const port of ports) assert.equal((await fetch(`http://127.0.0.1:${port}/health/ready`)).status, 200);
  });
});
