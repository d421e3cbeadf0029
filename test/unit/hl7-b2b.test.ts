import assert from 'node:assert/strict';
import { B2bError, codingFromUdap, iuaFromHl7B2b } from '../../server/smart/hl7-b2b.ts';

const example = {
  version: '1', subject_name: 'Jane Smith, MD', subject_id: 'urn:oid:2.16.840.1.113883.4.6#1234567890',
  subject_role: 'http://nucc.org/provider-taxonomy#207Q00000X', organization_name: 'Example Clinic',
  organization_id: 'https://clinic.example.org/fhir/Organization/1', purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#TREAT'],
};

describe('hl7-b2b to IHE IUA', () => {
  it('maps the UDAP example into ihe_iua codings', () => {
    assert.deepEqual(iuaFromHl7B2b(example), {
      subject_name: 'Jane Smith, MD',
      subject_id: 'urn:oid:2.16.840.1.113883.4.6#1234567890',
      subject_organization: 'Example Clinic',
      subject_organization_id: 'https://clinic.example.org/fhir/Organization/1',
      subject_role: [{ system: 'http://nucc.org/provider-taxonomy', code: '207Q00000X' }],
      purpose_of_use: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT' }],
    });
  });

  it('splits on the last # and keeps unknown systems', () => {
    assert.deepEqual(codingFromUdap('https://x.example/cs#a#b'), { system: 'https://x.example/cs#a', code: 'b' });
    for (const bad of ['TREAT', '#TREAT', 'urn:x#']) assert.throws(() => codingFromUdap(bad), B2bError);
  });

  for (const [name, ext] of [
    ['not an object', 'x'],
    ['no version', { ...example, version: undefined }],
    ['wrong version', { ...example, version: 2 }],
    ['no organization_id', { ...example, organization_id: undefined }],
    ['no purpose_of_use', { ...example, purpose_of_use: [] }],
    ['purpose not a string', { ...example, purpose_of_use: [1] }],
    ['purpose without system', { ...example, purpose_of_use: ['TREAT'] }],
    ['empty subject_name', { ...example, subject_name: '' }],
    ['the privacy-officer role, which only the authorization server grants', { ...example, subject_role: 'urn:smart-auth:security-role#privacy-officer' }],
  ] as const) {
    it(`refuses ${name}`, () => assert.throws(() => iuaFromHl7B2b(ext), B2bError));
  }
});
