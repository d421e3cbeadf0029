// The token pipeline's pure rules (server/oidc/token/), one table per rule.
import assert from 'node:assert/strict';
import { errors } from 'oidc-provider';
import { checkClientAssertion } from '../../server/oidc/token/client-assertion.ts';
import { accessTokenLifetime, mayRefresh } from '../../server/oidc/token/lifetime.ts';
import type { GrantContext } from '../../server/oidc/launch-store.ts';

describe('token rule: client assertion (SMART beyond RFC 7523)', () => {
  const now = 1_800_000_000;
  const at = { tokenEndpoint: 'https://as.example/token', requestedEndpoint: 'https://proxy.example/token', now };
  const client = { clientId: 'svc', jwksUri: 'https://svc.example/jwks' };
  const claims = { iss: 'svc', sub: 'svc', aud: 'https://as.example/token', exp: now + 240, jti: 'j' };
  const header = { alg: 'ES384', typ: 'JWT', kid: 'k1' };
  const b2b = {
    version: '1', subject_name: 'Jane Smith, MD', subject_id: 'urn:oid:2.16.840.1.113883.4.6#1234567890',
    subject_role: 'http://nucc.org/provider-taxonomy#207Q00000X', organization_name: 'Example Clinic',
    organization_id: 'https://clinic.example.org/fhir/Organization/1', purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#TREAT'],
  };

  const refused: [string, Record<string, unknown>, Record<string, unknown>, RegExp][] = [
    ['typ missing', claims, { ...header, typ: undefined }, /typ "JWT"/],
    ['typ other than JWT', claims, { ...header, typ: 'at+jwt' }, /typ "JWT"/],
    ['no kid', claims, { ...header, kid: undefined }, /kid/],
    ['sub is not the client', { ...claims, sub: 'other' }, header, /sub must equal iss/],
    ['aud another server', { ...claims, aud: 'https://evil.example/token' }, header, /aud must be the token endpoint/],
    ['aud the issuer, not the token endpoint', { ...claims, aud: 'https://as.example' }, header, /aud must be the token endpoint/],
    ['aud with two values', { ...claims, aud: [at.tokenEndpoint, at.requestedEndpoint] }, header, /aud must be the token endpoint/],
    ['jku not the registered jwks_uri', claims, { ...header, jku: 'https://evil.example/jwks' }, /jku/],
    ['exp more than 5 minutes ahead', { ...claims, exp: now + 301 }, header, /at most 5 minutes/],
    ['hl7-b2b of the wrong version', { ...claims, extensions: { 'hl7-b2b': { ...b2b, version: '2' } } }, header, /version/],
    ['hl7-b2b not an object', { ...claims, extensions: { 'hl7-b2b': 'x' } }, header, /object/],
  ];
  for (const [name, c, h, message] of refused) {
    it(`refuses ${name} with invalid_client`, () => {
      assert.throws(() => checkClientAssertion(c, h, client, at), (err: unknown) => err instanceof errors.InvalidClientAuth && message.test(String((err as Error & { error_detail?: string }).error_detail)));
    });
  }

  const accepted: [string, Record<string, unknown>, Record<string, unknown>][] = [
    ['aud the token endpoint', claims, header],
    ['aud the endpoint as requested', { ...claims, aud: at.requestedEndpoint }, header],
    ['aud as a one-element array', { ...claims, aud: [at.tokenEndpoint] }, header],
    ['exactly 5 minutes', { ...claims, exp: now + 300 }, header],
    ['the registered jku', claims, { ...header, jku: client.jwksUri }],
  ];
  for (const [name, c, h] of accepted) {
    it(`accepts ${name}, without IUA attributes`, () => assert.equal(checkClientAssertion(c, h, client, at), undefined));
  }

  it('returns the IUA attributes of the hl7-b2b extension, parsed once', () => {
    assert.deepEqual(checkClientAssertion({ ...claims, extensions: { 'hl7-b2b': b2b } }, header, client, at), {
      subject_name: 'Jane Smith, MD',
      subject_id: 'urn:oid:2.16.840.1.113883.4.6#1234567890',
      subject_organization: 'Example Clinic',
      subject_organization_id: 'https://clinic.example.org/fhir/Organization/1',
      subject_role: [{ system: 'http://nucc.org/provider-taxonomy', code: '207Q00000X' }],
      purpose_of_use: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT' }],
    });
  });
});

describe('token rule: lifetime and refresh (the emergency rule)', () => {
  const config = { accessTokenTtl: 3600, backendTokenTtl: 300, btgTokenTtl: 900, demo: true };
  const plain: GrantContext = { launch: { patient: 'p', need_patient_banner: true, smart_style_url: '' }, purposeOfUse: 'TREAT' };
  const emergency: GrantContext = { launch: { patient: 'p', need_patient_banner: true, smart_style_url: '' }, purposeOfUse: 'ETREAT', emergencyReason: 'unconscious' };
  const rows: [string, { backend: boolean; grant?: GrantContext }, number, boolean][] = [
    ['a backend service', { backend: true }, 300, true],
    ['an app without a launch context', { backend: false }, 3600, true],
    ['an app', { backend: false, grant: plain }, 3600, true],
    ['an emergency access', { backend: false, grant: emergency }, 900, false],
    ['a sandbox launch simulating a short-lived token', { backend: false, grant: { ...plain, sandboxFailure: 'token_expires' } }, 10, true],
  ];
  for (const [name, token, lifetime, refresh] of rows) {
    it(`${name}: ${lifetime} s, ${refresh ? 'refreshable' : 'never refreshed'}`, () => {
      assert.equal(accessTokenLifetime(config, token), lifetime);
      assert.equal(mayRefresh(token.grant), refresh);
    });
  }
  it('never gives a short-lived sandbox token outside demo mode', () => {
    assert.equal(accessTokenLifetime({ ...config, demo: false }, { backend: false, grant: { ...plain, sandboxFailure: 'token_expires' } }), 3600);
  });
});
