// FHIR R4 validation of resources the bundled store is asked to keep.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { validationIssues } from '../../server/fhir/validate.ts';
import type { FhirBundle } from '../../server/fhir/types.ts';

const OBSERVATION = { resourceType: 'Observation', status: 'final', code: { text: 'weight' }, subject: { reference: 'Patient/pat-1' } };

describe('FHIR R4 validation (bundled store)', function () {
  this.timeout(20_000);

  const invalid: [string, Record<string, unknown>, string[]][] = [
    ['the stumble: a number for a code, a string for a Reference, no code',
      { resourceType: 'Observation', status: 42, subject: 'not-a-reference' }, ['Observation.status', 'Observation.subject', 'Observation.code']],
    ['a wrong datatype (string for boolean)', { resourceType: 'Patient', active: 'yes' }, ['Patient.active']],
    ['a malformed date', { resourceType: 'Patient', birthDate: '1990-13-45' }, ['Patient.birthDate']],
    ['an unknown element', { ...OBSERVATION, colour: 'red' }, ['Observation.colour']],
    ['an unknown element inside a datatype', { ...OBSERVATION, code: { text: 'weight', label: 'x' } }, ['Observation.code.label']],
    ['a missing required element (Observation.code)', { resourceType: 'Observation', status: 'final' }, ['Observation.code']],
    ['a missing required element (Basic.code)', { resourceType: 'Basic' }, ['Basic.code']],
    ['an array where one value belongs', { ...OBSERVATION, status: ['final'] }, ['Observation.status']],
    ['one value where an array belongs', { resourceType: 'Patient', name: { family: 'Shaw' } }, ['Patient.name']],
    ['a reference that is not Type/id', { ...OBSERVATION, subject: { reference: 'not a reference' } }, ['Observation.subject.reference']],
    ['a reference with a lower-case type', { ...OBSERVATION, subject: { reference: 'patient/pat-1' } }, ['Observation.subject.reference']],
    ['a bad reference in an array', { ...OBSERVATION, performer: [{ reference: 'Practitioner/dr-smith' }, { reference: 'Practitioner/' }] }, ['Observation.performer[1].reference']],
    ['meta.security that is not a list of Codings', { resourceType: 'Basic', code: { text: 'x' }, meta: { security: 'R' } }, ['Basic.meta.security']],
    ['an unknown resource type', { resourceType: 'Foo' }, []],
  ];
  for (const [name, resource, locations] of invalid) {
    it(`refuses ${name}`, () => {
      const issues = validationIssues(resource);
      assert.ok(issues.length > 0, `no issue for ${JSON.stringify(resource)}`);
      for (const i of issues) {
        assert.equal(i.severity, 'error');
        assert.ok(i.code && i.details?.text, JSON.stringify(i));
      }
      const found = issues.flatMap((i) => i.expression ?? []);
      for (const location of locations) assert.ok(found.includes(location), `no issue at ${location}: ${JSON.stringify(issues)}`);
    });
  }

  it('reports a string given for a Reference once, not once per character', () => {
    const issues = validationIssues({ ...OBSERVATION, subject: 'not-a-reference' });
    assert.deepEqual(issues.map((i) => i.expression), [['Observation.subject']]);
  });

  const valid: [string, Record<string, unknown>][] = [
    ['an Observation', OBSERVATION],
    ['absolute, contained, urn:uuid and versioned references', {
      ...OBSERVATION, contained: [{ resourceType: 'Practitioner', id: 'p1' }],
      performer: [{ reference: '#p1' }, { reference: 'https://example.org/fhir/Practitioner/9' }, { reference: 'urn:uuid:1f1c2e04-5d1e-4b36-9f0a-3a4b3f8c1d2e' }],
      basedOn: [{ reference: 'ServiceRequest/sr-1/_history/2' }],
    }],
    ['a Basic with labels', { resourceType: 'Basic', code: { text: 'note' }, meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }] } }],
  ];
  for (const [name, resource] of valid) {
    it(`accepts ${name}`, () => assert.deepEqual(validationIssues(resource), []));
  }

  it('accepts every demo resource', () => {
    const bundle = JSON.parse(readFileSync(new URL('../../server/fhir/demo-data.json', import.meta.url), 'utf8')) as FhirBundle;
    assert.ok((bundle.entry ?? []).length > 40);
    for (const entry of bundle.entry ?? []) {
      const resource = entry.resource as Record<string, unknown>;
      assert.deepEqual(validationIssues(resource), [], `${resource.resourceType}/${resource.id}`);
    }
  });
});
