// The resource-server guard in front of the bundled FHIR store, with real tokens from the server:
// each rule of scopes, patient compartments, query restrictions, and the leak vectors.
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, authorizedTokens, decodeJwt, exchangeCode } from '../support/oauth.ts';
import { backendClient } from '../support/backend.ts';

const LAB = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';

describe('resource-server guard', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  const tokens: Record<string, string> = {};

  async function appToken(scope: string, who: { username?: string; password?: string; patient?: string } = {}) {
    const launch = await authorize({ server, client: app, scope, ...who });
    const { body } = await exchangeCode(server.issuer, launch, app);
    assert.ok(body.access_token, JSON.stringify(body));
    return body.access_token as string;
  }

  before(async () => {
    server = await startTestServer();
    app = await server.addClient({ auth: { kind: 'public' } });
    tokens.patient = await appToken('launch/patient openid patient/*.cruds', { patient: 'pat-1' });
    tokens.labOnly = await appToken(`launch/patient openid patient/Observation.rs?category=${LAB} patient/Patient.rs`, { patient: 'pat-1' });
    tokens.v1 = await appToken('launch/patient openid patient/Observation.read patient/Patient.read', { patient: 'pat-1' });
    tokens.amy = await appToken('openid fhirUser user/*.rs', { username: 'amy', password: 'demo-password-3' });
    tokens.jones = await appToken('openid fhirUser user/*.rs', { username: 'dr.jones', password: 'demo-password-2' });
    tokens.smith = await appToken('openid fhirUser user/*.rs', { username: 'dr.smith', password: 'demo-password-1' });
    const backend = await backendClient(server, 'system/*.rs');
    tokens.system = (await backend.token('system/*.rs')).body.access_token;
  });
  after(() => server.stop());

  const fhir = (path: string, token?: string, init: RequestInit = {}) => fetch(`${server.fhirBase}/${path}`, {
    ...init,
    headers: { 'content-type': 'application/fhir+json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...init.headers },
  });
  const json = async (res: Response) => res.json() as Promise<any>;
  const ids = (bundle: any) => (bundle.entry ?? []).map((e: any) => `${e.resource.resourceType}/${e.resource.id}`);

  describe('tokens', () => {
    it('answers 401 with a Bearer challenge for missing, malformed and foreign tokens', async () => {
      const none = await fhir('Patient/pat-1');
      assert.equal(none.status, 401);
      assert.equal(none.headers.get('www-authenticate'), `Bearer realm="${server.fhirBase}"`);
      const bad = await fhir('Patient/pat-1', 'not-a-token');
      assert.equal(bad.status, 401);
      assert.match(bad.headers.get('www-authenticate')!, /error="invalid_token"/);
      assert.equal((await json(bad)).resourceType, 'OperationOutcome');
    });

    it('refuses a token signed by another key, for another audience, or expired', async () => {
      const { generateKeyPair, SignJWT } = await import('jose');
      const { header, payload: claims } = decodeJwt(tokens.patient);
      const { privateKey } = await generateKeyPair('ES256');
      const sign = (payload: Record<string, unknown>, kid = 'forged') => new SignJWT(payload).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid }).sign(privateKey);
      for (const forged of [
        await sign(claims, header.kid),
        await sign({ ...claims, aud: 'https://other.example/fhir' }),
        await sign({ ...claims, exp: Math.floor(Date.now() / 1000) - 60 }),
      ]) {
        const res = await fhir('Patient/pat-1', forged);
        assert.equal(res.status, 401);
        assert.match(res.headers.get('www-authenticate')!, /error="invalid_token"/);
      }
    });

    it('serves metadata and the SMART configuration without a token', async () => {
      const metadata = await json(await fhir('metadata'));
      assert.equal(metadata.rest[0].security.service[0].coding[0].code, 'SMART-on-FHIR');
      const smart = await fhir('.well-known/smart-configuration');
      assert.equal(smart.status, 200);
      assert.equal((await json(smart)).token_endpoint, `${server.issuer}/token`);
    });
  });

  describe('patient/ scopes', () => {
    it('reads inside the compartment and hides everything else as 404', async () => {
      const own = await fhir('Patient/pat-1', tokens.patient);
      assert.equal(own.status, 200);
      assert.equal(own.headers.get('cache-control'), 'private, no-store', 'never from a shared cache');
      assert.equal((await fhir('Patient/pat-2', tokens.patient)).status, 404);
      assert.equal((await fhir('Observation/obs-2a-hiv-vl', tokens.patient)).status, 404);
      assert.equal((await fhir('Observation/obs-2a-hiv-vl/_history/1', tokens.patient)).status, 404, 'vread too');
      assert.equal((await fhir('Observation/obs-2a-hiv-vl/_history', tokens.patient)).status, 404, 'its history too, not an empty one');
      assert.equal((await fhir('Observation/does-not-exist', tokens.patient)).status, 404);
    });

    it('constrains searches to the patient, also when another patient is named', async () => {
      const own = await json(await fhir('Observation', tokens.patient));
      assert.ok(own.entry.length > 0);
      assert.ok(own.entry.every((e: any) => e.resource.subject.reference === 'Patient/pat-1'));
      assert.equal(own.total, own.entry.length, 'total recomputed');
      const other = await json(await fhir('Observation?patient=pat-2', tokens.patient));
      assert.equal((other.entry ?? []).length, 0);
      assert.equal(other.total, 0);
      const post = await fhir('Observation/_search', tokens.patient, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'patient=pat-2' });
      assert.equal((await json(post)).total, 0);
    });

    it('strips _include and _revinclude targets outside the compartment', async () => {
      const res = await json(await fhir('Observation?_include=Observation:subject&_revinclude=Provenance:target', tokens.patient));
      const included = res.entry.filter((e: any) => e.search?.mode === 'include').map((e: any) => `${e.resource.resourceType}/${e.resource.id}`);
      assert.ok(included.includes('Patient/pat-1'));
      assert.ok(!ids(res).includes('Patient/pat-2'));
    });

    it('refuses chained parameters, _has and counts for a patient-bound token', async () => {
      assert.equal((await fhir('Patient?_has:Condition:subject:code=http://snomed.info/sct|38341003', tokens.patient)).status, 403);
      assert.equal((await fhir('Observation?subject.name=Garcia', tokens.patient)).status, 403);
      assert.equal((await fhir('Observation?_summary=count', tokens.patient)).status, 403);
    });

    it('writes only inside the compartment; an update of hidden data is 404', async () => {
      const created = await fhir('Observation', tokens.patient, { method: 'POST', body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'note' }, subject: { reference: 'Patient/pat-1' } }) });
      assert.equal(created.status, 201);
      const body = await json(created);
      assert.ok(created.headers.get('location')!.startsWith(server.fhirBase));
      assert.equal((await fhir('Observation', tokens.patient, { method: 'POST', body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-2' } }) })).status, 403);
      assert.equal((await fhir(`Observation/${body.id}`, tokens.patient, { method: 'PUT', body: JSON.stringify({ ...body, subject: { reference: 'Patient/pat-2' } }) })).status, 403);
      assert.equal((await fhir('Observation/obs-2a-hiv-vl', tokens.patient, { method: 'PUT', body: JSON.stringify({ resourceType: 'Observation', id: 'obs-2a-hiv-vl', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-1' } }) })).status, 404);
      assert.equal((await fhir('Observation/brand-new-id', tokens.patient, { method: 'PUT', body: JSON.stringify({ resourceType: 'Observation', id: 'brand-new-id', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-1' } }) })).status, 404,
        'no update-as-create for a bounded token: it would tell hidden ids from free ones');
    });

    it('refuses writes that name another patient through any compartment parameter, and writes nothing (#14)', async () => {
      const post = (body: { resourceType: string; [element: string]: unknown }) => fhir(body.resourceType, tokens.patient, { method: 'POST', body: JSON.stringify(body) });
      const obs = await post({ resourceType: 'Observation', status: 'final', code: { text: 'x-14' }, subject: { reference: 'Patient/pat-2' }, performer: [{ reference: 'Patient/pat-1' }] });
      assert.equal(obs.status, 403);
      assert.equal((await json(obs)).resourceType, 'OperationOutcome');
      assert.equal((await post({ resourceType: 'Condition', code: { text: 'x-14' }, subject: { reference: 'Patient/pat-2' }, asserter: { reference: 'Patient/pat-1' } })).status, 403);
      const stored = await json(await fhir('Observation/obs-1a-hba1c', tokens.system));
      const moved = await fhir('Observation/obs-1a-hba1c', tokens.patient, { method: 'PUT', body: JSON.stringify({ ...stored, subject: { reference: 'Patient/pat-2' }, performer: [{ reference: 'Patient/pat-1' }] }) });
      assert.equal(moved.status, 403);
      assert.equal((await json(await fhir('Observation/obs-1a-hba1c', tokens.system))).subject.reference, 'Patient/pat-1', 'nothing written');
      assert.ok(!ids(await json(await fhir('Observation?patient=pat-2', tokens.smith))).includes('Observation/obs-1a-hba1c'));
      for (const type of ['Observation', 'Condition']) {
        const written = await json(await fhir(`${type}?patient=pat-2`, tokens.system));
        assert.ok(!(written.entry ?? []).some((e: any) => e.resource.code?.text === 'x-14'), `no ${type} was created`);
      }
      const entry = { resource: { resourceType: 'Observation', status: 'final', code: { text: 'x-14b' }, subject: { reference: 'Patient/pat-2' }, performer: [{ reference: 'Patient/pat-1' }] }, request: { method: 'POST', url: 'Observation' } };
      const batch = await json(await fhir('', tokens.patient, { method: 'POST', body: JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: [entry] }) }));
      assert.equal(batch.entry[0].response.status, '403', 'a batch entry too');
      assert.equal((await fhir('', tokens.patient, { method: 'POST', body: JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: [entry] }) })).status, 403, 'and a transaction');
    });

    it('runs no entry of a transaction when a later one is refused by the purpose or audit-trail rules (all or nothing)', async () => {
      const writer = await appToken('openid fhirUser user/*.cruds', { username: 'dr.smith', password: 'demo-password-1' }); // not an auditor
      const created = { resource: { resourceType: 'Observation', status: 'final', code: { text: 'x-tx-partial' }, subject: { reference: 'Patient/pat-1' } }, request: { method: 'POST', url: 'Observation' } };
      const trail = { request: { method: 'GET', url: 'AuditEvent?patient=pat-1' } };
      const res = await fhir('', writer, { method: 'POST', body: JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: [created, trail] }) });
      assert.equal(res.status, 403);
      assert.equal((await json(res)).resourceType, 'OperationOutcome');
      const written = await json(await fhir('Observation?patient=pat-1', tokens.system));
      assert.ok(!(written.entry ?? []).some((e: any) => e.resource.code?.text === 'x-tx-partial'), 'the first entry was not written');
    });

    it('refuses a narrative with active content', async () => {
      const res = await fhir('Observation', tokens.patient, {
        method: 'POST',
        body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-1' }, text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml"><img src="x" onerror="alert(1)"/></div>' } }),
      });
      assert.equal(res.status, 400);
      assert.match((await json(res)).issue[0].diagnostics, /narrative/);
    });

    it('refuses operations unless allowed', async () => {
      assert.equal((await fhir('Patient/pat-1/$everything', tokens.patient)).status, 403);
    });

    it('decides each batch entry on its own', async () => {
      const res = await fhir('', tokens.patient, {
        method: 'POST',
        body: JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: [
          { request: { method: 'GET', url: 'Patient/pat-1' } },
          { request: { method: 'GET', url: 'Patient/pat-2' } },
          { request: { method: 'GET', url: 'Observation?patient=pat-2' } },
        ] }),
      });
      assert.equal(res.status, 200);
      const bundle = await json(res);
      assert.equal(bundle.type, 'batch-response');
      assert.deepEqual(bundle.entry.map((e: any) => e.response.status.slice(0, 3)), ['200', '404', '200']);
      assert.equal(bundle.entry[2].resource.total, 0);
    });
  });

  describe('Binary: visible as its securityContext is', () => {
    const binary = (id: string, reference?: string) => ({ resourceType: 'Binary', id, contentType: 'text/plain', data: Buffer.from(`attachment ${id}`).toString('base64'), ...(reference && { securityContext: { reference } }) });
    before(async () => {
      // PUT to new ids: only a backend that manages labels, cleared for every one, creates by an update.
      const writer = await backendClient(server, 'system/*.cruds system/Consent.cu', 'ES384', { clearance: 'V', sensitivity: ['*'] });
      const token = (await writer.token('system/*.cruds system/Consent.cu')).body.access_token;
      for (const resource of [
        { resourceType: 'DocumentReference', id: 'doc-bin-1', status: 'current', subject: { reference: 'Patient/pat-1' }, content: [{ attachment: { url: 'Binary/bin-doc-1' } }] },
        { resourceType: 'DocumentReference', id: 'doc-bin-2', status: 'current', subject: { reference: 'Patient/pat-2' }, content: [{ attachment: { url: 'Binary/bin-doc-2' } }] },
        binary('bin-doc-1', 'DocumentReference/doc-bin-1'), binary('bin-doc-2', 'DocumentReference/doc-bin-2'), binary('bin-doc-gone', 'DocumentReference/no-such-doc'),
        binary('bin-pat-1', 'Patient/pat-1'), binary('bin-pat-2', 'Patient/pat-2'), binary('bin-none'),
        {
          resourceType: 'DocumentReference', id: 'doc-bin-hiv', status: 'current', subject: { reference: 'Patient/pat-1' }, content: [{ attachment: { url: 'Binary/bin-doc-hiv' } }],
          meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }, { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'HIV' }] },
        },
        binary('bin-doc-hiv', 'DocumentReference/doc-bin-hiv'),
      ]) {
        const res = await fhir(`${resource.resourceType}/${resource.id}`, token, { method: 'PUT', body: JSON.stringify(resource) });
        assert.ok(res.status < 300, `${resource.id}: ${res.status}`);
      }
    });

    it("a patient's token reads the Binaries of their own documents and of themselves, and nothing else", async () => {
      for (const id of ['bin-doc-1', 'bin-pat-1']) {
        const res = await fhir(`Binary/${id}`, tokens.patient);
        assert.equal(res.status, 200, id);
        assert.equal(Buffer.from((await json(res)).data, 'base64').toString(), `attachment ${id}`);
      }
      for (const id of ['bin-doc-2', 'bin-pat-2', 'bin-none', 'bin-doc-gone']) {
        assert.equal((await fhir(`Binary/${id}`, tokens.patient)).status, 404, id);
      }
      assert.equal((await fhir('Binary/bin-doc-2/_history/1', tokens.patient)).status, 404, 'vread too');
    });

    it("the context's labels decide too", async () => {
      assert.equal((await fhir('Binary/bin-doc-1', tokens.jones)).status, 200, 'dr.jones may see pat-1');
      assert.equal((await fhir('DocumentReference/doc-bin-hiv', tokens.jones)).status, 404, 'R + HIV is above his clearance');
      assert.equal((await fhir('Binary/bin-doc-hiv', tokens.jones)).status, 404, 'and so is its attachment');
    });

    it('an unbounded token reads every Binary', async () => {
      for (const id of ['bin-doc-1', 'bin-doc-2', 'bin-pat-2', 'bin-none']) assert.equal((await fhir(`Binary/${id}`, tokens.system)).status, 200, id);
    });

    it("records the document's patient as the patient of the access", async () => {
      const requestId = `binary-${Date.now()}`;
      assert.equal((await fhir('Binary/bin-doc-1', tokens.patient, { headers: { 'x-request-id': requestId } })).status, 200);
      const rows = await server.db('audit_events').where('event', 'like', `%${requestId}%`).select('patient_id');
      assert.deepEqual(rows.map((r: { patient_id: string }) => r.patient_id), ['pat-1']);
    });

    it('a bounded token writes only Binaries whose context is its patient', async () => {
      assert.equal((await fhir('Binary', tokens.patient, { method: 'POST', body: JSON.stringify(binary('x', 'Patient/pat-1')) })).status, 201);
      assert.equal((await fhir('Binary', tokens.patient, { method: 'POST', body: JSON.stringify(binary('x', 'Patient/pat-2')) })).status, 403);
      assert.equal((await fhir('Binary', tokens.patient, { method: 'POST', body: JSON.stringify(binary('x')) })).status, 403);
      assert.equal((await fhir('Binary/bin-doc-2', tokens.patient, { method: 'DELETE' })).status, 404);
      assert.equal((await fhir('Binary/bin-doc-2', tokens.system)).status, 200, 'still there');
    });
  });

  describe('query-restricted scopes', () => {
    it('returns only matching resources from searches and 404 for others on read', async () => {
      const res = await json(await fhir('Observation', tokens.labOnly));
      assert.ok(res.entry.length > 0);
      assert.ok(res.entry.every((e: any) => e.resource.category.some((c: any) => c.coding.some((x: any) => x.code === 'laboratory'))));
      const vital = (await json(await fhir('Observation?category=vital-signs', tokens.patient))).entry[0].resource.id;
      assert.equal((await fhir(`Observation/${vital}`, tokens.labOnly)).status, 404);
      assert.equal((await fhir('Condition', tokens.labOnly)).status, 403);
    });
  });

  describe('v1 scopes', () => {
    it('work like their v2 mapping', async () => {
      assert.equal((await fhir('Patient/pat-1', tokens.v1)).status, 200);
      assert.equal((await fhir('Observation', tokens.v1)).status, 200);
      assert.equal((await fhir('Observation', tokens.v1, { method: 'POST', body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-1' } }) })).status, 403);
    });
  });

  describe('user/ and system/ scopes', () => {
    it('limits a patient user to their own compartment', async () => {
      assert.equal((await fhir('Patient/pat-1', tokens.amy)).status, 200);
      assert.equal((await fhir('Patient/pat-2', tokens.amy)).status, 404);
    });

    it('limits a clinician to the patients they may see', async () => {
      assert.equal((await fhir('Patient/pat-2', tokens.jones)).status, 200);
      assert.equal((await fhir('Patient/pat-3', tokens.jones)).status, 404);
      const patients = await json(await fhir('Patient', tokens.jones));
      assert.deepEqual(ids(patients).sort(), ['Patient/pat-1', 'Patient/pat-2']);
      const all = await json(await fhir('Patient', tokens.smith));
      assert.ok(ids(all).includes('Patient/pat-3'));
    });

    it('gives a backend service its pre-authorized system access', async () => {
      assert.equal((await fhir('Patient/pat-3', tokens.system)).status, 200);
      assert.equal((await fhir('Observation', tokens.system, { method: 'POST', body: '{"resourceType":"Observation"}' })).status, 403);
    });
  });

  it('sanitises narratives instead when GUARD_NARRATIVES=sanitize', async () => {
    const lenient = await startTestServer({ GUARD_NARRATIVES: 'sanitize' });
    try {
      const client = await lenient.addClient({ auth: { kind: 'public' } });
      const body = await authorizedTokens({ server: lenient, client, scope: 'launch/patient openid patient/*.cruds', patient: 'pat-1' });
      const res = await fetch(`${lenient.fhirBase}/Observation`, {
        method: 'POST', headers: { authorization: `Bearer ${body.access_token}`, 'content-type': 'application/fhir+json' },
        body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-1' }, text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml"><p>ok</p><script>alert(1)</script></div>' } }),
      });
      assert.equal(res.status, 201);
      const saved = await res.json();
      assert.match(saved.text.div, /<p>ok<\/p>/);
      assert.doesNotMatch(saved.text.div, /script/i);
    } finally {
      await lenient.stop();
    }
  });

  it('answers bad input with an OperationOutcome and never a stack trace', async () => {
    for (const [path, init, status] of [
      ['Observation?code:text=x', {}, 400],
      ['Observation', { method: 'POST', body: '{not json' }, 400],
      ['Observation', { method: 'POST', body: '{"resourceType":"Patient"}' }, 400],
      ['lowercase', {}, 404],
      ['Observation/x', { method: 'DELETE' }, 404],
    ] as const) {
      const res = await fhir(path, tokens.patient, init);
      assert.equal(res.status, status, `${(init as RequestInit).method ?? 'GET'} ${path}`);
      const text = await res.text();
      assert.match(text, /OperationOutcome/);
      assert.doesNotMatch(text, /at [\w.<>]+ \(|node_modules/);
    }
  });
});
