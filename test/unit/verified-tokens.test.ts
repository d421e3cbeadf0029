// The cache of verified tokens shared by the guard and the authorization server's introspection.
import assert from 'node:assert/strict';
import { createLocalJWKSet, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { VerifiedTokens } from '../../server/resource-server/verified-tokens.ts';
import { ownTokenVerifier } from '../../server/oidc/introspection.ts';

describe('verified tokens', () => {
  it('keeps a value until its end, then forgets it', () => {
    const cache = new VerifiedTokens<string>();
    const key = VerifiedTokens.keyOf('a.b.c');
    cache.set(key, 'claims', 100);
    assert.equal(cache.get(key, 99), 'claims');
    assert.equal(cache.get(key, 100), undefined);
    assert.equal(cache.get(key, 99), undefined, 'an ended entry is dropped');
  });

  it('holds at most its size, dropping the oldest first', () => {
    const cache = new VerifiedTokens<number>(2);
    for (const n of [1, 2, 3]) cache.set(VerifiedTokens.keyOf(`t${n}`), n, 100);
    assert.deepEqual([1, 2, 3].map((n) => cache.get(VerifiedTokens.keyOf(`t${n}`), 0)), [undefined, 2, 3]);
  });

  describe('the authorization server\'s own access tokens', () => {
    const issuer = 'https://as.example';
    let sign: (claims: Record<string, unknown>) => Promise<string>;
    let keys: ReturnType<typeof createLocalJWKSet>;
    before(async () => {
      const { publicKey, privateKey } = await generateKeyPair('ES256');
      keys = createLocalJWKSet({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k', alg: 'ES256' }] });
      sign = (claims) => new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'k', typ: 'at+jwt' }).setIssuer(issuer).sign(privateKey);
    });
    const now = () => Math.floor(Date.now() / 1000);

    it('verifies once and answers from the cache until the token expires', async () => {
      let clock = now();
      let lookups = 0;
      const verify = ownTokenVerifier({ issuer, keys: (header, token) => { lookups++; return keys(header, token); } }, () => clock);
      const token = await sign({ jti: 'j1', client_id: 'app', exp: clock + 60, iat: clock });
      assert.equal((await verify(token))?.jti, 'j1');
      assert.equal((await verify(token))?.jti, 'j1');
      assert.equal(lookups, 1);
      clock += 70;
      assert.equal(await verify(token), undefined, 'expired: verified again, and refused');
    });

    it('does not take another payload under a signature it has seen', async () => {
      const verify = ownTokenVerifier({ issuer, keys });
      const token = await sign({ jti: 'j2', client_id: 'app', exp: now() + 60, iat: now() });
      assert.ok(await verify(token));
      const [header, , signature] = token.split('.');
      const payload = Buffer.from(JSON.stringify({ iss: issuer, jti: 'j2', client_id: 'admin', exp: now() + 60 })).toString('base64url');
      assert.equal(await verify(`${header}.${payload}.${signature}`), undefined);
    });

    it('refuses a token without exp, or signed by a key it does not trust', async () => {
      const verify = ownTokenVerifier({ issuer, keys });
      assert.equal(await verify(await sign({ jti: 'j3', client_id: 'app' })), undefined);
      const other = await generateKeyPair('ES256');
      const foreign = await new SignJWT({ jti: 'j4', client_id: 'app', exp: now() + 60 }).setProtectedHeader({ alg: 'ES256', kid: 'k', typ: 'at+jwt' }).setIssuer(issuer).sign(other.privateKey);
      assert.equal(await verify(foreign), undefined);
    });
  });
});
