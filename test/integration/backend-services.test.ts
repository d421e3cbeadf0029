// SMART Backend Services: client_credentials with private_key_jwt, every assertion rule and failure.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { generateKeyPair, SignJWT, base64url } from 'jose';
import { startTestServer, type TestServer } from '../support/server.ts';
import { decodeJwt, postWithHost, tokenRequest } from '../support/oauth.ts';
import { ASSERTION_TYPE, backendClient, type BackendClient } from '../support/backend.ts';
import { auditEvents } from '../../server/audit/store.ts';
import { groupCommitFor } from '../../server/group-commit.ts';

describe('backend services (client_credentials, private_key_jwt)', () => {
  let server: TestServer;
  let es: BackendClient;
  let rs: BackendClient;
  before(async () => {
    server = await startTestServer();
    es = await backendClient(server, 'system/Patient.rs system/Observation.rs', 'ES384');
    rs = await backendClient(server, 'system/*.rs', 'RS384');
  });
  after(() => server.stop());

  for (const which of ['ES384', 'RS384'] as const) {
    it(`issues a short JWT for allowed system scopes (${which})`, async () => {
      const client = which === 'ES384' ? es : rs;
      const { res, body } = await client.token('system/Patient.rs system/Observation.rs patient/*.rs user/*.rs');
      assert.equal(res.status, 200, JSON.stringify(body));
      assert.equal(res.headers.get('cache-control'), 'no-store');
      assert.equal(body.token_type, 'Bearer');
      assert.ok(body.expires_in <= 300);
      assert.equal(body.refresh_token, undefined);
      assert.equal(body.scope, 'system/Patient.rs system/Observation.rs');
      const { header, payload } = decodeJwt(body.access_token);
      assert.equal(header.typ, 'at+jwt');
      assert.equal(header.alg, 'ES256');
      assert.equal(payload.aud, server.fhirBase);
      assert.equal(payload.sub, client.client_id);
      assert.equal(payload.scope, body.scope);
    });
  }

  it('grants the intersection with the allowed scopes, and invalid_scope when nothing is allowed', async () => {
    const narrow = await es.token('system/Patient.r system/Condition.rs');
    assert.equal(narrow.body.scope, 'system/Patient.r');
    const none = await es.token('system/Condition.rs');
    assert.equal(none.res.status, 400);
    assert.equal(none.body.error, 'invalid_scope');
  });

  it('reads FHIR data with the token', async () => {
    const { body } = await es.token('system/Patient.rs');
    const res = await fetch(`${server.fhirBase}/Patient?_id=pat-3`, { headers: { authorization: `Bearer ${body.access_token}` } });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).entry.length, 1);
  });

  describe('clearance', () => {
    const LABELLED = ['Observation/obs-1-brca', 'Observation/obs-2a-hiv-vl', 'Condition/cond-2-oud']; // V; R and HIV; SUD
    const read = (token: string, path: string) => fetch(`${server.fhirBase}/${path}`, { headers: { authorization: `Bearer ${token}` } });

    it('is N without sensitivities by default: the token carries the residual and the guard hides labelled data', async () => {
      const { body } = await rs.token('system/*.rs');
      const residual = decodeJwt(body.access_token).payload.extensions?.ihe_pcf?.residual;
      assert.ok(Array.isArray(residual) && residual.length, 'the token carries a residual');
      const forbidden = residual.flatMap((r: { securityLabel: { code: string }[] }) => r.securityLabel.map((l) => l.code));
      for (const code of ['R', 'V', 'HIV', 'SUD', 'PSY']) assert.ok(forbidden.includes(code), code);
      for (const path of LABELLED) assert.equal((await read(body.access_token, path)).status, 404, path);
      assert.equal((await read(body.access_token, 'Observation/obs-1a-glucose')).status, 200);
      const search = await (await read(body.access_token, 'Condition?patient=pat-2')).json();
      assert.ok(!search.entry?.some((e: { resource: { id: string } }) => e.resource.id === 'cond-2-oud'));
    });

    it('is what the administrator set: R and HIV reads the HIV result, not V or SUD; V and * read everything', async () => {
      const partly = await backendClient(server, 'system/*.rs', 'ES384', { clearance: 'R', sensitivity: ['HIV'] });
      const partToken = (await partly.token('system/*.rs')).body.access_token;
      assert.equal((await read(partToken, 'Observation/obs-2a-hiv-vl')).status, 200);
      assert.equal((await read(partToken, 'Observation/obs-1-brca')).status, 404);
      assert.equal((await read(partToken, 'Condition/cond-2-oud')).status, 404);
      const all = await backendClient(server, 'system/*.rs', 'ES384', { clearance: 'V', sensitivity: ['*'] });
      const allToken = (await all.token('system/*.rs')).body.access_token;
      assert.equal(decodeJwt(allToken).payload.extensions?.ihe_pcf, undefined, 'nothing is forbidden');
      for (const path of LABELLED) assert.equal((await read(allToken, path)).status, 200, path);
    });

    it('refuses an unknown clearance or sensitivity code', async () => {
      await assert.rejects(backendClient(server, 'system/*.rs', 'ES384', { clearance: 'X' }), /clearance/);
      await assert.rejects(backendClient(server, 'system/*.rs', 'ES384', { sensitivity: ['NOPE'] }), /sensitivity/);
    });
  });

  it('answers exactly 400 for a bad grant_type and a bad client_assertion_type', async () => {
    const badGrant = await tokenRequest(server.issuer, { grant_type: 'not_a_grant_type', client_assertion_type: ASSERTION_TYPE, client_assertion: await es.assertion() });
    assert.equal(badGrant.res.status, 400);
    const badType = await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: 'not_an_assertion_type', client_assertion: await es.assertion() });
    assert.equal(badType.res.status, 400);
  });

  describe('refuses every bad assertion with 401 invalid_client', () => {
    const cases: [string, () => Promise<string>][] = [
      ['a wrong aud', () => es.assertion({ claims: { aud: 'https://elsewhere.example/token' } })],
      ['the issuer as aud', () => es.assertion({ claims: { aud: server.issuer } })],
      ['exp more than 5 minutes ahead', () => es.assertion({ lifetime: 600 })],
      ['an expired assertion', () => es.assertion({ claims: { iat: Math.floor(Date.now() / 1000) - 600, exp: Math.floor(Date.now() / 1000) - 300 } })],
      ['iss != sub', () => es.assertion({ claims: { sub: 'someone-else' } })],
      ['iss not the client', () => es.assertion({ claims: { iss: rs.client_id } })],
      ['no typ', () => es.assertion({ header: { typ: undefined } })],
      ['typ not JWT', () => es.assertion({ header: { typ: 'at+jwt' } })],
      ['an unknown kid', () => es.assertion({ header: { kid: 'not-a-registered-kid' } })],
      ['no kid', () => es.assertion({ header: { kid: undefined } })],
      ['a jku that is not the registered JWKS URL', () => es.assertion({ header: { jku: 'https://attacker.example/jwks' } })],
      ['a key that is not the client\'s', async () => es.assertion({ key: (await generateKeyPair('ES384')).privateKey })],
      ['alg none', async () => {
        const header = base64url.encode(JSON.stringify({ alg: 'none', typ: 'JWT', kid: es.kid }));
        const now = Math.floor(Date.now() / 1000);
        const payload = base64url.encode(JSON.stringify({ iss: es.client_id, sub: es.client_id, aud: `${server.issuer}/token`, jti: randomUUID(), iat: now, exp: now + 240 }));
        return `${header}.${payload}.`;
      }],
      ['HS256 signed with the public key', async () => {
        const jwk = JSON.stringify((await (await fetch(`${server.issuer}/jwks`)).json()).keys[0]);
        return new SignJWT({ jti: randomUUID() }).setProtectedHeader({ alg: 'HS256', kid: es.kid, typ: 'JWT' })
          .setIssuer(es.client_id).setSubject(es.client_id).setAudience(`${server.issuer}/token`).setIssuedAt().setExpirationTime('4m')
          .sign(new TextEncoder().encode(jwk));
      }],
      ['a malformed JWT', async () => 'not.a.jwt'],
      ['a bad hl7-b2b extension', () => es.assertion({ claims: { extensions: { 'hl7-b2b': { version: '1', purpose_of_use: ['TREAT'] } } } })],
    ];
    for (const [name, make] of cases) {
      it(name, async () => {
        const { res, body } = await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: ASSERTION_TYPE, client_assertion: await make() });
        assert.equal(res.status, 401, JSON.stringify(body));
        assert.equal(body.error, 'invalid_client');
      });
    }
  });

  it('refuses an assertion made for another server\'s token endpoint, also when the request names that server as its Host', async () => {
    // Whoever received an assertion meant for them (aud their token endpoint) must not get a token with it here.
    const other = 'other-as.example';
    const assertion = await es.assertion({ claims: { aud: `http://${other}/token` } });
    const answer = await postWithHost(`${server.issuer}/token`, other, { grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: ASSERTION_TYPE, client_assertion: assertion });
    assert.equal(answer.status, 401, answer.body.slice(0, 200));
    assert.equal(JSON.parse(answer.body).error, 'invalid_client');
  });

  it('accepts a jti once, also when 8 identical assertions race', async () => {
    const assertion = await es.assertion();
    const send = () => tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: ASSERTION_TYPE, client_assertion: assertion });
    const results = await Promise.all(Array.from({ length: 8 }, send));
    assert.deepEqual(results.map((r) => r.res.status).sort(), [200, 401, 401, 401, 401, 401, 401, 401]);
    assert.equal((await send()).res.status, 401);
  });

  it('records the issuance (ITI-71) of the one token a replayed assertion got, and the refusal of the others', async () => {
    const issued = async () => (await auditEvents(server.db, { subtype: 'ITI-71', outcome: '0' })).length;
    const refusals = async () => {
      await groupCommitFor(server.db).idle(); // committed after their answers
      return (await auditEvents(server.db, { subtype: 'ITI-71', outcome: '4' })).length;
    };
    const refusedBefore = await refusals();
    const before = await issued();
    const assertion = await es.assertion();
    const send = () => tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: ASSERTION_TYPE, client_assertion: assertion });
    const results = await Promise.all(Array.from({ length: 4 }, send));
    const refused = results.filter((r) => r.res.status === 401);
    assert.equal(refused.length, 3);
    for (const { body } of refused) assert.deepEqual(Object.keys(body).sort(), ['error', 'error_description']);
    assert.equal(refused[0].body.error, 'invalid_client');
    assert.equal(await issued(), before + 1);
    assert.equal(await refusals(), refusedBefore + 3);
  });

  it('records the issuance (ITI-71) at the token endpoint under another spelling (/Token/), which the provider answers too', async () => {
    const issued = async () => (await auditEvents(server.db, { subtype: 'ITI-71', outcome: '0' })).length;
    const before = await issued();
    const assertion = await es.assertion();
    const send = (path: string) => fetch(`${server.issuer}${path}`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: ASSERTION_TYPE, client_assertion: assertion }),
    });
    const res = await send('/Token/');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('pragma'), 'no-cache', "the token endpoint's own rules answered");
    assert.equal(await issued(), before + 1);
    for (const path of ['/token', '/TOKEN', '/Token/']) {
      const replayed = await send(path);
      assert.equal(replayed.status, 401, `the assertion replayed at ${path}`);
      assert.equal((await replayed.json()).error, 'invalid_client');
    }
    assert.equal(await issued(), before + 1);
  });

  it('carries hl7-b2b claims into the token as IHE IUA attributes', async () => {
    const b2b = {
      version: '1', subject_name: 'Jane Smith, MD', subject_role: 'http://nucc.org/provider-taxonomy#207Q00000X',
      organization_name: 'Example Clinic', organization_id: 'https://clinic.example.org/fhir/Organization/1',
      purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#TREAT'],
    };
    const { res, body } = await es.token('system/Patient.rs', { claims: { extensions: { 'hl7-b2b': b2b } } });
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.deepEqual(decodeJwt(body.access_token).payload.extensions.ihe_iua, {
      subject_name: 'Jane Smith, MD',
      subject_organization: 'Example Clinic',
      subject_organization_id: 'https://clinic.example.org/fhir/Organization/1',
      subject_role: [{ system: 'http://nucc.org/provider-taxonomy', code: '207Q00000X' }],
      purpose_of_use: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT', display: 'treatment' }],
    });
  });
  describe('a client bound to its organization', () => {
    const ORG = 'https://clinic.example.org/fhir/Organization/1';
    const b2b = (organization: Record<string, string>) => ({ claims: { extensions: { 'hl7-b2b': { version: '1', purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#TREAT'], ...organization } } } });
    const iua = (body: Record<string, any>) => decodeJwt(body.access_token).payload.extensions?.ihe_iua;
    let bound: BackendClient;
    before(async () => {
      bound = await backendClient(server, 'system/Patient.rs', 'ES384', { organizationId: ORG, organizationName: 'Example Clinic' });
    });

    it('is refused (invalid_client, nothing issued, the refusal recorded) when its hl7-b2b names another organization', async () => {
      const count = async (outcome: string) => {
        await groupCommitFor(server.db).idle();
        return (await auditEvents(server.db, { subtype: 'ITI-71', outcome })).filter((e) => JSON.stringify(e).includes(bound.client_id)).length;
      };
      const [issued, refused] = [await count('0'), await count('4')];
      const { res, body } = await bound.token('system/Patient.rs', b2b({ organization_id: 'https://hospital.example.org/fhir/Organization/9', organization_name: 'Example Hospital' }));
      assert.equal(res.status, 401, JSON.stringify(body));
      assert.equal(body.error, 'invalid_client');
      assert.equal(body.access_token, undefined);
      assert.equal(await count('0'), issued);
      assert.equal(await count('4'), refused + 1);
    });

    it('gets its registered organization in the token: asserted with the same id (its registered name wins), or not asserted at all', async () => {
      for (const options of [b2b({ organization_id: ORG, organization_name: 'A Name It Chose' }), undefined]) {
        const { res, body } = await bound.token('system/Patient.rs', options);
        assert.equal(res.status, 200, JSON.stringify(body));
        assert.equal(iua(body).subject_organization_id, ORG);
        assert.equal(iua(body).subject_organization, 'Example Clinic');
      }
    });

    it('leaves an unbound client\'s hl7-b2b organization as its own claim', async () => {
      const { res, body } = await es.token('system/Patient.rs', b2b({ organization_id: 'https://anyone.example/org' }));
      assert.equal(res.status, 200, JSON.stringify(body));
      assert.equal(iua(body).subject_organization_id, 'https://anyone.example/org');
      const plain = await es.token('system/Patient.rs');
      assert.equal(iua(plain.body)?.subject_organization_id, undefined);
    });
  });
});
