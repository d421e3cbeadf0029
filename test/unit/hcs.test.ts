import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import {
  ACT_CODE, CONFIDENTIALITY, codingList, confidentialityAbove, isPurposeOfUse, purposeCoding, purposeIsA,
} from '../../server/hcs/codes.ts';
import { knownSensitivities, sensitivityClosure } from '../../server/hcs/label-vocabulary.ts';
import {
  assertablePurposes, clientPermits, defaultPurpose, effectiveClearance, loadPolicy, parsePolicy, PolicyError, rolesRequireSecondFactor, type Subject,
} from '../../server/hcs/policy.ts';
import { checkPurposeSubmission, purposeChoice, requestedPurpose } from '../../server/hcs/purpose-choice.ts';
import { residualFor, userSecurityClaims } from '../../server/hcs/token-claims.ts';

const policy = loadPolicy();
const ROLE = 'http://terminology.hl7.org/CodeSystem/practitioner-role';
const doctor: Subject = { roles: [{ system: ROLE, code: 'doctor' }], purposes: ['TREAT', 'HPAYMT'], clearance: 'N', sensitivities: ['HIV'], breakGlass: false, patientUser: false };
const emergencyDoctor: Subject = { ...doctor, purposes: ['TREAT', 'ETREAT'], breakGlass: true };
const patient: Subject = { roles: [], purposes: [], clearance: 'R', sensitivities: [], breakGlass: false, patientUser: true };

describe('HCS vocabularies', () => {
  it('knows the purpose-of-use tree as is-a', () => {
    assert.ok(purposeIsA('BTG', 'ETREAT') && purposeIsA('BTG', 'TREAT') && purposeIsA('ETREAT', 'TREAT'));
    assert.ok(purposeIsA('HTEST', 'HOPERAT') && purposeIsA('HTEST', 'SYSDEV'));
    assert.ok(!purposeIsA('TREAT', 'BTG') && !purposeIsA('HRESCH', 'TREAT'));
    assert.ok(purposeIsA('TREAT', 'TREAT'));
    assert.ok(!isPurposeOfUse('PURPOSE') && !isPurposeOfUse('constructor'));
  });

  it('uses v3-ActReason for purposes of use (there is no v3-PurposeOfUse code system)', () => {
    assert.equal(purposeCoding('TREAT').system, 'http://terminology.hl7.org/CodeSystem/v3-ActReason');
  });

  it('subsumes sensitivity categories: SUD catches OPIOIDUD, ETH and SUD overlap', () => {
    assert.ok(sensitivityClosure('SUD').has('OPIOIDUD'));
    assert.ok(sensitivityClosure('ETH').has('SUD') && sensitivityClosure('SUD').has('ETH'));
    assert.ok(sensitivityClosure('SPI').has('OPIOIDUD'));
    assert.deepEqual([...sensitivityClosure('HIV')], ['HIV']);
  });

  it('lists the confidentiality codes above a ceiling', () => {
    assert.deepEqual(confidentialityAbove('N'), ['R', 'V']);
    assert.deepEqual(confidentialityAbove('V'), []);
  });

  it('reads a single Coding or an array of Codings', () => {
    const treat = { system: 'x', code: 'TREAT' };
    assert.deepEqual(codingList(treat), [treat]);
    assert.deepEqual(codingList([treat, { nope: 1 }]), [treat]);
    assert.deepEqual(codingList(undefined), []);
  });
});

describe('HCS policy', () => {
  it('lets a role assert what the matrix allows, limited to the user\'s own purposes', () => {
    assert.deepEqual(assertablePurposes(policy, doctor), ['TREAT', 'HPAYMT']);
    assert.deepEqual(assertablePurposes(policy, { ...doctor, purposes: ['TREAT', 'HRESCH'] }), ['TREAT']);
    const nurse = { ...doctor, roles: [{ system: ROLE, code: 'nurse' }] };
    assert.deepEqual(assertablePurposes(policy, nurse), ['TREAT']);
  });

  it('gives a patient user PATRQT by default', () => {
    assert.deepEqual(assertablePurposes(policy, patient), ['PATRQT']);
    assert.equal(defaultPurpose(policy, patient, ['PATRQT']), 'PATRQT');
  });

  it('offers emergency purposes only to break-glass users', () => {
    assert.ok(!assertablePurposes(policy, doctor).includes('BTG'));
    assert.ok(!assertablePurposes(policy, { ...doctor, purposes: ['TREAT', 'ETREAT'] }).includes('ETREAT'));
    assert.deepEqual(assertablePurposes(policy, emergencyDoctor), ['TREAT', 'ETREAT', 'BTG']);
    assert.equal(defaultPurpose(policy, emergencyDoctor, ['TREAT', 'ETREAT', 'BTG']), 'TREAT');
  });

  it('limits by the client\'s registered purposes, with is-a', () => {
    assert.ok(clientPermits(undefined, 'TREAT'));
    assert.ok(clientPermits(['TREAT'], 'ETREAT'));
    assert.ok(!clientPermits(['HPAYMT'], 'TREAT'));
  });

  it('lifts the ceiling to R for an emergency, never to V, and keeps a V clearance', () => {
    assert.deepEqual(effectiveClearance(policy, doctor, 'TREAT'), { ceiling: 'N', sensitivities: ['HIV'] });
    const lifted = effectiveClearance(policy, emergencyDoctor, 'BTG');
    assert.equal(lifted.ceiling, 'R');
    assert.ok(lifted.sensitivities.includes('PSY'));
    assert.equal(effectiveClearance(policy, { ...emergencyDoctor, clearance: 'V' }, 'BTG').ceiling, 'V');
  });

  it('refuses a policy file that is wrong, naming the problem', () => {
    const good = JSON.parse(readFileSync(new URL('../../server/hcs/default-policy.json', import.meta.url), 'utf8'));
    for (const [change, message] of [
      [{ rolePurposes: 'x' }, /rolePurposes must be an array/],
      [{ rolePurposes: [{ role: 'nobar', purposes: ['TREAT'] }] }, /role must be/],
      [{ rolePurposes: [{ role: 'a|b', purposes: ['NOPE'] }] }, /purpose-of-use codes/],
      [{ breakGlass: { ceiling: 'V' } }, /below V/],
      [{ defaultPurpose: { patient: 'X', other: 'TREAT' } }, /defaultPurpose/],
      [{ labels: undefined }, /labels must be/],
      [{ labels: { sensitivities: { SUD: ['NOTLISTED'] }, harmless: [] } }, /labels.sensitivities.SUD/],
      [{ labels: { sensitivities: {}, harmless: ['no-bar'] } }, /labels.harmless/],
      [{ secondFactorRoles: ['nobar'] }, /secondFactorRoles/],
      [{ secondFactorRoles: 'a|b' }, /secondFactorRoles/],
    ] as const) {
      assert.throws(() => parsePolicy({ ...good, ...change }, 'test'), (e: Error) => e instanceof PolicyError && message.test(e.message));
    }
    assert.throws(() => loadPolicy('/nonexistent/policy.json'), /cannot be read/);
  });

  it('requires a second factor of the roles the policy names (none by default)', () => {
    assert.deepEqual(policy.secondFactorRoles, []);
    const file = JSON.parse(readFileSync(new URL('../../server/hcs/default-policy.json', import.meta.url), 'utf8'));
    const strict = parsePolicy({ ...file, secondFactorRoles: [`${ROLE}|doctor`] }, 'test');
    assert.ok(rolesRequireSecondFactor(strict, doctor.roles));
    assert.ok(!rolesRequireSecondFactor(strict, [{ system: ROLE, code: 'nurse' }]));
    assert.ok(!rolesRequireSecondFactor(strict, []));
    assert.ok(!rolesRequireSecondFactor(policy, doctor.roles));
  });
});

describe('purpose of use at consent', () => {
  it('reads a purpose asked for by scope token or parameter, refusing unknown systems and several purposes', () => {
    assert.deepEqual(requestedPurpose('openid purpose_of_use=http://terminology.hl7.org/CodeSystem/v3-ActReason|TREAT', undefined), { code: 'TREAT' });
    assert.deepEqual(requestedPurpose('openid', 'urn:oid:2.16.840.1.113883.5.8|HPAYMT'), { code: 'HPAYMT' });
    assert.deepEqual(requestedPurpose('openid', 'TREAT'), { code: 'TREAT' });
    assert.deepEqual(requestedPurpose('openid', undefined), { code: undefined });
    assert.match(requestedPurpose('purpose_of_use=http://x.example|TREAT', undefined).error!, /not a v3-ActReason/);
    assert.match(requestedPurpose('openid', 'BOGUS').error!, /not a v3-ActReason/);
    assert.match(requestedPurpose('purpose_of_use=http://terminology.hl7.org/CodeSystem/v3-ActReason|TREAT', 'HPAYMT').error!, /exactly one/);
  });

  it('honours an app\'s purpose only when allowed, and never an emergency one', () => {
    assert.deepEqual(purposeChoice({ policy, subject: doctor, requested: { code: 'HPAYMT' } }).options, ['HPAYMT']);
    assert.equal(purposeChoice({ policy, subject: patient, requested: { code: 'TREAT' } }).error?.code, 'access_denied');
    assert.deepEqual(purposeChoice({ policy, subject: emergencyDoctor, requested: { code: 'BTG' } }).error, {
      code: 'invalid_request', description: 'an app cannot ask for BTG: only the person can choose an emergency access',
    }, 'what /authorize answers too (token-rules-authorize.test.ts)');
    assert.equal(purposeChoice({ policy, subject: { ...doctor, purposes: ['HRESCH'] } }).error?.code, 'access_denied');
  });

  it('needs a reason for an emergency purpose and an offered purpose', () => {
    const choice = purposeChoice({ policy, subject: emergencyDoctor });
    assert.deepEqual(choice.emergency, ['ETREAT', 'BTG']);
    assert.match(checkPurposeSubmission(choice, 'BTG', '')!, /reason/);
    assert.match(checkPurposeSubmission(choice, 'BTG', '   short  ')!, /reason/);
    assert.equal(checkPurposeSubmission(choice, 'BTG', 'Unconscious patient in the ED'), undefined);
    assert.equal(checkPurposeSubmission(choice, 'TREAT', ''), undefined);
    assert.match(checkPurposeSubmission(choice, 'HRESCH', '')!, /Choose one/);
  });
});

describe('HCS token claims', () => {
  it('forbids confidentiality above the ceiling and every sensitivity not granted, with subsumption', () => {
    const [rule] = residualFor({ ceiling: 'N', sensitivities: ['SUD'] });
    const codes = rule.securityLabel.map((c) => `${c.system === CONFIDENTIALITY ? 'C' : 'S'}:${c.code}`);
    assert.ok(codes.includes('C:R') && codes.includes('C:V') && !codes.includes('C:N'));
    assert.ok(codes.includes('S:HIV') && codes.includes('S:PSY'));
    assert.ok(!codes.includes('S:SUD') && !codes.includes('S:ETH'), 'SUD granted covers ETH');
    assert.ok(rule.securityLabel.every((c) => c.system === CONFIDENTIALITY || c.system === ACT_CODE));
  });

  it('forbids every sensitivity the policy file knows and the clearance does not cover, but no category partly granted (#14)', () => {
    const codes = residualFor({ ceiling: 'N', sensitivities: ['PSY'] })[0].securityLabel.map((c) => c.code);
    for (const code of ['ADOL', 'DEMO', 'RACE', 'VIP', 'MH', 'BH', 'HIV']) assert.ok(codes.includes(code), code);
    assert.ok(!codes.includes('PSY') && !codes.includes('SPI'), 'forbidding SPI would hide the PSY granted');
    assert.ok(!codes.includes('SICKLE'), 'a code the policy does not know is not listed: the guard hides it as unknown');
  });

  it('puts IUA attributes as arrays of Coding and the residual under ihe_pcf', () => {
    const claims = userSecurityClaims({
      name: 'Jane Smith, MD', organization: 'Example Hospital', organizationId: 'urn:oid:1.2.3', roles: doctor.roles,
      purpose: 'TREAT', clearance: { ceiling: 'V', sensitivities: knownSensitivities() },
    });
    assert.deepEqual(claims.extensions.ihe_iua.purpose_of_use, [purposeCoding('TREAT')]);
    assert.deepEqual(claims.extensions.ihe_iua.subject_role, doctor.roles);
    assert.equal(claims.extensions.ihe_pcf, undefined, 'nothing to forbid, no residual');
  });

  it('never forbids less than the clearance says (property)', () => {
    const scale = ['U', 'L', 'M', 'N', 'R', 'V'] as const;
    fc.assert(fc.property(fc.constantFrom(...scale), fc.subarray(['ETH', 'HIV', 'PSY', 'SUD', 'SDV', 'STD', 'SEX']), (ceiling, granted) => {
      const forbidden = new Set((residualFor({ ceiling, sensitivities: granted })[0]?.securityLabel ?? []).map((c) => c.code));
      for (const code of scale.slice(scale.indexOf(ceiling) + 1)) if (!forbidden.has(code)) return false;
      for (const code of granted) if (forbidden.has(code)) return false;
      return true;
    }));
  });
});
