import assert from 'node:assert/strict';
import { auditEventForPatient, isRefusedAccess } from '../../server/privacy/audit-agents.ts';

describe('privacy: the audit trail as a patient sees it', () => {
  /** A reader cleared for everything but V. */
  const readable = (labels: unknown) => !JSON.stringify(labels ?? []).includes('"V"');
  const event = {
    resourceType: 'AuditEvent', id: 'a1',
    agent: [
      { type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, requestor: true, name: 'Jane Smith, MD', altId: 'dr.smith',
        who: { identifier: { system: 'https://as.example', value: 'user-uuid' } }, role: [{ coding: [{ code: 'doctor' }] }], policy: ['urn:ietf:params:oauth:jti:j1'],
        purposeOfUse: [{ coding: [{ code: 'TREAT' }] }], network: { address: '10.0.0.7', type: '2' } },
      { requestor: false, who: { reference: 'Practitioner/dr-smith', display: 'Dr Smith' } },
      { type: { coding: [{ system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110150' }] }, requestor: false, who: { identifier: { value: 'growth-chart' } } },
      { type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-RoleClass', code: 'PROV' }] }, requestor: false, who: { display: 'Example Hospital' } },
      { requestor: false, who: { reference: 'Patient/pat-1' } },
    ],
    entity: [{ what: { reference: 'Patient/pat-1' } }],
  };

  it('keeps roles, purposes, the app, the organization and the patient; drops names, ids, usernames, tokens, addresses and Practitioners', () => {
    const seen = auditEventForPatient(event, readable) as any;
    assert.deepEqual(seen.agent[0], { type: event.agent[0].type, role: event.agent[0].role, requestor: true, purposeOfUse: event.agent[0].purposeOfUse });
    assert.deepEqual(seen.agent[1], { requestor: false });
    assert.deepEqual(seen.agent[2].who, { identifier: { value: 'growth-chart' } });
    assert.deepEqual(seen.agent[3].who, { display: 'Example Hospital' });
    assert.deepEqual(seen.agent[4].who, { reference: 'Patient/pat-1' });
    assert.deepEqual(seen.entity, event.entity);
    for (const secret of ['Jane Smith', 'dr.smith', 'user-uuid', 'j1', '10.0.0.7', 'dr-smith']) assert.ok(!JSON.stringify(seen).includes(secret), secret);
    assert.equal(auditEventForPatient({ resourceType: 'Observation', id: 'o' }, readable).id, 'o');
  });

  it('keeps what a search was about, not the request as sent: it can name other patients', () => {
    const request = 'Observation?patient=pat-1,pat-2&code=http://loinc.org|4548-4';
    const searched = {
      ...event,
      entity: [
        { what: { reference: 'Patient/pat-1' }, role: { code: '1' } },
        { type: { code: '2' }, role: { code: '24' }, securityLabel: [{ code: 'PSEUDED' }], description: request, query: Buffer.from(request).toString('base64') },
      ],
    };
    const seen = auditEventForPatient(searched, readable) as any;
    assert.deepEqual(seen.entity, [searched.entity[0], { type: { code: '2' }, role: { code: '24' }, securityLabel: [{ code: 'PSEUDED' }] }]);
    assert.ok(!JSON.stringify(seen).includes('pat-2'));
    assert.ok(!JSON.stringify(seen).includes(Buffer.from(request).toString('base64')));
  });

  it('names no resource the reader may not read (by the labels its entity recorded): its type only, without labels; unlabelled ones as before', () => {
    const read = {
      ...event,
      entity: [
        { what: { reference: 'Patient/pat-1' }, role: { code: '1' } },
        { what: { reference: 'Observation/brca' }, type: { code: '2' }, role: { code: '4' }, securityLabel: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'V' }] },
        { what: { reference: 'Observation/glucose' }, type: { code: '2' }, role: { code: '4' }, securityLabel: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'N' }] },
        { what: { reference: 'Condition/old-row' }, type: { code: '2' }, role: { code: '4' } },
      ],
    };
    assert.deepEqual((auditEventForPatient(read, readable) as any).entity, [
      read.entity[0], { type: { code: '2' }, role: { code: '4' }, description: 'Observation(restricted)' }, read.entity[2], read.entity[3],
    ]);
  });

  it('keeps of other entities the resource and the request id, not details or token and launch identifiers', () => {
    const launched = {
      ...event,
      entity: [
        { what: { reference: 'Patient/pat-1' }, role: { code: '1' } },
        { what: { identifier: { value: 'sha256:abc' } }, role: { code: '13' }, detail: [{ type: 'user', valueString: 'u-smith' }] },
        { what: { identifier: { value: 'urn:ietf:params:oauth:jti:j-1' } }, type: { code: 'UserOauthAgent' } },
        { what: { identifier: { value: 'req-1' } }, type: { code: 'XrequestId' } },
      ],
    };
    assert.deepEqual((auditEventForPatient(launched, readable) as any).entity, [
      launched.entity[0], { role: { code: '13' } }, { type: { code: 'UserOauthAgent' } }, launched.entity[3],
    ]);
  });

  it('tells refused and failed FHIR accesses, which a patient does not see, from the rest', () => {
    assert.equal(isRefusedAccess({ ...event, type: { code: 'rest' }, outcome: '4' }), true);
    assert.equal(isRefusedAccess({ ...event, type: { code: 'rest' }, outcome: '8' }), true);
    assert.equal(isRefusedAccess({ ...event, type: { code: 'rest' }, outcome: '0' }), false);
    assert.equal(isRefusedAccess({ ...event, type: { code: '110100' }, outcome: '4' }), false);
  });
});
