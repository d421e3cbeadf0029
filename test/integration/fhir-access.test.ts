// The bundled /fhir store refuses requests without a valid token for this audience and keeps to the token's scopes and patient.
import assert from 'node:assert/strict';
import { generateKeyPair, SignJWT } from 'jose';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, decodeJwt, exchangeCode } from '../support/oauth.ts';

describe('/fhir access', () => {
  let server: TestServer;
  let token: string;
  let claims: Record<string, any>;
  const get = (path: string, bearer = token, init: RequestInit = {}) =>
    fetch(`${server.fhirBase}${path}`, { ...init, headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/fhir+json', ...init.headers } });

  before(async () => {
    server = await startTestServer();
    const app = await server.addClient({ auth: { kind: 'public' } });
    const launch = await authorize({ server, client: app, scope: 'launch/patient openid patient/*.rs patient/Observation.c patient/Observation.u', patient: 'pat-1' });
    token = (await exchangeCode(server.issuer, launch, app)).body.access_token;
    claims = decodeJwt(token).payload;
  });
  after(() => server.stop());

  it('answers 401 with a Bearer challenge without a token, and invalid_token for a bad one', async () => {
    const none = await fetch(`${server.fhirBase}/Patient/pat-1`);
    assert.equal(none.status, 401);
    assert.match(none.headers.get('www-authenticate')!, /^Bearer realm="/);
    assert.doesNotMatch(none.headers.get('www-authenticate')!, /error=/, 'no error code when no token was sent (RFC 6750 3.1)');
    assert.equal((await none.json()).resourceType, 'OperationOutcome');
    for (const bad of ['garbage', `${token}x`, token.split('.').slice(0, 2).join('.') + '.']) {
      const res = await get('/Patient/pat-1', bad);
      assert.equal(res.status, 401, bad.slice(0, 20));
      assert.match(res.headers.get('www-authenticate')!, /error="invalid_token"/);
    }
  });

  it('refuses a token signed by another key, for another audience, or expired', async () => {
    const { privateKey } = await generateKeyPair('RS256');
    const sign = (payload: Record<string, unknown>, key = privateKey, kid = 'forged') =>
      new SignJWT(payload).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid }).sign(key);
    const forged = await sign(claims, privateKey, decodeJwt(token).header.kid);
    assert.equal((await get('/Patient/pat-1', forged)).status, 401);
    const otherAudience = await sign({ ...claims, aud: 'https://other.example/fhir' });
    assert.equal((await get('/Patient/pat-1', otherAudience)).status, 401);
    const expired = await sign({ ...claims, exp: Math.floor(Date.now() / 1000) - 60 });
    assert.equal((await get('/Patient/pat-1', expired)).status, 401);
  });

  it('reads the patient in context and hides everyone else (404)', async () => {
    assert.equal((await get('/Patient/pat-1')).status, 200);
    const other = await get('/Patient/pat-2');
    assert.equal(other.status, 404);
    assert.equal((await get('/Observation/obs-2a-hiv-vl')).status, 404);
    assert.equal((await get('/Patient/does-not-exist')).status, 404);
  });

  it('constrains searches to the patient, even when another patient is named', async () => {
    const own = await (await get('/Observation')).json();
    assert.equal(own.resourceType, 'Bundle');
    assert.ok(own.entry.length > 0);
    for (const { resource } of own.entry) assert.equal(resource.subject.reference, 'Patient/pat-1');
    const other = await (await get('/Observation?patient=pat-2')).json();
    assert.equal((other.entry ?? []).length, 0);
    const viaPost = await get('/Observation/_search', token, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'category=laboratory' });
    assert.equal(viaPost.status, 200);
  });

  it('refuses interactions the scopes do not grant with 403 insufficient_scope', async () => {
    const res = await get('/Condition', token, { method: 'POST', body: JSON.stringify({ resourceType: 'Condition', subject: { reference: 'Patient/pat-1' } }) });
    assert.equal(res.status, 403);
    assert.match(res.headers.get('www-authenticate')!, /error="insufficient_scope"/);
  });

  it('creates and updates inside the compartment only, keeping meta.security as sent', async () => {
    const security = [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }];
    const created = await get('/Observation', token, { method: 'POST', body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'note' }, subject: { reference: 'Patient/pat-1' }, meta: { security } }) });
    assert.equal(created.status, 201);
    const body = await created.json();
    assert.deepEqual(body.meta.security, security);
    assert.ok(created.headers.get('location')!.startsWith(`${server.fhirBase}/Observation/${body.id}`));
    const updated = await get(`/Observation/${body.id}`, token, { method: 'PUT', body: JSON.stringify({ ...body, status: 'amended' }) });
    assert.equal(updated.status, 200);
    assert.equal((await updated.json()).meta.versionId, '2');
    const elsewhere = await get('/Observation', token, { method: 'POST', body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-2' } }) });
    assert.equal(elsewhere.status, 403);
    const moveAway = await get(`/Observation/${body.id}`, token, { method: 'PUT', body: JSON.stringify({ ...body, subject: { reference: 'Patient/pat-2' } }) });
    assert.equal(moveAway.status, 403);
    assert.equal((await get('/Observation/obs-2a-hiv-vl', token, { method: 'PUT', body: JSON.stringify({ resourceType: 'Observation', id: 'obs-2a-hiv-vl', subject: { reference: 'Patient/pat-1' } }) })).status, 404);
  });

  it('answers bad input with an OperationOutcome, never a stack trace', async () => {
    const cases: [string, RequestInit, number][] = [
      ['/Observation?code:text=x', {}, 400],
      ['/Observation?date=notadate', {}, 400],
      ['/Observation', { method: 'POST', body: '{"resourceType":"Patient"}' }, 400],
      ['/Observation', { method: 'POST', body: '{not json' }, 400],
      ['/Observation/x', { method: 'PUT', body: JSON.stringify({ resourceType: 'Observation', id: 'y', subject: { reference: 'Patient/pat-1' } }) }, 400],
      ['/Observation/x', { method: 'DELETE' }, 405],
      ['/lowercase', {}, 404],
    ];
    for (const [path, init, status] of cases) {
      const res = await get(path, token, init);
      assert.equal(res.status, status, `${init.method ?? 'GET'} ${path}`);
      const text = await res.text();
      assert.doesNotMatch(text, /at [\w.<>]+ \(|node_modules/, `${path} leaks a stack`);
    }
  });
});
