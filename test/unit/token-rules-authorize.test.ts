// The token pipeline's rules at /authorize and PAR (server/oidc/token/): one table per rule file, every
// accepted and refused case a row, with the OAuth error and description a refusal gives.
import assert from 'node:assert/strict';
import { checkAudience, fhirAudience, keepOfflineAccess } from '../../server/oidc/token/audience.ts';
import { checkRequestedPurpose } from '../../server/oidc/token/purpose.ts';
import { checkEhrLaunch } from '../../server/oidc/token/launch.ts';
import { loadPolicy } from '../../server/hcs/policy.ts';
import { assertRefused } from '../support/rule-tables.ts';

describe('token rule: audience.ts (aud and state, SMART App Launch 2.2)', () => {
  const config = { fhirAudiences: ['https://as.example/fhir', 'https://ehr.example/r4'] };

  const refused: [string, { state: unknown; aud: string | undefined }, string, string][] = [
    ['no state', { state: undefined, aud: 'https://as.example/fhir' }, 'invalid_request', 'state is required'],
    ['an empty state', { state: '', aud: 'https://as.example/fhir' }, 'invalid_request', 'state is required'],
    ['no state and no aud: state first', { state: undefined, aud: undefined }, 'invalid_request', 'state is required'],
    ['no aud', { state: 's', aud: undefined }, 'invalid_request', 'aud is required: the FHIR base URL the token is for'],
    ['an empty aud', { state: 's', aud: '' }, 'invalid_request', 'aud is required: the FHIR base URL the token is for'],
    ['aud another server', { state: 's', aud: 'https://evil.example/fhir' }, 'invalid_target', 'aud is not a FHIR server this authorization server serves'],
    ['aud a path below the FHIR base', { state: 's', aud: 'https://as.example/fhir/Patient' }, 'invalid_target', 'aud is not a FHIR server this authorization server serves'],
    ['aud the issuer', { state: 's', aud: 'https://as.example' }, 'invalid_target', 'aud is not a FHIR server this authorization server serves'],
  ];
  for (const [name, request, error, description] of refused) {
    it(`refuses ${name} with ${error}`, () => assertRefused(() => checkAudience(config, request), error, description));
  }

  const accepted: [string, string, string | undefined][] = [
    ['the FHIR base', 'https://as.example/fhir', 'https://as.example/fhir'],
    ['the FHIR base with a trailing slash (kept as sent)', 'https://as.example/fhir/', 'https://as.example/fhir'],
    ['another audience this server serves', 'https://ehr.example/r4', 'https://ehr.example/r4'],
  ];
  for (const [name, aud, base] of accepted) {
    it(`accepts ${name}`, () => {
      assert.equal(checkAudience(config, { state: 's', aud }), aud);
      assert.equal(fhirAudience(config, aud), base);
    });
  }

  // oidc-provider drops offline_access unless prompt=consent (OIDC Core 11); SMART apps never send prompt.
  const offline: [string, string, string, boolean, string][] = [
    ['requested, client may refresh: put back', 'openid offline_access patient/*.rs', 'openid patient/*.rs', true, 'openid patient/*.rs offline_access'],
    ['requested, client may not refresh: left out', 'openid offline_access', 'openid', false, 'openid'],
    ['not requested', 'openid patient/*.rs', 'openid patient/*.rs', true, 'openid patient/*.rs'],
    ['kept by oidc-provider already: not doubled', 'offline_access openid', 'offline_access openid', true, 'offline_access openid'],
    ['only a look-alike requested', 'offline_accessX', 'openid', true, 'openid'],
    ['nothing kept', 'offline_access', '', true, 'offline_access'],
  ];
  for (const [name, requested, scope, mayRefresh, kept] of offline) {
    it(`offline_access ${name}`, () => assert.equal(keepOfflineAccess(requested, scope, mayRefresh), kept));
  }
});

describe('token rule: purpose.ts (a purpose of use asked for up front)', () => {
  const policy = loadPolicy();
  const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';

  const refused: [string, string, unknown, string, string][] = [
    ['an unknown code', '', 'NOPE', 'invalid_request', 'purpose_of_use NOPE is not a v3-ActReason purpose of use'],
    ['another code system', '', 'http://example.org|TREAT', 'invalid_request', 'purpose_of_use http://example.org|TREAT is not a v3-ActReason purpose of use'],
    ['an unknown code as a scope token', `openid purpose_of_use=${ACT_REASON}|NOPE`, undefined, 'invalid_request', `purpose_of_use ${ACT_REASON}|NOPE is not a v3-ActReason purpose of use`],
    ['two purposes (scope and parameter)', `purpose_of_use=${ACT_REASON}|TREAT`, 'HPAYMT', 'invalid_request', 'a token carries exactly one purpose of use; the request names several'],
    ['an emergency purpose (ETREAT)', '', 'ETREAT', 'invalid_request', 'an app cannot ask for ETREAT: only the person can choose an emergency access'],
    ['an emergency purpose as a scope token (BTG)', `purpose_of_use=${ACT_REASON}|BTG`, undefined, 'invalid_request', 'an app cannot ask for BTG: only the person can choose an emergency access'],
  ];
  for (const [name, scope, parameter, error, description] of refused) {
    it(`refuses ${name} with ${error}`, () => assertRefused(() => checkRequestedPurpose(policy, scope, parameter), error, description));
  }

  const accepted: [string, string, unknown, string | undefined][] = [
    ['no purpose (the consent step asks)', 'openid patient/*.rs', undefined, undefined],
    ['an empty parameter', '', '', undefined],
    ['a code', '', 'TREAT', 'TREAT'],
    ['system|code', '', `${ACT_REASON}|HPAYMT`, 'HPAYMT'],
    ['the v3-ActReason OID as system', '', 'urn:oid:2.16.840.1.113883.5.8|TREAT', 'TREAT'],
    ['a scope token', `openid purpose_of_use=${ACT_REASON}|TREAT`, undefined, 'TREAT'],
    ['the same purpose twice', `purpose_of_use=${ACT_REASON}|TREAT`, 'TREAT', 'TREAT'],
  ];
  for (const [name, scope, parameter, code] of accepted) {
    it(`accepts ${name}`, () => assert.equal(checkRequestedPurpose(policy, scope, parameter), code));
  }
});

describe('token rule: launch.ts (an EHR launch id)', () => {
  const refused: [string, { clientId: string | null } | undefined, string | undefined, string, string][] = [
    ['an unknown, expired or used launch', undefined, 'app', 'invalid_request', 'launch is unknown, expired or already used'],
    ['a launch issued for another app', { clientId: 'other' }, 'app', 'invalid_request', 'launch was issued for another app'],
    ['an app-bound launch without a client', { clientId: 'app' }, undefined, 'invalid_request', 'launch was issued for another app'],
  ];
  for (const [name, found, clientId, error, description] of refused) {
    it(`refuses ${name} with ${error}`, () => assertRefused(() => checkEhrLaunch(found, clientId), error, description));
  }

  const accepted: [string, { clientId: string | null }, string | undefined][] = [
    ['a launch issued for this app', { clientId: 'app' }, 'app'],
    ['a launch issued for any app', { clientId: null }, 'app'],
  ];
  for (const [name, found, clientId] of accepted) {
    it(`accepts ${name}`, () => assert.equal(checkEhrLaunch(found, clientId), undefined));
  }
});
