// The BALP AuditEvent builders: a guarded FHIR access against the IHE BALP R4 read example
// (server-recorded PatientRead with OAUTHaccessTokenUse.Comprehensive), every interaction's action and agent roles, one event
// per patient, refused and failed outcomes, backend services, the request-id and query entities,
// the authorization server's security events, and that no secret ever reaches an event.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import type { Coding } from '../../server/hcs/codes.ts';
import type { AccessAudit, AuditEvent } from '../../server/audit/types.ts';
import {
  accessAuditEvents, accessTokenIssued, balpProfile, clientRegistrationChanged, consentDecision, ehrLaunchCreated, emergencyOverrideStarted, loginFailed,
  loginSucceeded, logout, opaqueToken, signingKeyRotated, tokenIntrospected, tokenRevoked, userSecurityChanged,
  type AuditAgent, type AuditEntity, type AuditUser,
} from '../../server/audit/balp.ts';

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const PARTICIPATION = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
const USER_AGENT_TYPES = 'https://profiles.ihe.net/ITI/BALP/CodeSystem/UserAgentTypes';
const ISSUER = 'https://auth.example.org';
const BASE = 'https://fhir.example.org/r4';
const JTI = '79ba5778-898c-4fd2-b924-b033a65e5d0d';
const REQUEST_ID = 'beae41e1-659a-4d88-a54f-4521a22de807';
const TREAT = { system: ACT_REASON, code: 'TREAT' };
const DOCTOR = { system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', code: 'doctor' };
const N = { system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'N' };

/** The reference "R4 read (server-recorded; PatientRead + OAUTHaccessTokenUse.Comprehensive)" BALP example, verbatim. */
const REFERENCE_READ = JSON.parse(`{"resourceType":"AuditEvent","id":"balp-read-1","meta":{"profile":["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead",
  "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.OAUTHaccessTokenUse.Comprehensive"]},
 "type":{"system":"http://terminology.hl7.org/CodeSystem/audit-event-type","code":"rest","display":"Restful Operation"},
 "subtype":[{"system":"http://hl7.org/fhir/restful-interaction","code":"read","display":"read"}],
 "action":"R","recorded":"2025-06-02T14:03:11.482Z","outcome":"0",
 "agent":[
  {"type":{"coding":[{"system":"http://dicom.nema.org/resources/ontology/DCM","code":"110153","display":"Source Role ID"}]},"requestor":false,
   "who":{"reference":"Device/fhir-rs"},"network":{"address":"https://fhir.example.org/r4","type":"5"}},
  {"type":{"coding":[{"system":"http://dicom.nema.org/resources/ontology/DCM","code":"110152","display":"Destination Role ID"}]},"requestor":false,
   "who":{"identifier":{"value":"growth-app"}},"network":{"address":"203.0.113.17","type":"2"}},
  {"type":{"coding":[{"system":"http://dicom.nema.org/resources/ontology/DCM","code":"110150","display":"Application"}]},"requestor":false,
   "who":{"identifier":{"system":"https://auth.example.org","value":"growth-app"}}},
  {"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ParticipationType","code":"IRCP","display":"information recipient"},
                     {"system":"https://profiles.ihe.net/ITI/BALP/CodeSystem/UserAgentTypes","code":"UserOauthAgent"}]},"requestor":true,
   "who":{"identifier":{"system":"https://auth.example.org","value":"u-8c1f"}},"name":"Jane Smith, MD",
   "role":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/practitioner-role","code":"doctor"}]}],
   "policy":["urn:ietf:params:oauth:jti:79ba5778-898c-4fd2-b924-b033a65e5d0d"],
   "purposeOfUse":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActReason","code":"TREAT"}]}]}],
 "source":{"site":"fhir.example.org","observer":{"reference":"Device/fhir-rs"},
   "type":[{"system":"http://terminology.hl7.org/CodeSystem/security-source-type","code":"4","display":"Application Server"}]},
 "entity":[
  {"what":{"reference":"Patient/123"},"type":{"system":"http://terminology.hl7.org/CodeSystem/audit-entity-type","code":"1"},
   "role":{"system":"http://terminology.hl7.org/CodeSystem/object-role","code":"1","display":"Patient"}},
  {"what":{"reference":"Observation/obs-9/_history/2"},"type":{"system":"http://terminology.hl7.org/CodeSystem/audit-entity-type","code":"2"},
   "role":{"system":"http://terminology.hl7.org/CodeSystem/object-role","code":"4","display":"Domain Resource"},
   "securityLabel":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"N"}]},
  {"what":{"identifier":{"value":"beae41e1-659a-4d88-a54f-4521a22de807"}},
   "type":{"system":"https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType","code":"XrequestId"}}]}`);

/** The reference search example's query entity (same section). */
const REFERENCE_QUERY = {
  description: 'GET https://fhir.example.org/r4/Observation?patient=123&category=laboratory&_include=Observation:performer',
  query: 'R0VUIGh0dHBzOi8vZmhpci5leGFtcGxlLm9yZy9yNC9PYnNlcnZhdGlvbj9wYXRpZW50PTEyMyZjYXRlZ29yeT1sYWJvcmF0b3J5Jl9pbmNsdWRlPU9ic2VydmF0aW9uOnBlcmZvcm1lcg==',
};

const user = { issuer: ISSUER, sub: 'u-8c1f', name: 'Jane Smith, MD', roles: [DOCTOR] };

function access(over: Partial<AccessAudit> = {}): AccessAudit {
  return {
    recorded: new Date('2025-06-02T14:03:11.482Z'),
    requestId: REQUEST_ID,
    status: 200,
    method: 'GET',
    url: 'Observation/obs-9/_history/2',
    interaction: 'read',
    type: 'Observation',
    resources: ['Observation/obs-9/_history/2'],
    patients: ['123'],
    server: { base: BASE },
    client: { id: 'growth-app', address: '203.0.113.17' },
    user,
    purposeOfUse: [TREAT],
    jti: JTI,
    securityLabels: [N],
    ...over,
  };
}

const agentsOf = (e: AuditEvent) => e.agent as AuditAgent[];
const entitiesOf = (e: AuditEvent) => e.entity as AuditEntity[];
const codesOf = (a: { type?: { coding?: Coding[] } }) => (a.type?.coding ?? []).map((c) => `${c.system}|${c.code}`).sort();
const has = (a: AuditAgent, system: string, code: string) => codesOf(a).includes(`${system}|${code}`);
const agentOfType = (e: AuditEvent, system: string, code: string) => agentsOf(e).filter((a) => has(a, system, code));
const clientAgent = (e: AuditEvent) => agentsOf(e).find((a) => a.network?.type === '2')!;
const serverAgent = (e: AuditEvent) => agentsOf(e).find((a) => a.network?.type === '5')!;
const userAgentOf = (e: AuditEvent) => agentsOf(e).find((a) => has(a, USER_AGENT_TYPES, 'UserOauthAgent'));
const profilesOf = (e: AuditEvent) => ((e.meta as { profile?: string[] } | undefined)?.profile ?? []);
const sysCode = (c: Coding | undefined) => c && { system: c.system, code: c.code };
const patientEntities = (e: AuditEvent) => entitiesOf(e).filter((x) => x.role?.code === '1' && x.type?.code === '1');
const decoded = (base64: string) => Buffer.from(base64, 'base64').toString('utf8');
const subtypeOf = (e: AuditEvent) => (e.subtype as Coding[] | undefined)?.map(sysCode);

describe('BALP AuditEvents of a guarded FHIR access', () => {
  describe('against the reference R4 read example', () => {
    const [event] = accessAuditEvents(access());

    it('has the example\'s type, subtype, action, recorded and outcome', () => {
      assert.equal(event.resourceType, 'AuditEvent');
      assert.deepEqual(event.type, REFERENCE_READ.type);
      assert.deepEqual(event.subtype, REFERENCE_READ.subtype);
      assert.equal(event.action, REFERENCE_READ.action);
      assert.equal(event.recorded, REFERENCE_READ.recorded);
      assert.equal(event.outcome, REFERENCE_READ.outcome);
      assert.equal(event.outcomeDesc, undefined);
    });

    it('has the example\'s agents, type codes, requestor flags and network', () => {
      const mine = agentsOf(event);
      const reference = REFERENCE_READ.agent as AuditAgent[];
      assert.deepEqual(mine.map(codesOf).sort(), reference.map(codesOf).sort(), 'the same agents, by type');
      for (const expected of reference) {
        const actual = mine.find((a) => codesOf(a).join() === codesOf(expected).join())!;
        assert.equal(actual.requestor, expected.requestor, codesOf(expected).join());
        assert.deepEqual(actual.network, expected.network, codesOf(expected).join());
        for (const field of ['name', 'role', 'policy', 'purposeOfUse'] as const) assert.deepEqual(actual[field], expected[field], field);
        // The server is identified by its base URL here, not by a Device resource.
        if (!expected.who?.reference) assert.deepEqual(actual.who, expected.who);
      }
      assert.equal(serverAgent(event).who?.display, BASE);
    });

    it('has the example\'s source site and type (the observer is the FHIR base)', () => {
      const source = event.source as { site: string; observer: { display: string }; type: Coding[] };
      assert.equal(source.site, REFERENCE_READ.source.site);
      assert.deepEqual(source.type, REFERENCE_READ.source.type);
      assert.deepEqual(source.observer, { display: BASE });
    });

    it('has the example\'s entities: patient, data with labels, X-Request-Id', () => {
      const mine = entitiesOf(event);
      const reference = REFERENCE_READ.entity as AuditEntity[];
      assert.equal(mine.length, reference.length);
      mine.forEach((actual, i) => {
        const expected = reference[i];
        assert.deepEqual(actual.what, expected.what);
        assert.deepEqual(sysCode(actual.type), sysCode(expected.type));
        assert.deepEqual(sysCode(actual.role), sysCode(expected.role));
        assert.deepEqual(actual.securityLabel, expected.securityLabel);
      });
    });

    it('claims PatientRead and the OAuth token-use profile (Minimal; Comprehensive derives from it)', () => {
      assert.deepEqual(profilesOf(event), [REFERENCE_READ.meta.profile[0], balpProfile('IHE.BasicAudit.OAUTHaccessTokenUse.Minimal')]);
    });
  });

  describe('the BALP table: action and agent roles per interaction', () => {
    const table: [interaction: string, action: string, client: string, server: string, profile?: string][] = [
      ['read', 'R', '110152', '110153', 'PatientRead'],
      ['vread', 'R', '110152', '110153', 'PatientRead'],
      ['history-instance', 'R', '110152', '110153'],
      ['history-type', 'R', '110153', '110152'],
      ['history-system', 'R', '110153', '110152'],
      ['search-type', 'E', '110153', '110152', 'PatientQuery'],
      ['search-system', 'E', '110153', '110152', 'PatientQuery'],
      ['create', 'C', '110153', '110152', 'PatientCreate'],
      ['update', 'U', '110153', '110152', 'PatientUpdate'],
      ['patch', 'U', '110153', '110152', 'PatientUpdate'],
      ['delete', 'D', '110150', 'custodian', 'PatientDelete'],
      ['batch', 'E', '110153', '110152'],
      ['transaction', 'E', '110153', '110152'],
      ['operation', 'E', '110153', '110152'],
      ['capabilities', 'E', '110153', '110152'],
    ];
    for (const [interaction, action, client, server, profile] of table) {
      it(`${interaction}: action ${action}, client ${client}, server ${server}`, () => {
        const [event] = accessAuditEvents(access({ interaction }));
        assert.deepEqual(event.subtype, [{ system: 'http://hl7.org/fhir/restful-interaction', code: interaction, display: interaction }]);
        assert.equal(event.action, action);
        assert.deepEqual(clientAgent(event).type?.coding?.map((c) => c.code), [client]);
        assert.deepEqual(serverAgent(event).type?.coding?.map((c) => c.code), [server]);
        assert.equal(clientAgent(event).network?.address, '203.0.113.17');
        assert.deepEqual(serverAgent(event).network, { address: BASE, type: '5' });
        const written = ['C', 'U', 'D'].includes(action);
        assert.ok(has(userAgentOf(event)!, PARTICIPATION, written ? 'AUT' : 'IRCP'), 'writes: author (BALP DataSources); reads: information recipient');
        assert.equal(agentOfType(event, DCM, '110150').length, 1, 'one app agent');
        assert.deepEqual(profilesOf(event), [...(profile ? [balpProfile(`IHE.BasicAudit.${profile}`)] : []), balpProfile('IHE.BasicAudit.OAUTHaccessTokenUse.Minimal')]);
      });
    }

    it('delete: the client is the Application agent (issuer and client_id), the server the provenance custodian', () => {
      const [event] = accessAuditEvents(access({ interaction: 'delete', method: 'DELETE', url: 'Observation/obs-9', resources: ['Observation/obs-9'] }));
      const app = agentOfType(event, DCM, '110150');
      assert.equal(app.length, 1);
      assert.deepEqual(app[0].who, { identifier: { system: ISSUER, value: 'growth-app' } });
      assert.deepEqual(app[0].network, { address: '203.0.113.17', type: '2' });
      assert.deepEqual(serverAgent(event).type?.coding, [{ system: 'http://terminology.hl7.org/CodeSystem/provenance-participant-type', code: 'custodian', display: 'Custodian' }]);
      assert.deepEqual(entitiesOf(event)[1].what, { reference: 'Observation/obs-9' });
    });

    it('the data entity is one per resource, object-role 4, for create, update and delete', () => {
      const [event] = accessAuditEvents(access({ interaction: 'transaction', method: 'POST', url: '', resources: ['Observation/a', 'Observation/b'] }));
      const data = entitiesOf(event).filter((x) => x.role?.code === '4');
      assert.deepEqual(data.map((x) => x.what?.reference), ['Observation/a', 'Observation/b']);
      assert.ok(data.every((x) => x.type?.code === '2'));
    });
  });

  describe('one event per patient', () => {
    const search = access({
      interaction: 'search-type', url: 'Observation?category=laboratory', resources: ['Observation/a', 'Observation/b', 'Observation/c'],
      patients: ['p1', 'p2', 'p3', 'p2'],
    });

    it('records one event per patient of a multi-patient search: ids distinct, all else equal but the patient entity', () => {
      const list = accessAuditEvents(search);
      assert.equal(list.length, 3, 'each patient once');
      assert.equal(new Set(list.map((e) => e.id)).size, 3);
      assert.deepEqual(list.map((e) => patientEntities(e).map((x) => x.what?.reference)), [['Patient/p1'], ['Patient/p2'], ['Patient/p3']]);
      const rest = list.map((e) => ({ ...e, id: undefined, entity: entitiesOf(e).filter((x) => x.role?.code !== '1') }));
      assert.deepEqual(rest[1], rest[0]);
      assert.deepEqual(rest[2], rest[0]);
      assert.ok(list.every((e) => profilesOf(e).includes(balpProfile('IHE.BasicAudit.PatientQuery'))));
    });

    it('never records search results, only the query', () => {
      const [event] = accessAuditEvents(search);
      assert.ok(entitiesOf(event).every((x) => !x.what?.reference?.startsWith('Observation/')));
    });

    it('the events share no objects (one can be changed without the others)', () => {
      const [a, b] = accessAuditEvents(search);
      agentsOf(a)[0].requestor = true;
      entitiesOf(a)[1].description = 'changed';
      assert.equal(agentsOf(b)[0].requestor, false);
      assert.notEqual(entitiesOf(b)[1].description, 'changed');
    });

    it('records exactly one event without a patient entity when no patient is involved', () => {
      const list = accessAuditEvents(access({ interaction: 'search-type', url: 'Organization?name=x', resources: ['Organization/o'], patients: [] }));
      assert.equal(list.length, 1);
      assert.deepEqual(patientEntities(list[0]), []);
      assert.deepEqual(profilesOf(list[0]), [balpProfile('IHE.BasicAudit.Query'), balpProfile('IHE.BasicAudit.OAUTHaccessTokenUse.Minimal')]);
    });
  });

  describe('outcomes', () => {
    it('a refused read (403): minor failure with the status, no RESTful profile claimed', () => {
      const [event] = accessAuditEvents(access({ status: 403, resources: [], patients: ['123'] }));
      assert.equal(event.outcome, '4');
      assert.equal(event.outcomeDesc, '403 Forbidden');
      assert.deepEqual(profilesOf(event), [balpProfile('IHE.BasicAudit.OAUTHaccessTokenUse.Minimal')]);
      assert.equal(event.action, 'R');
    });

    it('a hidden read (404): minor failure; the target is taken from the URL', () => {
      const [event] = accessAuditEvents(access({ status: 404, url: 'Observation/obs-9', resources: [], patients: [] }));
      assert.equal(event.outcome, '4');
      assert.equal(event.outcomeDesc, '404 Not Found');
      assert.deepEqual(entitiesOf(event).map((x) => x.what?.reference).filter(Boolean), ['Observation/obs-9']);
    });

    it('a failed upstream (502): serious failure', () => {
      const [event] = accessAuditEvents(access({ status: 502, resources: [] }));
      assert.equal(event.outcome, '8');
      assert.equal(event.outcomeDesc, '502 Bad Gateway');
    });

    it('a request refused before classification (401, no token): action E, no subtype, the request as a query', () => {
      const [event] = accessAuditEvents(access({
        status: 401, interaction: undefined, type: undefined, url: 'Patient/123/$everything', resources: [], patients: [],
        user: undefined, jti: undefined, purposeOfUse: [], client: { address: '198.51.100.4' },
      }));
      assert.equal(event.action, 'E');
      assert.equal(event.subtype, undefined);
      assert.equal(event.outcome, '4');
      assert.equal(event.outcomeDesc, '401 Unauthorized');
      assert.equal(event.meta, undefined, 'no profile claimed');
      assert.deepEqual(agentsOf(event).map((a) => a.network), [{ address: '198.51.100.4', type: '2' }, { address: BASE, type: '5' }]);
      assert.equal(decoded(entitiesOf(event)[0].query!), `GET ${BASE}/Patient/123/$everything`);
    });
  });

  it('a backend service (no user): the jti and purposes of use on the app agent, which is the requestor', () => {
    const [event] = accessAuditEvents(access({ user: undefined, client: { id: 'bulk-exporter', address: '10.0.0.5' } }));
    const app = agentOfType(event, DCM, '110150')[0];
    assert.equal(app.requestor, true);
    assert.deepEqual(app.policy, [`urn:ietf:params:oauth:jti:${JTI}`]);
    assert.deepEqual(app.purposeOfUse, [{ coding: [TREAT] }]);
    assert.equal(userAgentOf(event), undefined);
    assert.deepEqual(agentsOf(event).filter((a) => a.requestor).length, 1);
    assert.ok(profilesOf(event).includes(balpProfile('IHE.BasicAudit.OAUTHaccessTokenUse.Minimal')));
  });

  it('with a user, the jti is on the user agent only', () => {
    const [event] = accessAuditEvents(access());
    assert.deepEqual(agentsOf(event).filter((a) => a.policy).map((a) => a.policy), [[`urn:ietf:params:oauth:jti:${JTI}`]]);
  });

  it('the user\'s organization as its own agent; the name only when given', () => {
    const [event] = accessAuditEvents(access({ user: { issuer: ISSUER, sub: 'u-1', roles: [], organization: 'Central Hospital', organizationId: 'urn:oid:1.2.3.4' } }));
    const org = agentOfType(event, 'http://terminology.hl7.org/CodeSystem/v3-RoleClass', 'PROV');
    assert.deepEqual(org, [{ type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-RoleClass', code: 'PROV', display: 'healthcare provider' }] }, requestor: false, who: { identifier: { value: 'urn:oid:1.2.3.4' }, display: 'Central Hospital' } }]);
    const person = userAgentOf(event)!;
    assert.equal('name' in person, false);
    assert.equal('role' in person, false, 'no empty role list');
  });

  it('records the X-Request-Id as a BALP transaction entity, and none without one', () => {
    const [event] = accessAuditEvents(access());
    const transaction = entitiesOf(event).find((x) => x.type?.code === 'XrequestId')!;
    assert.deepEqual(transaction, {
      what: { identifier: { value: REQUEST_ID } },
      type: { system: 'https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType', code: 'XrequestId', display: 'transport specific unique identifier where http X-Request-Id is used' },
    });
    const [without] = accessAuditEvents(access({ requestId: '' }));
    assert.equal(entitiesOf(without).some((x) => x.type?.code === 'XrequestId'), false);
  });

  it('records a search as a query entity: base64 of the request as sent, the request as description, no what', () => {
    const [event] = accessAuditEvents(access({
      interaction: 'search-type', url: 'Observation?patient=123&category=laboratory&_include=Observation:performer', resources: ['Observation/x'],
    }));
    const query = entitiesOf(event).find((x) => x.role?.code === '24')!;
    assert.equal(query.query, REFERENCE_QUERY.query, 'the reference example\'s base64, byte for byte');
    assert.equal(query.description, REFERENCE_QUERY.description);
    assert.equal(query.what, undefined);
    assert.equal(query.type?.code, '2');
    assert.deepEqual(query.securityLabel, [N]);
    assert.equal('name' in query, false, 'sev-1: name or query, not both');
  });

  it('keeps malicious query patterns as sent, but redacts credential parameters', () => {
    const [event] = accessAuditEvents(access({ interaction: 'search-type', url: "Patient?name=x'%20OR%201=1&Access_Token=abc123&_count=5" }));
    const query = entitiesOf(event).find((x) => x.role?.code === '24')!;
    assert.equal(decoded(query.query!), `GET ${BASE}/Patient?name=x'%20OR%201=1&Access_Token=redacted&_count=5`);
  });
});

describe('security events of the authorization server', () => {
  const jane: AuditUser = { sub: 'u-8c1f', name: 'Jane Smith, MD', roles: [DOCTOR], organization: 'Central Hospital', organizationId: 'urn:oid:1.2.3.4' };
  const at = new Date('2025-06-02T14:00:00Z');
  const asAgent = (e: AuditEvent) => agentOfType(e, USER_AGENT_TYPES, 'AuthzOauthService')[0];
  const detailsOf = (x: AuditEntity) => Object.fromEntries((x.detail ?? []).map((d) => [d.type, d.valueString]));

  const assertSecuritySource = (e: AuditEvent) =>
    assert.deepEqual(e.source, { observer: { display: ISSUER }, type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '6', display: 'Security Server' }] });

  it('loginSucceeded: DICOM 110114 User Authentication / 110122 Login, success; the user, the app, this server', () => {
    const e = loginSucceeded({ recorded: at, issuer: ISSUER, address: '203.0.113.17', user: jane, clientId: 'growth-app' });
    assert.deepEqual(sysCode(e.type as Coding), { system: DCM, code: '110114' });
    assert.deepEqual(subtypeOf(e), [{ system: DCM, code: '110122' }]);
    assert.equal(e.action, 'E');
    assert.equal(e.outcome, '0');
    const person = agentsOf(e)[0];
    assert.deepEqual(codesOf(person), ['http://terminology.hl7.org/CodeSystem/extra-security-role-type|humanuser']);
    assert.deepEqual(person.who, { identifier: { system: ISSUER, value: 'u-8c1f' } });
    assert.equal(person.requestor, true);
    assert.deepEqual(agentOfType(e, DCM, '110150')[0].network, { address: '203.0.113.17', type: '2' }, 'the address is the app\'s');
    assert.deepEqual(asAgent(e).network, { address: ISSUER, type: '5' });
    assert.ok(has(asAgent(e), 'http://terminology.hl7.org/CodeSystem/extra-security-role-type', 'authserver'));
    assert.equal(agentOfType(e, 'http://terminology.hl7.org/CodeSystem/v3-RoleClass', 'PROV').length, 1);
    assertSecuritySource(e);
  });

  it('loginFailed: 110114 / 110122, minor failure; names the user name tried (altId), never the password', () => {
    const e = loginFailed({ recorded: at, issuer: ISSUER, address: '198.51.100.9', username: 'jsmith', reason: 'unknown user or wrong password' });
    assert.deepEqual(subtypeOf(e), [{ system: DCM, code: '110122' }]);
    assert.equal(e.outcome, '4');
    assert.equal(e.outcomeDesc, 'unknown user or wrong password');
    const person = agentsOf(e)[0];
    assert.equal(person.altId, 'jsmith');
    assert.deepEqual(person.who, { display: 'jsmith' });
    assert.deepEqual(person.network, { address: '198.51.100.9', type: '2' }, 'without an app, the address is the person\'s');
    const known = loginFailed({ recorded: at, issuer: ISSUER, username: 'jsmith', sub: 'u-8c1f' });
    assert.deepEqual(agentsOf(known)[0].who, { identifier: { system: ISSUER, value: 'u-8c1f' } });
    assert.equal(known.outcomeDesc, 'authentication failed');
  });

  it('logout: 110114 / 110123 Logout', () => {
    const e = logout({ recorded: at, issuer: ISSUER, user: jane });
    assert.deepEqual(sysCode(e.type as Coding), { system: DCM, code: '110114' });
    assert.deepEqual(subtypeOf(e), [{ system: DCM, code: '110123' }]);
    assert.equal(e.outcome, '0');
    assert.deepEqual(agentsOf(e)[0].who, { identifier: { system: ISSUER, value: 'u-8c1f' } });
  });

  it('a second factor: the method (amr) as an entity detail, on success and failure', () => {
    const ok = loginSucceeded({ recorded: at, issuer: ISSUER, user: jane, amr: ['otp'] });
    assert.deepEqual(detailsOf(entitiesOf(ok)[0]), { amr: 'otp' });
    const failed = loginFailed({ recorded: at, issuer: ISSUER, username: 'jsmith', sub: 'u-8c1f', amr: ['hwk'], reason: 'passkey not valid' });
    assert.equal(failed.outcome, '4');
    assert.deepEqual(detailsOf(entitiesOf(failed)[0]), { amr: 'hwk' });
    assert.deepEqual(entitiesOf(loginSucceeded({ recorded: at, issuer: ISSUER, user: jane })), [], 'a password login names no method, as before');
  });

  it('a session ended from elsewhere: 110123 Logout with the session kind and why', () => {
    const e = logout({ recorded: at, issuer: ISSUER, user: jane, session: { kind: 'sign-in', reason: 'password changed' } });
    assert.deepEqual(subtypeOf(e), [{ system: DCM, code: '110123' }]);
    assert.deepEqual(detailsOf(entitiesOf(e)[0]), { session: 'sign-in', reason: 'password changed' });
  });

  it('userSecurityChanged: 110113 Security Alert / 110137 User Security Attributes Changed, the user as security user entity', () => {
    const e = userSecurityChanged({ recorded: at, issuer: ISSUER, address: '203.0.113.17', user: jane, change: 'create', what: 'totp' });
    assert.deepEqual(sysCode(e.type as Coding), { system: DCM, code: '110113' });
    assert.deepEqual(subtypeOf(e), [{ system: DCM, code: '110137' }]);
    assert.equal(e.action, 'C');
    assert.equal(e.outcome, '0');
    assert.deepEqual(agentsOf(e)[0].who, { identifier: { system: ISSUER, value: 'u-8c1f' } });
    assert.deepEqual(agentsOf(e)[0].network, { address: '203.0.113.17', type: '2' });
    const entity = entitiesOf(e)[0];
    assert.deepEqual(entity.what, { identifier: { system: ISSUER, value: 'u-8c1f' } });
    assert.equal(entity.role?.code, '11');
    assert.deepEqual(detailsOf(entity), { changed: 'totp' });
    const admin = userSecurityChanged({ recorded: at, issuer: ISSUER, user: jane, change: 'update', what: 'password', byAdministrator: true });
    assert.equal(admin.action, 'U');
    assert.equal(agentsOf(admin).length, 1, 'an administrator at the CLI: this server is the requestor');
    assert.equal(agentsOf(admin)[0].requestor, true);
    assert.deepEqual(detailsOf(entitiesOf(admin)[0]), { changed: 'password', by: 'administrator' });
    assertSecuritySource(e);
  });

  describe('accessTokenIssued (IUA ITI-71, BALP AuditIUAgetAccessToken)', () => {
    const issued = accessTokenIssued({
      recorded: at, issuer: ISSUER, address: '203.0.113.17', clientId: 'growth-app', grantType: 'authorization_code', scope: 'launch/patient patient/Observation.rs',
      jti: JTI, user: jane, patient: '123', purposeOfUse: [TREAT], expiresIn: 3600,
    });

    it('is 110114 User Authentication / urn:ihe:event-type-code ITI-71, action E, success', () => {
      assert.deepEqual(issued.type, { system: DCM, code: '110114', display: 'User Authentication' });
      assert.deepEqual(issued.subtype, [{ system: 'urn:ihe:event-type-code', code: 'ITI-71', display: 'Get Access Token' }]);
      assert.equal(issued.action, 'E');
      assert.equal(issued.outcome, '0');
      assertSecuritySource(issued);
    });

    it('has the client (110150, network), the auth-server (AuthzOauthService, network) and the user (IRCP, jti)', () => {
      const [client, server, person] = agentsOf(issued);
      assert.deepEqual(codesOf(client), [`${DCM}|110150`]);
      assert.deepEqual(client.who, { identifier: { system: ISSUER, value: 'growth-app' } });
      assert.deepEqual(client.network, { address: '203.0.113.17', type: '2' });
      assert.ok(has(server, USER_AGENT_TYPES, 'AuthzOauthService'));
      assert.deepEqual(server.network, { address: ISSUER, type: '5' });
      assert.ok(has(person, PARTICIPATION, 'IRCP'));
      assert.equal(person.requestor, true);
      assert.deepEqual(person.policy, [`urn:ietf:params:oauth:jti:${JTI}`]);
      assert.deepEqual(person.purposeOfUse, [{ coding: [TREAT] }]);
      assert.equal(person.network, undefined, 'users are not network devices');
      assert.equal(agentsOf(issued).length, 3);
    });

    it('records the token request (query, no secrets) and the token issued with its key values', () => {
      const [request, response] = entitiesOf(issued);
      assert.deepEqual([request.type?.code, request.role?.code, request.what], ['2', '24', undefined]);
      assert.equal(decoded(request.query!), 'grant_type=authorization_code&client_id=growth-app&scope=launch%2Fpatient+patient%2FObservation.rs');
      assert.deepEqual([response.type?.code, response.role?.code], ['2', '13']);
      assert.deepEqual(response.what, { identifier: { value: `urn:ietf:params:oauth:jti:${JTI}` } });
      assert.deepEqual(detailsOf(response), {
        grant_type: 'authorization_code', client_id: 'growth-app', sub: 'u-8c1f', patient: '123', purpose_of_use: `${ACT_REASON}|TREAT`,
        scope: 'launch/patient patient/Observation.rs', expires_in: '3600',
      });
    });

    it('on refresh: grant type refresh_token; a backend token has no user and the client is the requestor', () => {
      const refreshed = accessTokenIssued({ recorded: at, issuer: ISSUER, clientId: 'growth-app', grantType: 'refresh_token', scope: 'patient/Observation.rs', jti: 'j2', user: jane });
      assert.equal(detailsOf(entitiesOf(refreshed)[1]).grant_type, 'refresh_token');
      const backend = accessTokenIssued({ recorded: at, issuer: ISSUER, clientId: 'bulk', grantType: 'client_credentials', scope: 'system/*.rs', jti: 'j3' });
      assert.equal(agentsOf(backend).length, 2);
      assert.equal(agentsOf(backend)[0].requestor, true);
    });
  });

  it('tokenIntrospected: 110114 / ITI-102 Introspect Token; an inactive token is a minor failure', () => {
    const active = tokenIntrospected({ recorded: at, issuer: ISSUER, address: '10.0.0.2', callerId: 'fhir-rs', active: true, token: { jti: JTI }, clientId: 'growth-app' });
    assert.deepEqual(sysCode(active.type as Coding), { system: DCM, code: '110114' });
    assert.deepEqual(subtypeOf(active), [{ system: 'urn:ihe:event-type-code', code: 'ITI-102' }]);
    assert.equal(active.outcome, '0');
    const caller = agentOfType(active, DCM, '110150')[0];
    assert.deepEqual([caller.who?.identifier?.value, caller.requestor, caller.network?.address], ['fhir-rs', true, '10.0.0.2']);
    assert.ok(asAgent(active));
    assert.deepEqual(entitiesOf(active)[0].what, { identifier: { value: `urn:ietf:params:oauth:jti:${JTI}` } });
    assert.deepEqual(detailsOf(entitiesOf(active)[0]), { active: 'true', client_id: 'growth-app' });
    const inactive = tokenIntrospected({ recorded: at, issuer: ISSUER, callerId: 'fhir-rs', active: false });
    assert.equal(inactive.outcome, '4');
    assert.equal(inactive.outcomeDesc, 'token not active');
    assert.equal(entitiesOf(inactive)[0].what, undefined);
  });

  it('tokenRevoked: 110113 Security Alert / 110135 Object Security Attributes Changed, action D; an opaque token by digest', () => {
    const refreshToken = 'nBq8Ow3X-opaque-refresh-token-value';
    const e = tokenRevoked({ recorded: at, issuer: ISSUER, address: '203.0.113.17', clientId: 'growth-app', token: opaqueToken(refreshToken), tokenType: 'refresh_token', user: jane });
    assert.deepEqual(sysCode(e.type as Coding), { system: DCM, code: '110113' });
    assert.deepEqual(subtypeOf(e), [{ system: DCM, code: '110135' }]);
    assert.equal(e.action, 'D');
    assert.equal(e.outcome, '0');
    assert.equal(agentsOf(e)[0].requestor, true, 'the person who revoked');
    assert.equal(agentOfType(e, DCM, '110150')[0].requestor, false);
    assert.match(entitiesOf(e)[0].what!.identifier!.value, /^sha256:[A-Za-z0-9_-]{43}$/);
    assert.equal(JSON.stringify(e).includes(refreshToken), false);
    assert.equal(detailsOf(entitiesOf(e)[0]).token_type, 'refresh_token');
  });

  it('clientRegistrationChanged: 110113 / 110129 Security Configuration, action C/U/D; field names, never values', () => {
    for (const [change, action] of [['create', 'C'], ['update', 'U'], ['delete', 'D']] as const) {
      const e = clientRegistrationChanged({ recorded: at, issuer: ISSUER, address: '10.1.1.1', change, clientId: 'growth-app', by: { user: { sub: 'admin-1' } }, fields: ['redirect_uris', 'client_secret'] });
      assert.deepEqual(sysCode(e.type as Coding), { system: DCM, code: '110113' });
      assert.deepEqual(subtypeOf(e), [{ system: DCM, code: '110129' }]);
      assert.equal(e.action, action);
      assert.equal(e.outcome, '0');
      assert.deepEqual(agentsOf(e)[0].who, { identifier: { system: ISSUER, value: 'admin-1' } });
      assert.equal(agentsOf(e)[0].requestor, true);
      const client = entitiesOf(e)[0];
      assert.deepEqual(client.what, { identifier: { system: ISSUER, value: 'growth-app' } });
      assert.deepEqual(sysCode(client.role), { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '11' });
      assert.deepEqual(client.detail, [{ type: 'changed', valueString: 'redirect_uris' }, { type: 'changed', valueString: 'client_secret' }]);
    }
    const dynamic = clientRegistrationChanged({ recorded: at, issuer: ISSUER, change: 'create', clientId: 'new-app', by: { clientId: 'new-app' } });
    assert.deepEqual(codesOf(agentsOf(dynamic)[0]), [`${DCM}|110150`]);
  });

  it('ehrLaunchCreated: 110100 Application Activity, action C; the requestor with the token, the patient, the launch by digest with its context', () => {
    const launch = { recorded: at, issuer: ISSUER, address: '10.1.1.1', launch: 'the-launch-id', patient: '123', encounter: 'e-1', clientId: 'growth-app', fhirContext: ['MedicationRequest/m-1'] };
    const byUser = ehrLaunchCreated({ ...launch, by: { user: jane, clientId: 'ehr', jti: 'j-1' } });
    assert.deepEqual(sysCode(byUser.type as Coding), { system: DCM, code: '110100' });
    assert.equal(byUser.action, 'C');
    const [user, app] = agentsOf(byUser);
    assert.deepEqual([user.who, user.requestor, user.policy], [{ identifier: { system: ISSUER, value: jane.sub } }, true, ['urn:ietf:params:oauth:jti:j-1']]);
    assert.deepEqual([app.who, app.requestor, app.policy], [{ identifier: { system: ISSUER, value: 'ehr' } }, false, undefined]);
    const [patient, record] = entitiesOf(byUser);
    assert.equal(patient.what?.reference, 'Patient/123');
    assert.deepEqual(record.what, { identifier: { system: `${ISSUER}/launch`, value: `sha256:${createHash('sha256').update('the-launch-id').digest('base64url')}` } });
    assert.deepEqual(detailsOf(record), { client_id: 'growth-app', encounter: 'Encounter/e-1', fhirContext: 'MedicationRequest/m-1' });
    const byBackend = agentsOf(ehrLaunchCreated({ ...launch, by: { clientId: 'ehr', jti: 'j-2' } }))[0];
    assert.deepEqual([byBackend.requestor, byBackend.policy], [true, ['urn:ietf:params:oauth:jti:j-2']]);
    assert.equal(asAgent(ehrLaunchCreated({ ...launch, by: {} })).requestor, true, 'an administrator (CLI): this server asked');
    assert.ok(!JSON.stringify([byUser]).includes('the-launch-id'));
  });

  describe('consentDecision (BALP AuthZconsent)', () => {
    const decision = { recorded: at, issuer: ISSUER, address: '203.0.113.17', clientId: 'growth-app', user: jane, patient: '123', purposeOfUse: [TREAT], consents: ['c-1'] };

    it('permit: 110113 Security Alert / AuthZ-Consent, E, success; client, user, organization, authorizer; patient, consent, token', () => {
      const e = consentDecision({ ...decision, allowed: true, requestedScope: 'patient/*.rs', grantedScope: 'patient/Observation.rs', jti: JTI });
      assert.deepEqual(sysCode(e.type as Coding), { system: DCM, code: '110113' });
      assert.deepEqual(subtypeOf(e), [{ system: 'https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType', code: 'AuthZ-Consent' }]);
      assert.equal(e.action, 'E');
      assert.equal(e.outcome, '0');
      assert.deepEqual(e.purposeOfEvent, [{ coding: [TREAT] }]);
      const [client, person, org, authorizer] = agentsOf(e);
      assert.ok(has(client, DCM, '110150') && has(person, PARTICIPATION, 'IRCP') && has(org, 'http://terminology.hl7.org/CodeSystem/v3-RoleClass', 'PROV'));
      assert.deepEqual([client.requestor, person.requestor, org.requestor, authorizer.requestor], [false, true, false, false]);
      assert.deepEqual(client.network, { address: '203.0.113.17', type: '2' });
      assert.deepEqual(person.policy, [`urn:ietf:params:oauth:jti:${JTI}`]);
      assert.equal(agentsOf(e).length, 4);
      assert.ok(has(authorizer, 'http://terminology.hl7.org/CodeSystem/extra-security-role-type', 'authserver'));
      assert.equal(authorizer.network, undefined, 'AuthZconsent: the authorizer has no network');
      const [patient, consent, token] = entitiesOf(e);
      assert.deepEqual(patient.what, { reference: 'Patient/123' });
      assert.deepEqual([consent.what, sysCode(consent.type)], [{ reference: 'Consent/c-1' }, { system: 'http://hl7.org/fhir/resource-types', code: 'Consent' }]);
      assert.deepEqual(sysCode(token.type), { system: USER_AGENT_TYPES, code: 'UserOauthAgent' });
      assert.equal(token.what?.identifier?.value, `urn:ietf:params:oauth:jti:${JTI}`);
      assert.deepEqual(detailsOf(token), { scope: 'patient/Observation.rs', requested_scope: 'patient/*.rs' });
    });

    it('deny: serious failure (8) with the reason, as the IG\'s deny example; no scope granted', () => {
      const e = consentDecision({ ...decision, allowed: false, requestedScope: 'patient/*.rs', grantedScope: 'patient/*.rs', reason: 'the patient\'s consent denies this organization' });
      assert.equal(e.outcome, '8');
      assert.equal(e.outcomeDesc, 'the patient\'s consent denies this organization');
      assert.deepEqual(detailsOf(entitiesOf(e).at(-1)!), { requested_scope: 'patient/*.rs' });
      assert.equal(JSON.stringify(e).includes('jti:'), false);
    });
  });

  it('signingKeyRotated: 110113 / 110129 Security Configuration; the new kid, the retired ones; the server is the requestor when scheduled', () => {
    const e = signingKeyRotated({ recorded: at, issuer: ISSUER, kid: 'k-2025-06', alg: 'ES384', retired: ['k-2025-01'] });
    assert.deepEqual(sysCode(e.type as Coding), { system: DCM, code: '110113' });
    assert.deepEqual(subtypeOf(e), [{ system: DCM, code: '110129' }]);
    assert.equal(e.outcome, '0');
    assert.deepEqual(agentsOf(e).map((a) => a.requestor), [true]);
    const key = entitiesOf(e)[0];
    assert.deepEqual(key.what, { identifier: { system: `${ISSUER}/jwks`, value: 'k-2025-06' } });
    assert.deepEqual(key.detail, [{ type: 'alg', valueString: 'ES384' }, { type: 'retired_kid', valueString: 'k-2025-01' }]);
    const manual = signingKeyRotated({ recorded: at, issuer: ISSUER, kid: 'k2', by: { sub: 'admin-1' } });
    assert.deepEqual(agentsOf(manual).map((a) => a.requestor), [true, false]);
  });

  it('emergencyOverrideStarted (kept): 110113 / 110127; the user first with the jti, the patient first', () => {
    const e = emergencyOverrideStarted({
      issuer: ISSUER, recorded: at, user: { sub: 'u-er', name: 'Dr. ER', roles: [DOCTOR] }, clientId: 'er-app', purpose: 'BTG', reason: 'unconscious', jti: 'jti-btg', patient: 'pat-1', address: '10.2.2.2',
    });
    assert.deepEqual(sysCode(e.type as Coding), { system: DCM, code: '110113' });
    assert.deepEqual(subtypeOf(e), [{ system: DCM, code: '110127' }]);
    assert.equal(e.action, 'E');
    assert.equal(e.outcome, '0');
    assert.equal((e.purposeOfEvent as { text: string }[])[0].text, 'unconscious');
    const [person, app] = agentsOf(e);
    assert.ok(has(person, PARTICIPATION, 'IRCP'));
    assert.deepEqual(person.policy, ['urn:ietf:params:oauth:jti:jti-btg']);
    assert.deepEqual(person.purposeOfUse, [{ coding: [{ system: ACT_REASON, code: 'BTG', display: 'break the glass' }] }]);
    assert.equal(person.name, 'Dr. ER');
    assert.deepEqual(app.who, { identifier: { system: ISSUER, value: 'er-app' } });
    assert.deepEqual(app.network, { address: '10.2.2.2', type: '2' });
    assert.deepEqual(entitiesOf(e)[0].what, { reference: 'Patient/pat-1' });
  });
});

describe('no password or token value ever appears in an event', () => {
  // Secrets are long and tagged, so that a random other field cannot contain one by chance.
  const secret = fc.stringMatching(/^[A-Za-z0-9]{24,40}$/).map((s) => `S3cr3t${s}`);
  const word = fc.stringMatching(/^[a-z0-9-]{1,12}$/);
  const coding = fc.record({ system: fc.constantFrom(ACT_REASON, 'http://terminology.hl7.org/CodeSystem/practitioner-role'), code: word });
  const auditUser = fc.record({ sub: word, name: fc.option(fc.string(), { nil: undefined }), roles: fc.array(coding, { maxLength: 2 }), organization: fc.option(fc.string(), { nil: undefined }), organizationId: fc.option(word, { nil: undefined }) });
  const secretParameter = fc.constantFrom('access_token', 'Access_Token', 'access%5Ftoken', 'refresh_token', 'client_secret', 'client_assertion', 'password', 'id_token', 'code_verifier');
  const interaction = fc.option(fc.constantFrom('read', 'vread', 'history-instance', 'history-type', 'search-type', 'search-system', 'create', 'update', 'patch', 'delete', 'batch', 'transaction', 'operation', 'capabilities'), { nil: undefined });

  /** Every text an event carries: its JSON, and its base64 queries decoded. */
  const texts = (e: AuditEvent) => [JSON.stringify(e), ...entitiesOf(e).flatMap((x) => (x.query ? [decoded(x.query)] : []))];
  const leaks = (list: AuditEvent[], value: string) => list.some((e) => texts(e).some((t) => t.includes(value)));
  /** The credentials a careless caller might hand over along with the input (never to be copied). */
  const carrying = <T extends object>(input: T, value: string): T =>
    ({ password: value, access_token: value, refresh_token: value, client_secret: value, code: value, id_token: value, authorization: `Bearer ${value}`, ...input });

  it('guarded accesses: credential parameters in the URL, credentials passed along', () => {
    fc.assert(fc.property(
      secret, secretParameter, fc.array(fc.tuple(word, word), { maxLength: 3 }), fc.nat(3), interaction, fc.constantFrom(200, 201, 204, 401, 403, 404, 500, 502),
      fc.option(auditUser, { nil: undefined }), fc.option(word, { nil: undefined }), fc.array(word, { maxLength: 3 }),
      (value, parameter, params, position, kind, status, person, jti, patients) => {
        const query = params.map(([k, v]) => `${k}=${v}`);
        query.splice(Math.min(position, query.length), 0, `${parameter}=${value}`);
        const list = accessAuditEvents(carrying(access({
          url: `Observation?${query.join('&')}`, interaction: kind, status, patients, jti,
          user: person && { ...person, issuer: ISSUER }, resources: patients.map((p) => `Observation/${p}`),
        }), value));
        return !leaks(list, value);
      },
    ));
  });

  it('security events: only identifiers, whatever else the input carries', () => {
    fc.assert(fc.property(secret, auditUser, word, word, fc.option(word, { nil: undefined }), fc.boolean(), (value, person, client, jti, patient, flag) => {
      const base = { recorded: new Date(0), issuer: ISSUER, address: '192.0.2.1' };
      const list = [
        loginSucceeded(carrying({ ...base, user: person, clientId: client }, value)),
        loginFailed(carrying({ ...base, username: person.sub, clientId: flag ? client : undefined }, value)),
        logout(carrying({ ...base, user: person }, value)),
        accessTokenIssued(carrying({ ...base, clientId: client, grantType: flag ? 'refresh_token' : 'authorization_code', scope: 'openid patient/*.rs', jti, user: person, patient }, value)),
        tokenIntrospected(carrying({ ...base, callerId: client, active: flag, token: flag ? { jti } : opaqueToken(value) }, value)),
        tokenRevoked(carrying({ ...base, clientId: client, token: opaqueToken(value), tokenType: 'refresh_token', user: flag ? person : undefined }, value)),
        clientRegistrationChanged(carrying({ ...base, change: 'update' as const, clientId: client, by: { user: person }, fields: ['client_secret'] }, value)),
        consentDecision(carrying({ ...base, allowed: flag, clientId: client, user: person, patient, jti, grantedScope: 'patient/*.rs' }, value)),
        signingKeyRotated(carrying({ ...base, kid: jti, by: flag ? person : undefined }, value)),
        emergencyOverrideStarted(carrying({ ...base, user: { ...person, roles: person.roles ?? [] }, clientId: client, purpose: 'BTG', reason: 'r', jti, patient, amr: ['pwd'], stepUpAmr: ['otp'] }, value)),
        userSecurityChanged(carrying({ ...base, user: person, change: 'update' as const, what: 'password', byAdministrator: flag }, value)),
        logout(carrying({ ...base, user: person, session: { kind: 'account', reason: 'password changed' } }, value)),
        ehrLaunchCreated(carrying({ ...base, launch: value, patient: patient ?? 'p', by: { user: flag ? person : undefined, clientId: client, jti } }, value)),
      ];
      return !leaks(list, value);
    }));
  });
});
