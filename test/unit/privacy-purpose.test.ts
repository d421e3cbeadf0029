import assert from 'node:assert/strict';
import { loadPolicy } from '../../server/hcs/policy.ts';
import { purposeRefusal } from '../../server/privacy/purpose.ts';
import type { TokenContext } from '../../server/resource-server/types.ts';

const policy = loadPolicy();
const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const doctor = { system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', code: 'doctor' };
const token = (iua: Record<string, unknown> | undefined, sub = 'u1'): TokenContext => ({
  clientId: 'app', sub, issuer: 'https://as', jti: 'j', exp: 0, scopes: [], claims: iua ? { extensions: { ihe_iua: iua } } : {},
});

describe('purpose of use at the guard', () => {
  it('accepts a purpose the roles may assert, as a Coding or an array', () => {
    assert.equal(purposeRefusal(policy, token({ subject_role: [doctor], purpose_of_use: [{ system: ACT_REASON, code: 'TREAT' }] })), undefined);
    assert.equal(purposeRefusal(policy, token({ subject_role: doctor, purpose_of_use: { system: ACT_REASON, code: 'BTG' } })), undefined, 'BTG is-a TREAT');
  });
  it('refuses a purpose the roles may not assert, none, or several', () => {
    assert.match(purposeRefusal(policy, token({ subject_role: [doctor], purpose_of_use: [{ system: ACT_REASON, code: 'HRESCH' }] }))!.message, /not permitted/);
    assert.match(purposeRefusal(policy, token(undefined))!.message, /exactly one/);
    assert.match(purposeRefusal(policy, token({ subject_role: [doctor], purpose_of_use: [{ system: ACT_REASON, code: 'TREAT' }, { system: ACT_REASON, code: 'HPAYMT' }] }))!.message, /exactly one/);
  });
  it('leaves backend services to their registration', () => {
    assert.equal(purposeRefusal(policy, token(undefined, 'app')), undefined);
  });
});
