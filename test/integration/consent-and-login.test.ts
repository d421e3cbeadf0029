import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, Browser, exchangeCode, form, hiddenValue, scopeCheckboxes } from '../support/oauth.ts';

const LAB = 'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
const PROBLEMS = 'patient/Condition.rs?category=http://terminology.hl7.org/CodeSystem/condition-category|problem-list-item';

describe('login and consent', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  before(async () => {
    server = await startTestServer();
    app = await server.addClient({ name: 'Growth <b>Chart</b>', auth: { kind: 'public' } });
  });
  after(() => server.stop());

  async function loginPage(browser = new Browser()) {
    const url = `${server.issuer}/authorize?${new URLSearchParams({
      response_type: 'code', client_id: app.client_id, redirect_uri: app.redirect_uri, scope: 'openid patient/*.rs launch/patient', state: 's',
      aud: server.fhirBase, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256',
    })}`;
    const fresh = new Browser();
    const { res, url: at } = await fresh.follow(url, server.issuer);
    return { browser: fresh, html: await res.text(), uid: /\/interaction\/([^/?]+)/.exec(at)![1] };
  }

  it('shows the same message for an unknown user and a wrong password, and escapes the client name', async () => {
    const messages: string[] = [];
    for (const [username, password] of [['nobody', 'whatever-password'], ['dr.smith', 'wrong-password']]) {
      const { browser, html, uid } = await loginPage();
      assert.ok(html.includes('Growth &lt;b&gt;Chart&lt;/b&gt;'), 'client_name is escaped');
      assert.ok(!html.includes('<b>Chart</b>'));
      const res = await browser.fetch(`${server.issuer}/interaction/${uid}/login`, {
        method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), username, password }),
      });
      assert.equal(res.status, 200);
      const page = await res.text();
      assert.ok(page.includes('name="password"'), 'the login form is shown again');
      messages.push(/<p class="error" role="alert">([^<]*)</.exec(page)![1]);
    }
    assert.equal(messages[0], messages[1]);
  });

  it('refuses a login form without its CSRF token', async () => {
    const { browser, uid } = await loginPage();
    const res = await browser.fetch(`${server.issuer}/interaction/${uid}/login`, { method: 'POST', body: form({ username: 'dr.smith', password: 'demo-password-1' }) });
    assert.equal(res.status, 403);
  });

  it('refuses a form posted without the interaction cookie (another browser or site)', async () => {
    const { html, uid } = await loginPage();
    const res = await new Browser().fetch(`${server.issuer}/interaction/${uid}/login`, {
      method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), username: 'dr.smith', password: 'demo-password-1' }),
    });
    assert.equal(res.status, 400);
    assert.doesNotMatch(await res.text(), /SessionNotFound|at [\w.]+ \(/);
  });

  it('shows demo accounts on the login page in demo mode only', async () => {
    const { html } = await loginPage();
    assert.ok(html.includes('dr.smith'));
    const plain = await startTestServer({ DEMO: 'false' });
    try {
      const client = await plain.addClient({ auth: { kind: 'public' } });
      const res = await new Browser().follow(`${plain.issuer}/authorize?${new URLSearchParams({
        response_type: 'code', client_id: client.client_id, redirect_uri: client.redirect_uri, scope: 'openid', state: 's',
        aud: plain.fhirBase, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256',
      })}`, plain.issuer);
      const page = await res.res.text();
      assert.ok(page.includes('name="password"'));
      assert.ok(!page.includes('demo-password'));
    } finally {
      await plain.stop();
    }
  });

  it('lists each requested scope with category alternatives, and explains * and offline_access', async () => {
    let offered: { value: string; checked: boolean }[] = [];
    const launch = await authorize({
      server, client: app, scope: 'launch/patient openid fhirUser offline_access patient/*.rs patient/Condition.rs',
      consent: (o) => { offered = o; return o.filter((s) => s.checked).map((s) => s.value); },
    });
    const page = launch.pages.at(-1)!;
    assert.ok(offered.some((s) => s.value === 'patient/*.rs' && s.checked));
    assert.ok(offered.some((s) => s.value === LAB && !s.checked), 'narrowed alternative offered, unchecked');
    assert.ok(offered.some((s) => s.value === PROBLEMS && !s.checked));
    assert.match(page, /including types added .*in the future/);
    assert.match(page, /keep access when you are not using it/i);
  });

  it('grants only what stays ticked, and a narrowed scope instead of the whole type', async () => {
    const launch = await authorize({
      server, client: app, scope: 'launch/patient openid fhirUser patient/Patient.rs patient/Observation.rs patient/Condition.rs',
      consent: ['launch/patient', 'openid', 'fhirUser', 'patient/Patient.rs', LAB, PROBLEMS],
    });
    const { body } = await exchangeCode(server.issuer, launch, app);
    const granted = body.scope.split(' ');
    assert.ok(granted.includes(LAB) && granted.includes(PROBLEMS) && granted.includes('patient/Patient.rs'));
    assert.ok(!granted.includes('patient/Observation.rs') && !granted.includes('patient/Condition.rs'));

    const auth = { headers: { authorization: `Bearer ${body.access_token}` } };
    const observations = await (await fetch(`${server.fhirBase}/Observation`, auth)).json();
    assert.ok(observations.entry.length > 0);
    for (const { resource } of observations.entry) {
      assert.equal(resource.subject.reference, `Patient/${body.patient}`);
      assert.ok(resource.category.some((c: any) => c.coding.some((x: any) => x.code === 'laboratory')));
    }
    const vital = observations.entry.length;
    const all = await (await fetch(`${server.fhirBase}/Observation?patient=${body.patient}&category=vital-signs`, auth)).json();
    assert.equal(all.total ?? all.entry?.length ?? 0, 0, 'vital signs are outside the granted category');
    assert.ok(vital > 0);
    assert.equal((await fetch(`${server.fhirBase}/MedicationRequest`, auth)).status, 403, 'a type never granted is refused');
  });

  it('sends the app error=access_denied with its state when the user denies', async () => {
    const launch = await authorize({ server, client: app, scope: 'launch/patient openid patient/*.rs', consent: 'deny' });
    assert.equal(launch.error, 'access_denied');
    assert.equal(launch.code, undefined);
    assert.match(launch.state, /^[0-9a-f]{32}$/);
  });

  it('puts no patient in context when the person keeps no patient scope', async () => {
    const launch = await authorize({ server, client: app, scope: 'launch/patient openid fhirUser patient/*.rs', username: 'amy', password: 'demo-password-3', consent: ['openid', 'fhirUser'] });
    const { body } = await exchangeCode(server.issuer, launch, app);
    assert.equal(body.scope, 'openid fhirUser');
    assert.equal(body.patient, undefined);
  });

  it('treats Allow with nothing ticked as a denial', async () => {
    const launch = await authorize({ server, client: app, scope: 'launch/patient openid patient/*.rs', consent: [] });
    assert.equal(launch.error, 'access_denied');
    assert.match(launch.redirect.searchParams.get('error_description')!, /granted none/);
  });

  it('refuses a consent form naming a patient the user may not open', async () => {
    const browser = new Browser();
    const url = `${server.issuer}/authorize?${new URLSearchParams({
      response_type: 'code', client_id: app.client_id, redirect_uri: app.redirect_uri, scope: 'launch/patient openid patient/*.rs', state: 's',
      aud: server.fhirBase, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256',
    })}`;
    const login = await browser.follow(url, server.issuer);
    const uid = /\/interaction\/([^/?]+)/.exec(login.url)![1];
    await browser.follow(`${server.issuer}/interaction/${uid}/login`, server.issuer, {
      method: 'POST', body: form({ csrf: hiddenValue(await login.res.text(), 'csrf'), username: 'dr.jones', password: 'demo-password-2' }),
    });
    const consent = await (await browser.fetch(`${server.issuer}/interaction/${uid}?patient=pat-1`)).text();
    const forged = await browser.fetch(`${server.issuer}/interaction/${uid}/consent`, {
      method: 'POST', body: form({ csrf: hiddenValue(consent, 'csrf'), patient: 'pat-3', scope: ['openid', 'patient/*.rs'], decision: 'allow' }),
    });
    assert.equal(forged.status, 400);
    assert.match(await forged.text(), /Choose one of the patients listed/);
  });

  it('ignores scopes the consent page did not offer', async () => {
    const launch = await authorize({
      server, client: app, scope: 'launch/patient openid patient/Patient.rs',
      consent: ['launch/patient', 'openid', 'patient/Patient.rs', 'user/*.cruds', 'system/*.rs'],
    });
    const { body } = await exchangeCode(server.issuer, launch, app);
    assert.deepEqual(body.scope.split(' ').sort(), ['launch/patient', 'openid', 'patient/Patient.rs']);
  });

  it('gives a patient user their own record without a picker', async () => {
    const launch = await authorize({ server, client: app, scope: 'launch/patient openid fhirUser patient/*.rs', username: 'amy', password: 'demo-password-3' });
    assert.ok(!launch.pages.some((p) => p.includes('type="radio"')));
    const { body } = await exchangeCode(server.issuer, launch, app);
    assert.equal(body.patient, 'pat-1');
  });

  it('lists only the patients a clinician may see, and refuses another one', async () => {
    const launch = await authorize({ server, client: app, scope: 'launch/patient openid patient/*.rs', username: 'dr.jones', password: 'demo-password-2', patient: 'pat-2' });
    const picker = launch.pages.find((p) => p.includes('type="radio"'))!;
    const listed = [...picker.matchAll(/name="patient" value="([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(listed.sort(), ['pat-1', 'pat-2']);
    assert.equal((await exchangeCode(server.issuer, launch, app)).body.patient, 'pat-2');
    const refused = await authorize({ server, client: app, scope: 'launch/patient openid patient/*.rs', username: 'dr.jones', password: 'demo-password-2', patient: 'pat-3' });
    assert.equal(refused.code, undefined);
    assert.match(refused.pages.at(-1)!, /Choose one of the patients listed/);
  });

  it('keeps offered scopes to the client\'s allow-list', async () => {
    const narrow = await server.addClient({ auth: { kind: 'public' }, scope: 'openid launch/patient patient/Patient.rs' });
    let offered: string[] = [];
    const launch = await authorize({ server, client: narrow, scope: 'openid fhirUser launch/patient patient/*.rs patient/Patient.rs', consent: (o) => (offered = o.map((s) => s.value)) });
    assert.deepEqual(offered.sort(), ['launch/patient', 'openid', 'patient/Patient.rs']);
    assert.deepEqual((await exchangeCode(server.issuer, launch, narrow)).body.scope.split(' ').sort(), ['launch/patient', 'openid', 'patient/Patient.rs']);
  });

  it('checks offered checkboxes by default on the consent form', async () => {
    const launch = await authorize({ server, client: app, scope: 'launch/patient openid patient/Observation.rs', consent: () => [] });
    const boxes = scopeCheckboxes(launch.pages.at(-1)!);
    assert.ok(boxes.filter((b) => b.checked).map((b) => b.value).includes('patient/Observation.rs'));
  });
});

describe('consent: the OIDC claims request parameter', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.stop());

  const grantsOf = async (clientId: string) => (await server.db('oidc_payloads').where({ model: 'Grant', client_id: clientId })).length;
  const CLAIMS = JSON.stringify({ id_token: { name: null, fhirUser: { essential: true } }, userinfo: { name: null, fhirUser: null } });

  async function claimsOfIdToken(scope: string, consent?: (offered: { value: string }[]) => string[]) {
    const client = await server.addClient({ auth: { kind: 'public' } });
    const launch = await authorize({ server, client, scope, username: 'amy', password: 'demo-password-3', extra: { claims: CLAIMS }, consent });
    return { launch, client };
  }

  // It sent the person round the consent page for ever, storing a grant each time (OIDC Core 5.5.1: claims not
  // authorized by the user are left out, essential or not, without an error).
  it('asks for consent once and leaves out claims whose scope was not granted, with one grant stored', async () => {
    const { launch, client } = await claimsOfIdToken('launch/patient openid patient/*.rs');
    assert.ok(launch.code, 'the app gets its code');
    assert.equal(launch.pages.filter((p) => p.includes('name="decision"')).length, 1, 'one consent page');
    assert.equal(await grantsOf(client.client_id), 1, 'one grant');
    const { body } = await exchangeCode(server.issuer, launch, client);
    const idToken = JSON.parse(Buffer.from(body.id_token.split('.')[1], 'base64url').toString());
    assert.equal(idToken.name, undefined);
    assert.equal(idToken.fhirUser, undefined);
    const userinfo = await (await fetch(`${server.issuer}/userinfo`, { headers: { authorization: `Bearer ${body.access_token}` } })).json();
    assert.equal(userinfo.name, undefined);
    assert.equal(userinfo.fhirUser, undefined);
  });

  it('releases the claims of the scopes the person kept, and not those of a scope they unticked', async () => {
    const { launch, client } = await claimsOfIdToken('launch/patient openid fhirUser profile patient/*.rs', (offered) => offered.map((s) => s.value).filter((s) => s !== 'profile'));
    assert.ok(launch.code, 'the app gets its code');
    assert.equal(await grantsOf(client.client_id), 1, 'one grant');
    const { body } = await exchangeCode(server.issuer, launch, client);
    const idToken = JSON.parse(Buffer.from(body.id_token.split('.')[1], 'base64url').toString());
    assert.match(idToken.fhirUser, /\/Patient\/pat-1$/);
    assert.equal(idToken.name, undefined, 'profile was unticked');
  });
});
