// The token pipeline's rules at /token (server/oidc/token/): one table per rule file, every accepted and
// refused case a row, with the OAuth error and description a refusal gives.
import assert from 'node:assert/strict';
import { checkClientAssertion } from '../../server/oidc/token/client-assertion.ts';
import { iuaFromHl7B2b } from '../../server/smart/hl7-b2b.ts';
import { accessTokenLifetime, mayRefresh } from '../../server/oidc/token/lifetime.ts';
import { asksForRefresh, grantedScope, tokenResourceServer } from '../../server/oidc/token/scope.ts';
import { appTokenClaims, backendTokenClaims } from '../../server/oidc/token/claims.ts';
import { grantNoLongerHeld } from '../../server/oidc/token/account.ts';
import type { GrantContext } from '../../server/oidc/launch-store.ts';
import type { User } from '../../server/oidc/users.ts';
import { loadPolicy } from '../../server/hcs/policy.ts';
import { knownSensitivities } from '../../server/hcs/label-vocabulary.ts';
import { purposeCoding } from '../../server/hcs/codes.ts';
import { assertRefused } from '../support/rule-tables.ts';

describe('token rule: client assertion (SMART beyond RFC 7523)', () => {
  const now = 1_800_000_000;
  const at = { tokenEndpoint: 'https://as.example/token', now };
  const client = { clientId: 'svc', jwksUri: 'https://svc.example/jwks' };
  const claims = { iss: 'svc', sub: 'svc', aud: 'https://as.example/token', exp: now + 240, jti: 'j' };
  const header = { alg: 'ES384', typ: 'JWT', kid: 'k1' };
  const b2b = {
    version: '1', subject_name: 'Jane Smith, MD', subject_id: 'urn:oid:2.16.840.1.113883.4.6#1234567890',
    subject_role: 'http://nucc.org/provider-taxonomy#207Q00000X', organization_name: 'Example Clinic',
    organization_id: 'https://clinic.example.org/fhir/Organization/1', purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#TREAT'],
  };

  const refused: [string, Record<string, unknown>, Record<string, unknown>, string][] = [
    ['typ missing', claims, { ...header, typ: undefined }, 'the client assertion header must have typ "JWT"'],
    ['typ other than JWT', claims, { ...header, typ: 'at+jwt' }, 'the client assertion header must have typ "JWT"'],
    ['no kid', claims, { ...header, kid: undefined }, 'the client assertion header must have a kid'],
    ['sub is not the client', { ...claims, sub: 'other' }, header, 'the client assertion sub must equal iss, the client_id'],
    ['aud another server', { ...claims, aud: 'https://evil.example/token' }, header, 'the client assertion aud must be the token endpoint https://as.example/token'],
    ['aud the issuer, not the token endpoint', { ...claims, aud: 'https://as.example' }, header, 'the client assertion aud must be the token endpoint https://as.example/token'],
    ['aud with two values', { ...claims, aud: [at.tokenEndpoint, 'https://proxy.example/token'] }, header, 'the client assertion aud must be the token endpoint https://as.example/token'],
    ['jku not the registered jwks_uri', claims, { ...header, jku: 'https://evil.example/jwks' }, 'the client assertion jku must equal the registered jwks_uri'],
    ['exp more than 5 minutes ahead', { ...claims, exp: now + 301 }, header, 'client assertion exp must be at most 5 minutes in the future'],
    ['hl7-b2b of the wrong version', { ...claims, extensions: { 'hl7-b2b': { ...b2b, version: '2' } } }, header, 'hl7-b2b version must be "1"'],
    ['hl7-b2b not an object', { ...claims, extensions: { 'hl7-b2b': 'x' } }, header, 'hl7-b2b must be an object'],
  ];
  for (const [name, c, h, description] of refused) {
    it(`refuses ${name} with invalid_client`, () => assertRefused(() => checkClientAssertion(c, h, client, at), 'invalid_client', description));
  }

  const accepted: [string, Record<string, unknown>, Record<string, unknown>][] = [
    ['aud the token endpoint', claims, header],
    ['aud as a one-element array', { ...claims, aud: [at.tokenEndpoint] }, header],
    ['exactly 5 minutes', { ...claims, exp: now + 300 }, header],
    ['the registered jku', claims, { ...header, jku: client.jwksUri }],
  ];
  for (const [name, c, h] of accepted) {
    it(`accepts ${name}, without IUA attributes`, () => assert.equal(checkClientAssertion(c, h, client, at), undefined));
  }

  it('returns the IUA attributes of the hl7-b2b extension (as hl7-b2b.ts maps them), parsed once', () => {
    const iua = checkClientAssertion({ ...claims, extensions: { 'hl7-b2b': b2b } }, header, client, at);
    assert.equal(iua?.subject_name, 'Jane Smith, MD');
    assert.deepEqual(iua, iuaFromHl7B2b(b2b));
  });

  it('refuses an hl7-b2b organization_id other than the one the client is bound to, and accepts that one', () => {
    const bound = { ...client, organizationId: 'https://hospital.example.org/fhir/Organization/9' };
    const c = { ...claims, extensions: { 'hl7-b2b': b2b } };
    assertRefused(() => checkClientAssertion(c, header, bound, at), 'invalid_client',
      'hl7-b2b organization_id must be https://hospital.example.org/fhir/Organization/9, the organization this client is registered for');
    assert.deepEqual(checkClientAssertion(c, header, { ...client, organizationId: b2b.organization_id }, at), iuaFromHl7B2b(b2b));
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

describe('token rule: scope.ts (granted scope, audience, lifetime; refresh tokens)', () => {
  const config = {
    fhirAudiences: ['https://as.example/fhir'], accessTokenAlg: 'ES256' as const,
    accessTokenTtl: 3600, backendTokenTtl: 300, btgTokenTtl: 900, demo: true,
  };
  const fhir = 'https://as.example/fhir';
  type Request = Parameters<typeof grantedScope>[1];
  const app = (requested: Request['requested'], allowed?: string): Request => ({ resource: fhir, grantType: 'authorization_code', requested, allowed });
  const backend = (requested: string | undefined, allowed?: string): Request => ({ resource: fhir, grantType: 'client_credentials', requested: [requested], allowed });
  const NONE_ALLOWED = 'none of the requested scopes is allowed for this client';

  const refused: [string, Request, string, string][] = [
    ['a resource this server does not serve', { ...app(['openid']), resource: 'https://evil.example/fhir' }, 'invalid_target', 'aud is not a FHIR server this authorization server serves'],
    ['a backend service without an allow-list', backend('system/Patient.rs'), 'invalid_scope', NONE_ALLOWED],
    ['a backend service asking for none of its scopes', backend('system/Observation.rs', 'system/Patient.rs'), 'invalid_scope', NONE_ALLOWED],
    ['a backend service asking for patient/ scopes', backend('patient/*.rs', 'patient/*.rs system/*.rs'), 'invalid_scope', NONE_ALLOWED],
    ['a backend service asking for nothing', backend(undefined, 'system/*.rs'), 'invalid_scope', NONE_ALLOWED],
  ];
  for (const [name, request, error, description] of refused) {
    it(`refuses ${name} with ${error}`, () => assertRefused(() => grantedScope(config, request), error, description));
  }

  const granted: [string, Request, string][] = [
    ['a backend service: its system/ scopes', backend('system/Patient.rs system/Observation.rs', 'system/*.rs'), 'system/Patient.rs system/Observation.rs'],
    ['a backend service: introspect', backend('introspect system/Patient.rs', 'introspect system/Patient.rs'), 'introspect system/Patient.rs'],
    ['a backend service: within its allow-list only', backend('system/Patient.rs system/Observation.rs', 'system/Patient.rs'), 'system/Patient.rs'],
    ['an app: what it asks for, within the default allow-list', app(['openid patient/Observation.rs']), 'openid patient/Observation.rs'],
    ['an app: never system/ scopes', app(['patient/*.rs system/*.rs'], 'patient/*.rs system/*.rs'), 'patient/*.rs'],
    ['an app: what its allow-list covers, whole scopes (never intersected)', app(['patient/*.cruds patient/*.rs'], 'patient/*.rs'), 'patient/*.rs'],
    ['an app: a purpose of use is never a scope', app(['patient/*.rs purpose_of_use=http://terminology.hl7.org/CodeSystem/v3-ActReason|TREAT']), 'patient/*.rs'],
    ['an app: malformed scopes dropped', app(['patient/*.rs patient/Bad']), 'patient/*.rs'],
    ['an app: none allowed is an empty scope, not an error', app(['user/*.rs'], 'patient/*.rs'), ''],
    ['a code exchange: the code\'s scope', app([undefined, 'openid launch/patient patient/*.rs']), 'openid launch/patient patient/*.rs'],
    ['a refresh: the refresh token\'s scope', app([undefined, undefined, 'offline_access patient/*.rs']), 'offline_access patient/*.rs'],
    ['the FHIR base with a trailing slash', { ...app(['openid']), resource: `${fhir}/` }, 'openid'],
  ];
  for (const [name, request, scope] of granted) {
    it(`grants ${name}`, () => assert.deepEqual(grantedScope(config, request), { audience: fhir, scope }));
  }

  const plain: GrantContext = { launch: { patient: 'p', need_patient_banner: true, smart_style_url: '' }, purposeOfUse: 'TREAT' };
  const sandbox = (sandboxFailure: string): GrantContext => ({ ...plain, sandboxFailure });
  const token = { audience: fhir, scope: 'patient/*.rs' };
  const sandboxRefused: [string, unknown, GrantContext, string][] = [
    ['a code of a sandbox launch that simulates a token error', 'authorization_code', sandbox('token_error'), 'sandbox: the token endpoint refuses this code (simulated failure)'],
    ['a refresh token of a sandbox launch that simulates its refusal', 'refresh_token', sandbox('refresh_refused'), 'sandbox: the refresh token is refused (simulated failure)'],
  ];
  for (const [name, grantType, grant, description] of sandboxRefused) {
    it(`refuses ${name} with invalid_grant`, () => assertRefused(() => tokenResourceServer(config, { ...token, grantType, grant }), 'invalid_grant', description));
  }

  const servers: [string, typeof config, unknown, GrantContext | undefined, number][] = [
    ['an app', config, 'authorization_code', plain, 3600],
    ['at /authorize', config, undefined, undefined, 3600],
    ['a backend service', config, 'client_credentials', undefined, 300],
    ['an emergency access', config, 'refresh_token', { ...plain, purposeOfUse: 'ETREAT', emergencyReason: 'unconscious' }, 900],
    ['a sandbox token error, at refresh', config, 'refresh_token', sandbox('token_error'), 3600],
    ['a sandbox refresh refusal, at the code exchange', config, 'authorization_code', sandbox('refresh_refused'), 3600],
    ['a sandbox token error at /authorize', config, undefined, sandbox('token_error'), 3600],
    ['a sandbox token error outside demo mode', { ...config, demo: false }, 'authorization_code', sandbox('token_error'), 3600],
  ];
  for (const [name, cfg, grantType, grant, ttl] of servers) {
    it(`tells oidc-provider of ${name}: a JWT for the FHIR server, ${ttl} s`, () => {
      assert.deepEqual(tokenResourceServer(cfg, { ...token, grantType, grant }), {
        scope: 'patient/*.rs', audience: fhir, accessTokenFormat: 'jwt', accessTokenTTL: ttl, jwt: { sign: { alg: 'ES256' } },
      });
    });
  }

  // Whether a refresh token is asked for; an emergency access never gets one (lifetime.ts: mayRefresh).
  const refresh: [string, boolean, string[], boolean][] = [
    ['offline_access', true, ['openid', 'offline_access'], true],
    ['online_access', true, ['online_access'], true],
    ['neither', true, ['openid', 'patient/*.rs'], false],
    ['offline_access, client not registered for refresh_token', false, ['offline_access'], false],
  ];
  for (const [name, allowed, scopes, asks] of refresh) {
    it(`refresh token for ${name}: ${asks ? 'asked for' : 'none'}`, () => assert.equal(asksForRefresh(allowed, new Set(scopes)), asks));
  }
});

describe('token rule: claims.ts (what a token says beyond RFC 9068)', () => {
  const policy = loadPolicy();
  const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
  const coding = (code: string) => [{ system: ACT_REASON, code }];
  const open = { ceiling: 'V' as const, sensitivities: knownSensitivities() };
  const iuaTreat = { purpose_of_use: coding('TREAT') };
  /** What the token carries: the purpose as its coding with display. */
  const treat = { purpose_of_use: [purposeCoding('TREAT')] };

  // A backend service: exactly one purpose of use, from its assertion, a scope token or its registration.
  type Backend = [string, { iua?: Record<string, unknown>; scope?: string }, string[] | undefined];
  const refused: [...Backend, string][] = [
    ['a malformed purpose scope token', { scope: 'system/*.rs purpose_of_use=NOPE' }, undefined, 'purpose_of_use NOPE is not a v3-ActReason purpose of use'],
    ['two purposes (assertion and scope)', { iua: iuaTreat, scope: `purpose_of_use=${ACT_REASON}|HPAYMT` }, undefined, 'a token carries exactly one purpose of use; the request asserts several'],
    ['two purposes in the assertion', { iua: { purpose_of_use: [...coding('TREAT'), ...coding('HPAYMT')] } }, undefined, 'a token carries exactly one purpose of use; the request asserts several'],
    ['an assertion purpose of another code system', { iua: { purpose_of_use: [{ system: 'https://evil.example/cs', code: 'HTEST' }] } }, undefined, 'hl7-b2b purpose_of_use https://evil.example/cs#HTEST is not a v3-ActReason purpose of use'],
    ['an assertion purpose that is no purpose of use', { iua: { purpose_of_use: [{ system: ACT_REASON, code: 'BOGUS' }] } }, undefined, `hl7-b2b purpose_of_use ${ACT_REASON}#BOGUS is not a v3-ActReason purpose of use`],
    ['an emergency purpose asserted', { iua: { purpose_of_use: coding('ETREAT') } }, undefined, 'a backend service cannot assert ETREAT: emergency access is for people'],
    ['an emergency purpose as its only registered one', {}, ['BTG'], 'a backend service cannot assert BTG: emergency access is for people'],
    ['a purpose it is not registered for', { iua: { purpose_of_use: coding('HPAYMT') } }, ['TREAT'], 'purpose of use HPAYMT is not registered for this client'],
    ['a purpose scope token it is not registered for', { scope: `purpose_of_use=${ACT_REASON}|HPAYMT` }, ['TREAT', 'HOPERAT'], 'purpose of use HPAYMT is not registered for this client'],
    // A token without a purpose escapes de-identification and purpose-specific consents.
    ['two registered purposes, nothing asserted', {}, ['TREAT', 'HPAYMT'], 'this client is registered for several purposes of use (TREAT, HPAYMT): name one in the hl7-b2b purpose_of_use or a purpose_of_use scope'],
  ];
  for (const [name, request, purposes, description] of refused) {
    it(`refuses a backend service with ${name}: invalid_request`, () => {
      assertRefused(() => backendTokenClaims({ policy }, { iua: request.iua, scope: request.scope }, purposes, open), 'invalid_request', description);
    });
  }

  const accepted: [...Backend, Record<string, unknown> | undefined][] = [
    ['nothing asserted, nothing registered, cleared for all', {}, undefined, undefined],
    ['its assertion\'s purpose', { iua: iuaTreat }, undefined, { ihe_iua: treat }],
    ['its assertion\'s purpose, registered', { iua: iuaTreat }, ['TREAT', 'HPAYMT'], { ihe_iua: treat }],
    ['a purpose scope token', { scope: `system/*.rs purpose_of_use=${ACT_REASON}|TREAT` }, undefined, { ihe_iua: treat }],
    ['the same purpose in assertion and scope', { iua: iuaTreat, scope: `purpose_of_use=${ACT_REASON}|TREAT` }, undefined, { ihe_iua: treat }],
    ['its one registered purpose, nothing asserted', {}, ['TREAT'], { ihe_iua: treat }],
    ['its assertion\'s other IUA attributes', { iua: { subject_name: 'Jane', ...iuaTreat } }, undefined, { ihe_iua: { subject_name: 'Jane', ...treat } }],
  ];
  for (const [name, request, purposes, extensions] of accepted) {
    it(`a backend service with ${name}`, () => {
      const claims = backendTokenClaims({ policy }, { iua: request.iua, scope: request.scope }, purposes, open);
      assert.deepEqual(claims, extensions && { extensions });
    });
  }
  it('a backend service bound to an organization: the registered organization and name, whatever it asserted', () => {
    const organization = { id: 'https://clinic.example.org/fhir/Organization/1', name: 'Example Clinic' };
    const named = backendTokenClaims({ policy }, { iua: { ...iuaTreat, subject_organization: 'Its Own Name' }, organization }, undefined, open);
    assert.deepEqual(named, { extensions: { ihe_iua: { ...treat, subject_organization_id: organization.id, subject_organization: 'Example Clinic' } } });
    const unnamed = backendTokenClaims({ policy }, { iua: { subject_organization: 'Its Own Name' }, organization: { id: organization.id } }, undefined, open);
    assert.deepEqual(unnamed, { extensions: { ihe_iua: { subject_organization_id: organization.id } } });
  });
  it('a backend service\'s clearance below V is its IHE PCF residual', () => {
    const claims = backendTokenClaims({ policy }, { iua: undefined }, undefined, { ceiling: 'N', sensitivities: [] }) as { extensions: { ihe_pcf: { residual: { type: string; securityLabel: { code: string }[] }[] } } };
    assert.equal(claims.extensions.ihe_pcf.residual[0].type, 'forbid');
    assert.deepEqual(claims.extensions.ihe_pcf.residual[0].securityLabel.slice(0, 2).map((l) => l.code), ['R', 'V']);
  });

  // An app's token: the launch context, the sign-in, and the user's FHIR identity and HCS attributes.
  const config = { fhirBase: 'https://as.example/fhir', policy };
  const doctor: User = {
    id: 'u1', username: 'doc', name: 'Dr Who', fhirUser: 'Practitioner/7', disabled: false,
    attributes: { roles: [{ system: 'http://snomed.info/sct', code: '309343006' }], purposes: ['TREAT'], clearance: 'V', sensitivities: knownSensitivities(), organization: 'Clinic' },
  };
  const launch = { patient: 'p1', encounter: 'e1', fhirContext: [{ reference: 'Observation/o1' }], need_patient_banner: true, smart_style_url: '' };
  const apps: [string, User | undefined, GrantContext | undefined, { acr?: string; amr?: string[] }, Record<string, unknown>][] = [
    ['nothing known', undefined, undefined, {}, {}],
    ['the launch context', undefined, { launch }, {}, { patient: 'p1', encounter: 'e1', fhirContext: [{ reference: 'Observation/o1' }] }],
    ['a launch without a patient', undefined, { launch: { need_patient_banner: false, smart_style_url: '' } }, {}, {}],
    ['a sign-in with a password', undefined, undefined, { acr: 'urn:smart-auth:acr:pwd', amr: ['pwd'] }, { acr: 'urn:smart-auth:acr:pwd', amr: ['pwd'] }],
    ['a sign-in kept without amr', undefined, undefined, { acr: 'urn:smart-auth:acr:mfa' }, { acr: 'urn:smart-auth:acr:mfa' }],
    ['a step-up for this grant', undefined, { launch, stepUpAmr: ['otp'] }, { amr: ['pwd'] }, { acr: 'urn:smart-auth:acr:mfa', amr: ['pwd', 'otp', 'mfa'], patient: 'p1', encounter: 'e1', fhirContext: [{ reference: 'Observation/o1' }] }],
    ['a user, cleared for all', doctor, { launch: { need_patient_banner: false, smart_style_url: '' }, purposeOfUse: 'TREAT' }, {}, {
      fhirUser: 'https://as.example/fhir/Practitioner/7',
      extensions: { ihe_iua: { subject_name: 'Dr Who', subject_organization: 'Clinic', subject_role: doctor.attributes.roles, ...treat } },
    }],
  ];
  for (const [name, user, grant, signIn, claims] of apps) {
    it(`an app's token: ${name}`, () => assert.deepEqual(appTokenClaims(config, config.fhirBase, user, grant, signIn), claims));
  }
  it('an app\'s token: a user\'s clearance below V is its IHE PCF residual, about the launch patient', () => {
    const nurse = { ...doctor, fhirUser: null, attributes: { ...doctor.attributes, clearance: 'N', sensitivities: [] } };
    const claims = appTokenClaims(config, config.fhirBase, nurse, { launch, purposeOfUse: 'TREAT' }) as { fhirUser?: string; extensions: { ihe_pcf: { patient_id: string; residual: unknown[] } } };
    assert.equal(claims.fhirUser, undefined);
    assert.equal(claims.extensions.ihe_pcf.patient_id, 'https://as.example/fhir/Patient/p1');
    assert.equal(claims.extensions.ihe_pcf.residual.length, 1);
  });
  it('an app\'s token for another FHIR server: the launch patient on that server, the user\'s own record on this one', () => {
    const nurse = { ...doctor, attributes: { ...doctor.attributes, clearance: 'N' as const, sensitivities: [] } };
    const claims = appTokenClaims(config, 'https://other.example/r4', nurse, { launch, purposeOfUse: 'TREAT' }) as { fhirUser?: string; extensions: { ihe_pcf: { patient_id: string } } };
    assert.equal(claims.fhirUser, 'https://as.example/fhir/Practitioner/7');
    assert.equal(claims.extensions.ihe_pcf.patient_id, 'https://other.example/r4/Patient/p1');
  });
});

describe('token rule: a user still holds their grant (refresh, code exchange)', () => {
  const policy = loadPolicy();
  const doctor = { system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', code: 'doctor' };
  const user = (attributes: User['attributes']): User => ({ id: 'u', username: 'u', name: null, fhirUser: 'Practitioner/u', attributes, disabled: false });
  const grant: GrantContext = { launch: { patient: 'p1', need_patient_banner: true, smart_style_url: 'https://as.example/style' }, purposeOfUse: 'HPAYMT' };
  const cases: [string, User, string[] | undefined, string | undefined][] = [
    ['as granted', user({ roles: [doctor], purposes: ['TREAT', 'HPAYMT'], patients: ['p1'] }), undefined, undefined],
    ['a clinician without a patient list', user({ roles: [doctor], purposes: ['HPAYMT'] }), undefined, undefined],
    ['the patient no longer listed', user({ roles: [doctor], purposes: ['HPAYMT'], patients: ['p2'] }), undefined, 'the user may no longer open the patient of this grant'],
    ['the purpose no longer the user\'s', user({ roles: [doctor], purposes: ['TREAT'] }), undefined, 'purpose of use HPAYMT is no longer permitted for this user and app'],
    ['the role that permitted the purpose gone', user({ roles: [], purposes: ['HPAYMT'] }), undefined, 'purpose of use HPAYMT is no longer permitted for this user and app'],
    ['the purpose no longer registered for the app', user({ roles: [doctor], purposes: ['HPAYMT'] }), ['TREAT'], 'purpose of use HPAYMT is no longer permitted for this user and app'],
  ];
  for (const [name, u, clientPurposes, problem] of cases) {
    it(`${name}: ${problem ?? 'held'}`, () => assert.equal(grantNoLongerHeld(policy, u, clientPurposes, grant), problem));
  }
});
