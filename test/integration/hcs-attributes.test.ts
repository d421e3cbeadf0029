// HCS security attributes in tokens: role, purpose of use, clearance and break-the-glass.
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, decodeJwt, exchangeCode, introspectToken, tokenRequest } from '../support/oauth.ts';
import { backendClient } from '../support/backend.ts';
import { auditEvents } from '../../server/audit/store.ts';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const SCOPE = 'launch/patient openid fhirUser offline_access patient/*.rs';

describe('HCS attributes in tokens', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  before(async () => {
    server = await startTestServer();
    app = await server.addClient({ auth: { kind: 'secret' } });
  });
  after(() => server.stop());

  const jones = { username: 'dr.jones', password: 'demo-password-2' };
  const amy = { username: 'amy', password: 'demo-password-3' };
  const purposeOptions = (html: string) => [...(html.match(/<select name="purpose_of_use">[\s\S]*?<\/select>/)?.[0] ?? '').matchAll(/<option value="([^"]+)"/g)].map((m) => m[1]);

  it('gives a clinician TREAT by default, with role, organization and clearance residual', async () => {
    const launch = await authorize({ server, client: app, scope: SCOPE, patient: 'pat-2' });
    assert.deepEqual(purposeOptions(launch.pages.at(-1)!), ['TREAT', 'HPAYMT', 'HOPERAT']);
    assert.match(launch.pages.at(-1)!, /<option value="TREAT" selected/);
    assert.doesNotMatch(launch.pages.at(-1)!, /btg_reason|BTG/, 'no break-the-glass for a user not allowed to');
    const { body } = await exchangeCode(server.issuer, launch, app);
    const { extensions } = decodeJwt(body.access_token).payload;
    assert.deepEqual(extensions.ihe_iua.purpose_of_use, [{ system: ACT_REASON, code: 'TREAT', display: 'treatment' }]);
    assert.equal(extensions.ihe_iua.subject_name, 'Jane Smith, MD');
    assert.equal(extensions.ihe_iua.subject_organization, 'Example Hospital');
    assert.equal(extensions.ihe_iua.subject_organization_id, 'urn:oid:2.16.840.1.113883.19.5');
    assert.deepEqual(extensions.ihe_iua.subject_role, [{ system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', code: 'doctor', display: 'Doctor' }]);
    const forbidden = extensions.ihe_pcf.residual[0].securityLabel.map((c: { code: string }) => c.code);
    assert.ok(forbidden.includes('V') && !forbidden.includes('R'), 'clearance R forbids V only');
    assert.ok(forbidden.includes('SDV') && !forbidden.includes('HIV'), 'sensitivities not granted are forbidden');
    assert.equal(extensions.ihe_pcf.patient_id, `${server.fhirBase}/Patient/pat-2`);
  });

  it('records the purpose the clinician picks', async () => {
    const launch = await authorize({ server, client: app, scope: SCOPE, patient: 'pat-2', purpose: 'HPAYMT' });
    const { body } = await exchangeCode(server.issuer, launch, app);
    assert.equal(decodeJwt(body.access_token).payload.extensions.ihe_iua.purpose_of_use[0].code, 'HPAYMT');
    const refreshed = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: body.refresh_token }, app);
    assert.equal(decodeJwt(refreshed.body.access_token).payload.extensions.ihe_iua.purpose_of_use[0].code, 'HPAYMT', 'the purpose survives refresh');
  });

  it('gives a patient user PATRQT without a choice', async () => {
    const launch = await authorize({ server, client: app, scope: SCOPE, ...amy });
    assert.equal(purposeOptions(launch.pages.at(-1)!).length, 0);
    assert.match(launch.pages.at(-1)!, /name="purpose_of_use" value="PATRQT"/);
    const { body } = await exchangeCode(server.issuer, launch, app);
    assert.equal(decodeJwt(body.access_token).payload.extensions.ihe_iua.purpose_of_use[0].code, 'PATRQT');
  });

  it('refuses a purpose the user may not assert, submitted or asked for by the app', async () => {
    const forged = await authorize({ server, client: app, scope: SCOPE, patient: 'pat-2', purpose: 'BTG', btgReason: 'trying to get around it' });
    assert.equal(forged.code, undefined);
    assert.equal(forged.status, 400);
    assert.match(forged.pages.at(-1)!, /Choose one of the purposes of use listed/);
    const asked = await authorize({ server, client: app, scope: `${SCOPE} purpose_of_use=${ACT_REASON}|HRESCH` });
    assert.equal(asked.error, 'access_denied');
    assert.match(asked.redirect.searchParams.get('error_description')!, /HRESCH is not permitted/);
  });

  it('honours a purpose the app asks for when the user may assert it, by scope token or parameter', async () => {
    const byScope = await authorize({ server, client: app, scope: `${SCOPE} purpose_of_use=${ACT_REASON}|HOPERAT`, patient: 'pat-1' });
    assert.match(byScope.pages.at(-1)!, /asked for by the app/);
    const scoped = await exchangeCode(server.issuer, byScope, app);
    assert.equal(decodeJwt(scoped.body.access_token).payload.extensions.ihe_iua.purpose_of_use[0].code, 'HOPERAT');
    assert.ok(!scoped.body.scope.includes('purpose_of_use'), 'the purpose is an attribute, not a granted scope');
    const byParameter = await authorize({ server, client: app, scope: SCOPE, patient: 'pat-1', extra: { purpose_of_use: 'HPAYMT' } });
    const param = await exchangeCode(server.issuer, byParameter, app);
    assert.equal(decodeJwt(param.body.access_token).payload.extensions.ihe_iua.purpose_of_use[0].code, 'HPAYMT');
  });

  it('refuses an app asking for break-the-glass, at the authorization endpoint', async () => {
    const res = await authorize({ server, client: app, scope: SCOPE, extra: { purpose_of_use: 'BTG' } });
    assert.equal(res.error, 'invalid_request');
    assert.match(res.redirect.searchParams.get('error_description')!, /only the person/);
  });

  it('limits purposes to those the client is registered for', async () => {
    const billing = await server.addClient({ auth: { kind: 'secret' }, purposes: ['HPAYMT'] });
    const launch = await authorize({ server, client: billing, scope: SCOPE, patient: 'pat-2' });
    assert.match(launch.pages.at(-1)!, /name="purpose_of_use" value="HPAYMT"/);
    assert.equal(decodeJwt((await exchangeCode(server.issuer, launch, billing)).body.access_token).payload.extensions.ihe_iua.purpose_of_use[0].code, 'HPAYMT');
  });

  describe('break-the-glass', () => {
    it('offers BTG and ETREAT only to a user allowed to, and needs a written reason', async () => {
      const launch = await authorize({ server, client: app, scope: SCOPE, ...jones, patient: 'pat-1', purpose: 'BTG', btgReason: '' });
      assert.deepEqual(purposeOptions(launch.pages.at(-1)!), ['TREAT', 'ETREAT', 'BTG']);
      assert.match(launch.pages.at(-1)!, /textarea name="btg_reason"/);
      assert.equal(launch.code, undefined);
      assert.match(launch.pages.at(-1)!, /needs a written reason/);
    });

    it('issues a short token without a refresh token, lifts the ceiling to R, and raises a security alert', async () => {
      const before = (await auditEvents(server.db, { subtype: '110127' })).length;
      const launch = await authorize({ server, client: app, scope: SCOPE, ...jones, patient: 'pat-1', purpose: 'BTG', btgReason: 'Unconscious patient, allergy history needed now' });
      const { res, body } = await exchangeCode(server.issuer, launch, app);
      assert.equal(res.status, 200, JSON.stringify(body));
      assert.ok(body.expires_in <= 900);
      assert.equal(body.refresh_token, undefined, 'break-the-glass is never refreshed');
      const { payload } = decodeJwt(body.access_token);
      assert.deepEqual(payload.extensions.ihe_iua.purpose_of_use, [{ system: ACT_REASON, code: 'BTG', display: 'break the glass' }]);
      const forbidden = payload.extensions.ihe_pcf.residual[0].securityLabel.map((c: { code: string }) => c.code);
      assert.deepEqual(forbidden, ['V'], 'clearance N lifted to R, sensitivities lifted, V never');
      const alerts = await auditEvents(server.db, { subtype: '110127' });
      assert.equal(alerts.length, before + 1);
      const alert = alerts.at(-1)! as any;
      assert.equal(alert.type.code, '110113');
      assert.equal(alert.purposeOfEvent[0].text, 'Unconscious patient, allergy history needed now');
      assert.equal(alert.agent[0].policy[0], `urn:ietf:params:oauth:jti:${payload.jti}`);
      assert.equal(alert.entity[0].what.reference, 'Patient/pat-1');
      const introspected = await (await introspectToken(server.issuer, app, body.access_token)).json();
      assert.deepEqual(introspected.extensions, payload.extensions, 'introspection returns the same attributes');
    });
  });

  describe('backend services', () => {
    it('takes the purpose from hl7-b2b, or the single registered purpose, and refuses others', async () => {
      const registered = await backendClient(server, 'system/Patient.rs', 'ES384', { purposes: ['TREAT'] });
      const implicit = await registered.token('system/Patient.rs');
      assert.equal(decodeJwt(implicit.body.access_token).payload.extensions.ihe_iua.purpose_of_use[0].code, 'TREAT');
      const b2b = (purposes: string[]) => ({ claims: { extensions: { 'hl7-b2b': { version: '1', organization_id: 'https://org.example/1', purpose_of_use: purposes } } } });
      const other = await registered.token('system/Patient.rs', b2b(['urn:oid:2.16.840.1.113883.5.8#HPAYMT']));
      assert.equal(other.res.status, 400);
      assert.match(other.body.error_description, /not registered for this client/);
      const several = await registered.token('system/Patient.rs', b2b(['urn:oid:2.16.840.1.113883.5.8#TREAT', 'urn:oid:2.16.840.1.113883.5.8#HPAYMT']));
      assert.equal(several.res.status, 400);
      assert.match(several.body.error_description, /exactly one/);
      const btg = await registered.token('system/Patient.rs', b2b(['urn:oid:2.16.840.1.113883.5.8#BTG']));
      assert.equal(btg.res.status, 400);
    });

    it('refuses a token without a purpose of use to a client registered for several (it read identified data its research purposes de-identify)', async () => {
      const research = await backendClient(server, 'system/Patient.rs', 'ES384', { purposes: ['HRESCH', 'CLINTRCH'] });
      const unnamed = await research.token('system/Patient.rs');
      assert.equal(unnamed.res.status, 400);
      assert.equal(unnamed.body.error, 'invalid_request');
      assert.match(unnamed.body.error_description, /registered for several purposes of use/);
      assert.equal(unnamed.body.access_token, undefined);
      const named = await research.token('system/Patient.rs', { claims: { extensions: { 'hl7-b2b': { version: '1', organization_id: 'https://org.example/1', purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#CLINTRCH'] } } } });
      assert.equal(decodeJwt(named.body.access_token).payload.extensions.ihe_iua.purpose_of_use[0].code, 'CLINTRCH');
      const read = await fetch(`${server.fhirBase}/Patient/pat-1`, { headers: { authorization: `Bearer ${named.body.access_token}` } });
      assert.equal(read.status, 404, 'research reads are de-identified: the real id is unknown to it');
      const scoped = await research.token('system/Patient.rs purpose_of_use=http://terminology.hl7.org/CodeSystem/v3-ActReason|HRESCH');
      assert.equal(decodeJwt(scoped.body.access_token).payload.extensions.ihe_iua.purpose_of_use[0].code, 'HRESCH');
    });

    it('refuses an hl7-b2b purpose of another code system, or no purpose of use, though the client registered no purposes', async () => {
      const open = await backendClient(server, 'system/Patient.rs');
      const b2b = (purpose: string) => ({ claims: { extensions: { 'hl7-b2b': { version: '1', organization_id: 'https://org.example/1', purpose_of_use: [purpose] } } } });
      for (const purpose of ['https://evil.example/cs#HTEST', 'urn:oid:2.16.840.1.113883.5.8#NOTAPURPOSE']) {
        const { res, body } = await open.token('system/Patient.rs', b2b(purpose));
        assert.equal(res.status, 400, purpose);
        assert.equal(body.error, 'invalid_request');
        assert.match(body.error_description, /not a v3-ActReason purpose of use/);
      }
      const test = await open.token('system/Patient.rs', b2b('urn:oid:2.16.840.1.113883.5.8#HTEST'));
      assert.equal(decodeJwt(test.body.access_token).payload.extensions.ihe_iua.purpose_of_use[0].code, 'HTEST');
    });
  });

  it('advertises the purposes of use and roles in discovery', async () => {
    const doc = await (await fetch(`${server.issuer}/.well-known/smart-configuration`)).json();
    assert.ok(doc.purposes_of_use_supported.some((c: { system: string; code: string }) => c.system === ACT_REASON && c.code === 'BTG'));
    assert.ok(doc.subject_roles_supported.some((c: { code: string }) => c.code === 'doctor'));
  });

  it('follows a custom POLICY_FILE, and refuses to start with a broken one', async () => {
    const file = join(tmpdir(), `policy-${process.pid}.json`);
    const policy = JSON.parse(JSON.stringify((await import('../../server/hcs/default-policy.json', { with: { type: 'json' } })).default));
    policy.rolePurposes = [{ role: 'http://terminology.hl7.org/CodeSystem/practitioner-role|doctor', purposes: ['HOPERAT'] }];
    writeFileSync(file, JSON.stringify(policy));
    const custom = await startTestServer({ POLICY_FILE: file });
    try {
      const client = await custom.addClient({ auth: { kind: 'public' } });
      const launch = await authorize({ server: custom, client, scope: SCOPE, patient: 'pat-1' });
      assert.match(launch.pages.at(-1)!, /name="purpose_of_use" value="HOPERAT"/);
    } finally {
      await custom.stop();
    }
    writeFileSync(file, '{"rolePurposes": "nope"}');
    await assert.rejects(startTestServer({ POLICY_FILE: file }), /rolePurposes must be an array/);
  });
});
