import assert from 'node:assert/strict';
import { consentChoices, grantedContext, grantedFromForm, needsPatient } from '../../server/smart/consent.ts';

const LAB = 'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory';

describe('consent rules', () => {
  const choices = consentChoices('launch/patient openid fhirUser offline_access patient/*.rs patient/Observation.rs');

  it('groups requested scopes by resource type and offers category alternatives unchecked', () => {
    const titles = choices.groups.map((g) => g.title);
    assert.deepEqual(titles, ['Sign-in and launch', 'Lasting access', 'All health data', 'Observation']);
    const observation = choices.groups.find((g) => g.title === 'Observation')!;
    assert.deepEqual(observation.items.map((i) => [i.scope, i.checked]), [['patient/Observation.rs', true]]);
    assert.ok(observation.alternatives.some((a) => a.scope === LAB && !a.checked));
    assert.ok(choices.wildcard && choices.offline && needsPatient(choices, { ehrLaunch: false }));
  });

  it('describes each scope differently', () => {
    const descriptions = choices.groups.flatMap((g) => g.items.map((i) => i.description));
    assert.equal(new Set(descriptions).size, descriptions.length);
  });

  it('grants only offered scopes, in order, ignoring anything else', () => {
    assert.deepEqual(grantedFromForm(choices, ['openid', 'system/*.rs', 'patient/*.rs', 42]), ['openid', 'patient/*.rs']);
    assert.deepEqual(grantedFromForm(choices, 'openid'), ['openid']);
    assert.deepEqual(grantedFromForm(choices, undefined), []);
  });

  it('drops a narrowed scope ticked next to a broader one that covers it', () => {
    assert.deepEqual(grantedFromForm(choices, ['patient/Observation.rs', LAB]), ['patient/Observation.rs']);
    assert.deepEqual(grantedFromForm(choices, [LAB]), [LAB]);
  });

  it('needs the EHR\'s patient for an EHR launch asking for launch, also with user/ scopes only', () => {
    const clinician = consentChoices('launch openid fhirUser offline_access user/*.rs');
    assert.ok(needsPatient(clinician, { ehrLaunch: true }));
    assert.ok(!needsPatient(clinician, { ehrLaunch: false }), 'no launch id: no EHR context to carry');
    assert.ok(!needsPatient(consentChoices('openid fhirUser user/*.rs'), { ehrLaunch: true }), 'launch not asked for');
  });

  it('carries a patient only for patient scopes, launch/patient or an EHR launch', () => {
    assert.deepEqual(grantedContext(['openid', 'fhirUser']), { patient: false, encounter: false, fhirContext: false });
    assert.deepEqual(grantedContext(['openid', 'patient/Patient.r']), { patient: true, encounter: false, fhirContext: false });
    assert.deepEqual(grantedContext(['launch/patient']), { patient: true, encounter: false, fhirContext: false });
    assert.deepEqual(grantedContext(['launch', 'user/*.rs']), { patient: true, encounter: true, fhirContext: true });
    assert.deepEqual(grantedContext(['launch/encounter', 'user/*.rs']), { patient: false, encounter: true, fhirContext: false });
  });
});
