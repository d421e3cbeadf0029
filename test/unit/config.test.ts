import assert from 'node:assert/strict';
import { ConfigError, DEV_COOKIE_SECRET, loadConfig } from '../../server/config.ts';

describe('config', () => {
  it('has working defaults for a developer', () => {
    const config = loadConfig({});
    assert.equal(config.port, 3000);
    assert.equal(config.issuer, 'http://localhost:3000');
    assert.equal(config.fhirBase, 'http://localhost:3000/fhir');
    assert.equal(config.databaseUrl, 'sqlite:./var/smart-auth.sqlite');
    assert.equal(config.demo, true);
    assert.equal(config.accessTokenTtl, 3600);
    assert.equal(config.backendTokenTtl, 300);
    assert.equal(config.btgRequireMfa, false, 'the demo accounts break the glass without an authenticator');
  });

  it('derives the issuer from PORT and strips a trailing slash', () => {
    assert.equal(loadConfig({ PORT: '8080' }).issuer, 'http://localhost:8080');
    assert.equal(loadConfig({ ISSUER: 'https://auth.example.org/' }).issuer, 'https://auth.example.org');
    assert.equal(loadConfig({ ISSUER: 'https://auth.example.org/' }).fhirBase, 'https://auth.example.org/fhir');
  });

  for (const [env, message] of [
    [{ PORT: 'abc' }, /PORT must be a whole number/],
    [{ PORT: '70000' }, /PORT must be between/],
    [{ ISSUER: 'not a url' }, /ISSUER must be an absolute URL/],
    [{ ISSUER: 'ftp://x.example' }, /ISSUER must be an http\(s\) URL/],
    [{ ISSUER: 'https://x.example/?a=1' }, /ISSUER must not have a query/],
    // The endpoints and pages are at the root of the server: behind /auth they would name and link the wrong URLs.
    [{ ISSUER: 'https://x.example/auth' }, /ISSUER must be an origin \(scheme:\/\/host\[:port\]\) without a path/],
    [{ ISSUER: 'https://x.example/auth/' }, /ISSUER must be an origin/],
    [{ ISSUER: 'https://user@x.example' }, /ISSUER must be an origin/],
    [{ DATABASE_URL: 'mysql://x' }, /DATABASE_URL must start with/],
    [{ BACKEND_TOKEN_TTL: '600' }, /BACKEND_TOKEN_TTL must be between 30 and 300/],
    [{ ACCESS_TOKEN_ALG: 'HS256' }, /ACCESS_TOKEN_ALG must be ES256, RS256 or ES384/],
    [{ REGISTRATION: 'closed' }, /REGISTRATION must be open or token/],
    [{ KEY_ENCRYPTION_SECRET: 'short' }, /KEY_ENCRYPTION_SECRET must be at least 32/],
    [{ KEY_ROTATION_DELAY: '-1' }, /KEY_ROTATION_DELAY must be a whole number/],
    [{ DEMO: 'maybe' }, /DEMO must be true or false/],
    [{ COOKIE_SECRETS: 'short' }, /at least 32 characters/],
    [{ FHIR_UPSTREAM_URL: 'not a url' }, /FHIR_UPSTREAM_URL must be an absolute URL/],
    [{ GUARD_INCLUDES: 'hide' }, /GUARD_INCLUDES must be one of strip, refuse/],
    [{ GUARD_NARRATIVES: 'allow' }, /GUARD_NARRATIVES must be one of refuse, sanitize/],
    [{ POLICY_FILE: '/nonexistent/policy.json' }, /cannot be read/],
    [{ CLIENT_CACHE_MS: '70000' }, /CLIENT_CACHE_MS must be between 0 and 60000/],
    [{ DATABASE_POOL_MAX: '0' }, /DATABASE_POOL_MAX must be between 1 and 1000/],
    [{ DATABASE_ACQUIRE_TIMEOUT_MS: 'soon' }, /DATABASE_ACQUIRE_TIMEOUT_MS must be a whole number/],
    [{ DATABASE_STATEMENT_TIMEOUT_MS: '-1' }, /DATABASE_STATEMENT_TIMEOUT_MS must be a whole number/],
    [{ BTG_REQUIRE_MFA: 'sometimes' }, /BTG_REQUIRE_MFA must be true or false/],
    [{ CORS_ORIGINS: 'https://app.example.org/callback' }, /CORS_ORIGINS must be an origin/],
    [{ CORS_ORIGINS: 'app.example.org' }, /CORS_ORIGINS must be an absolute URL/],
    [{ GUARD_PAGING_PARAMS: 'next_token,_page' }, /GUARD_PAGING_PARAMS takes search parameter names other than _page, got _page/],
    [{ GUARD_PAGING_PARAMS: 'next=1' }, /GUARD_PAGING_PARAMS takes search parameter names/],
    [{ GUARD_OPERATIONS: 'everything,frob' }, /GUARD_OPERATIONS names operations the guard does not know: \$frob \(it knows \$everything, /],
    [{ GUARD_OPERATIONS: 'export' }, /GUARD_OPERATIONS names operations the guard does not know: \$export/],
  ] as const) {
    it(`explains a bad value: ${JSON.stringify(env)}`, () => {
      assert.throws(() => loadConfig(env), (err: Error) => err instanceof ConfigError && message.test(err.message));
    });
  }

  it('reads CORS_ORIGINS as a list of origins', () => {
    assert.deepEqual(loadConfig({ CORS_ORIGINS: 'https://app.example.org, http://localhost:5173/' }).corsOrigins, ['https://app.example.org', 'http://localhost:5173']);
  });

  it('reads GUARD_OPERATIONS as a list of operation names, with or without $', () => {
    assert.deepEqual(loadConfig({ GUARD_OPERATIONS: '$everything, meta-add' }).guardOperations, ['everything', 'meta-add']);
    assert.deepEqual(loadConfig({}).guardOperations, []);
  });

  it('reads GUARD_PAGING_PARAMS as a list of search parameter names', () => {
    assert.deepEqual(loadConfig({ GUARD_PAGING_PARAMS: 'next_token, page-id' }).guardPagingParams, ['next_token', 'page-id']);
    assert.deepEqual(loadConfig({}).guardPagingParams, []);
  });

  it('does not echo database credentials in errors', () => {
    assert.throws(() => loadConfig({ DATABASE_URL: 'mysql://user:hunter2@db/x' }), (err: Error) => !err.message.includes('hunter2'));
  });

  describe('NODE_ENV=production', () => {
    const safe = { NODE_ENV: 'production', ISSUER: 'https://auth.example.org', COOKIE_SECRETS: 'x'.repeat(40), KEY_ENCRYPTION_SECRET: 'k'.repeat(40) };
    it('starts with its own secret, an https issuer and demo mode off', () => {
      const config = loadConfig(safe);
      assert.equal(config.production, true);
      assert.equal(config.demo, false);
      assert.equal(config.registration, 'token', 'registration needs an initial access token in production');
      assert.equal(config.btgRequireMfa, true, 'break-the-glass needs a second factor in production');
      assert.equal(loadConfig({ ...safe, BTG_REQUIRE_MFA: 'false' }).btgRequireMfa, false);
    });
    it('refuses demo mode, the default cookie secret and an http issuer', () => {
      assert.throws(() => loadConfig({ ...safe, DEMO: 'true' }), /DEMO must be off/);
      assert.throws(() => loadConfig({ ...safe, COOKIE_SECRETS: undefined }), /COOKIE_SECRETS must be set/);
      assert.throws(() => loadConfig({ ...safe, COOKIE_SECRETS: DEV_COOKIE_SECRET }), /COOKIE_SECRETS must be set/);
      assert.throws(() => loadConfig({ ...safe, ISSUER: 'http://auth.example.org' }), /ISSUER must be an https URL/);
      assert.throws(() => loadConfig({ ...safe, KEY_ENCRYPTION_SECRET: undefined }), /KEY_ENCRYPTION_SECRET must be set/);
    });
    it('allows an http issuer on localhost', () => {
      assert.equal(loadConfig({ ...safe, ISSUER: 'http://localhost:3000' }).issuer, 'http://localhost:3000');
    });
  });
});
