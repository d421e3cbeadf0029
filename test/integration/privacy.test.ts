// Privacy enforcement at the guard with real tokens: security labels and clearance, break-the-glass,
// consent, de-identification for research, and test data.
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorizedTokens, decodeJwt, tokenRequest } from '../support/oauth.ts';
import { mintLaunch } from '../../server/launcher.ts';
import { addUser } from '../../server/oidc/users.ts';
import { PRIVACY_OFFICER } from '../../server/hcs/codes.ts';
import { mentions } from '../support/words.ts';

const ROLE = 'http://terminology.hl7.org/CodeSystem/practitioner-role';

describe('privacy enforcement', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  before(async () => {
    server = await startTestServer();
    app = await server.addClient({ auth: { kind: 'secret' } });
    await addUser(server.db, { username: 'researcher', password: 'research-pass', name: 'Rita Search', fhirUser: 'Practitioner/dr-jones', attributes: { roles: [{ system: ROLE, code: 'researcher' }], purposes: ['HRESCH'], clearance: 'R', sensitivities: [] } });
    await addUser(server.db, { username: 'privacy', password: 'privacy-pass', name: 'Paula Privacy', attributes: { purposes: ['HOPERAT'], privacyOfficer: true, clearance: 'R', sensitivities: ['PSY'] } });
    // A stored role is not the flag: only privacyOfficer puts the role in a token.
    await addUser(server.db, { username: 'pretender', password: 'pretend-pass', name: 'Pre Tender', fhirUser: 'Practitioner/dr-jones', attributes: { roles: [PRIVACY_OFFICER], purposes: ['HOPERAT'] } });
    await addUser(server.db, { username: 'tester', password: 'testing-pass', name: 'Tess Ter', attributes: { roles: [{ system: ROLE, code: 'ict' }], purposes: ['HTEST'], clearance: 'N', sensitivities: [] } });
  });
  after(() => server.stop());

  const token = async (username: string, password: string, extra: { purpose?: string; btgReason?: string; scope?: string } = {}) =>
    (await authorizedTokens({ server, client: app, scope: extra.scope ?? 'openid fhirUser user/*.rs', username, password, ...extra })).access_token as string;
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
    for (const path of ['Condition?patient=pat-2&_count=0', 'Observation?patient=pat-2&_count=1']) {
      assert.equal((await (await get(path, jones)).json()).total, undefined, `${path}: the FHIR server's total counts what is hidden on other pages`);
    }
    const writer = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT', scope: 'openid fhirUser user/*.cruds' });
    const put = await fetch(`${server.fhirBase}/Condition/cond-2-oud`, { method: 'PUT', headers: { authorization: `Bearer ${writer}`, 'content-type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: 'Condition', id: 'cond-2-oud', subject: { reference: 'Patient/pat-2' } }) });
    assert.equal(put.status, 404, 'a write on hidden data is 404');
  });

  it('hides unknown sensitivities from everyone not cleared for all of them, and codes of the policy file from those not granted (#14)', async () => {
    const backend = await server.addClient({ name: 'Labeller', redirectUris: [], auth: { kind: 'secret' }, grantTypes: ['client_credentials'], scope: 'system/*.cruds', clearance: 'V', sensitivity: ['*'] });
    const system = (await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'system/*.cruds' }, backend)).body.access_token;
    const labelled = async (code: string) => {
      const res = await fetch(`${server.fhirBase}/Observation`, {
        method: 'POST', headers: { authorization: `Bearer ${system}`, 'content-type': 'application/fhir+json' },
        body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: code }, subject: { reference: 'Patient/pat-2' }, meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code }] } }),
      });
      assert.equal(res.status, 201);
      return `Observation/${(await res.json()).id}`;
    };
    const sickle = await labelled('SICKLE');
    const adolescent = await labelled('ADOL');
    const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT' });
    assert.equal((await get(sickle, jones)).status, 404, 'SICKLE is not in the policy file');
    assert.equal((await get(adolescent, jones)).status, 404, 'ADOL is, and dr.jones is not granted it');
    assert.ok(!(await ids(await get('Observation?patient=pat-2', jones))).some((id: string) => id === sickle || id === adolescent));
    const smith = await token('dr.smith', 'demo-password-1');
    assert.equal((await get('Condition/cond-3-sickle-trait', smith)).status, 404, 'the demo resource with an unlisted code');
    assert.equal((await get(sickle, smith)).status, 404);
    const btg = await token('dr.jones', 'demo-password-2', { purpose: 'BTG', btgReason: 'Crisis, need the whole record' });
    assert.equal((await get(sickle, btg)).status, 200, 'break-the-glass is cleared for every sensitivity');
    assert.equal((await get('Condition/cond-3-sickle-trait', system)).status, 200, 'a backend without a residual');
  });

  it('reads v3 labels written with the code system\'s OID or FHIR STU3 URI as the same labels: break-the-glass never reaches V', async () => {
    const backend = await server.addClient({ name: 'Importer', redirectUris: [], auth: { kind: 'secret' }, grantTypes: ['client_credentials'], scope: 'system/*.cruds', clearance: 'V', sensitivity: ['*'] });
    const system = (await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'system/*.cruds' }, backend)).body.access_token;
    const labelled = async (security: object[]) => {
      const res = await fetch(`${server.fhirBase}/Observation`, {
        method: 'POST', headers: { authorization: `Bearer ${system}`, 'content-type': 'application/fhir+json' },
        body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'imported' }, subject: { reference: 'Patient/pat-2' }, meta: { security } }),
      });
      assert.equal(res.status, 201);
      return `Observation/${(await res.json()).id}`;
    };
    const btg = await token('dr.jones', 'demo-password-2', { purpose: 'BTG', btgReason: 'Crisis, need the whole record' });
    for (const confidentiality of ['urn:oid:2.16.840.1.113883.5.25', 'http://hl7.org/fhir/v3/Confidentiality']) {
      assert.equal((await get(await labelled([{ system: confidentiality, code: 'V' }]), btg)).status, 404, confidentiality);
    }
    const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT' });
    const r = await labelled([{ system: 'urn:oid:2.16.840.1.113883.5.25', code: 'R' }]);
    assert.equal((await get(r, jones)).status, 404, 'R is above his clearance N');
    assert.equal((await get(r, await token('dr.smith', 'demo-password-1'))).status, 200, 'and within dr.smith\'s R (no unknown sensitivity)');
    assert.equal((await get(await labelled([{ code: 'HIV' }]), jones)).status, 404, 'a label without a system counts as an unknown sensitivity, not as no label');
  });

  it('refuses existence tests through data the rules may hide, also to unbounded tokens (#14)', async () => {
    const smith = await token('dr.smith', 'demo-password-1'); // user/*.rs, every patient: only labels and consent filter his answers
    for (const query of [
      'Patient?_has:Condition:subject:code=http://snomed.info/sct|5602001', 'Condition?patient.name=Garcia', 'Condition?subject:Patient.name=Garcia',
      'Condition?patient=pat-2&_summary=count', 'Condition?patient=pat-2&_total=accurate', 'Condition?_filter=code eq 5602001',
    ]) {
      const res = await get(query, smith);
      assert.equal(res.status, 403, query);
      assert.equal((await res.json()).resourceType, 'OperationOutcome');
    }
    assert.equal((await get('Condition?patient=pat-2&_total=none', smith)).status, 200);
  });

  it('keeps a next link only when a later page holds something the token may see: paging does not count hidden matches (#14)', async () => {
    const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT' }); // not cleared for SUD
    const relations = async (query: string) => ((await (await get(query, jones)).json()).link ?? []).map((l: any) => l.relation);
    // Hypertension (visible) and opioid use disorder (SUD, hidden) of pat-2, one per page.
    assert.deepEqual(await relations('Condition?patient=pat-2&code=38341003,75544000&_count=1'), ['self'], 'the hidden second match gives no next link');
    assert.deepEqual(await relations('Condition?patient=pat-2&code=38341003,1234&_count=1'), ['self'], 'as for no second match');
    const page = await (await get('Condition?patient=pat-2&code=38341003,29857009&_count=1', jones)).json();
    const next = page.link.find((l: any) => l.relation === 'next');
    assert.ok(next, 'a visible second match keeps it');
    const second = await (await fetch(next.url, { headers: { authorization: `Bearer ${jones}` } })).json();
    assert.equal(second.entry.length, 1, 'and it leads to that match');
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
      const jones = (await authorizedTokens({ server: hinted, client, scope: 'openid fhirUser user/*.rs', username: 'dr.jones', password: 'demo-password-2', purpose: 'TREAT' })).access_token;
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

  describe('who writes Consent (#14)', () => {
    const put = (path: string, bearer: string, body: object, method = 'PUT') => fetch(`${server.fhirBase}/${path}`, { method, headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/fhir+json' }, body: JSON.stringify(body) });
    const roles = (bearer: string) => (decodeJwt(bearer).payload.extensions?.ihe_iua?.subject_role ?? []).map((c: any) => c.code);
    let stored: any;
    before(async () => {
      stored = await (await get('Consent/consent-pat-2', await token('privacy', 'privacy-pass', { scope: 'openid user/Consent.rs' }))).json();
      assert.equal(stored.id, 'consent-pat-2');
    });
    const withoutDeny = () => ({ ...stored, provision: { type: 'permit' } });

    it('refuses the clinician the consent restricts, with wildcard or with Consent scopes; the consent still holds', async () => {
      for (const scope of ['openid fhirUser user/*.cruds', 'openid fhirUser user/Consent.cruds user/Condition.rs']) {
        const smith = await token('dr.smith', 'demo-password-1', { scope });
        const res = await put('Consent/consent-pat-2', smith, withoutDeny());
        assert.equal(res.status, 403, scope);
        assert.equal((await res.json()).resourceType, 'OperationOutcome');
        assert.equal((await put('Consent', smith, { ...withoutDeny(), id: undefined }, 'POST')).status, 403, 'nor a newer consent');
        assert.equal((await fetch(`${server.fhirBase}/Consent/consent-pat-2`, { method: 'DELETE', headers: { authorization: `Bearer ${smith}` } })).status, 403);
        assert.equal((await get('Condition/cond-2-oud', smith)).status, 404, 'still denied');
      }
    });

    it('refuses a clinician a Consent scope bound to the patient (patient/ in a launch) or to their patients (user/ with --patients); the consent still holds', async () => {
      const launch = await mintLaunch(server.db, server.config, { patient: 'pat-2' });
      const launched = await authorizedTokens({ server, client: app, scope: 'launch openid fhirUser patient/Consent.cruds', launch });
      assert.equal(launched.patient, 'pat-2');
      assert.ok(launched.scope.split(' ').includes('patient/Consent.cruds'), launched.scope);
      const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT', scope: 'openid fhirUser user/Consent.cruds' });
      for (const [who, bearer] of [['dr.smith in a launch of pat-2', launched.access_token], ['dr.jones (pat-1, pat-2)', jones]]) {
        const res = await put('Consent/consent-pat-2', bearer, withoutDeny());
        assert.equal(res.status, 403, who);
        assert.equal((await res.json()).resourceType, 'OperationOutcome');
        assert.equal((await put('Consent', bearer, { ...withoutDeny(), id: undefined }, 'POST')).status, 403, `${who}: nor a newer consent`);
      }
      assert.equal((await get('Condition/cond-2-oud', await token('dr.smith', 'demo-password-1'))).status, 404, 'still denied');
    });

    it('gives the privacy-officer role only to users created with it, and nobody else can write with a role they stored', async () => {
      const pretender = await token('pretender', 'pretend-pass', { scope: 'openid fhirUser user/Consent.cruds' });
      assert.ok(!roles(pretender).includes('privacy-officer'));
      assert.equal((await put('Consent/consent-pat-2', pretender, withoutDeny())).status, 403);
      const officer = await token('privacy', 'privacy-pass', { scope: 'openid user/Consent.cruds' });
      assert.ok(roles(officer).includes('privacy-officer'));
      assert.equal((await put('Consent/consent-pat-2', await token('privacy', 'privacy-pass', { scope: 'openid user/*.cruds' }), withoutDeny())).status, 403, 'not with a wildcard');
    });

    it('lets a patient write their own consent with an explicit Consent scope, and nobody else\'s', async () => {
      const amy = await token('amy', 'demo-password-3', { scope: 'openid fhirUser user/Consent.cru' });
      const own = { ...withoutDeny(), id: undefined, patient: { reference: 'Patient/pat-1' }, performer: [{ reference: 'Patient/pat-1' }], status: 'inactive' };
      assert.equal((await put('Consent', amy, own, 'POST')).status, 201);
      assert.equal((await put('Consent', amy, { ...own, patient: { reference: 'Patient/pat-2' } }, 'POST')).status, 403);
      assert.equal((await put('Consent', await token('amy', 'demo-password-3', { scope: 'openid fhirUser user/*.cruds' }), own, 'POST')).status, 403, 'not with a wildcard');
    });

    it('lets a backend write Consent only when registered with system/Consent itself', async () => {
      const wide = await server.addClient({ name: 'Wide backend', redirectUris: [], auth: { kind: 'secret' }, grantTypes: ['client_credentials'], scope: 'system/*.cruds' });
      const { body } = await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'system/*.cruds system/Consent.cu' }, wide);
      assert.ok(!String(body.scope).includes('system/Consent'), body.scope);
      assert.equal((await put('Consent/consent-pat-2', body.access_token, withoutDeny())).status, 403);
    });

    it('enforces a changed consent at once for the patient it was about before, too', async () => {
      const officer = await token('privacy', 'privacy-pass', { scope: 'openid user/Consent.cruds' });
      const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT' });
      const deny = {
        resourceType: 'Consent', status: 'active', dateTime: new Date().toISOString(),
        scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
        category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
        patient: { reference: 'Patient/pat-1' }, policy: [{ uri: 'https://example.org/policy/privacy' }],
        provision: { type: 'permit', provision: [{ type: 'deny', actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { reference: 'Practitioner/dr-jones' } }] }] },
      };
      const created = await put('Consent', officer, deny, 'POST');
      assert.equal(created.status, 201);
      const { id } = await created.json();
      assert.equal((await get('Patient/pat-1', jones)).status, 404, 'denied');
      assert.equal((await put(`Consent/${id}`, officer, { ...deny, id, status: 'inactive', patient: { reference: 'Patient/pat-3' } })).status, 200);
      assert.equal((await get('Patient/pat-1', jones)).status, 200, 'the consent no longer about pat-1 no longer denies at once');
    });

    it('lets the privacy officer change it', async () => {
      const officer = await token('privacy', 'privacy-pass', { scope: 'openid user/Consent.cruds' });
      assert.equal((await put('Consent/consent-pat-2', officer, stored)).status, 200);
    });
  });

  describe('labels only go up (#14)', () => {
    const write = (path: string, bearer: string, body: unknown, method = 'PUT', type = 'application/fhir+json') =>
      fetch(`${server.fhirBase}/${path}`, { method, headers: { authorization: `Bearer ${bearer}`, 'content-type': type }, body: JSON.stringify(body) });

    it('refuses an update that strips a sensitivity label or lowers the confidentiality; the label keeps hiding it', async () => {
      const smith = await token('dr.smith', 'demo-password-1', { scope: 'openid fhirUser user/*.cruds' });
      const stored = await (await get('Observation/obs-2a-hiv-vl', smith)).json();
      const stripped = await write('Observation/obs-2a-hiv-vl', smith, { ...stored, meta: { security: stored.meta.security.filter((c: any) => c.code !== 'HIV') } });
      assert.equal(stripped.status, 403);
      assert.match((await stripped.json()).issue[0].diagnostics, /HIV/);
      assert.equal((await write('Observation/obs-2a-hiv-vl', smith, { ...stored, meta: { security: stored.meta.security.filter((c: any) => c.code !== 'R') } })).status, 403, 'R to the default N');
      assert.equal((await write('Observation/obs-2a-hiv-vl', smith, { ...stored, meta: undefined })).status, 403);
      assert.equal((await get('Observation/obs-2a-hiv-vl', await token('dr.jones', 'demo-password-2', { purpose: 'TREAT' }))).status, 404, 'still hidden from dr.jones');
      assert.equal((await write('Observation/obs-2a-hiv-vl', smith, { ...stored, status: 'amended' })).status, 200, 'an update keeping the labels passes');
    });

    it('checks an update against the stored version also when the client sends If-None-Match (a 304 is not "no stored version")', async () => {
      const tags = Array.from({ length: 20 }, (_, i) => `W/"${i + 1}"`).join(', ');
      const conditional = (path: string, bearer: string, body: unknown) =>
        fetch(`${server.fhirBase}/${path}`, { method: 'PUT', headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/fhir+json', 'if-none-match': tags }, body: JSON.stringify(body) });
      const smith = await token('dr.smith', 'demo-password-1', { scope: 'openid fhirUser user/*.cruds' });
      const stored = await (await get('Observation/obs-2a-hiv-vl', smith)).json();
      assert.equal((await conditional('Observation/obs-2a-hiv-vl', smith, { ...stored, meta: undefined })).status, 403, 'the HIV label stays');
      const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT', scope: 'openid fhirUser user/*.cruds' });
      assert.equal((await conditional('Condition/cond-2-oud', jones, { resourceType: 'Condition', id: 'cond-2-oud', subject: { reference: 'Patient/pat-2' } })).status, 404, 'hidden data is not overwritten');
      const amy = await token('amy', 'demo-password-3', { scope: 'openid fhirUser patient/*.cruds' });
      assert.equal((await conditional('Observation/obs-2a-hiv-vl', amy, { resourceType: 'Observation', id: 'obs-2a-hiv-vl', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-1' } })).status, 404, 'another patient\'s resource is not taken over');
      const after = await (await get('Observation/obs-2a-hiv-vl', smith)).json();
      assert.deepEqual([after.subject, after.meta.security], [stored.subject, stored.meta.security], 'nothing was written');
    });

    it('refuses a patch of meta to anyone but a privacy officer', async () => {
      const backend = await server.addClient({ name: 'Patcher', redirectUris: [], auth: { kind: 'secret' }, grantTypes: ['client_credentials'], scope: 'system/*.cruds', clearance: 'V', sensitivity: ['*'] });
      const system = (await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'system/*.cruds' }, backend)).body.access_token;
      const patch = [{ op: 'remove', path: '/meta/security/0' }];
      assert.equal((await write('Observation/obs-2a-hiv-vl', system, patch, 'PATCH', 'application/json-patch+json')).status, 403);
      assert.notEqual((await write('Observation/obs-2a-hiv-vl', system, [{ op: 'replace', path: '/status', value: 'final' }], 'PATCH', 'application/json-patch+json')).status, 403, 'other paths are not a label change');
      // FHIRPath Patch reaches meta without naming it through functions that walk into child elements.
      const fhirPathPatch = (path: string) => ({ resourceType: 'Parameters', parameter: [{ name: 'operation', part: [{ name: 'type', valueCode: 'delete' }, { name: 'path', valueString: path }] }] });
      for (const path of ["Observation.children().security.where(code='HIV')", "Observation.descendants().where(code='HIV')", "Observation.repeat(children()).where(code='R')", "Observation.select(children()).security"]) {
        assert.equal((await write('Observation/obs-2a-hiv-vl', system, fhirPathPatch(path), 'PATCH')).status, 403, path);
      }
      // A delimited identifier spells meta with escapes; a JSON Patch in a Binary (as batch entries carry it) hides its paths in base64.
      for (const path of ['Observation.`\\u006deta`.security', 'Observation.`m\\u0065ta`']) {
        assert.equal((await write('Observation/obs-2a-hiv-vl', system, fhirPathPatch(path), 'PATCH')).status, 403, path);
      }
      const wrapped = { resourceType: 'Binary', contentType: 'application/json-patch+json', data: Buffer.from(JSON.stringify(patch)).toString('base64') };
      assert.equal((await write('Observation/obs-2a-hiv-vl', system, wrapped, 'PATCH')).status, 403, 'a patch the guard cannot read');
      const batch = await write('', system, { resourceType: 'Bundle', type: 'batch', entry: [{ resource: wrapped, request: { method: 'PATCH', url: 'Observation/obs-2a-hiv-vl' } }] }, 'POST');
      assert.deepEqual((await batch.json()).entry.map((e: any) => e.response.status), ['403'], 'nor in a batch');
      assert.notEqual((await write('Observation/obs-2a-hiv-vl', system, fhirPathPatch("Observation.note.where(text='x')"), 'PATCH')).status, 403, 'a FHIRPath Patch of other elements is not a label change');
    });

    it('lets a privacy officer lower a label', async () => {
      const officer = await token('privacy', 'privacy-pass', { scope: 'openid user/Condition.cruds' });
      const stored = await (await get('Condition/cond-1-depression', officer)).json();
      const lowered = { ...stored, meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'N' }, ...stored.meta.security.filter((c: any) => c.code !== 'R')] } };
      assert.equal((await write('Condition/cond-1-depression', officer, lowered)).status, 200);
    });

    it('stores the default confidentiality on a created resource without one', async () => {
      const amy = await token('amy', 'demo-password-3', { scope: 'openid fhirUser user/Observation.crs' });
      const created = await write('Observation', amy, { resourceType: 'Observation', status: 'final', code: { text: 'steps' }, subject: { reference: 'Patient/pat-1' } }, 'POST');
      assert.equal(created.status, 201);
      const { id } = await created.json();
      const stored = await (await get(`Observation/${id}`, amy)).json();
      assert.deepEqual(stored.meta.security, [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'N' }]);
    });

    it('creates by an update (PUT to a new id) only for a label-managing backend cleared for every label, with the default confidentiality', async () => {
      const observation = { resourceType: 'Observation', id: 'created-by-put', status: 'final', code: { text: 'steps' }, subject: { reference: 'Patient/pat-1' } };
      const backend = async (scope: string, clearance: { clearance?: string; sensitivity?: string[] }) => {
        const client = await server.addClient({ name: 'Feed', redirectUris: [], auth: { kind: 'secret' }, grantTypes: ['client_credentials'], scope, ...clearance });
        return (await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope }, client)).body.access_token as string;
      };
      const full = { clearance: 'V', sensitivity: ['*'] };
      // Purpose of use, HTEST and consent hide data from every other token: a 201 here and a 404 on a hidden id would tell them apart.
      assert.equal((await write('Observation/created-by-put', await backend('system/*.cruds', full), observation)).status, 404, 'a backend cleared for every label that does not manage them');
      assert.equal((await write('Observation/created-by-put', await backend('system/Observation.cruds system/Consent.cu', {}), observation)).status, 404, 'a label-managing backend with the default clearance N');
      const put = await write('Observation/created-by-put', await backend('system/Observation.cruds system/Consent.cu', full), observation);
      assert.equal(put.status, 201);
      const smith = await token('dr.smith', 'demo-password-1', { scope: 'openid fhirUser user/*.cruds' });
      const stored = await (await get('Observation/created-by-put', smith)).json();
      assert.deepEqual(stored.meta.security, [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'N' }]);
    });
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

  describe('de-identified answers for a research purpose (#14)', () => {
    const text = async (res: Response) => { assert.equal(res.status, 200); return res.text(); };
    const realIds = () => ['pat-1', 'pat-2', 'pat-3', 'enc-1a', 'enc-2a', 'obs-1a-hba1c', 'dr-smith', 'dr-jones'];

    it('refuses searches on direct identifiers and sorting, and never reads by a real id', async () => {
      const research = await token('researcher', 'research-pass');
      for (const query of ['Patient?name=Shaw', 'Patient?family=Shaw', 'Patient?identifier=MRN-10001', 'Patient?birthdate=1987-02-20', 'Patient?address-city=Springfield', 'Patient?_sort=birthdate', 'Patient?_content=Shaw']) {
        assert.equal((await get(query, research)).status, 403, query);
      }
      assert.equal((await get('Patient/pat-1', research)).status, 404, 'a real id is unknown to a de-identified token');
      assert.equal((await get('Observation?patient=pat-1', research)).status, 404);
      assert.equal((await get('Patient?birthdate=1987', research)).status, 200, 'a year is not a direct identifier');
      for (const query of ['Patient?birthdate=ge1987-02-20&birthdate=le1987-02-20', 'Patient?birthdate=sa1987-02-19&birthdate=eb1987-02-21', 'Patient?birthdate=ap1987-02-20', 'Patient?birthdate=ge1987-02']) {
        assert.equal((await get(query, research)).status, 403, `${query}: ranges to the day pin the exact birth date`);
      }
    });

    it('answers with pseudonyms only, readable and searchable by the same client and purpose', async () => {
      const research = await token('researcher', 'research-pass');
      const patients = await (await get('Patient', research)).json();
      const answer = JSON.stringify(patients);
      for (const id of realIds()) assert.ok(!answer.includes(id), id);
      for (const secret of ['Garcia', 'Daniel', 'MRN-10002', 'Shaw']) assert.ok(!mentions(answer, secret), secret);
      assert.ok(!answer.includes('{}'), 'no empty element');
      const [first] = patients.entry.map((e: any) => e.resource);
      assert.ok(first.meta.security.some((c: any) => c.code === 'PSEUDED'));
      assert.equal((await (await get(`Patient/${first.id}`, research)).json()).id, first.id, 'read by pseudonym');
      const observations = await (await get(`Observation?patient=${first.id}`, research)).json();
      assert.ok(observations.entry.length > 0, 'search by pseudonym');
      assert.ok(observations.entry.every((e: any) => e.resource.subject.reference === `Patient/${first.id}`), 'references carry the same pseudonyms');
      for (const id of realIds()) assert.ok(!(await text(await get(`Observation?patient=${first.id}`, research))).includes(id), id);
    });

    it('keeps paging links, sealed (neither real ids nor pseudonyms to read), and they work', async () => {
      const research = await token('researcher', 'research-pass');
      // A patient with more than one observation this token may see: only then is there a next link.
      let found: { patient: string; page: any } | undefined;
      for (const { resource } of (await (await get('Patient', research)).json()).entry) {
        const page = await (await get(`Observation?patient=${resource.id}&_count=1`, research)).json();
        if (page.link.some((l: any) => l.relation === 'next')) found = { patient: resource.id, page };
      }
      assert.ok(found, 'some patient has two visible observations');
      const next = found.page.link.find((l: any) => l.relation === 'next');
      assert.match(next.url, new RegExp(`^${server.fhirBase}/Observation\\?_page=[\\w.-]+$`));
      for (const id of realIds()) assert.ok(!JSON.stringify(found.page.link).includes(id), id);
      const second = await fetch(next.url, { headers: { authorization: `Bearer ${research}` } });
      assert.equal(second.status, 200);
      const bundle = await second.json();
      assert.equal(bundle.type, 'searchset');
      assert.ok(bundle.entry?.length > 0, 'a next link leads to something this token may see');
    });

    it('gives another client other pseudonyms', async () => {
      const other = await server.addClient({ auth: { kind: 'secret' } });
      const mine = await (await get('Patient?gender=male', await token('researcher', 'research-pass'))).json();
      const theirs = (await authorizedTokens({ server, client: other, scope: 'openid fhirUser user/*.rs', username: 'researcher', password: 'research-pass' })).access_token;
      const seen = await (await get('Patient?gender=male', theirs)).json();
      assert.equal(seen.entry.length, mine.entry.length);
      assert.notEqual(seen.entry[0].resource.id, mine.entry[0].resource.id);
      assert.equal((await get(`Patient/${mine.entry[0].resource.id}`, theirs)).status, 404, "one client's pseudonym means nothing to another");
    });

    it('answers a refused read by pseudonym in pseudonyms: no real id in a not-found or error message', async () => {
      const research = await token('researcher', 'research-pass');
      const [patient] = (await (await get('Patient', research)).json()).entry.map((e: any) => e.resource);
      const [observation] = (await (await get('Observation', research)).json()).entry.map((e: any) => e.resource);
      for (const path of [`Patient/${patient.id}/_history/99`, `Observation/${observation.id}/_history/99`]) {
        const res = await get(path, research);
        assert.equal(res.status, 404, path);
        const body = await res.text();
        for (const id of realIds()) assert.ok(!body.includes(id), `${path} names ${id}: ${body}`);
        assert.match(body, new RegExp(path.split('/_history')[0]), 'it names what was asked');
      }
    });

    it('refuses writes: de-identified access is read-only', async () => {
      const research = await token('researcher', 'research-pass', { scope: 'openid fhirUser user/*.cruds' });
      const res = await fetch(`${server.fhirBase}/Observation`, { method: 'POST', headers: { authorization: `Bearer ${research}`, 'content-type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'x' } }) });
      assert.equal(res.status, 403);
    });
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
