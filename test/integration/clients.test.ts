// Confidential clients: client_secret_basic and private_key_jwt (RS384, ES384) through a whole launch.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, exchangeCode, tokenRequest } from '../support/oauth.ts';

const SCOPE = 'launch/patient openid fhirUser offline_access patient/*.rs';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

describe('confidential clients', () => {
  let server: TestServer;
  before(async () => { server = await startTestServer(); });
  after(() => server.stop());

  it('authenticates a symmetric client with HTTP Basic, and refuses a wrong secret or client id', async () => {
    const app = await server.addClient({ auth: { kind: 'secret' } });
    assert.ok(app.client_secret);
    const wrongSecret = await exchangeCode(server.issuer, await authorize({ server, client: app, scope: SCOPE }), { ...app, client_secret: 'wrong' });
    assert.equal(wrongSecret.res.status, 401);
    assert.equal(wrongSecret.body.error, 'invalid_client');
    const badId = await exchangeCode(server.issuer, await authorize({ server, client: app, scope: SCOPE }), { ...app, client_id: 'BAD_CLIENT_ID' });
    assert.ok([400, 401].includes(badId.res.status));
    const launch = await authorize({ server, client: app, scope: SCOPE });
    const ok = await exchangeCode(server.issuer, launch, app);
    assert.equal(ok.res.status, 200, JSON.stringify(ok.body));
    assert.ok(ok.body.id_token && ok.body.refresh_token);
    const refreshed = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: ok.body.refresh_token }, app);
    assert.equal(refreshed.res.status, 200);
  });

  for (const alg of ['RS384', 'ES384'] as const) {
    it(`authenticates an asymmetric client with a ${alg} client assertion`, async () => {
      const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
      const kid = `key-${alg}`;
      const app = await server.addClient({ auth: { kind: 'jwks', jwks: { keys: [{ ...(await exportJWK(publicKey)), kid, alg }] } } });
      const assertion = (key: CryptoKey, overrides: Record<string, unknown> = {}) => new SignJWT({ jti: randomUUID(), ...overrides })
        .setProtectedHeader({ alg, kid, typ: 'JWT' })
        .setIssuer(app.client_id).setSubject(app.client_id).setAudience(`${server.issuer}/token`)
        .setIssuedAt().setExpirationTime('4m').sign(key);
      const exchange = async (clientAssertion: string) => {
        const launch = await authorize({ server, client: app, scope: SCOPE });
        return tokenRequest(server.issuer, {
          grant_type: 'authorization_code', code: launch.code!, redirect_uri: app.redirect_uri, code_verifier: launch.verifier,
          client_assertion_type: ASSERTION_TYPE, client_assertion: clientAssertion,
        });
      };
      const ok = await exchange(await assertion(privateKey));
      assert.equal(ok.res.status, 200, JSON.stringify(ok.body));
      assert.ok(ok.body.id_token);

      const stranger = (await generateKeyPair(alg)).privateKey;
      const forged = await exchange(await assertion(stranger));
      assert.equal(forged.res.status, 401);
      assert.equal(forged.body.error, 'invalid_client');

      const tooLong = await exchange(await new SignJWT({ jti: randomUUID() }).setProtectedHeader({ alg, kid, typ: 'JWT' })
        .setIssuer(app.client_id).setSubject(app.client_id).setAudience(`${server.issuer}/token`).setIssuedAt().setExpirationTime('1h').sign(privateKey));
      assert.equal(tooLong.res.status, 401, 'an assertion living longer than 5 minutes is refused');

      const replayed = await assertion(privateKey);
      assert.equal((await exchange(replayed)).res.status, 200);
      assert.equal((await exchange(replayed)).res.status, 401, 'a jti is accepted once');
    });
  }
});
