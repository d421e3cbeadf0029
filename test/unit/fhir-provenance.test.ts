// The Provenance of a write, from the token that made it.
import assert from 'node:assert/strict';
import { provenanceFor, provenanceTemplate } from '../../server/fhir/provenance.ts';
import type { TokenContext } from '../../server/resource-server/types.ts';

const token = (over: Partial<TokenContext> = {}): TokenContext => ({
  clientId: 'growth-app', sub: 'u-1', issuer: 'https://auth.example.org', jti: 'j', exp: 0, scopes: [], fhirUser: 'Practitioner/dr-1',
  claims: { extensions: { ihe_iua: {
    subject_role: [{ system: 'http://snomed.info/sct', code: '309343006' }], subject_organization: 'Example Hospital', subject_name: 'Dr One',
    purpose_of_use: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT' }],
  } } },
  ...over,
});

describe('fhir: Provenance of writes', () => {
  it('names the user by role and organization, the app, the activity and the purpose of use', () => {
    const p = provenanceFor(provenanceTemplate(token(), 'update', new Date('2026-01-02T03:04:05Z')), { resourceType: 'Observation', id: 'o-1', meta: { versionId: '3' } });
    assert.equal(p.resourceType, 'Provenance');
    assert.match(String(p.id), /^[0-9a-f-]{36}$/);
    assert.deepEqual(p.target, [{ reference: 'Observation/o-1/_history/3' }]);
    assert.equal(p.recorded, '2026-01-02T03:04:05.000Z');
    assert.equal((p.activity as any).coding[0].code, 'UPDATE');
    const [author, app] = p.agent as any[];
    assert.equal(author.who.reference, 'Practitioner/dr-1');
    assert.equal(author.role[0].coding[0].code, '309343006');
    assert.equal(author.onBehalfOf.display, 'Example Hospital');
    assert.equal(app.who.identifier.value, 'growth-app');
    assert.equal((p.reason as any)[0].coding[0].code, 'TREAT');
    assert.equal(JSON.stringify(p).includes('Dr One'), false, 'never the name');
  });

  it('makes the app the author of a backend service\'s write, and leaves out what the token does not say', () => {
    const p = provenanceTemplate(token({ sub: 'growth-app', fhirUser: undefined, claims: {} }), 'create', new Date());
    assert.deepEqual((p.agent as any[]).map((a) => [a.type.coding[0].code, a.who.identifier.value]), [['author', 'growth-app']]);
    assert.equal('reason' in p, false);
  });
});
