// Signing keys: encrypted at rest, rotated with a delay, old keys published until their tokens expire.
import assert from 'node:assert/strict';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorizedTokens, decodeJwt } from '../support/oauth.ts';
import { listSigningKeys, rotateSigningKeys } from '../../server/oidc/keys.ts';
import { keyPolicy } from '../../server/oidc/keys.ts';
import { loadConfig } from '../../server/config.ts';
import { createApp } from '../../server/app.ts';
import { runCliWithEnv } from '../support/cli.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// Seconds: long enough for a whole launch on a busy machine to fit inside it.
const ROTATION_DELAY = 5;

describe('signing keys', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  before(async () => {
    server = await startTestServer({ KEY_ROTATION_DELAY: String(ROTATION_DELAY), KEY_REFRESH_INTERVAL: '1' });
    app = await server.addClient({ auth: { kind: 'public' } });
  });
  after(() => server.stop());

  const launch = () => authorizedTokens({ server, client: app, scope: 'launch/patient openid patient/*.rs' });
  const jwksKids = async () => ((await (await fetch(`${server.issuer}/jwks`)).json()).keys as { kid: string }[]).map((k) => k.kid);

  it('stores private keys encrypted', async () => {
    const rows = await server.db('signing_keys').select('private_jwk');
    for (const { private_jwk } of rows) {
      assert.match(private_jwk, /^v1\./);
      assert.doesNotMatch(private_jwk, /"d"/);
    }
  });

  it('signs access tokens with ES256 and id tokens with RS256', async () => {
    const tokens = await launch();
    assert.equal(decodeJwt(tokens.access_token).header.alg, 'ES256');
    assert.equal(decodeJwt(tokens.id_token).header.alg, 'RS256');
  });

  it('publishes a rotated key at once, signs with it after the delay, and keeps the old one published', async () => {
    const before = await launch();
    const oldKid = decodeJwt(before.access_token).header.kid;
    const rotatedAt = Date.now();
    const added = await rotateSigningKeys(server.db, keyPolicy(server.config));
    const newKid = added.find((k) => k.alg === 'ES256')!.kid;

    await sleep(1200);
    assert.ok((await jwksKids()).includes(newKid), 'published before it signs');
    const during = await launch();
    assert.equal(decodeJwt(during.access_token).header.kid, oldKid, 'the old key signs during the delay');

    await sleep(rotatedAt + (ROTATION_DELAY + 1.5) * 1000 - Date.now()); // the delay, and one key refresh
    const afterDelay = await launch();
    assert.equal(decodeJwt(afterDelay.access_token).header.kid, newKid, 'the new key signs after the delay');
    assert.ok((await jwksKids()).includes(oldKid), 'the old key stays published while its tokens live');
    // Several RSA keys published: the id_token's kid names the one that signed it (Inferno checks this).
    const jwks = await (await fetch(`${server.issuer}/jwks`)).json();
    assert.ok(jwks.keys.filter((k: { kty: string }) => k.kty === 'RSA').length > 1);
    const idHeader = decodeJwt(afterDelay.id_token).header;
    assert.equal(idHeader.kid, added.find((k) => k.alg === 'RS256')!.kid);
    await jwtVerify(afterDelay.id_token, createLocalJWKSet(jwks), { algorithms: ['RS256'], audience: app.client_id });
    for (const token of [before.access_token, afterDelay.access_token]) {
      const res = await fetch(`${server.fhirBase}/Patient/pat-1`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(res.status, 200, 'tokens signed before and after the rotation both verify');
    }
    const states = await listSigningKeys(server.db, keyPolicy(server.config));
    assert.equal(states.find((k) => k.kid === oldKid)!.state, 'retiring');
    assert.equal(states.find((k) => k.kid === newKid)!.state, 'signing');
  });

  it('refuses to start with a different KEY_ENCRYPTION_SECRET, naming the problem', async () => {
    const config = loadConfig({ ...process.env, DATABASE_URL: server.config.databaseUrl, KEY_ENCRYPTION_SECRET: 'another-secret-that-is-long-enough-1234' });
    await assert.rejects(createApp(config, server.db), /KEY_ENCRYPTION_SECRET is not the one it was stored with/);
  });
});

describe('the CLI with another KEY_ENCRYPTION_SECRET than the servers', () => {
  let server: TestServer;
  before(async () => { server = await startTestServer({ KEY_ENCRYPTION_SECRET: 'the-servers-own-secret-long-enough-123456' }); });
  after(() => server.stop());

  // An operator who runs `smart-auth keys rotate` with DATABASE_URL alone stored keys under the development
  // secret: exit 0, the servers then failed to load every key (and to restart) once the old ones retired.
  it('refuses keys rotate and user mfa --totp, changing nothing, and names the setting', async () => {
    const before = await server.db('signing_keys').count({ n: '*' }).first();
    const factors = await server.db('user_factors').count({ n: '*' }).first();
    for (const args of [['keys', 'rotate'], ['user', 'mfa', 'dr.smith', '--totp']]) {
      const result = await runCliWithEnv(server, { KEY_ENCRYPTION_SECRET: undefined }, ...args);
      assert.equal(result.code, 2, `${args.join(' ')}: ${result.stdout}${result.stderr}`);
      assert.match(result.stderr, /KEY_ENCRYPTION_SECRET is not the one the stored signing keys were encrypted with/);
      assert.doesNotMatch(result.stderr, /unexpected error|at [\w.]+ \(/);
    }
    assert.deepEqual(await server.db('signing_keys').count({ n: '*' }).first(), before);
    assert.deepEqual(await server.db('user_factors').count({ n: '*' }).first(), factors);
    const rotated = await runCliWithEnv(server, { KEY_ENCRYPTION_SECRET: 'the-servers-own-secret-long-enough-123456' }, 'keys', 'rotate');
    assert.equal(rotated.code, 0, rotated.stderr);
  });
});

describe('the CLI with another ACCESS_TOKEN_ALG than the servers', () => {
  let server: TestServer;
  before(async () => { server = await startTestServer({ ACCESS_TOKEN_ALG: 'ES384' }); });
  after(() => server.stop());

  // Before: `keys list` made an ES256 key (signing at once) and `keys rotate` rotated ES256 and RS256 only,
  // so the ES384 key the servers sign access tokens with was never replaced.
  it('rotates the algorithms the stored keys sign with, and keys list adds none', async () => {
    const algs = async () => (await server.db('signing_keys').select('alg')).map((r) => r.alg).sort();
    assert.deepEqual(await algs(), ['ES384', 'RS256']);
    assert.equal((await runCliWithEnv(server, { ACCESS_TOKEN_ALG: undefined }, 'keys', 'list')).code, 0);
    assert.deepEqual(await algs(), ['ES384', 'RS256']);
    const rotated = await runCliWithEnv(server, { ACCESS_TOKEN_ALG: undefined }, 'keys', 'rotate', '--json');
    assert.equal(rotated.code, 0, rotated.stderr);
    assert.deepEqual(rotated.json.keys.map((k: { alg: string }) => k.alg).sort(), ['ES384', 'RS256']);
    assert.deepEqual(await algs(), ['ES384', 'ES384', 'RS256', 'RS256']);
  });
});
