import assert from 'node:assert/strict';

import {
  PATIENT_COMPARTMENT,
  PATIENT_COMPARTMENT_PATHS,
  SELF,
  compartmentParamPaths,
  isInPatientCompartment,
  parseReference,
  patientCompartmentParams,
  patientsOf,
  referencesAt,
  valuesAt,
} from '../../server/fhir/compartment.ts';
import { loadDemoBundle } from '../../server/fhir/demo-store.ts';
import type { FhirResource } from '../../server/fhir/types.ts';

const ref = (reference: string) => ({ reference });

describe('fhir/compartment', () => {
  describe('patientCompartmentParams', () => {
    it('lists the R4 compartment parameters of member types', () => {
      assert.deepEqual(patientCompartmentParams('Observation'), ['subject', 'performer']);
      assert.deepEqual(patientCompartmentParams('Condition'), ['patient', 'asserter']);
      assert.deepEqual(patientCompartmentParams('Encounter'), ['patient']);
      assert.deepEqual(patientCompartmentParams('MedicationRequest'), ['subject']);
      assert.deepEqual(patientCompartmentParams('AllergyIntolerance'), ['patient', 'recorder', 'asserter']);
      assert.deepEqual(patientCompartmentParams('Immunization'), ['patient']);
      assert.deepEqual(patientCompartmentParams('Patient'), [SELF, 'link']);
      assert.deepEqual(patientCompartmentParams('Coverage'), ['policy-holder', 'subscriber', 'beneficiary', 'payor']);
      assert.deepEqual(patientCompartmentParams('MedicationDispense'), ['subject', 'patient', 'receiver']);
      assert.deepEqual(patientCompartmentParams('AuditEvent'), ['patient']);
      assert.deepEqual(patientCompartmentParams('RelatedPerson'), ['patient']);
      assert.deepEqual(patientCompartmentParams('Appointment'), ['actor']);
      assert.deepEqual(patientCompartmentParams('Claim'), ['patient', 'payee']);
    });

    it('covers the R4 member list', () => {
      const expected = [
        'Account', 'AdverseEvent', 'AllergyIntolerance', 'Appointment', 'AppointmentResponse', 'AuditEvent', 'Basic',
        'BodyStructure', 'CarePlan', 'CareTeam', 'ChargeItem', 'Claim', 'ClaimResponse', 'ClinicalImpression',
        'Communication', 'CommunicationRequest', 'Composition', 'Condition', 'Consent', 'Coverage',
        'CoverageEligibilityRequest', 'CoverageEligibilityResponse', 'DetectedIssue', 'DeviceRequest',
        'DeviceUseStatement', 'DiagnosticReport', 'DocumentManifest', 'DocumentReference', 'Encounter',
        'EnrollmentRequest', 'EpisodeOfCare', 'ExplanationOfBenefit', 'FamilyMemberHistory', 'Flag', 'Goal', 'Group',
        'ImagingStudy', 'Immunization', 'ImmunizationEvaluation', 'ImmunizationRecommendation', 'Invoice', 'List',
        'MeasureReport', 'Media', 'MedicationAdministration', 'MedicationDispense', 'MedicationRequest',
        'MedicationStatement', 'MolecularSequence', 'NutritionOrder', 'Observation', 'Patient', 'Person', 'Procedure',
        'Provenance', 'QuestionnaireResponse', 'RelatedPerson', 'RequestGroup', 'ResearchSubject', 'RiskAssessment',
        'Schedule', 'ServiceRequest', 'Specimen', 'SupplyDelivery', 'SupplyRequest', 'VisionPrescription',
      ];
      assert.deepEqual(Object.keys(PATIENT_COMPARTMENT).sort(), expected.sort());
    });

    it('is undefined for types outside the compartment (and for prototype keys)', () => {
      for (const type of ['Practitioner', 'PractitionerRole', 'Organization', 'Medication', 'Location', 'Device',
        'Questionnaire', 'ValueSet', 'Bundle', 'Endpoint', 'HealthcareService', 'constructor', 'toString', '__proto__', '']) {
        assert.equal(patientCompartmentParams(type), undefined, type);
        assert.equal(Object.hasOwn(PATIENT_COMPARTMENT_PATHS, type), false, type);
      }
    });

    it('maps parameters to element paths', () => {
      assert.deepEqual(compartmentParamPaths('Observation', 'subject'), ['subject']);
      assert.deepEqual(compartmentParamPaths('Condition', 'patient'), ['subject']);
      assert.deepEqual(compartmentParamPaths('AllergyIntolerance', 'patient'), ['patient']);
      assert.deepEqual(compartmentParamPaths('AuditEvent', 'patient'), ['agent.who', 'entity.what']);
      assert.deepEqual(compartmentParamPaths('Patient', 'link'), ['link.other']);
      assert.equal(compartmentParamPaths('Observation', 'patient'), undefined);
      assert.equal(compartmentParamPaths('Practitioner', 'subject'), undefined);
      assert.deepEqual(PATIENT_COMPARTMENT_PATHS.Observation, ['subject', 'performer']);
      assert.deepEqual(PATIENT_COMPARTMENT_PATHS.MedicationDispense, ['subject', 'receiver']);
      assert.deepEqual(PATIENT_COMPARTMENT_PATHS.Patient, ['link.other']);
    });

    it('is frozen', () => {
      assert.ok(Object.isFrozen(PATIENT_COMPARTMENT));
      assert.ok(Object.isFrozen(PATIENT_COMPARTMENT.Observation));
      assert.ok(Object.isFrozen(PATIENT_COMPARTMENT_PATHS.Observation));
      assert.throws(() => { (PATIENT_COMPARTMENT_PATHS.Observation as string[]).push('code'); });
    });
  });

  describe('isInPatientCompartment / patientsOf', () => {
    const obs: FhirResource = {
      resourceType: 'Observation', id: 'o', subject: ref('Patient/p1'), performer: [ref('Practitioner/dr'), ref('Patient/p2')],
    };

    it('accepts the Patient itself, by bare id or Patient/<id>', () => {
      const patient: FhirResource = { resourceType: 'Patient', id: 'p1' };
      assert.equal(isInPatientCompartment(patient, 'p1'), true);
      assert.equal(isInPatientCompartment(patient, 'Patient/p1'), true);
      assert.equal(isInPatientCompartment(patient, 'p2'), false);
      assert.equal(isInPatientCompartment(patient, ''), false);
      assert.deepEqual(patientsOf(patient), ['p1']);
    });

    it('follows Patient.link.other', () => {
      const patient: FhirResource = { resourceType: 'Patient', id: 'p9', link: [{ other: ref('Patient/p1'), type: 'seealso' }] };
      assert.equal(isInPatientCompartment(patient, 'p1'), true);
      assert.deepEqual(patientsOf(patient), ['p9', 'p1']);
    });

    it('checks every compartment path, traversing arrays', () => {
      assert.equal(isInPatientCompartment(obs, 'p1'), true);
      assert.equal(isInPatientCompartment(obs, 'p2'), true, 'performer is a compartment param of Observation');
      assert.equal(isInPatientCompartment(obs, 'dr'), false);
      assert.deepEqual(patientsOf(obs), ['p1', 'p2']);
    });

    it('handles each clinical type by its own element', () => {
      const cases: [FhirResource, string][] = [
        [{ resourceType: 'Condition', id: 'c', subject: ref('Patient/a') }, 'a'],
        [{ resourceType: 'Condition', id: 'c', subject: ref('Group/g'), asserter: ref('Patient/a') }, 'a'],
        [{ resourceType: 'Encounter', id: 'e', subject: ref('Patient/a') }, 'a'],
        [{ resourceType: 'MedicationRequest', id: 'm', subject: ref('Patient/a') }, 'a'],
        [{ resourceType: 'AllergyIntolerance', id: 'x', patient: ref('Patient/a') }, 'a'],
        [{ resourceType: 'Immunization', id: 'i', patient: ref('Patient/a') }, 'a'],
        [{ resourceType: 'RelatedPerson', id: 'r', patient: ref('Patient/a') }, 'a'],
        [{ resourceType: 'AuditEvent', id: 'ae', entity: [{ what: ref('Patient/a') }] }, 'a'],
        [{ resourceType: 'AuditEvent', id: 'ae', agent: [{ who: ref('Patient/a') }] }, 'a'],
        [{ resourceType: 'CareTeam', id: 'ct', participant: [{ member: ref('Practitioner/x') }, { member: ref('Patient/a') }] }, 'a'],
        [{ resourceType: 'Procedure', id: 'p', performer: [{ actor: ref('Patient/a') }] }, 'a'],
        [{ resourceType: 'Coverage', id: 'cov', beneficiary: ref('Patient/a') }, 'a'],
        [{ resourceType: 'Appointment', id: 'ap', participant: [{ actor: ref('Location/l') }, { actor: ref('Patient/a') }] }, 'a'],
        [{ resourceType: 'Provenance', id: 'pv', target: [ref('Observation/o'), ref('Patient/a')] }, 'a'],
        [{ resourceType: 'Group', id: 'g', member: [{ entity: ref('Patient/a') }] }, 'a'],
      ];
      for (const [resource, patient] of cases) {
        assert.equal(isInPatientCompartment(resource, patient), true, `${resource.resourceType} ${JSON.stringify(resource)}`);
        assert.equal(isInPatientCompartment(resource, 'other'), false, resource.resourceType);
      }
    });

    it('ignores non-compartment elements, non-Patient targets and unresolvable references', () => {
      assert.equal(isInPatientCompartment({ resourceType: 'Encounter', id: 'e', subject: ref('Group/a') }, 'a'), false);
      assert.equal(isInPatientCompartment({ resourceType: 'Encounter', id: 'e', note: ref('Patient/a') }, 'a'), false);
      assert.equal(isInPatientCompartment({ resourceType: 'Observation', id: 'o', subject: ref('#a') }, 'a'), false);
      assert.equal(isInPatientCompartment({ resourceType: 'Observation', id: 'o', subject: { identifier: { value: 'a' } } }, 'a'), false);
      assert.equal(isInPatientCompartment({ resourceType: 'Observation', id: 'o', subject: ref('x/Patient/a') }, 'a'), false);
      // A Condition's recorder is not a compartment param.
      assert.equal(isInPatientCompartment({ resourceType: 'Condition', id: 'c', recorder: ref('Patient/a') }, 'a'), false);
    });

    it('accepts absolute and versioned references', () => {
      assert.equal(isInPatientCompartment({ resourceType: 'Observation', id: 'o', subject: ref('https://ehr.example/fhir/Patient/a') }, 'a'), true);
      assert.equal(isInPatientCompartment({ resourceType: 'Observation', id: 'o', subject: ref('Patient/a/_history/3') }, 'a'), true);
    });

    it('never puts a Practitioner, Organization or Medication in a compartment', () => {
      const practitioner: FhirResource = { resourceType: 'Practitioner', id: 'a', subject: ref('Patient/a'), patient: ref('Patient/a') };
      assert.equal(isInPatientCompartment(practitioner, 'a'), false);
      assert.deepEqual(patientsOf(practitioner), []);
      assert.equal(isInPatientCompartment({ resourceType: 'Organization', id: 'a' }, 'a'), false);
      assert.equal(isInPatientCompartment({ resourceType: 'Medication', id: 'm', subject: ref('Patient/a') }, 'a'), false);
    });

    it('deduplicates patients across paths', () => {
      const ai: FhirResource = { resourceType: 'AllergyIntolerance', id: 'x', patient: ref('Patient/a'), asserter: ref('Patient/a'), recorder: ref('Patient/b') };
      assert.deepEqual(patientsOf(ai), ['a', 'b']);
    });
  });

  describe('demo data membership', () => {
    const resources = (loadDemoBundle().entry ?? []).map((e) => e.resource!);
    const byId = (type: string, id: string) => resources.find((r) => r.resourceType === type && r.id === id)!;

    it('puts every clinical resource of the demo data in exactly one patient compartment', () => {
      const clinical = ['Encounter', 'Observation', 'Condition', 'MedicationRequest', 'AllergyIntolerance', 'Immunization', 'RelatedPerson'];
      for (const r of resources.filter((x) => clinical.includes(x.resourceType))) {
        assert.equal(patientsOf(r).length, 1, `${r.resourceType}/${r.id}`);
      }
    });

    it('places each data type in the right compartment', () => {
      const expectations: [string, string, string][] = [
        ['Patient', 'pat-1', 'pat-1'],
        ['Encounter', 'enc-1a', 'pat-1'],
        ['Encounter', 'enc-2b', 'pat-2'],
        ['Observation', 'obs-1a-hba1c', 'pat-1'],
        ['Observation', 'obs-2a-hiv-vl', 'pat-2'],
        ['Condition', 'cond-3-asthma', 'pat-3'],
        ['MedicationRequest', 'medreq-2-lisinopril', 'pat-2'],
        ['AllergyIntolerance', 'allergy-1-penicillin', 'pat-1'],
        ['Immunization', 'imm-2-flu', 'pat-2'],
        ['RelatedPerson', 'rp-3-mother', 'pat-3'],
      ];
      for (const [type, id, patient] of expectations) {
        const r = byId(type, id);
        assert.ok(r, `${type}/${id} exists`);
        assert.equal(isInPatientCompartment(r, patient), true, `${type}/${id} in ${patient}`);
        for (const other of ['pat-1', 'pat-2', 'pat-3', 'pat-4'].filter((p) => p !== patient)) {
          assert.equal(isInPatientCompartment(r, other), false, `${type}/${id} not in ${other}`);
        }
      }
    });

    it('keeps practitioners and the organization out of every compartment', () => {
      for (const r of resources.filter((x) => ['Practitioner', 'Organization'].includes(x.resourceType))) {
        assert.equal(patientCompartmentParams(r.resourceType), undefined);
        assert.deepEqual(patientsOf(r), []);
        for (const p of ['pat-1', 'pat-2', 'pat-3', 'pat-4', r.id!]) assert.equal(isInPatientCompartment(r, p), false);
      }
    });
  });

  describe('helpers', () => {
    it('valuesAt flattens arrays at every step', () => {
      const r = { a: [{ b: [{ c: 1 }, { c: [2, 3] }] }, { b: { c: 4 } }, { x: 1 }] };
      assert.deepEqual(valuesAt(r, 'a.b.c'), [1, 2, 3, 4]);
      assert.deepEqual(valuesAt(r, 'a.z'), []);
      assert.deepEqual(valuesAt({ a: null }, 'a'), []);
      assert.deepEqual(valuesAt({}, 'constructor'), []);
    });

    it('parseReference handles relative, absolute, versioned and rejects others', () => {
      assert.deepEqual(parseReference('Patient/pat-1'), { type: 'Patient', id: 'pat-1' });
      assert.deepEqual(parseReference('Patient/pat-1/_history/2'), { type: 'Patient', id: 'pat-1' });
      assert.deepEqual(parseReference('http://x.example/fhir/Encounter/e.1'), { type: 'Encounter', id: 'e.1' });
      for (const bad of ['#c1', 'urn:uuid:0d1c', 'pat-1', 'patient/pat-1', 'a/Patient/pat-1', 'Patient/', 'Patient/a b', '']) {
        assert.equal(parseReference(bad), undefined, bad);
      }
    });

    it('referencesAt skips logical references', () => {
      const r = { performer: [ref('Practitioner/a'), { identifier: { value: 'x' } }, ref('#c')] };
      assert.deepEqual(referencesAt(r, 'performer'), [{ type: 'Practitioner', id: 'a' }]);
    });
  });
});
