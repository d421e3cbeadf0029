import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, decodeJwt, exchangeCode, tokenRequest } from '../support/oauth.ts';

describe('standalone launch', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  before(async () => {
    server = await startTestServer();
    app = await server.addClient({ auth: { kind: 'public' } });
  });
  after(() => server.stop());

  it('takes a clinician through login, picker and consent to a JWT access token with context', async () => {
    const launch = await authorize({ server, client: app, scope: 'launch/patient openid fhirUser offline_access patient/*.rs', patient: 'pat-2' });
    assert.ok(launch.code, `no code: ${launch.redirect}`);
    const { res, body } = await exchangeCode(server.issuer, launch, app);
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.equal(res.headers.get('pragma'), 'no-cache');
    assert.equal(body.token_type, 'Bearer');
    assert.equal(body.patient, 'pat-2');
    assert.equal(body.need_patient_banner, true);
    assert.ok(body.refresh_token);
    assert.deepEqual(new Set(body.scope.split(' ')), new Set(['launch/patient', 'openid', 'fhirUser', 'offline_access', 'patient/*.rs']));
    const at = decodeJwt(body.access_token);
    assert.equal(at.header.typ, 'at+jwt');
    assert.equal(at.payload.aud, server.fhirBase);
    assert.equal(at.payload.patient, 'pat-2');
    assert.equal(at.payload.client_id, app.client_id);
    const id = decodeJwt(body.id_token);
    assert.equal(id.header.alg, 'RS256');
    assert.equal(id.payload.fhirUser, `${server.fhirBase}/Practitioner/dr-smith`);

    const patient = await fetch(`${server.fhirBase}/Patient/pat-2`, { headers: { authorization: `Bearer ${body.access_token}` } });
    assert.equal(patient.status, 200);
    const other = await fetch(`${server.fhirBase}/Patient/pat-1`, { headers: { authorization: `Bearer ${body.access_token}` } });
    assert.equal(other.status, 404);

    const refreshed = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: body.refresh_token }, app);
    assert.equal(refreshed.res.status, 200, JSON.stringify(refreshed.body));
    assert.equal(refreshed.body.patient, 'pat-2');
  });
});
