// What the ONC Inferno SMART App Launch test kit (STU2.2 suite and the (g)(10) additions) asserts of a server,
// in the order it runs: discovery, a launch with PKCE, the token, the id_token, the fhirUser, two refreshes,
// introspection, then the requests it expects to be refused. TLS versions are the deployment's (a proxy).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, Browser, decodeJwt, exchangeCode, form, hiddenValue, introspectToken, revokeToken, tokenRequest, type LaunchResult } from '../support/oauth.ts';
import { ASSERTION_TYPE, backendClient } from '../support/backend.ts';
import { mintLaunch } from '../../server/launcher.ts';

const STANDALONE = 'launch/patient openid fhirUser offline_access patient/*.rs';
const EHR_PRACTITIONER = 'launch openid fhirUser offline_access user/*.rs';
const TC = 'http://terminology.hl7.org/CodeSystem';
const US_CORE = 'http://hl7.org/fhir/us/core/CodeSystem';
/** The category sub-scopes (g)(10) expects a patient can choose instead of a whole type. */
const CATEGORY_SCOPES = [
  `patient/Condition.rs?category=${TC}/condition-category|encounter-diagnosis`, `patient/Condition.rs?category=${TC}/condition-category|problem-list-item`,
  `patient/Condition.rs?category=${US_CORE}/condition-category|health-concern`,
  ...['laboratory', 'social-history', 'vital-signs', 'survey', 'procedure'].map((code) => `patient/Observation.rs?category=${TC}/observation-category|${code}`),
  `patient/Observation.rs?category=${US_CORE}/us-core-category|sdoh`,
];
const LAB = CATEGORY_SCOPES.find((s) => s.endsWith('|laboratory'))!;
const PROBLEMS = CATEGORY_SCOPES.find((s) => s.endsWith('|problem-list-item'))!;
/** Inferno's verifier: 73 characters (two UUIDs and a dash). */
const verifier73 = () => `${randomUUID()}-${randomUUID()}`;
const bearer = (token: string, extra: Record<string, string> = {}) => ({ headers: { authorization: `Bearer ${token}`, ...extra } });
const scopes = (scope: string) => new Set(scope.split(' '));

/** Tests 10, 24, 31: the fields of every token response and their types. */
function assertTokenBody(body: Record<string, any>) {
  for (const key of ['access_token', 'token_type', 'scope']) assert.ok(typeof body[key] === 'string' && body[key].trim(), `${key}: ${body[key]}`);
  assert.equal(typeof body.expires_in, 'number');
  assert.equal(body.token_type.toLowerCase(), 'bearer');
  for (const key of ['refresh_token', 'id_token', 'patient', 'encounter']) if (key in body) assert.equal(typeof body[key], 'string', key);
  for (const item of body.fhirContext ?? []) {
    assert.ok(item.reference || item.canonical || item.identifier, JSON.stringify(item));
    if (item.reference) assert.match(item.reference, /^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/);
  }
}

/** Tests 11, 25. */
function assertNoStore(res: Response) {
  assert.match(res.headers.get('cache-control') ?? '', /no-store/);
  assert.match(res.headers.get('pragma') ?? '', /no-cache/);
}

describe('Inferno SMART App Launch checks', () => {
  let server: TestServer;
  let publicApp: Awaited<ReturnType<TestServer['addClient']>>;
  let confidential: Awaited<ReturnType<TestServer['addClient']>>;
  let jwksServer: Server;
  let jwksUrl: string;
  let publishedJwks: object = { keys: [] };
  before(async () => {
    jwksServer = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(publishedJwks)));
    await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
    jwksUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks`;
    server = await startTestServer();
    publicApp = await server.addClient({ auth: { kind: 'public' } });
    confidential = await server.addClient({ auth: { kind: 'secret' }, launchUri: 'http://127.0.0.1:9999/launch' });
  });
  after(async () => {
    await server.stop();
    await new Promise<void>((resolve) => jwksServer.close(() => resolve()));
  });

  const launch = (client: typeof publicApp, scope: string, extra: Partial<Parameters<typeof authorize>[0]> = {}) =>
    authorize({ server, client, scope, verifier: verifier73(), state: randomUUID(), ...extra });
  const introspect = (token: string) => introspectToken(server.issuer, confidential, token, { accept: 'application/json' });

  it('1-4: discovery is JSON with the required fields and capabilities; discovery and metadata allow any origin', async () => {
    const res = await fetch(`${server.fhirBase}/.well-known/smart-configuration`, { headers: { accept: 'application/json', origin: 'https://inferno.example' } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type')!, /^application\/json/);
    assert.ok(['*', 'https://inferno.example'].includes(res.headers.get('access-control-allow-origin')!));
    const doc = await res.json();
    for (const key of ['authorization_endpoint', 'token_endpoint', 'issuer', 'jwks_uri']) assert.equal(typeof doc[key], 'string', key);
    for (const key of ['capabilities', 'grant_types_supported', 'code_challenge_methods_supported']) assert.ok(Array.isArray(doc[key]) && doc[key].length, key);
    assert.ok(doc.capabilities.every((c: unknown) => typeof c === 'string'));
    assert.ok(doc.grant_types_supported.includes('authorization_code'));
    assert.ok(doc.code_challenge_methods_supported.includes('S256') && !doc.code_challenge_methods_supported.includes('plain'));
    // Test 34: what (g)(10) requires of the standalone and EHR practitioner scenarios.
    for (const c of ['launch-standalone', 'launch-ehr', 'client-public', 'client-confidential-symmetric', 'client-confidential-asymmetric', 'sso-openid-connect',
      'context-standalone-patient', 'context-banner', 'context-style', 'context-ehr-patient', 'context-ehr-encounter', 'permission-offline',
      'permission-patient', 'permission-user', 'authorize-post', 'permission-v2', 'permission-v1']) assert.ok(doc.capabilities.includes(c), c);
    const metadata = await fetch(`${server.fhirBase}/metadata`, { headers: { origin: 'https://inferno.example' } });
    assert.equal(metadata.status, 200);
    assert.ok(metadata.headers.get('access-control-allow-origin'));
  });

  describe('standalone launch, public client (tests 6-12, 15-25, 35-37, 45)', () => {
    let result: LaunchResult;
    let tokens: Record<string, any>;

    it('6-7: authorize by GET with a 73-character S256 verifier gives a code with the same state', async () => {
      result = await launch(publicApp, STANDALONE, { patient: 'pat-2' });
      assert.equal(result.verifier.length, 73);
      assert.ok(result.code, String(result.redirect));
      assert.equal(result.error, undefined);
      assert.equal(result.redirect.searchParams.get('state'), result.state);
    });

    it('9-12: the exchange answers JSON with the fields, no-store headers and CORS for the app', async () => {
      const { res, body } = await tokenRequest(server.issuer, {
        grant_type: 'authorization_code', code: result.code!, redirect_uri: publicApp.redirect_uri, code_verifier: result.verifier,
      }, publicApp, { origin: 'http://127.0.0.1:9999', accept: 'application/json' });
      assert.equal(res.status, 200, JSON.stringify(body));
      assert.match(res.headers.get('content-type')!, /^application\/json/);
      assertTokenBody(body);
      assertNoStore(res);
      assert.equal(res.headers.get('access-control-allow-origin'), 'http://127.0.0.1:9999');
      // Test 35: what was asked is granted, offline_access included (no prompt=consent sent).
      for (const scope of STANDALONE.split(' ')) assert.ok(scopes(body.scope).has(scope), scope);
      assert.ok(body.id_token, 'test 45: id_token required');
      assert.ok(body.refresh_token);
      tokens = body;
    });

    it('15-20: the id_token is an RS256 JWT of the OIDC issuer for the client, verifiable with the published RSA key', async () => {
      const { header, payload } = decodeJwt(tokens.id_token);
      const config = await fetch(`${payload.iss}/.well-known/openid-configuration`);
      assert.equal(config.status, 200);
      assert.match(config.headers.get('content-type')!, /^application\/json/);
      const oidc = await config.json();
      for (const key of ['issuer', 'authorization_endpoint', 'token_endpoint', 'jwks_uri', 'response_types_supported', 'subject_types_supported', 'id_token_signing_alg_values_supported']) assert.ok(oidc[key], key);
      assert.ok(oidc.id_token_signing_alg_values_supported.includes('RS256'));
      const jwksRes = await fetch(oidc.jwks_uri);
      assert.equal(jwksRes.status, 200);
      const jwks = await jwksRes.json();
      const rsa = jwks.keys.filter((k: { kty: string }) => k.kty === 'RSA');
      assert.ok(rsa.length >= 1);
      assert.equal(header.alg, 'RS256');
      if (rsa.length > 1 || header.kid) assert.ok(rsa.some((k: { kid: string }) => k.kid === header.kid), 'kid names a published RSA key');
      const verified = await jwtVerify(tokens.id_token, createLocalJWKSet(jwks), { algorithms: ['RS256'], issuer: oidc.issuer, audience: publicApp.client_id, clockTolerance: 60 });
      for (const claim of ['iss', 'sub', 'aud', 'exp', 'iat']) assert.ok(verified.payload[claim] !== undefined, claim);
      assert.ok(typeof payload.sub === 'string' && payload.sub.length > 0 && payload.sub.length < 256);
    });

    it('21-22: fhirUser is a Practitioner/Patient/RelatedPerson/Person the access token reads, with CORS', async () => {
      const { fhirUser } = decodeJwt(tokens.id_token).payload;
      const type = /(?:^|\/)(Patient|Practitioner|RelatedPerson|Person)\/[^/]+$/.exec(fhirUser)?.[1];
      assert.ok(type, fhirUser);
      const url = fhirUser.startsWith('http') ? fhirUser : `${server.fhirBase}/${fhirUser}`;
      const res = await fetch(url, bearer(tokens.access_token, { origin: 'http://127.0.0.1:9999', accept: 'application/fhir+json' }));
      assert.equal(res.status, 200);
      assert.equal((await res.json()).resourceType, type);
      assert.ok(res.headers.get('access-control-allow-origin'));
    });

    it('36-37: the context patient is 401 without a token and 200 with it', async () => {
      assert.equal((await fetch(`${server.fhirBase}/Patient/${tokens.patient}`)).status, 401);
      assert.equal((await fetch(`${server.fhirBase}/Patient/${tokens.patient}`, bearer(tokens.access_token))).status, 200);
    });

    it('23-25, 37: refreshes without scope, then with the whole granted scope, adopting each rotated refresh token', async () => {
      let refreshToken = tokens.refresh_token;
      for (const scope of [undefined, tokens.scope]) {
        const { res, body } = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: refreshToken, ...(scope ? { scope } : {}) }, publicApp);
        assert.equal(res.status, 200, JSON.stringify(body));
        assertTokenBody(body);
        assertNoStore(res);
        for (const s of scopes(body.scope)) assert.ok(scopes(tokens.scope).has(s), `${s} is of the original scope`);
        refreshToken = body.refresh_token ?? refreshToken;
        assert.equal((await fetch(`${server.fhirBase}/Patient/${tokens.patient}`, bearer(body.access_token))).status, 200);
      }
    });

    it('39: a random refresh token is 400 or 401', async () => {
      const { res } = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: randomUUID() }, publicApp);
      assert.ok([400, 401].includes(res.status), String(res.status));
    });

    it('US Core searches: the next link of a search works with the same token', async () => {
      const first = await (await fetch(`${server.fhirBase}/Observation?patient=${tokens.patient}&_count=1`, bearer(tokens.access_token))).json();
      const next = first.link.find((l: { relation: string }) => l.relation === 'next')?.url;
      assert.ok(next, 'a next link');
      const page = await fetch(next, bearer(tokens.access_token));
      assert.equal(page.status, 200);
      assert.equal((await page.json()).entry.length, 1);
    });
  });

  it('32/52: introspection of an active token has its scope, client, exp, context and identity; an unknown one is exactly {active:false}', async () => {
    const result = await launch(confidential, STANDALONE, { patient: 'pat-3' });
    const { body: tokens } = await exchangeCode(server.issuer, result, confidential);
    const res = await introspect(tokens.access_token);
    assert.equal(res.status, 200);
    const active = await res.json();
    assert.equal(active.active, true);
    assert.equal(active.client_id, confidential.client_id);
    assert.deepEqual(scopes(active.scope), scopes(tokens.scope));
    assert.ok(active.exp >= Date.now() / 1000 - 600);
    assert.equal(active.patient, tokens.patient);
    const idToken = decodeJwt(tokens.id_token).payload;
    assert.equal(active.iss, idToken.iss);
    assert.equal(active.sub, idToken.sub);
    assert.equal(active.fhirUser, idToken.fhirUser);
    const unknown = await introspect('invalid_token_value');
    assert.equal(unknown.status, 200);
    assert.deepEqual(await unknown.json(), { active: false });
  });

  it('9, 44: a confidential symmetric client (Basic) and an asymmetric one (RS384 assertion, no jku, JWKS URL) exchange and refresh', async () => {
    const symmetric = await launch(confidential, STANDALONE);
    const sym = await exchangeCode(server.issuer, symmetric, confidential);
    assert.equal(sym.res.status, 200, JSON.stringify(sym.body));
    assertTokenBody(sym.body);

    // Inferno registers its JWKS URL.
    const asym = await backendClient(server, STANDALONE, 'RS384', {
      redirectUris: ['http://127.0.0.1:9999/callback'], grantTypes: ['authorization_code'], publish: (jwks) => { publishedJwks = jwks; return jwksUrl; },
    });
    const client = { client_id: asym.client_id, redirect_uri: 'http://127.0.0.1:9999/callback' };
    const auth = async () => ({ client_assertion_type: ASSERTION_TYPE, client_assertion: await asym.assertion({ lifetime: 300 }) });
    const result = await launch(client, STANDALONE);
    const { res, body } = await tokenRequest(server.issuer, { grant_type: 'authorization_code', code: result.code!, redirect_uri: client.redirect_uri, code_verifier: result.verifier, ...(await auth()) });
    assert.equal(res.status, 200, JSON.stringify(body));
    assertTokenBody(body);
    assert.ok(body.id_token, 'id_token required');
    assert.equal((await fetch(`${server.fhirBase}/Patient/${body.patient}`, bearer(body.access_token))).status, 200);
    const refreshed = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: body.refresh_token, ...(await auth()) });
    assert.equal(refreshed.res.status, 200, JSON.stringify(refreshed.body));
    const invalid = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: randomUUID(), ...(await auth()) });
    assert.ok([400, 401].includes(invalid.res.status), String(invalid.res.status));
  });

  it('13-14, 37-38: EHR practitioner launch opens the app with iss = FHIR base; authorize by POST gives patient, encounter, style and banner', async () => {
    const browser = new Browser();
    const html = await (await browser.fetch(`${server.issuer}/launcher`)).text();
    const page = await browser.fetch(`${server.issuer}/launcher`, {
      method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), patient: 'pat-2', encounter: 'enc-2b', client_id: confidential.client_id }),
    });
    const link = new URL(/id="launch-link" href="([^"]+)"/.exec(await page.text())![1].replaceAll('&amp;', '&'));
    assert.equal(link.searchParams.get('iss'), server.fhirBase);
    const launchId = link.searchParams.get('launch');
    assert.ok(launchId);
    const result = await launch(confidential, EHR_PRACTITIONER, { launch: launchId, method: 'POST' });
    const { res, body } = await exchangeCode(server.issuer, result, confidential);
    assert.equal(res.status, 200, JSON.stringify(body));
    assertTokenBody(body);
    for (const scope of EHR_PRACTITIONER.split(' ')) assert.ok(scopes(body.scope).has(scope), scope);
    assert.ok('need_patient_banner' in body);
    const style = await fetch(body.smart_style_url);
    assert.equal(style.status, 200);
    assert.equal(typeof (await style.json()), 'object');
    for (const path of [`Patient/${body.patient}`, `Encounter/${body.encounter}`]) {
      assert.equal((await fetch(`${server.fhirBase}/${path}`, bearer(body.access_token))).status, 200, path);
    }
  });

  it('46: EHR patient launch with patient/Patient.rs gets patient context and that scope', async () => {
    const launchId = await mintLaunch(server.db, server.config, { patient: 'pat-1' });
    const result = await launch(confidential, 'launch openid fhirUser offline_access patient/Patient.rs', { launch: launchId });
    const { body } = await exchangeCode(server.issuer, result, confidential);
    assert.equal(body.patient, 'pat-1');
    assert.ok(scopes(body.scope).has('patient/Patient.rs'), body.scope);
  });

  it('47: v1 scopes are accepted', async () => {
    const result = await launch(publicApp, 'launch/patient openid fhirUser offline_access patient/Patient.read patient/Observation.read');
    const { res, body } = await exchangeCode(server.issuer, result, publicApp);
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal((await fetch(`${server.fhirBase}/Patient/${body.patient}`, bearer(body.access_token))).status, 200);
  });

  it('48: types the patient unticks are not granted, and searching them is 401 or 403', async () => {
    const result = await launch(publicApp, 'launch/patient openid fhirUser offline_access patient/Patient.rs patient/Condition.rs patient/Observation.rs', {
      consent: (offered) => offered.filter((s) => s.checked && !/Condition|Observation/.test(s.value)).map((s) => s.value),
    });
    const { body } = await exchangeCode(server.issuer, result, publicApp);
    assert.deepEqual([...scopes(body.scope)].filter((s) => /^(patient|user|system)\//.test(s)), ['patient/Patient.rs']);
    for (const type of ['Condition', 'Observation']) {
      const res = await fetch(`${server.fhirBase}/${type}?patient=${body.patient}`, bearer(body.access_token));
      assert.ok([401, 403].includes(res.status), `${type}: ${res.status}`);
    }
  });

  it('49-50, 53: every category sub-scope is offered; those chosen instead of whole types are granted, and searches return those categories only', async () => {
    const result = await launch(publicApp, 'launch/patient openid fhirUser patient/Condition.rs patient/Observation.rs patient/Patient.rs', {
      patient: 'pat-1',
      consent: (offered) => {
        for (const scope of CATEGORY_SCOPES) assert.ok(offered.some((o) => o.value === scope && !o.checked), `offered unticked: ${scope}`);
        return ['launch/patient', 'openid', 'fhirUser', 'patient/Patient.rs', LAB, PROBLEMS];
      },
    });
    const { body } = await exchangeCode(server.issuer, result, publicApp);
    const granted = scopes(body.scope);
    assert.ok(granted.has(LAB) && granted.has(PROBLEMS) && granted.has('patient/Patient.rs'), body.scope);
    assert.ok(![...granted].some((s) => /^patient\/(Condition|Observation)\.[cruds]+$/.test(s)));
    for (const [type, code] of [['Condition', 'problem-list-item'], ['Observation', 'laboratory']]) {
      for (const query of [`patient=${body.patient}`, `patient=${body.patient}&category=${code}`]) {
        const bundle = await (await fetch(`${server.fhirBase}/${type}?${query}`, bearer(body.access_token))).json();
        assert.ok(bundle.entry?.length, `${type}?${query} finds some`);
        for (const { resource } of bundle.entry) assert.ok(resource.category.some((c: any) => c.coding.some((x: any) => x.code === code)), `${type}?${query}`);
      }
    }
  });

  it('50: every category scope (g)(10) names is granted as asked', async () => {
    const result = await launch(publicApp, `launch/patient openid fhirUser offline_access patient/Patient.rs ${CATEGORY_SCOPES.join(' ')}`, { patient: 'pat-1' });
    const { body } = await exchangeCode(server.issuer, result, publicApp);
    for (const scope of CATEGORY_SCOPES) assert.ok(scopes(body.scope).has(scope), scope);
  });

  it('40: an unknown aud gets no code', async () => {
    const result = await launch(publicApp, STANDALONE, { aud: 'https://inferno.healthit.gov/invalid_aud' }).catch((e: Error) => e);
    assert.ok(result instanceof Error || !result.code);
  });

  it('41: a bad code is exactly 400; a valid code with an unknown Basic client is 400 or 401', async () => {
    const result = await launch(confidential, STANDALONE);
    const bad = await tokenRequest(server.issuer, { grant_type: 'authorization_code', code: 'BAD_CODE', redirect_uri: confidential.redirect_uri, code_verifier: result.verifier }, confidential);
    assert.equal(bad.res.status, 400);
    const unknown = await tokenRequest(server.issuer, { grant_type: 'authorization_code', code: result.code!, redirect_uri: confidential.redirect_uri, code_verifier: result.verifier },
      { client_id: 'BAD_CLIENT_ID', client_secret: confidential.client_secret });
    assert.ok([400, 401].includes(unknown.res.status), String(unknown.res.status));
  });

  it('42: a missing, blank, wrong or challenge-as-verifier code_verifier is 400 or 401', async () => {
    for (const verifier of [undefined, '', verifier73(), 'challenge']) {
      const result = await launch(publicApp, STANDALONE);
      const body: Record<string, string> = { grant_type: 'authorization_code', code: result.code!, redirect_uri: publicApp.redirect_uri };
      if (verifier !== undefined) body.code_verifier = verifier === 'challenge' ? result.challenge : verifier;
      const { res } = await tokenRequest(server.issuer, body, publicApp);
      assert.ok([400, 401].includes(res.status), `${verifier}: ${res.status}`);
    }
  });

  it('43: a revoked access token is refused at /fhir, a revoked refresh token at /token', async () => {
    const { body } = await exchangeCode(server.issuer, await launch(confidential, STANDALONE), confidential);
    const revoke = (token: string) => revokeToken(server.issuer, confidential, token);
    assert.equal((await revoke(body.access_token)).status, 200);
    const read = await fetch(`${server.fhirBase}/Patient/${body.patient}`, bearer(body.access_token));
    assert.ok([401, 403, 404].includes(read.status), String(read.status));
    assert.equal((await revoke(body.refresh_token)).status, 200);
    const { res } = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: body.refresh_token }, confidential);
    assert.ok([400, 401].includes(res.status), String(res.status));
  });

  describe('backend services (tests 27-31, 51)', () => {
    for (const alg of ['ES384', 'RS384'] as const) {
      it(`${alg}: bad grant_type exactly 400, bad assertion type exactly 400, bad iss 400/401, then a token with the fields`, async () => {
        const backend = await backendClient(server, 'system/*.read', alg);
        const assertion = await backend.assertion();
        const badGrant = await tokenRequest(server.issuer, { grant_type: 'not_a_grant_type', scope: 'system/*.read', client_assertion_type: ASSERTION_TYPE, client_assertion: assertion });
        assert.equal(badGrant.res.status, 400);
        const badType = await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'system/*.read', client_assertion_type: 'not_an_assertion_type', client_assertion: await backend.assertion() });
        assert.equal(badType.res.status, 400);
        const badIss = await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'system/*.read', client_assertion_type: ASSERTION_TYPE, client_assertion: await backend.assertion({ claims: { iss: 'not_a_valid_iss' } }) });
        assert.ok([400, 401].includes(badIss.res.status), String(badIss.res.status));
        const res = await fetch(`${server.issuer}/token`, {
          method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
          body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'system/*.read', client_assertion_type: ASSERTION_TYPE, client_assertion: await backend.assertion() }),
        });
        assert.ok([200, 201].includes(res.status), String(res.status));
        assertTokenBody(await res.json());
      });
    }
  });
});
