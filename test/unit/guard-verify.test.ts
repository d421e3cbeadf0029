// Token verification for the guard: local, cached, introspection, both; every failure a clear error.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { createLocalJWKSet, exportJWK, generateKeyPair, SignJWT, type JWTVerifyGetKey } from 'jose';
import { createGuardVerifier, InvalidTokenError, VerifierUnavailableError } from '../../server/resource-server/verify-token.ts';
import { basicAuth } from '../support/oauth.ts';

const ISSUER = 'https://auth.example.org';
const AUDIENCE = 'https://fhir.example.org/r4';
const LOCAL = { issuer: ISSUER, audience: AUDIENCE, mode: 'local' } as const;

describe('guard token verification', () => {
  let sign: (claims?: Record<string, unknown>, header?: Record<string, unknown>) => Promise<string>;
  let keys: JWTVerifyGetKey;
  let keyLookups = 0;
  before(async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256');
    const local = createLocalJWKSet({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] });
    keys = (header, token) => { keyLookups++; return local(header, token); };
    sign = (claims = {}, header = {}) => {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({
        iss: ISSUER, aud: AUDIENCE, sub: 'u1', iat: now, exp: now + 300, client_id: 'app', scope: 'patient/*.rs', patient: 'pat-1',
        jti: `j-${Math.random()}`, fhirUser: `${AUDIENCE}/Patient/pat-1`, ...claims,
      }).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'k1', ...header }).sign(privateKey);
    };
  });

  it('verifies locally and builds the token context', async () => {
    const verify = createGuardVerifier({ ...LOCAL, keys, revocation: 'unchecked' });
    const context = await verify(await sign());
    assert.equal(context.patient, 'pat-1');
    assert.equal(context.fhirUser, 'Patient/pat-1');
    assert.equal(context.scopes[0].type, '*');
  });

  it('without the database or an introspection answer, gives a user\'s token no patient through user/ and no audit trail; a backend service keeps system/', async () => {
    const verify = createGuardVerifier({ ...LOCAL, keys, revocation: 'unchecked', cache: false });
    const clinician = await verify(await sign({ sub: 'dr', fhirUser: `${AUDIENCE}/Practitioner/dr`, scope: 'user/*.rs' }));
    assert.deepEqual([clinician.userPatients, clinician.auditor], [[], false]);
    const backend = await verify(await sign({ sub: 'app', fhirUser: undefined, patient: undefined, scope: 'system/*.rs' }));
    assert.deepEqual([backend.userPatients, backend.auditor], [undefined, undefined]);
  });

  it('reads fhirUser on the issuer\'s own FHIR base as a relative reference, also when this guard has another base', async () => {
    const verify = createGuardVerifier({ ...LOCAL, keys, revocation: 'unchecked', cache: false });
    const context = await verify(await sign({ fhirUser: 'https://auth.example.org/fhir/Practitioner/dr-smith' }));
    assert.equal(context.fhirUser, 'Practitioner/dr-smith', 'consent actors and compartments name Practitioner/dr-smith');
  });

  it('refuses wrong typ, issuer, audience, expiry and signature', async () => {
    const verify = createGuardVerifier({ ...LOCAL, keys, revocation: 'unchecked', cache: false });
    const other = (await generateKeyPair('ES256')).privateKey;
    for (const token of [
      await sign({}, { typ: 'JWT' }),
      await sign({ iss: 'https://evil.example' }),
      await sign({ aud: 'https://other.example/fhir' }),
      await sign({ exp: Math.floor(Date.now() / 1000) - 60 }),
      await new SignJWT({ client_id: 'app', scope: 's', jti: 'x' }).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' }).setIssuer(ISSUER).setAudience(AUDIENCE).setIssuedAt().setExpirationTime('5m').sign(other),
      'not.a.jwt',
    ]) {
      await assert.rejects(verify(token), InvalidTokenError);
    }
  });

  it('caches a verified token by its hash: no key lookup the second time, revocation still checked', async () => {
    let revoked = false;
    let checks = 0;
    const verify = createGuardVerifier({ ...LOCAL, keys, isRevoked: async () => { checks++; return revoked; } });
    const token = await sign();
    await verify(token);
    const lookups = keyLookups;
    await verify(token);
    assert.equal(keyLookups, lookups, 'cache hit: no signature verification');
    assert.equal(checks, 2);
    revoked = true;
    await assert.rejects(verify(token), /revoked/);
    await assert.rejects(verify(await sign()), /has been revoked/, 'a revoked token seen for the first time');
  });

  describe('revocation', () => {
    it('refuses to make a local verifier that cannot see revoked tokens, and names the ways out', () => {
      assert.throws(() => createGuardVerifier({ ...LOCAL, keys }), (err: Error) => err instanceof TypeError
        && /verification mode local cannot see revoked tokens/.test(err.message) && /isRevoked \(sharedDatabase\(db\)\.isRevoked/.test(err.message)
        && /local\+introspection or introspection/.test(err.message) && /revocation: 'unchecked'/.test(err.message));
    });

    it('told that revocation is unchecked, verifies by the signature alone (a revoked token works until it expires)', async () => {
      const verify = createGuardVerifier({ ...LOCAL, keys, revocation: 'unchecked' });
      assert.equal((await verify(await sign())).patient, 'pat-1');
    });

    it('refuses an opt-out that contradicts a revocation check, and an unknown value', () => {
      const introspection = { endpoint: 'https://auth.example.org/introspect', credentials: { clientId: 'rs', clientSecret: 'secret' } };
      assert.throws(() => createGuardVerifier({ ...LOCAL, keys, revocation: 'unchecked', isRevoked: async () => false }), /contradicts isRevoked/);
      assert.throws(() => createGuardVerifier({ ...LOCAL, mode: 'local+introspection', introspection, revocation: 'unchecked' }), /contradicts mode local\+introspection/);
      assert.throws(() => createGuardVerifier({ ...LOCAL, keys, revocation: 'none' as 'unchecked' }), /revocation is 'unchecked' or unset, not "none"/);
    });
  });

  describe('introspection', () => {
    let server: Server;
    let endpoint: string;
    let calls = 0;
    let active = true;
    /** Members the answer carries beyond the claims (a user's, or none). */
    let members: Record<string, unknown> = {};
    before(async () => {
      server = createServer((req, res) => {
        calls++;
        const authorized = req.headers.authorization === basicAuth({ client_id: 'rs', client_secret: 'secret' });
        res.setHeader('content-type', 'application/json');
        if (!authorized) { res.statusCode = 401; res.end('{"error":"invalid_client"}'); return; }
        res.end(JSON.stringify(active ? { active: true, iss: ISSUER, aud: AUDIENCE, client_id: 'app', scope: 'patient/*.rs', patient: 'pat-2', jti: 'j', exp: Math.floor(Date.now() / 1000) + 300, ...members } : { active: false }));
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
      endpoint = `http://127.0.0.1:${(server.address() as { port: number }).port}/introspect`;
    });
    after(() => server.close());

    const options = (extra = {}) => ({ issuer: ISSUER, audience: AUDIENCE, introspection: { endpoint, credentials: { clientId: 'rs', clientSecret: 'secret' } }, ...extra });

    it('asks the issuer and trusts the answer for a short time', async () => {
      active = true;
      const verify = createGuardVerifier({ ...options({ introspectionCacheSeconds: 30 }), mode: 'introspection' });
      const before = calls;
      assert.equal((await verify('opaque-token')).patient, 'pat-2');
      await verify('opaque-token');
      assert.equal(calls, before + 1, 'one introspection for two requests');
    });

    it('refuses an inactive token, and answers unavailable when the issuer cannot be asked', async () => {
      active = false;
      await assert.rejects(createGuardVerifier({ ...options(), mode: 'introspection' })('t2'), InvalidTokenError);
      const wrongCredentials = createGuardVerifier({ issuer: ISSUER, audience: AUDIENCE, mode: 'introspection', introspection: { endpoint, credentials: { clientId: 'rs', clientSecret: 'wrong' } } });
      await assert.rejects(wrongCredentials('t3'), (err: Error) => err instanceof VerifierUnavailableError && /introspection answered 401: the issuer did not accept the guard's client credentials/.test(err.message));
      const unreachable = createGuardVerifier({ issuer: ISSUER, audience: AUDIENCE, mode: 'introspection', introspection: { endpoint: 'http://127.0.0.1:1/introspect', credentials: { clientId: 'rs', clientSecret: 'secret' } } });
      await assert.rejects(unreachable('t4'), VerifierUnavailableError);
    });

    it('checks a locally valid token for revocation by introspection (local+introspection)', async () => {
      const verify = createGuardVerifier({ ...options({ introspectionCacheSeconds: 0 }), mode: 'local+introspection', keys });
      active = true;
      const token = await sign();
      assert.equal((await verify(token)).patient, 'pat-1', 'claims come from the verified token');
      active = false;
      await assert.rejects(verify(token), /revoked/);
    });

    it('takes a user\'s patients and auditor attribute from the answer; what it does not say is no patient through user/ and no audit trail', async () => {
      active = true;
      const verify = createGuardVerifier({ ...options(), mode: 'introspection', cache: false });
      const told = async (answer: Record<string, unknown>) => {
        members = answer;
        const { userPatients, auditor } = await verify('user-token');
        return { userPatients, auditor };
      };
      try {
        assert.deepEqual(await told({ sub: 'dr', user_patients: ['pat-1'], auditor: true }), { userPatients: ['pat-1'], auditor: true });
        assert.deepEqual(await told({ sub: 'dr', user_patients: '*', auditor: false }), { userPatients: undefined, auditor: false }, 'every patient, said so');
        assert.deepEqual(await told({ sub: 'dr' }), { userPatients: [], auditor: false }, 'another authorization server says nothing');
        assert.deepEqual(await told({ sub: 'dr', user_patients: 'pat-1', auditor: 'yes' }), { userPatients: [], auditor: false }, 'malformed');
        assert.deepEqual(await told({ sub: 'app' }), { userPatients: undefined, auditor: undefined }, 'a backend service has no user');
        const hooked = createGuardVerifier({ ...options(), mode: 'introspection', cache: false, userPatients: async () => ['pat-9'], auditor: async () => false });
        members = { sub: 'dr', user_patients: '*', auditor: true };
        const fromHooks = await hooked('user-token');
        assert.deepEqual([fromHooks.userPatients, fromHooks.auditor], [['pat-9'], false], 'the database, when given, stays the source');
        const both = createGuardVerifier({ ...options({ introspectionCacheSeconds: 0 }), mode: 'local+introspection', keys, cache: false });
        members = { user_patients: ['pat-3'], auditor: true };
        const local = await both(await sign({ sub: 'dr', fhirUser: `${AUDIENCE}/Practitioner/dr` }));
        assert.deepEqual([local.userPatients, local.auditor], [['pat-3'], true], 'local+introspection: from the revocation check\'s answer');
      } finally {
        members = {};
      }
    });

    it('needs introspection options for the modes that introspect', () => {
      assert.throws(() => createGuardVerifier({ issuer: ISSUER, audience: AUDIENCE, mode: 'introspection' }), /needs introspection options/);
    });
  });
});
