// The authorization and token endpoints, including every negative case Inferno sends
// (the ONC Inferno SMART App Launch test kit).
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { freePort, startTestServer, type TestServer } from '../support/server.ts';
import { withStdout } from '../support/stdout.ts';
import { authorize, authorizedTokens, Browser, decodeJwt, exchangeCode, form, hiddenValue, pkce, tokenRequest } from '../support/oauth.ts';
import { addUser } from '../../server/oidc/users.ts';
import { endAllSessions } from '../../server/auth/sessions.ts';

const SCOPE = 'launch/patient openid fhirUser offline_access patient/*.rs';

describe('authorization endpoint and token endpoint', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  before(async () => {
    server = await startTestServer();
    app = await server.addClient({ auth: { kind: 'public' } });
  });
  after(() => server.stop());

  function authorizeUrl(overrides: Record<string, string | undefined>) {
    const { challenge } = pkce();
    const params: Record<string, string | undefined> = {
      response_type: 'code', client_id: app.client_id, redirect_uri: app.redirect_uri, scope: SCOPE, state: 'st-1',
      aud: server.fhirBase, code_challenge: challenge, code_challenge_method: 'S256', ...overrides,
    };
    const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined) as [string, string][]);
    return `${server.issuer}/authorize?${query}`;
  }

  async function errorRedirect(url: string) {
    const res = await fetch(url, { redirect: 'manual' });
    assert.equal(res.status, 303, `expected a redirect, got ${res.status}`);
    const location = new URL(res.headers.get('location')!);
    assert.equal(location.origin + location.pathname, app.redirect_uri);
    assert.equal(location.searchParams.get('code'), null, 'no code is issued');
    return location.searchParams;
  }

  it('requires PKCE for every client and refuses plain', async () => {
    const missing = await errorRedirect(authorizeUrl({ code_challenge: undefined, code_challenge_method: undefined }));
    assert.equal(missing.get('error'), 'invalid_request');
    assert.equal(missing.get('state'), 'st-1');
    const plain = await errorRedirect(authorizeUrl({ code_challenge_method: 'plain' }));
    assert.equal(plain.get('error'), 'invalid_request');
  });

  it('requires state (SMART App Launch 2.2): invalid_request and no code without it, or with an empty one', async () => {
    for (const state of [undefined, '']) {
      const refused = await errorRedirect(authorizeUrl({ state }));
      assert.equal(refused.get('error'), 'invalid_request');
      assert.match(refused.get('error_description') ?? '', /state/);
    }
  });

  it('issues no code for an unknown or missing aud', async () => {
    const unknown = await errorRedirect(authorizeUrl({ aud: 'https://inferno.healthit.gov/invalid_aud' }));
    assert.equal(unknown.get('error'), 'invalid_target');
    const missing = await errorRedirect(authorizeUrl({ aud: undefined }));
    assert.equal(missing.get('error'), 'invalid_request');
  });

  it('never redirects to an unregistered redirect_uri', async () => {
    const res = await fetch(authorizeUrl({ redirect_uri: 'http://127.0.0.1:9999/other' }), { redirect: 'manual' });
    assert.equal(res.status, 400);
    assert.equal(res.headers.get('location'), null);
    const html = await res.text();
    assert.match(html, /redirect_uri/);
    assert.doesNotMatch(html, /at [\w.]+ \(/, 'no stack trace');
  });

  it('accepts the authorization request by POST as well as GET', async () => {
    const launch = await authorize({ server, client: app, scope: SCOPE, method: 'POST' });
    assert.ok(launch.code);
    const { res } = await exchangeCode(server.issuer, launch, app);
    assert.equal(res.status, 200);
  });

  it('rejects a missing, blank, wrong or plain-style code_verifier', async () => {
    for (const verifier of [undefined, '', 'wrong-verifier-wrong-verifier-wrong-verifier-wrong', 'challenge']) {
      const launch = await authorize({ server, client: app, scope: SCOPE });
      const body: Record<string, string> = { grant_type: 'authorization_code', code: launch.code!, redirect_uri: app.redirect_uri };
      if (verifier === 'challenge') body.code_verifier = launch.challenge;
      else if (verifier !== undefined) body.code_verifier = verifier;
      const { res, body: error } = await tokenRequest(server.issuer, body, app);
      assert.ok([400, 401].includes(res.status), `verifier ${verifier}: ${res.status}`);
      assert.ok(['invalid_grant', 'invalid_request'].includes(error.error), error.error);
    }
  });

  it('answers exactly 400 for a bad code and a bad grant_type', async () => {
    const badCode = await tokenRequest(server.issuer, { grant_type: 'authorization_code', code: 'BAD_CODE', redirect_uri: app.redirect_uri, code_verifier: pkce().verifier }, app);
    assert.equal(badCode.res.status, 400);
    assert.equal(badCode.body.error, 'invalid_grant');
    const badGrant = await tokenRequest(server.issuer, { grant_type: 'not_a_grant_type' }, app);
    assert.equal(badGrant.res.status, 400);
    assert.equal(badGrant.body.error, 'unsupported_grant_type');
  });

  it('refuses a reused code and revokes what the first exchange issued', async () => {
    const launch = await authorize({ server, client: app, scope: SCOPE });
    const first = await exchangeCode(server.issuer, launch, app);
    assert.equal(first.res.status, 200);
    const second = await exchangeCode(server.issuer, launch, app);
    assert.equal(second.res.status, 400);
    assert.equal(second.body.error, 'invalid_grant');
    const refresh = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: first.body.refresh_token }, app);
    assert.equal(refresh.res.status, 400, 'the grant of a reused code is revoked');
  });

  it('refuses a code sent with another redirect_uri', async () => {
    const launch = await authorize({ server, client: app, scope: SCOPE });
    const { res, body } = await tokenRequest(server.issuer, {
      grant_type: 'authorization_code', code: launch.code!, redirect_uri: 'http://127.0.0.1:9999/other', code_verifier: launch.verifier,
    }, app);
    assert.equal(res.status, 400);
    assert.equal(body.error, 'invalid_grant');
  });

  it('answers a token request from a public client with CORS for its registered origin', async () => {
    const launch = await authorize({ server, client: app, scope: SCOPE });
    const { res } = await tokenRequest(server.issuer, {
      grant_type: 'authorization_code', code: launch.code!, redirect_uri: app.redirect_uri, code_verifier: launch.verifier,
    }, app, { origin: 'http://127.0.0.1:9999' });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('access-control-allow-origin'), 'http://127.0.0.1:9999');
  });

  it('signs an RS256 id_token for the client with the user\'s fhirUser', async () => {
    const launch = await authorize({ server, client: app, scope: SCOPE });
    const { body } = await exchangeCode(server.issuer, launch, app);
    const { header, payload } = decodeJwt(body.id_token);
    assert.equal(header.alg, 'RS256');
    assert.ok(header.kid);
    assert.equal(payload.iss, server.issuer);
    assert.equal(payload.aud, app.client_id);
    assert.ok(payload.sub && payload.exp > payload.iat);
    assert.equal(payload.fhirUser, `${server.fhirBase}/Practitioner/dr-smith`);
    const fhirUser = await fetch(payload.fhirUser, { headers: { authorization: `Bearer ${body.access_token}` } });
    assert.equal(fhirUser.status, 200, 'the fhirUser can be read with the access token');
  });

  it('grants v1 scopes as v1 and gives no refresh token without offline_access or online_access', async () => {
    const launch = await authorize({ server, client: app, scope: 'launch/patient openid fhirUser patient/Patient.read patient/Observation.read' });
    const { res, body } = await exchangeCode(server.issuer, launch, app);
    assert.equal(res.status, 200);
    assert.deepEqual(body.scope.split(' ').sort(), ['fhirUser', 'launch/patient', 'openid', 'patient/Observation.read', 'patient/Patient.read']);
    assert.equal(body.refresh_token, undefined);
    assert.equal(typeof body.expires_in, 'number');
    assert.ok(body.expires_in <= 3600);
    const read = await fetch(`${server.fhirBase}/Patient/${body.patient}`, { headers: { authorization: `Bearer ${body.access_token}` } });
    assert.equal(read.status, 200);
  });

  it('issues a refresh token for online_access', async () => {
    const launch = await authorize({ server, client: app, scope: 'launch/patient openid fhirUser online_access patient/*.rs' });
    const { body } = await exchangeCode(server.issuer, launch, app);
    assert.ok(body.refresh_token);
    assert.ok(body.scope.split(' ').includes('online_access'));
  });

  describe('refresh', () => {
    async function freshTokens() {
      const launch = await authorize({ server, client: app, scope: SCOPE, patient: 'pat-3' });
      return (await exchangeCode(server.issuer, launch, app)).body;
    }
    const refresh = (refreshToken: string, scope?: string) =>
      tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: refreshToken, ...(scope !== undefined ? { scope } : {}) }, app);

    it('rotates, keeps the context, and accepts no scope or the full original scope', async () => {
      const tokens = await freshTokens();
      const withoutScope = await refresh(tokens.refresh_token);
      assert.equal(withoutScope.res.status, 200);
      assert.equal(withoutScope.res.headers.get('pragma'), 'no-cache');
      assert.equal(withoutScope.body.patient, 'pat-3');
      assert.equal(withoutScope.body.scope, tokens.scope);
      assert.notEqual(withoutScope.body.refresh_token, tokens.refresh_token);
      assert.equal(typeof withoutScope.body.expires_in, 'number');
      const fullScope = await refresh(withoutScope.body.refresh_token, tokens.scope);
      assert.equal(fullScope.res.status, 200, JSON.stringify(fullScope.body));
      assert.equal(decodeJwt(fullScope.body.access_token).payload.patient, 'pat-3');
    });

    it('narrows but never widens', async () => {
      const tokens = await freshTokens();
      const narrow = await refresh(tokens.refresh_token, 'launch/patient patient/*.rs');
      assert.equal(narrow.res.status, 200);
      assert.equal(narrow.body.scope, 'launch/patient patient/*.rs');
      const wide = await refresh(narrow.body.refresh_token, 'launch/patient patient/*.rs user/*.rs');
      assert.equal(wide.res.status, 400);
      assert.equal(wide.body.error, 'invalid_scope');
    });

    it('refuses a resource the refresh token was not issued for (invalid_target) without using the refresh token up', async () => {
      const tokens = await freshTokens();
      for (const resource of ['http://elsewhere.example/fhir', server.issuer]) {
        const refused = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, resource }, app);
        assert.equal(refused.res.status, 400, resource);
        assert.equal(refused.body.error, 'invalid_target');
      }
      const next = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, resource: server.fhirBase }, app);
      assert.equal(next.res.status, 200, 'the refusals did not use the refresh token up (a second use would have ended the grant)');
      assert.equal(decodeJwt(next.body.access_token).payload.aud, server.fhirBase);
    });

    it('detects reuse of a rotated refresh token and revokes the grant', async () => {
      const tokens = await freshTokens();
      const next = await refresh(tokens.refresh_token);
      assert.equal(next.res.status, 200);
      const reuse = await refresh(tokens.refresh_token);
      assert.equal(reuse.res.status, 400);
      assert.equal(reuse.body.error, 'invalid_grant');
      const afterReuse = await refresh(next.body.refresh_token);
      assert.equal(afterReuse.res.status, 400, 'the newest refresh token died with the grant');
    });

    it('revokes the grant when one refresh token is brought by several requests at the same moment (a stolen copy racing the app)', async () => {
      const tokens = await freshTokens();
      const results = await Promise.all(Array.from({ length: 3 }, () => refresh(tokens.refresh_token)));
      const winners = results.filter((r) => r.res.status === 200);
      assert.equal(winners.length, 1, 'the refresh token is used once');
      for (const loser of results.filter((r) => r.res.status !== 200)) assert.equal(loser.body.error, 'invalid_grant');
      const afterRace = await refresh(winners[0].body.refresh_token);
      assert.equal(afterRace.res.status, 400, 'the refresh token the race handed out died with the grant');
      assert.equal(afterRace.body.error, 'invalid_grant');
    });

    it('refuses a refresh once the user may no longer open the patient or assert the purpose, without using the refresh token up', async () => {
      await addUser(server.db, { username: 'dr.narrowed', password: 'narrowed-password', fhirUser: 'Practitioner/dr-narrowed', attributes: {
        roles: [{ system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', code: 'doctor' }], purposes: ['TREAT', 'HPAYMT'], patients: ['pat-1', 'pat-3'],
      } });
      const launch = await authorize({ server, client: app, scope: SCOPE, username: 'dr.narrowed', password: 'narrowed-password', patient: 'pat-3', purpose: 'HPAYMT' });
      const tokens = (await exchangeCode(server.issuer, launch, app)).body;
      assert.equal(decodeJwt(tokens.access_token).payload.extensions.ihe_iua.purpose_of_use[0].code, 'HPAYMT');
      const narrow = (attributes: Record<string, unknown>) => server.db('users').where({ username: 'dr.narrowed' }).update({ attributes: JSON.stringify(attributes) });
      const granted = { roles: [{ system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', code: 'doctor' }], purposes: ['TREAT', 'HPAYMT'], patients: ['pat-1', 'pat-3'] };
      for (const [change, attributes] of [['patients', { ...granted, patients: ['pat-1'] }], ['purposes', { ...granted, purposes: ['TREAT'] }], ['roles', { ...granted, roles: [] }]] as const) {
        await narrow(attributes);
        const refused = await refresh(tokens.refresh_token);
        assert.equal(refused.res.status, 400, `${change} narrowed`);
        assert.equal(refused.body.error, 'invalid_grant');
      }
      await narrow(granted);
      const again = await refresh(tokens.refresh_token);
      assert.equal(again.res.status, 200, 'the refusals did not use the refresh token up');
      assert.equal(decodeJwt(again.body.access_token).payload.patient, 'pat-3');
    });

    it('ends an online_access refresh token with the sign-in session it came from; an offline_access one outlives it', async () => {
      const browser = new Browser();
      const online = await authorize({ server, client: app, browser, scope: 'launch/patient openid fhirUser online_access patient/*.rs', patient: 'pat-1' });
      const onlineTokens = (await exchangeCode(server.issuer, online, app)).body;
      const offline = await authorize({ server, client: app, browser, scope: SCOPE, patient: 'pat-1' });
      const offlineTokens = (await exchangeCode(server.issuer, offline, app)).body;
      const whileOnline = await refresh(onlineTokens.refresh_token);
      assert.equal(whileOnline.res.status, 200, 'refreshed while the user is signed in');
      const { sub } = decodeJwt(onlineTokens.access_token).payload;
      await endAllSessions(server.db, sub); // the user signed out everywhere (/account, /logout)
      const afterSignOut = await refresh(whileOnline.body.refresh_token);
      assert.equal(afterSignOut.res.status, 400);
      assert.equal(afterSignOut.body.error, 'invalid_grant');
      assert.equal((await refresh(offlineTokens.refresh_token)).res.status, 200, 'offline_access outlives the session');
    });

    it('refuses a random refresh token', async () => {
      const { res, body } = await refresh('random-refresh-token-value');
      assert.equal(res.status, 400);
      assert.equal(body.error, 'invalid_grant');
    });
  });

  it('sends tenant in the token response when configured', async () => {
    const tenanted = await startTestServer({ TENANT: 'example-hospital' });
    try {
      const client = await tenanted.addClient({ auth: { kind: 'public' } });
      const body = await authorizedTokens({ server: tenanted, client, scope: SCOPE });
      assert.equal(body.tenant, 'example-hospital');
    } finally {
      await tenanted.stop();
    }
  });

  it('keeps two launches of the same app in one browser apart', async () => {
    const browser = new Browser();
    const first = await authorize({ server, client: app, scope: SCOPE, patient: 'pat-1', browser });
    const second = await authorize({ server, client: app, scope: SCOPE, patient: 'pat-2', browser });
    const a = await exchangeCode(server.issuer, first, app);
    const b = await exchangeCode(server.issuer, second, app);
    assert.equal(a.res.status, 200);
    assert.equal(b.res.status, 200);
    assert.equal(a.body.patient, 'pat-1');
    assert.equal(b.body.patient, 'pat-2');
    const refreshed = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: a.body.refresh_token }, app);
    assert.equal(refreshed.body.patient, 'pat-1');
  });

  it('reads the user and the launch context once per code exchange', async () => {
    const launch = await authorize({ server, client: app, scope: SCOPE });
    const reads: string[] = [];
    // A statement may read both (joined with the code); each table is read by one statement only.
    const count = (q: { sql: string }) => {
      if (/^select /i.test(q.sql)) reads.push(...[...q.sql.matchAll(/(?:from|join) [`"](users|grant_contexts)[`"]/gi)].map((m) => m[1]));
    };
    server.db.on('query', count);
    try {
      const tokens = await exchangeCode(server.issuer, launch, app);
      assert.equal(tokens.res.status, 200);
      assert.equal(tokens.body.patient, 'pat-1');
    } finally {
      server.db.off('query', count);
    }
    assert.deepEqual(reads.sort(), ['grant_contexts', 'users']);
  });
});

describe('authorization endpoint: aud and resource name one FHIR server', () => {
  const OTHER = 'https://other.example.org/fhir';
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  before(async () => {
    server = await startTestServer({ ADDITIONAL_FHIR_BASES: OTHER });
    app = await server.addClient({ auth: { kind: 'public' } });
  });
  after(() => server.stop());

  // The picker and the consent page showed the patients of the server in aud, the token was for the one in resource.
  it('refuses (invalid_target, no code) an aud and a resource that name different servers, whichever way round', async () => {
    for (const [aud, resource] of [[server.fhirBase, OTHER], [OTHER, server.fhirBase]]) {
      const { challenge } = pkce();
      const query = new URLSearchParams({
        response_type: 'code', client_id: app.client_id, redirect_uri: app.redirect_uri, scope: SCOPE, state: 'st-2', aud, resource,
        code_challenge: challenge, code_challenge_method: 'S256',
      });
      const res = await fetch(`${server.issuer}/authorize?${query}`, { redirect: 'manual' });
      assert.equal(res.status, 303, `${aud} / ${resource}`);
      const location = new URL(res.headers.get('location')!, server.issuer);
      assert.equal(location.origin + location.pathname, app.redirect_uri, 'sent back to the app, not on to sign-in');
      assert.equal(location.searchParams.get('error'), 'invalid_target');
      assert.equal(location.searchParams.get('code'), null);
    }
  });

  it('refuses the same at the PAR endpoint (400 invalid_target, no request_uri)', async () => {
    const { challenge } = pkce();
    const res = await fetch(`${server.issuer}/request`, {
      method: 'POST',
      body: new URLSearchParams({
        response_type: 'code', client_id: app.client_id, redirect_uri: app.redirect_uri, scope: SCOPE, state: 'st-3', aud: server.fhirBase, resource: OTHER,
        code_challenge: challenge, code_challenge_method: 'S256',
      }),
    });
    assert.equal(res.status, 400);
    const body = await res.json();
    assert.equal(body.error, 'invalid_target');
    assert.equal(body.request_uri, undefined);
  });

  it('accepts a resource that names the aud server (with or without a trailing slash)', async () => {
    const tokens = await authorizedTokens({ server, client: app, scope: SCOPE, patient: 'pat-2', extra: { resource: `${server.fhirBase}/` } });
    assert.equal(tokens.patient, 'pat-2');
    assert.equal(decodeJwt(tokens.access_token).payload.aud, server.fhirBase);
  });
});

describe('patient picker: an ADDITIONAL_FHIR_BASES server that cannot be read lists nobody', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  let failing: Server;
  let answer: 'error' | 'not json' = 'error';
  const bases: Record<string, string> = {};
  before(async () => {
    failing = createServer((_req, res) => {
      if (answer === 'error') res.writeHead(500, { 'content-type': 'application/fhir+json' }).end('{"resourceType":"OperationOutcome"}');
      else res.writeHead(200, { 'content-type': 'application/fhir+json' }).end('<html>not a Bundle');
    });
    await new Promise<void>((resolve) => failing.listen(0, '127.0.0.1', resolve));
    bases.answering = `http://127.0.0.1:${(failing.address() as AddressInfo).port}/fhir`;
    bases.down = `http://127.0.0.1:${await freePort()}/fhir`; // nothing listens there
    server = await startTestServer({ ADDITIONAL_FHIR_BASES: `${bases.answering},${bases.down}` });
    app = await server.addClient({ auth: { kind: 'public' } });
  });
  after(async () => {
    await server.stop();
    await new Promise((resolve) => failing.close(resolve));
  });

  const cases = [['down', 'error'], ['answering', 'error'], ['answering', 'not json']] as const;

  it('shows the picker with nobody to choose (not a 500), and logs a warning naming the server, without the token', async () => {
    for (const [which, kind] of cases) {
      answer = kind;
      const browser = new Browser();
      let page!: Response;
      const text = await withStdout(async (written) => {
        const { challenge } = pkce();
        const query = new URLSearchParams({
          response_type: 'code', client_id: app.client_id, redirect_uri: app.redirect_uri, scope: 'launch/patient openid patient/*.rs', state: 'st-p',
          aud: bases[which], code_challenge: challenge, code_challenge_method: 'S256',
        });
        const login = await browser.follow(`${server.issuer}/authorize?${query}`, server.issuer);
        const html = await login.res.text();
        const uid = /\/interaction\/([^/"?]+)/.exec(login.url)![1];
        page = (await browser.follow(`${server.issuer}/interaction/${uid}/login`, server.issuer, {
          method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), username: 'dr.smith', password: 'demo-password-1' }),
        })).res;
        await new Promise((resolve) => setImmediate(resolve)); // log lines are written once a turn
        return written();
      });
      assert.equal(page.status, 200, `${which} (${kind})`);
      const html = await page.text();
      assert.match(html, /You have no patients you may open/, `${which} (${kind})`);
      const warning = text.split('\n').filter(Boolean).map((line) => JSON.parse(line)).find((line) => line.level === 'warn' && line.fhir_base === bases[which]);
      assert.ok(warning, `a warning names ${bases[which]}: ${text}`);
      assert.equal(warning.reason, { down: 'ECONNREFUSED', error: 'answered 500', 'not json': 'answered no JSON' }[which === 'down' ? which : kind]);
      assert.doesNotMatch(JSON.stringify(warning), /eyJ|Bearer|stack/i, 'no token, no stack trace');
    }
  });

  it("lets a patient user's sign-in complete: the consent page shows and the app gets its code", async () => {
    for (const [which, kind] of cases) {
      answer = kind;
      const launch = await authorize({ server, client: app, scope: 'launch/patient openid fhirUser patient/*.rs', aud: bases[which], username: 'amy', password: 'demo-password-3' });
      assert.ok(launch.code, `${which} (${kind}): a code`);
      const tokens = await exchangeCode(server.issuer, launch, app);
      assert.equal(tokens.body.patient, 'pat-1');
      assert.equal(decodeJwt(tokens.body.access_token).payload.aud, bases[which]);
    }
  });
});
