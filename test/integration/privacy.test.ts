// Privacy enforcement at the guard with real tokens: security labels and clearance, break-the-glass,
// consent, de-identification for research, and test data.
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, exchangeCode, tokenRequest } from '../support/oauth.ts';
import { addUser } from '../../server/oidc/users.ts';

const ROLE = 'http://terminology.hl7.org/CodeSystem/practitioner-role';

describe('privacy enforcement', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  before(async () => {
    server = await startTestServer();
    app = await server.addClient({ auth: { kind: 'secret' } });
    await addUser(server.db, { username: 'researcher', password: 'research-pass', name: 'Rita Search', fhirUser: 'Practitioner/dr-jones', attributes: { roles: [{ system: ROLE, code: 'researcher' }], purposes: ['HRESCH'], clearance: 'R', sensitivities: [] } });
    await addUser(server.db, { username: 'tester', password: 'testing-pass', name: 'Tess Ter', attributes: { roles: [{ system: ROLE, code: 'ict' }], purposes: ['HTEST'], clearance: 'N', sensitivities: [] } });
  });
  after(() => server.stop());

  const token = async (username: string, password: string, extra: { purpose?: string; btgReason?: string; scope?: string } = {}) =>
    (await exchangeCode(server.issuer, await authorize({ server, client: app, scope: extra.scope ?? 'openid fhirUser user/*.rs', username, password, ...extra }), app)).body.access_token as string;
  const get = (path: string, bearer: string) => fetch(`${server.fhirBase}/${path}`, { headers: { authorization: `Bearer ${bearer}` } });
  const ids = async (res: Response) => ((await res.json()).entry ?? []).map((e: any) => `${e.resource.resourceType}/${e.resource.id}`);

  it('hides what is above the clearance or in a sensitivity not granted: 404 on read, filtered from searches', async () => {
    const smith = await token('dr.smith', 'demo-password-1'); // clearance R; HIV, PSY, SUD, ETH
    assert.equal((await get('Condition/cond-1-depression', smith)).status, 200, 'R + PSY within clearance');
    assert.equal((await get('Observation/obs-1-brca', smith)).status, 404, 'V is above R');
    const observations = await get('Observation?patient=pat-1', smith);
    const found = await ids(observations.clone());
    assert.ok(!found.includes('Observation/obs-1-brca'));
    const bundle = await observations.json();
    assert.equal(bundle.total, bundle.entry.length, 'total recomputed');

    const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT' }); // clearance N, no sensitivities, pat-1 and pat-2
    assert.equal((await get('Observation/obs-2a-hiv-vl', jones)).status, 404, 'R + HIV');
    assert.equal((await get('Condition/cond-1-depression', jones)).status, 404, 'R + PSY');
    assert.equal((await get('Observation/obs-1a-hba1c', jones)).status, 200, 'unlabelled counts as N');
    assert.equal((await get('Condition/cond-2-oud', jones)).status, 404, 'SUD');
    assert.ok(!(await ids(await get('Condition?patient=pat-2', jones))).includes('Condition/cond-2-oud'));
    const writer = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT', scope: 'openid fhirUser user/*.cruds' });
    const put = await fetch(`${server.fhirBase}/Condition/cond-2-oud`, { method: 'PUT', headers: { authorization: `Bearer ${writer}`, 'content-type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: 'Condition', id: 'cond-2-oud', subject: { reference: 'Patient/pat-2' } }) });
    assert.equal(put.status, 404, 'a write on hidden data is 404');
  });

  it('labels a search Bundle with the high-water mark of its entries', async () => {
    const smith = await token('dr.smith', 'demo-password-1');
    const bundle = await (await get('Condition?patient=pat-1', smith)).json();
    assert.ok(bundle.meta.security.some((c: any) => c.code === 'R'));
  });

  it('lets break-the-glass lift the ceiling to R and the sensitivities, never to V, and audits it as such', async () => {
    const btg = await token('dr.jones', 'demo-password-2', { purpose: 'BTG', btgReason: 'Patient unresponsive, need HIV status' });
    const res = await fetch(`${server.fhirBase}/Observation/obs-2a-hiv-vl`, { headers: { authorization: `Bearer ${btg}`, 'x-request-id': 'btg-read' } });
    assert.equal(res.status, 200);
    assert.equal((await get('Condition/cond-2-oud', btg)).status, 200);
    assert.equal((await get('Observation/obs-1-brca', btg)).status, 404, 'never V');
    const [event] = (await server.audit.search({ entity: 'Observation/obs-2a-hiv-vl' })).filter((e: any) => e.entity.some((x: any) => x.what?.identifier?.value === 'btg-read')) as any[];
    assert.equal(event.agent.find((a: any) => a.requestor).purposeOfUse[0].coding[0].code, 'BTG');
  });

  it('offers the break-the-glass hint only when configured', async () => {
    const hinted = await startTestServer({ BREAK_GLASS_HINT: 'true' });
    try {
      const client = await hinted.addClient({ auth: { kind: 'secret' } });
      const jones = (await exchangeCode(hinted.issuer, await authorize({ server: hinted, client, scope: 'openid fhirUser user/*.rs', username: 'dr.jones', password: 'demo-password-2', purpose: 'TREAT' }), client)).body.access_token;
      const res = await fetch(`${hinted.fhirBase}/Observation/obs-2a-hiv-vl`, { headers: { authorization: `Bearer ${jones}` } });
      assert.equal(res.status, 404);
      const outcome = await res.json();
      assert.equal(outcome.issue[0].code, 'suppressed');
      assert.equal(outcome.issue[0].details.coding[0].code, 'ETREAT');
    } finally {
      await hinted.stop();
    }
    const plain = await (await get('Observation/obs-2a-hiv-vl', await token('dr.jones', 'demo-password-2', { purpose: 'TREAT' }))).json();
    assert.notEqual(plain.issue[0].code, 'suppressed', 'off by default');
  });

  it('enforces a patient consent: the newest active Consent denying a practitioner hides that patient\'s data from them', async () => {
    const smith = await token('dr.smith', 'demo-password-1');
    assert.equal((await get('Patient/pat-3', smith)).status, 200);
    const writer = await server.addClient({ name: 'Consent app', redirectUris: [], auth: { kind: 'secret' }, grantTypes: ['client_credentials'], scope: 'system/Consent.cu' });
    const { body } = await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'system/Consent.cu' }, writer);
    const consent = {
      resourceType: 'Consent', status: 'active', dateTime: new Date().toISOString(),
      scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
      policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
      category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
      patient: { reference: 'Patient/pat-3' },
      provision: { type: 'permit', provision: [{ type: 'deny', actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { reference: 'Practitioner/dr-smith' } }] }] },
    };
    const created = await fetch(`${server.fhirBase}/Consent`, { method: 'POST', headers: { authorization: `Bearer ${body.access_token}`, 'content-type': 'application/fhir+json' }, body: JSON.stringify(consent) });
    assert.equal(created.status, 201);
    assert.equal((await get('Patient/pat-3', smith)).status, 404, 'denied by the consent, at once');
    assert.equal((await ids(await get('Observation?patient=pat-3', smith))).length, 0);
    const jonesLike = await token('dr.smith', 'demo-password-1');
    assert.equal((await get('Patient/pat-1', jonesLike)).status, 200, 'other patients are not affected');
  });

  it('enforces the demo consent: pat-2 denies dr-smith her substance-use data only', async () => {
    const smith = await token('dr.smith', 'demo-password-1'); // cleared for SUD
    assert.equal((await get('Condition/cond-2-oud', smith)).status, 404, 'the consent denies SUD data to dr-smith');
    assert.equal((await get('Observation/obs-2a-hiv-vl', smith)).status, 200, 'the rest of her record is permitted');
  });

  describe('consent rules, newest consent deciding', () => {
    let writerToken: string;
    before(async () => {
      const writer = await server.addClient({ name: 'Consent rules', redirectUris: [], auth: { kind: 'secret' }, grantTypes: ['client_credentials'], scope: 'system/Consent.cu' });
      writerToken = (await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'system/Consent.cu' }, writer)).body.access_token;
    });
    let minute = 0;
    async function consentFor(patient: string, provision: object) {
      minute++;
      const res = await fetch(`${server.fhirBase}/Consent`, {
        method: 'POST', headers: { authorization: `Bearer ${writerToken}`, 'content-type': 'application/fhir+json' },
        body: JSON.stringify({
          resourceType: 'Consent', status: 'active', dateTime: new Date(Date.now() + minute * 60_000).toISOString(),
          scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
          policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
          category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }], patient: { reference: `Patient/${patient}` }, provision,
        }),
      });
      assert.equal(res.status, 201);
    }
    const purpose = (code: string) => ({ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code });

    it('denies by purpose, by label, by period, and lets a nested permit override a root deny', async () => {
      const treat = await token('dr.smith', 'demo-password-1', { purpose: 'TREAT' });
      const payment = await token('dr.smith', 'demo-password-1', { purpose: 'HPAYMT' });
      await consentFor('pat-1', { type: 'permit', provision: [{ type: 'deny', purpose: [purpose('HPAYMT')] }] });
      assert.equal((await get('Observation/obs-1a-hba1c', treat)).status, 200, 'treatment permitted');
      assert.equal((await get('Observation/obs-1a-hba1c', payment)).status, 404, 'payment denied by purpose');

      await consentFor('pat-1', { type: 'permit', provision: [{ type: 'deny', securityLabel: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'PSY' }] }] });
      assert.equal((await get('Condition/cond-1-depression', treat)).status, 404, 'psychiatric data denied by label');
      assert.equal((await get('Observation/obs-1a-hba1c', payment)).status, 200, 'the newer consent replaced the purpose rule');

      await consentFor('pat-1', { type: 'permit', provision: [{ type: 'deny', dataPeriod: { start: '2025-01-01', end: '2025-12-31' } }] });
      assert.equal((await get('Observation/obs-1a-hba1c', treat)).status, 404, 'data from 2025 denied by period');
      assert.equal((await get('Encounter/enc-1b', treat)).status, 200, 'data from 2026 is not in the denied period');

      await consentFor('pat-1', { type: 'deny', provision: [{ type: 'permit', actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { reference: 'Practitioner/dr-smith' } }] }] });
      assert.equal((await get('Observation/obs-1a-hba1c', treat)).status, 200, 'the nested permit overrides the root deny for dr-smith');
      const amy = await token('amy', 'demo-password-3', { scope: 'openid fhirUser user/*.rs' });
      assert.equal((await get('Observation/obs-1a-hba1c', amy)).status, 404, 'the root deny applies to everyone else');
    });
  });

  it('de-identifies answers for a research purpose', async () => {
    const research = await token('researcher', 'research-pass');
    const patient = await (await get('Patient/pat-2', research)).json();
    assert.notEqual(patient.id, 'pat-2');
    const text = JSON.stringify(patient);
    for (const secret of ['Garcia', 'Daniel', 'MRN-10002']) assert.ok(!text.includes(secret), secret);
    assert.ok(patient.meta.security.some((c: any) => c.code === 'PSEUDED'));
    assert.equal(patient.birthDate, '1954', 'no exact birth date');
    const observations = await (await get('Observation?patient=pat-2', research)).json();
    assert.ok(observations.entry.length > 0);
    assert.ok(observations.entry.every((e: any) => e.resource.subject.reference === `Patient/${patient.id}`), 'ids pseudonymised consistently across responses');
  });

  it('shows test data only to test tokens, and test tokens only test data', async () => {
    const smith = await token('dr.smith', 'demo-password-1');
    assert.equal((await get('Patient/pat-4', smith)).status, 404);
    assert.ok(!(await ids(await get('Patient', smith))).includes('Patient/pat-4'));
    const tester = await token('tester', 'testing-pass');
    assert.equal((await get('Patient/pat-4', tester)).status, 200);
    assert.deepEqual(await ids(await get('Patient', tester)), ['Patient/pat-4']);
  });

  it('keeps references to hidden resources as they are, revealing nothing about the target', async () => {
    const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT' });
    const bundle = await (await get('Observation?patient=pat-2&_include=Observation:subject', jones)).json();
    assert.ok(!JSON.stringify(bundle).includes('20447-9'), 'the hidden HIV result does not come back in any form');
  });
});
