import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../support/server.ts';
import { withHost } from '../support/oauth.ts';

describe('discovery', () => {
  let server: TestServer;
  before(async () => { server = await startTestServer(); });
  after(() => server.stop());

  for (const where of ['issuer', 'FHIR base'] as const) {
    it(`serves the SMART configuration at the ${where}, JSON, CORS *, absolute URLs`, async () => {
      const base = where === 'issuer' ? server.issuer : server.fhirBase;
      const res = await fetch(`${base}/.well-known/smart-configuration`, { headers: { origin: 'https://app.example', accept: 'text/html' } });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type')!, /^application\/json/);
      assert.equal(res.headers.get('access-control-allow-origin'), '*');
      const doc = await res.json();
      assert.equal(doc.issuer, server.issuer);
      for (const key of ['authorization_endpoint', 'token_endpoint', 'jwks_uri', 'introspection_endpoint', 'revocation_endpoint', 'registration_endpoint', 'management_endpoint']) {
        assert.ok(doc[key].startsWith(`${server.issuer}/`), `${key} is absolute`);
      }
      assert.deepEqual(doc.code_challenge_methods_supported, ['S256']);
      assert.ok(doc.grant_types_supported.includes('authorization_code'));
      assert.ok(doc.token_endpoint_auth_signing_alg_values_supported.includes('RS384'));
      assert.ok(doc.token_endpoint_auth_signing_alg_values_supported.includes('ES384'));
      for (const capability of ['launch-standalone', 'launch-ehr', 'authorize-post', 'client-public', 'client-confidential-symmetric',
        'client-confidential-asymmetric', 'sso-openid-connect', 'context-banner', 'context-style', 'context-standalone-patient',
        'context-ehr-patient', 'context-ehr-encounter', 'permission-offline', 'permission-patient', 'permission-user',
        'permission-v1', 'permission-v2']) {
        assert.ok(doc.capabilities.includes(capability), capability);
      }
    });
  }

  it('serves the OpenID configuration with the fields OIDC clients require', async () => {
    const doc = await (await fetch(`${server.issuer}/.well-known/openid-configuration`)).json();
    for (const key of ['issuer', 'authorization_endpoint', 'token_endpoint', 'jwks_uri', 'response_types_supported', 'subject_types_supported']) {
      assert.ok(doc[key], key);
    }
    assert.ok(doc.id_token_signing_alg_values_supported.includes('RS256'));
    assert.deepEqual(doc.code_challenge_methods_supported, ['S256']);
    assert.deepEqual(doc.response_types_supported, ['code']);
  });

  it('names its own endpoints from ISSUER whatever Host a request sends (no other server in the documents)', async () => {
    for (const path of ['/.well-known/openid-configuration', '/.well-known/smart-configuration']) {
      const res = await withHost(`${server.issuer}${path}`, 'attacker.example');
      assert.equal(res.status, 200, path);
      const doc = JSON.parse(res.body);
      for (const key of ['authorization_endpoint', 'token_endpoint', 'jwks_uri', 'registration_endpoint', 'introspection_endpoint', 'revocation_endpoint']) {
        if (doc[key] !== undefined) assert.ok(doc[key].startsWith(`${server.issuer}/`), `${path} ${key}: ${doc[key]}`);
      }
      assert.doesNotMatch(res.body, /attacker\.example/, path);
    }
  });

  it('publishes public keys only: an RSA key for id tokens and the access-token key', async () => {
    const { keys } = await (await fetch(`${server.issuer}/jwks`)).json();
    assert.ok(keys.some((k: { kty: string; alg: string }) => k.kty === 'RSA' && k.alg === 'RS256'));
    assert.ok(keys.some((k: { kty: string; alg: string }) => k.kty === 'EC' && k.alg === 'ES256'));
    for (const key of keys) {
      assert.ok(key.kid);
      for (const secret of ['d', 'p', 'q', 'dp', 'dq', 'qi']) assert.equal(key[secret], undefined);
    }
  });

  it('serves a CapabilityStatement with the SMART security service, CORS *, without a token', async () => {
    const res = await fetch(`${server.fhirBase}/metadata`, { headers: { origin: 'https://app.example' } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    const cs = await res.json();
    assert.equal(cs.resourceType, 'CapabilityStatement');
    assert.equal(cs.rest[0].security.service[0].coding[0].code, 'SMART-on-FHIR');
  });

  it('serves the SMART style document it names in token responses', async () => {
    const res = await fetch(`${server.issuer}/smart-style/v1.json`);
    assert.equal(res.status, 200);
    assert.ok((await res.json()).color_background);
  });
});
