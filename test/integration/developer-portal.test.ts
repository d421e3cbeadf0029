// The developer portal at /apps: registration through a form with the same rules as the CLI and
// /register, credentials shown once, and managing an app with its registration access token.
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, authorizedTokens, Browser, exchangeCode, form, hiddenValue, pkce, secretAccepted, tokenRequest } from '../support/oauth.ts';
import { issueInitialAccessToken } from '../../server/oidc/registration-privileges.ts';
import { removeClient } from '../../server/oidc/clients.ts';

const SCOPE = 'launch/patient openid fhirUser offline_access patient/*.rs';
const XSS = '<img src=x onerror=alert(1)>';

interface Registered { client_id: string; client_secret?: string; rat: string; redirect_uri: string; html: string }

async function clientCount(server: TestServer): Promise<number> {
  const [row] = await server.db('oidc_payloads').where('model', 'Client').count({ n: '*' });
  return Number(row.n);
}

async function storedClient(server: TestServer, clientId: string): Promise<Record<string, any> | undefined> {
  const row = await server.db('oidc_payloads').where({ model: 'Client', id: clientId }).first('payload');
  return row && JSON.parse(row.payload);
}

/** Opens the registration form and posts it; `csrf: null` leaves the token out. */
async function postRegistration(server: TestServer, fields: Record<string, string>, browser = new Browser(), csrf: string | null = '') {
  const page = await browser.fetch(`${server.issuer}/apps`);
  const html = await page.text();
  const token = csrf === null ? undefined : csrf || hiddenValue(html, 'csrf');
  const res = await browser.fetch(`${server.issuer}/apps`, { method: 'POST', body: form({ ...(token ? { csrf: token } : {}), ...fields }) });
  return { res, html: await res.text(), browser };
}

async function register(server: TestServer, fields: Record<string, string>, browser?: Browser): Promise<Registered> {
  const { res, html } = await postRegistration(server, fields, browser);
  assert.equal(res.status, 200, html.slice(0, 1500));
  const secret = /name="client_secret" value="([^"]*)"/.exec(html)?.[1];
  return {
    client_id: hiddenValue(html, 'client_id'),
    client_secret: secret,
    rat: hiddenValue(html, 'registration_access_token'),
    redirect_uri: (fields.redirect_uris ?? '').split('\n')[0].trim(),
    html,
  };
}

/** Signs in to /apps/manage with a client id and registration access token. */
async function openManage(server: TestServer, clientId: string, rat: string, browser = new Browser()) {
  const page = await browser.fetch(`${server.issuer}/apps/manage`);
  const csrf = hiddenValue(await page.text(), 'csrf');
  const res = await browser.fetch(`${server.issuer}/apps/manage`, { method: 'POST', body: form({ csrf, client_id: clientId, registration_access_token: rat }) });
  return { res, html: await res.text(), browser };
}

/** The fields of an app page's secret rotation form, as the browser sends them. */
function rotationForm(html: string, owner: { client_id: string; rat: string }): Record<string, string> {
  const rotation = /name="rotation" value="([^"]*)"/.exec(html)?.[1];
  return { csrf: hiddenValue(html, 'csrf'), client_id: owner.client_id, registration_access_token: owner.rat, ...(rotation === undefined ? {} : { rotation }) };
}

/** Opens the app's page as `owner` and posts its secret rotation form, with `fields` over the page's own (undefined: left out). */
async function postRotation(server: TestServer, owner: { client_id: string; rat: string }, fields: Record<string, string | undefined> = {}) {
  const { browser, html } = await openManage(server, owner.client_id, owner.rat);
  const all = { ...rotationForm(html, owner), ...fields };
  const body = Object.fromEntries(Object.entries(all).filter((e): e is [string, string] => e[1] !== undefined));
  const res = await browser.fetch(`${server.issuer}/apps/manage/rotate-secret`, { method: 'POST', body: form(body) });
  return { res, html: await res.text() };
}

describe('developer portal (/apps)', () => {
  let server: TestServer;
  before(async () => { server = await startTestServer(); });
  after(() => server.stop());

  it('explains itself and shows a CSRF-protected registration form (no initial access token in open mode)', async () => {
    const res = await fetch(`${server.issuer}/apps`);
    assert.equal(res.status, 200);
    const html = await res.text();
    assert.match(html, /Register a SMART app/);
    assert.match(html, /developer portal/);
    assert.ok(hiddenValue(html, 'csrf'));
    for (const name of ['client_name', 'redirect_uris', 'launch_uri', 'auth', 'jwks_uri', 'scope']) assert.match(html, new RegExp(`name="${name}"`), name);
    assert.doesNotMatch(html, /name="initial_access_token"/);
    assert.match(res.headers.get('content-security-policy')!, /script-src 'none'/);
  });

  it('registers a public app whose credentials then work in a real launch', async () => {
    const before = await clientCount(server);
    const app = await register(server, {
      client_name: 'Growth Chart', redirect_uris: 'http://127.0.0.1:9000/callback\r\nhttps://growth.example.org/cb', launch_uri: 'http://127.0.0.1:9000/launch', auth: 'public',
    });
    assert.equal(await clientCount(server), before + 1);
    assert.equal(app.client_secret, undefined, 'a public app has no secret');
    assert.match(app.html, /Copy these now/);
    assert.match(app.html, /not shown again/);
    const stored = await storedClient(server, app.client_id);
    assert.equal(stored?.token_endpoint_auth_method, 'none');
    assert.deepEqual(stored?.redirect_uris, ['http://127.0.0.1:9000/callback', 'https://growth.example.org/cb']);
    assert.equal(stored?.launch_uri, 'http://127.0.0.1:9000/launch');
    assert.equal(stored?.smart_scope, undefined, 'blank scope: the server default');

    const launch = await authorize({ server, client: app, scope: SCOPE, patient: 'pat-2' });
    assert.ok(launch.code, launch.error);
    const token = await exchangeCode(server.issuer, launch, app);
    assert.equal(token.res.status, 200, JSON.stringify(token.body));
    assert.equal(token.body.patient, 'pat-2');
    assert.ok(token.body.refresh_token);
  });

  it('registers a confidential app with a secret, shown once, that works with HTTP Basic', async () => {
    const { res, html } = await postRegistration(server, {
      client_name: 'Clinic App', redirect_uris: 'https://clinic.example.org/cb', auth: 'secret', scope: 'openid fhirUser launch/patient  offline_access patient/Observation.rs patient/Patient.r',
    });
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const clientId = hiddenValue(html, 'client_id');
    const secret = hiddenValue(html, 'client_secret');
    const rat = hiddenValue(html, 'registration_access_token');
    assert.ok(secret.length >= 32 && rat.length >= 32);
    const stored = await storedClient(server, clientId);
    assert.equal(stored?.token_endpoint_auth_method, 'client_secret_basic');
    assert.equal(stored?.smart_scope, 'openid fhirUser launch/patient offline_access patient/Observation.rs patient/Patient.r');

    const app = { client_id: clientId, client_secret: secret, redirect_uri: 'https://clinic.example.org/cb' };
    const launch = await authorize({ server, client: app, scope: SCOPE });
    const token = await exchangeCode(server.issuer, launch, app);
    assert.equal(token.res.status, 200, JSON.stringify(token.body));
    assert.equal(token.body.scope.split(' ').includes('patient/*.rs'), false, 'limited to the registered scopes');

    // Shown once: not on the form, not on the management page.
    const again = await (await fetch(`${server.issuer}/apps`)).text();
    assert.ok(!again.includes(secret) && !again.includes(rat));
    const manage = await openManage(server, clientId, rat);
    assert.equal(manage.res.status, 200);
    assert.ok(!manage.html.includes(secret), 'the management page never shows the secret');
    assert.equal(manage.res.headers.get('cache-control'), 'no-store');
  });

  it('registers an asymmetric app with a JWKS URL, and a backend service without redirect URIs', async () => {
    const app = await register(server, {
      client_name: 'Native App', redirect_uris: 'https://native.example.org/cb', auth: 'jwks-uri', jwks_uri: 'http://127.0.0.1:9/jwks.json',
    });
    assert.equal(app.client_secret, undefined);
    const stored = await storedClient(server, app.client_id);
    assert.equal(stored?.token_endpoint_auth_method, 'private_key_jwt');
    assert.equal(stored?.jwks_uri, 'http://127.0.0.1:9/jwks.json');
    assert.equal(stored?.client_secret, undefined);
    assert.deepEqual(stored?.grant_types, ['authorization_code', 'refresh_token']);

  });

  it('registers SMART apps only: a backend service (client_credentials, system/ scopes) needs an administrator', async () => {
    const before = await clientCount(server);
    const backend = { client_name: 'Nightly Export', redirect_uris: '', auth: 'jwks-uri', jwks_uri: 'https://backend.example.org/.well-known/jwks.json' };
    const asBackend = await postRegistration(server, { ...backend, scope: 'system/Patient.rs system/Observation.rs' });
    assert.equal(asBackend.res.status, 400);
    assert.match(asBackend.html, /grant_types: client_credentials needs an administrator/);
    const systemScope = await postRegistration(server, { client_name: 'Sneaky', redirect_uris: 'https://sneaky.example.org/cb', auth: 'public', scope: 'patient/*.rs system/*.cruds' });
    assert.equal(systemScope.res.status, 400);
    assert.match(systemScope.html, /scope: system\/\*\.cruds needs an administrator/);
    assert.equal(await clientCount(server), before, 'nothing is stored');
  });

  it('refuses bad input with 400 and a message, keeps the typed values, and stores nothing', async () => {
    const good = { client_name: 'Bad App', redirect_uris: 'https://bad.example.org/cb', auth: 'public' };
    const cases: [Record<string, string>, RegExp][] = [
      [{ redirect_uris: 'javascript:alert(1)' }, /redirect_uris must use https/],
      [{ redirect_uris: 'https://bad.example.org/cb#fragment' }, /must not contain fragments/],
      [{ redirect_uris: 'http://bad.example.org/cb' }, /redirect_uris must use https, or http on localhost/],
      [{ launch_uri: 'javascript:alert(1)' }, /launch_uri must use https/],
      [{ scope: 'patient/Observation.rs nonsense!scope' }, /scope must be a space-separated list of SMART scopes/],
      [{ client_name: '   ' }, /Enter a name for the app/],
      [{ redirect_uris: '' }, /Enter at least one redirect URI/],
      [{ auth: 'jwks-uri', jwks_uri: '' }, /Enter the JWKS URL/],
      [{ auth: 'jwks-uri', jwks_uri: 'ftp://keys.example.org/jwks' }, /jwks_uri must use https/],
      [{ auth: 'superuser' }, /Choose the kind of client/],
    ];
    const before = await clientCount(server);
    for (const [fields, message] of cases) {
      const { res, html } = await postRegistration(server, { ...good, ...fields });
      assert.equal(res.status, 400, `${JSON.stringify(fields)}: ${html.slice(0, 800)}`);
      assert.match(html, message, JSON.stringify(fields));
      assert.match(html, /class="error"/);
      assert.match(html, /name="client_name"[^>]*value="(Bad App|)"/, 'the typed name is kept');
      assert.doesNotMatch(html, /name="registration_access_token"/);
    }
    const typed = await postRegistration(server, { ...good, redirect_uris: 'javascript:alert(1)' });
    assert.match(typed.html, />javascript:alert\(1\)<\/textarea>/, 'the typed redirect URIs are kept');
    assert.equal(await clientCount(server), before, 'nothing was stored');
  });

  it('refuses a post without a valid CSRF token (403) and stores nothing', async () => {
    const before = await clientCount(server);
    const fields = { client_name: 'No CSRF', redirect_uris: 'https://nocsrf.example.org/cb', auth: 'public' };
    const missing = await postRegistration(server, fields, new Browser(), null);
    assert.equal(missing.res.status, 403);
    const wrong = await postRegistration(server, fields, new Browser(), 'not-the-token');
    assert.equal(wrong.res.status, 403);
    const noCookie = await fetch(`${server.issuer}/apps`, { method: 'POST', body: form({ csrf: 'x', ...fields }) });
    assert.equal(noCookie.status, 403);
    assert.equal(await clientCount(server), before);
  });

  it('escapes the client name everywhere it shows it', async () => {
    const app = await register(server, { client_name: XSS, redirect_uris: 'https://xss.example.org/cb', auth: 'public' });
    assert.ok(!app.html.includes('<img src=x'), 'no raw markup on the success page');
    assert.ok(app.html.includes('&lt;img src=x onerror=alert(1)&gt;'));
    const manage = await openManage(server, app.client_id, app.rat);
    assert.ok(!manage.html.includes('<img src=x') && manage.html.includes('&lt;img src=x onerror=alert(1)&gt;'));
    const failed = await postRegistration(server, { client_name: XSS, redirect_uris: 'javascript:alert(1)', auth: 'public' });
    assert.equal(failed.res.status, 400);
    assert.ok(!failed.html.includes('<img src=x') && failed.html.includes('&lt;img src=x onerror=alert(1)&gt;'));
  });

  describe('managing an app with its registration access token', () => {
    let app: Registered;
    let other: Registered;
    before(async () => {
      app = await register(server, { client_name: 'Managed App', redirect_uris: 'http://127.0.0.1:9100/old-callback', auth: 'public' });
      other = await register(server, { client_name: 'Other App', redirect_uris: 'https://other.example.org/cb', auth: 'public' });
    });

    it('asks for the client id and token, and fails generically for a wrong token or an unknown client', async () => {
      const page = await (await fetch(`${server.issuer}/apps/manage`)).text();
      assert.match(page, /name="client_id"/);
      assert.match(page, /name="registration_access_token"/);
      const wrong = await openManage(server, app.client_id, 'not-a-token');
      const otherToken = await openManage(server, app.client_id, other.rat);
      const unknown = await openManage(server, 'no-such-client', app.rat);
      const empty = await openManage(server, app.client_id, '');
      for (const r of [wrong, otherToken, unknown, empty]) {
        assert.equal(r.res.status, 403);
        assert.match(r.html, /The client ID or registration access token is not correct\./);
        assert.doesNotMatch(r.html, /name="redirect_uris"/);
      }
      // The token is never carried in a URL.
      const ok = await openManage(server, app.client_id, app.rat);
      assert.equal(ok.res.status, 200);
      assert.doesNotMatch(ok.html, new RegExp(`href="[^"]*${app.rat}`));
      assert.match(ok.html, new RegExp(`<input type="hidden" name="registration_access_token" value="${app.rat}">`));
    });

    it('refuses edits with a wrong token or without CSRF, and invalid redirect URIs with 400', async () => {
      const { browser, html } = await openManage(server, app.client_id, app.rat);
      const csrf = hiddenValue(html, 'csrf');
      const edit = (fields: Record<string, string>) => browser.fetch(`${server.issuer}/apps/manage/edit`, { method: 'POST', body: form(fields) });

      const wrongRat = await edit({ csrf, client_id: app.client_id, registration_access_token: other.rat, redirect_uris: 'https://evil.example.org/cb' });
      assert.equal(wrongRat.status, 403);
      assert.match(await wrongRat.text(), /The client ID or registration access token is not correct\./);
      const noCsrf = await edit({ client_id: app.client_id, registration_access_token: app.rat, redirect_uris: 'https://evil.example.org/cb' });
      assert.equal(noCsrf.status, 403);
      for (const uri of ['javascript:alert(1)', 'https://x.example.org/cb#frag', 'http://x.example.org/cb', '']) {
        const res = await edit({ csrf, client_id: app.client_id, registration_access_token: app.rat, redirect_uris: uri });
        assert.equal(res.status, 400, uri);
        assert.match(await res.text(), /class="error"/);
      }
      assert.deepEqual((await storedClient(server, app.client_id))?.redirect_uris, ['http://127.0.0.1:9100/old-callback']);
    });

    it('edits the redirect URIs and launch URL: the new URI works at /authorize, the old one is refused', async () => {
      const before = await storedClient(server, app.client_id);
      const { browser, html } = await openManage(server, app.client_id, app.rat);
      const res = await browser.fetch(`${server.issuer}/apps/manage/edit`, {
        method: 'POST',
        body: form({ csrf: hiddenValue(html, 'csrf'), client_id: app.client_id, registration_access_token: app.rat, redirect_uris: 'http://127.0.0.1:9100/new-callback', launch_uri: 'https://managed.example.org/launch' }),
      });
      const page = await res.text();
      assert.equal(res.status, 200, page.slice(0, 800));
      assert.match(page, /Saved/);
      const after = await storedClient(server, app.client_id);
      assert.deepEqual(after?.redirect_uris, ['http://127.0.0.1:9100/new-callback']);
      assert.equal(after?.launch_uri, 'https://managed.example.org/launch');
      for (const key of ['client_id', 'client_name', 'token_endpoint_auth_method', 'grant_types']) assert.deepEqual(after?.[key], before?.[key], key);
      const [record] = (await server.audit.search({ type: '110113', subtype: '110129' }) as any[])
        .filter((e) => e.action === 'U' && e.entity[0].what.identifier.value === app.client_id);
      assert.deepEqual(record.entity[0].detail.map((d: any) => d.valueString).sort(), ['launch_uri', 'redirect_uris'], 'the fields changed, by name');

      const client = { client_id: app.client_id, redirect_uri: 'http://127.0.0.1:9100/new-callback' };
      const launch = await authorize({ server, client, scope: SCOPE });
      assert.ok(launch.code);
      assert.equal((await exchangeCode(server.issuer, launch, client)).res.status, 200);

      const { challenge } = pkce();
      const old = await fetch(`${server.issuer}/authorize?${new URLSearchParams({
        response_type: 'code', client_id: app.client_id, redirect_uri: 'http://127.0.0.1:9100/old-callback', scope: SCOPE, state: 's',
        aud: server.fhirBase, code_challenge: challenge, code_challenge_method: 'S256',
      })}`, { redirect: 'manual' });
      assert.equal(old.status, 400);
      assert.equal(old.headers.get('location'), null);
      assert.match(await old.text(), /redirect_uri/);
    });

    it('keeps the client secret when a confidential app is edited', async () => {
      const secretApp = await register(server, { client_name: 'Secret Edit', redirect_uris: 'https://secret-edit.example.org/cb', auth: 'secret' });
      const { browser, html } = await openManage(server, secretApp.client_id, secretApp.rat);
      const res = await browser.fetch(`${server.issuer}/apps/manage/edit`, {
        method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), client_id: secretApp.client_id, registration_access_token: secretApp.rat, redirect_uris: 'https://secret-edit.example.org/cb2' }),
      });
      assert.equal(res.status, 200);
      const stored = await storedClient(server, secretApp.client_id);
      assert.equal(stored?.client_secret, secretApp.client_secret);
      const client = { client_id: secretApp.client_id, client_secret: secretApp.client_secret, redirect_uri: 'https://secret-edit.example.org/cb2' };
      const launch = await authorize({ server, client, scope: SCOPE });
      assert.equal((await exchangeCode(server.issuer, launch, client)).res.status, 200);
    });

    it('edits the JWKS URL of an asymmetric app', async () => {
      const keyed = await register(server, { client_name: 'Keyed', redirect_uris: 'https://keyed.example.org/cb', auth: 'jwks-uri', jwks_uri: 'https://keyed.example.org/jwks-1' });
      const { browser, html } = await openManage(server, keyed.client_id, keyed.rat);
      assert.match(html, /name="jwks_uri"/);
      const edit = (jwks: string) => browser.fetch(`${server.issuer}/apps/manage/edit`, {
        method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), client_id: keyed.client_id, registration_access_token: keyed.rat, redirect_uris: 'https://keyed.example.org/cb', jwks_uri: jwks }),
      });
      assert.equal((await edit('http://keys.example.org/jwks')).status, 400);
      assert.equal((await edit('https://keyed.example.org/jwks-2')).status, 200);
      assert.equal((await storedClient(server, keyed.client_id))?.jwks_uri, 'https://keyed.example.org/jwks-2');
    });

    it('deletes the app: its tokens stop working and the client then gets invalid_client', async () => {
      const client = { client_id: app.client_id, redirect_uri: 'http://127.0.0.1:9100/new-callback' };
      const tokens = await authorizedTokens({ server, client, scope: SCOPE });
      assert.equal((await fetch(`${server.fhirBase}/Patient/pat-1`, { headers: { authorization: `Bearer ${tokens.access_token}` } })).status, 200);

      const { browser, html } = await openManage(server, app.client_id, app.rat);
      const noCsrf = await browser.fetch(`${server.issuer}/apps/manage/delete`, { method: 'POST', body: form({ client_id: app.client_id, registration_access_token: app.rat }) });
      assert.equal(noCsrf.status, 403);
      const wrongRat = await browser.fetch(`${server.issuer}/apps/manage/delete`, { method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), client_id: app.client_id, registration_access_token: other.rat }) });
      assert.equal(wrongRat.status, 403);
      assert.ok(await storedClient(server, app.client_id), 'still registered');

      const res = await browser.fetch(`${server.issuer}/apps/manage/delete`, { method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), client_id: app.client_id, registration_access_token: app.rat }) });
      assert.equal(res.status, 200);
      assert.match(await res.text(), /App deleted/);
      assert.equal(await storedClient(server, app.client_id), undefined);

      const refresh = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, client);
      assert.equal(refresh.res.status, 401);
      assert.equal(refresh.body.error, 'invalid_client');
      assert.equal((await fetch(`${server.fhirBase}/Patient/pat-1`, { headers: { authorization: `Bearer ${tokens.access_token}` } })).status, 401,
        'the access tokens of a deleted app are refused');
      const again = await openManage(server, app.client_id, app.rat);
      assert.equal(again.res.status, 403, 'the registration access token is gone with the app');
      assert.ok(await storedClient(server, other.client_id), 'other apps are untouched');
    });

    it('manages an app registered at /register (RFC 7591) and shows only https logos', async () => {
      const registerApp = async (logo: string) => {
        const res = await fetch(`${server.issuer}/register`, {
          method: 'POST', headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ client_name: 'API App', redirect_uris: ['https://api-app.example.org/cb'], token_endpoint_auth_method: 'none', logo_uri: logo, scope: 'openid patient/*.rs' }),
        });
        assert.equal(res.status, 201);
        return (await res.json()) as { client_id: string; registration_access_token: string };
      };
      const https = await registerApp('https://api-app.example.org/logo.png');
      const manage = await openManage(server, https.client_id, https.registration_access_token);
      assert.equal(manage.res.status, 200);
      assert.match(manage.html, /<img class="logo" src="https:\/\/api-app.example.org\/logo.png"/);
      const res = await manage.browser.fetch(`${server.issuer}/apps/manage/edit`, {
        method: 'POST',
        body: form({ csrf: hiddenValue(manage.html, 'csrf'), client_id: https.client_id, registration_access_token: https.registration_access_token, redirect_uris: 'https://api-app.example.org/cb2' }),
      });
      assert.equal(res.status, 200);
      const stored = await storedClient(server, https.client_id);
      assert.deepEqual(stored?.redirect_uris, ['https://api-app.example.org/cb2']);
      assert.equal(stored?.smart_scope, 'openid patient/*.rs');
      assert.equal(stored?.logo_uri, 'https://api-app.example.org/logo.png');

      const http = await registerApp('http://localhost/logo.png');
      const plain = await openManage(server, http.client_id, http.registration_access_token);
      assert.equal(plain.res.status, 200);
      assert.doesNotMatch(plain.html, /<img/);
    });
  });
  describe('post-logout redirect URIs', () => {
    it('are edited on the app page under the redirect URI rules: a bad one is refused with a message and nothing is stored', async () => {
      const res = await fetch(`${server.issuer}/register`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ client_name: 'Logout App', redirect_uris: ['https://logout-app.example.org/cb'], post_logout_redirect_uris: ['https://logout-app.example.org/bye'], token_endpoint_auth_method: 'none' }),
      });
      assert.equal(res.status, 201);
      const registered = (await res.json()) as { client_id: string; registration_access_token: string };
      const { browser, html } = await openManage(server, registered.client_id, registered.registration_access_token);
      assert.match(html, /<textarea name="post_logout_redirect_uris"[^>]*>https:\/\/logout-app.example.org\/bye<\/textarea>/, 'shown for editing');
      const edit = (uris: string) => browser.fetch(`${server.issuer}/apps/manage/edit`, {
        method: 'POST',
        body: form({ csrf: hiddenValue(html, 'csrf'), client_id: registered.client_id, registration_access_token: registered.registration_access_token, redirect_uris: 'https://logout-app.example.org/cb', post_logout_redirect_uris: uris }),
      });
      const stored = async () => (await storedClient(server, registered.client_id))?.post_logout_redirect_uris;

      for (const [uri, message] of [
        ['javascript:alert(1)', /post_logout_redirect_uris must use https/],
        ['http://evil.example.org/out', /post_logout_redirect_uris must use https, or http on localhost/],
        ['https://logout-app.example.org/bye#x', /post_logout_redirect_uris must not contain fragments/],
        [Array.from({ length: 21 }, (_, i) => `https://logout-app.example.org/bye${i}`).join('\n'), /at most 20/],
      ] as const) {
        const refused = await edit(`https://logout-app.example.org/fine\n${uri}`);
        const page = await refused.text();
        assert.equal(refused.status, 400, uri);
        assert.match(page, message, uri);
        assert.match(page, /class="error"/);
        assert.deepEqual(await stored(), ['https://logout-app.example.org/bye'], `nothing stored for ${uri}`);
      }

      const saved = await edit('https://logout-app.example.org/bye2\r\nhttp://127.0.0.1:9100/signed-out');
      assert.equal(saved.status, 200);
      assert.match(await saved.text(), /Saved/);
      assert.deepEqual(await stored(), ['https://logout-app.example.org/bye2', 'http://127.0.0.1:9100/signed-out']);
      const [record] = (await server.audit.search({ type: '110113', subtype: '110129' }) as any[])
        .filter((e) => e.action === 'U' && e.entity[0].what.identifier.value === registered.client_id);
      assert.deepEqual(record.entity[0].detail.map((d: any) => d.valueString), ['post_logout_redirect_uris']);

      assert.equal((await edit('')).status, 200);
      assert.equal(await stored(), undefined, 'an empty list removes them');
    });
  });

  describe('rotating the client secret', () => {
    it('gives a confidential app a new secret, shown once; the old one is refused at once and the rotation is recorded', async () => {
      const app = await register(server, { client_name: 'Rotating App', redirect_uris: 'https://rotating.example.org/cb', auth: 'secret' });
      const manage = await openManage(server, app.client_id, app.rat);
      assert.match(manage.html, /<form method="post" action="\/apps\/manage\/rotate-secret"/);
      assert.ok(await secretAccepted(server.issuer, app.client_id, app.client_secret!), 'the old secret works before, and is cached');

      const { res, html } = await postRotation(server, app);
      assert.equal(res.status, 200, html.slice(0, 1500));
      assert.equal(res.headers.get('cache-control'), 'no-store');
      assert.match(html, /Copy the new client secret now/);
      const secret = hiddenValue(html, 'client_secret');
      assert.ok(secret.length >= 32 && secret !== app.client_secret);
      assert.equal((await storedClient(server, app.client_id))?.client_secret, secret, 'stored as secrets are');
      assert.equal(await secretAccepted(server.issuer, app.client_id, app.client_secret!), false, 'the old secret is refused at once');
      assert.ok(await secretAccepted(server.issuer, app.client_id, secret));
      const client = { client_id: app.client_id, client_secret: secret, redirect_uri: app.redirect_uri };
      assert.equal((await exchangeCode(server.issuer, await authorize({ server, client, scope: SCOPE }), client)).res.status, 200);

      const again = await openManage(server, app.client_id, app.rat);
      assert.ok(!again.html.includes(secret), 'shown once');
      const records = (await server.audit.search({ type: '110113', subtype: '110129' }) as any[])
        .filter((e) => e.action === 'U' && e.entity[0].what.identifier.value === app.client_id);
      assert.equal(records.length, 1);
      assert.deepEqual(records[0].entity[0].detail.map((d: any) => d.valueString), ['client_secret']);
      assert.ok(!JSON.stringify(records).includes(secret) && !JSON.stringify(records).includes(app.client_secret!), 'never the secret itself');
    });

    it('rotates once per form: the same form sent again (a reload of the answer) is refused as already rotated, and nothing changes', async () => {
      const app = await register(server, { client_name: 'Reloaded App', redirect_uris: 'https://reloaded.example.org/cb', auth: 'secret' });
      const { browser, html } = await openManage(server, app.client_id, app.rat);
      const sent = rotationForm(html, app);
      const rotate = (fields: Record<string, string>) => browser.fetch(`${server.issuer}/apps/manage/rotate-secret`, { method: 'POST', body: form(fields) });
      const first = await rotate(sent);
      assert.equal(first.status, 200);
      assert.equal(first.headers.get('cache-control'), 'no-store', 'the page with the secret is not kept');
      const answer = await first.text();
      const secret = hiddenValue(answer, 'client_secret');

      const again = await rotate(sent);
      assert.equal(again.status, 409);
      const refused = await again.text();
      assert.match(refused, /The client secret was already rotated/);
      assert.doesNotMatch(refused, /name="client_secret"/, 'no secret shown');
      assert.equal((await storedClient(server, app.client_id))?.client_secret, secret, 'no second rotation');
      assert.ok(await secretAccepted(server.issuer, app.client_id, secret), 'the secret shown once still works');
      for (const rotation of [undefined, 'made-up']) {
        const { rotation: _, ...rest } = sent;
        assert.equal((await rotate(rotation === undefined ? rest : { ...rest, rotation })).status, 409, `rotation ${rotation}`);
      }
      assert.equal((await storedClient(server, app.client_id))?.client_secret, secret);
      const records = (await server.audit.search({ type: '110113', subtype: '110129' }) as any[])
        .filter((e) => e.action === 'U' && e.entity[0].what.identifier.value === app.client_id);
      assert.equal(records.length, 1, 'one rotation recorded');

      // The answer's own form rotates once more, deliberately.
      const next = await rotate(rotationForm(answer, app));
      assert.equal(next.status, 200);
      const newer = hiddenValue(await next.text(), 'client_secret');
      assert.notEqual(newer, secret);
      assert.equal((await storedClient(server, app.client_id))?.client_secret, newer);
    });

    it('rotates the secret of a client_secret_post app registered at /register', async () => {
      const res = await fetch(`${server.issuer}/register`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ client_name: 'Post App', redirect_uris: ['https://post-app.example.org/cb'], token_endpoint_auth_method: 'client_secret_post' }),
      });
      const registered = (await res.json()) as { client_id: string; client_secret: string; registration_access_token: string };
      const { html } = await postRotation(server, { client_id: registered.client_id, rat: registered.registration_access_token });
      const secret = hiddenValue(html, 'client_secret');
      assert.equal(await secretAccepted(server.issuer, registered.client_id, registered.client_secret, 'client_secret_post'), false);
      assert.ok(await secretAccepted(server.issuer, registered.client_id, secret, 'client_secret_post'));
    });

    it('an edit under way while the secret is rotated does not bring the old secret back', async () => {
      const app = await register(server, { client_name: 'Racing App', redirect_uris: 'https://racing.example.org/cb', auth: 'secret' });
      const { browser, html } = await openManage(server, app.client_id, app.rat);
      // The edit is held between reading the app and storing it, in oidc-provider's validation, while the secret is rotated.
      const Client = server.host.provider.Client;
      const validate = Client.validate;
      let reached!: () => void;
      let release!: () => void;
      const atValidation = new Promise<void>((r) => { reached = r; });
      const held = new Promise<void>((r) => { release = r; });
      Client.validate = async (metadata) => {
        Client.validate = validate;
        reached();
        await held;
        return validate.call(Client, metadata);
      };
      try {
        const editing = browser.fetch(`${server.issuer}/apps/manage/edit`, {
          method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), client_id: app.client_id, registration_access_token: app.rat, redirect_uris: 'https://racing.example.org/cb2' }),
        });
        await atValidation;
        const secret = hiddenValue((await postRotation(server, app)).html, 'client_secret');
        release();
        const edit = await editing;
        assert.equal(edit.status, 400);
        assert.match(await edit.text(), /changed meanwhile/);
        const stored = await storedClient(server, app.client_id);
        assert.equal(stored?.client_secret, secret, 'the new secret stays');
        assert.deepEqual(stored?.redirect_uris, ['https://racing.example.org/cb'], 'the edit was not stored');
        assert.equal(await secretAccepted(server.issuer, app.client_id, app.client_secret!), false);
      } finally {
        Client.validate = validate;
        release();
      }
    });

    describe('who may not', () => {
      let app: Registered;
      let other: Registered;
      const changesOfApp = async () => (await server.audit.search({ type: '110113', subtype: '110129' }) as any[])
        .filter((e) => e.entity[0].what.identifier.value === app.client_id).length;
      before(async () => {
        app = await register(server, { client_name: 'Guarded App', redirect_uris: 'https://guarded.example.org/cb', auth: 'secret' });
        other = await register(server, { client_name: 'Another Developer', redirect_uris: 'https://another.example.org/cb', auth: 'secret' });
      });
      afterEach(async () => {
        assert.equal((await storedClient(server, app.client_id))?.client_secret, app.client_secret, 'no new secret stored');
        assert.ok(await secretAccepted(server.issuer, app.client_id, app.client_secret!), 'the old secret still works');
        assert.equal(await changesOfApp(), 1, 'its registration only: nothing else recorded');
      });

      it('another developer, with the registration access token of their own app (403)', async () => {
        const { res, html } = await postRotation(server, other, { client_id: app.client_id });
        assert.equal(res.status, 403);
        assert.match(html, /The client ID or registration access token is not correct\./);
        assert.doesNotMatch(html, /name="client_secret"/);
        assert.equal((await storedClient(server, other.client_id))?.client_secret, other.client_secret, 'nor their own app');
      });

      it('a visitor without the registration access token (403)', async () => {
        const browser = new Browser();
        const csrf = hiddenValue(await (await browser.fetch(`${server.issuer}/apps/manage`)).text(), 'csrf');
        for (const rat of [undefined, '', 'not-a-token']) {
          const res = await browser.fetch(`${server.issuer}/apps/manage/rotate-secret`, {
            method: 'POST', body: form({ csrf, client_id: app.client_id, ...(rat === undefined ? {} : { registration_access_token: rat }) }),
          });
          assert.equal(res.status, 403, String(rat));
          assert.match(await res.text(), /The client ID or registration access token is not correct\./);
        }
      });

      it('a cross-site form post, without or with a wrong CSRF token (403)', async () => {
        for (const csrf of [undefined, 'not-the-token']) {
          const { res, html } = await postRotation(server, app, { csrf });
          assert.equal(res.status, 403, String(csrf));
          assert.match(html, /Form expired/);
        }
        const noCookie = await fetch(`${server.issuer}/apps/manage/rotate-secret`, {
          method: 'POST', body: form({ csrf: 'x', client_id: app.client_id, registration_access_token: app.rat }),
        });
        assert.equal(noCookie.status, 403);
      });

      it('the owner of a public or private_key_jwt app: there is no secret to rotate (400)', async () => {
        const publicApp = await register(server, { client_name: 'Public Rotation', redirect_uris: 'https://public-rotation.example.org/cb', auth: 'public' });
        const keyed = await register(server, { client_name: 'Keyed Rotation', redirect_uris: 'https://keyed-rotation.example.org/cb', auth: 'jwks-uri', jwks_uri: 'https://keyed-rotation.example.org/jwks' });
        for (const owner of [publicApp, keyed]) {
          const before = await storedClient(server, owner.client_id);
          assert.doesNotMatch((await openManage(server, owner.client_id, owner.rat)).html, /rotate-secret/, 'no rotation form');
          const { res, html } = await postRotation(server, owner);
          assert.equal(res.status, 400);
          assert.match(html, /This app has no client secret to rotate/);
          assert.doesNotMatch(html, /name="client_secret"/);
          assert.deepEqual(await storedClient(server, owner.client_id), before, 'no secret added');
        }
      });

      it('anyone, once the app is deleted (403)', async () => {
        const gone = await register(server, { client_name: 'Gone App', redirect_uris: 'https://gone.example.org/cb', auth: 'secret' });
        const removedElsewhere = await register(server, { client_name: 'Removed App', redirect_uris: 'https://removed.example.org/cb', auth: 'secret' });
        const { browser, html } = await openManage(server, gone.client_id, gone.rat);
        const deleted = await browser.fetch(`${server.issuer}/apps/manage/delete`, { method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), client_id: gone.client_id, registration_access_token: gone.rat }) });
        assert.equal(deleted.status, 200);
        const rotated = await browser.fetch(`${server.issuer}/apps/manage/rotate-secret`, { method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), client_id: gone.client_id, registration_access_token: gone.rat }) });
        assert.equal(rotated.status, 403);
        // Removed by an administrator (its registration access token is still stored): refused all the same, and nothing comes back.
        const page = await openManage(server, removedElsewhere.client_id, removedElsewhere.rat);
        await removeClient(server.db, removedElsewhere.client_id);
        const refused = await page.browser.fetch(`${server.issuer}/apps/manage/rotate-secret`, {
          method: 'POST', body: form({ csrf: hiddenValue(page.html, 'csrf'), client_id: removedElsewhere.client_id, registration_access_token: removedElsewhere.rat }),
        });
        assert.equal(refused.status, 403);
        assert.match(await refused.text(), /The client ID or registration access token is not correct\./);
        for (const id of [gone.client_id, removedElsewhere.client_id]) assert.equal(await storedClient(server, id), undefined);
      });
    });
  });
});

describe('developer portal with REGISTRATION=token', () => {
  let server: TestServer;
  before(async () => { server = await startTestServer({ REGISTRATION: 'token' }); });
  after(() => server.stop());

  it('asks for an initial access token and refuses without a valid one', async () => {
    const html = await (await fetch(`${server.issuer}/apps`)).text();
    assert.match(html, /name="initial_access_token"/);
    const fields = { client_name: 'Gated App', redirect_uris: 'https://gated.example.org/cb', auth: 'public' };
    const before = await clientCount(server);
    for (const iat of [undefined, '', 'bogus-initial-access-token']) {
      const { res, html: page } = await postRegistration(server, iat === undefined ? fields : { ...fields, initial_access_token: iat });
      assert.equal(res.status, 403);
      assert.match(page, /A valid initial access token is required/);
    }
    assert.equal(await clientCount(server), before);

    const iat = await new server.host.provider.InitialAccessToken({}).save();
    const app = await register(server, { ...fields, initial_access_token: iat });
    assert.ok(await storedClient(server, app.client_id));
    assert.equal(await clientCount(server), before + 1);
  });

  it('registers a backend service with an initial access token that carries its privileges, and no more', async () => {
    const iat = await issueInitialAccessToken(server.db, server.host.provider, 600, { systemScope: 'system/Patient.rs system/Observation.rs' });
    const backend = { client_name: 'Nightly Export', redirect_uris: '', auth: 'jwks-uri', jwks_uri: 'https://backend.example.org/.well-known/jwks.json', initial_access_token: iat };
    const wider = await postRegistration(server, { ...backend, scope: 'system/*.rs' });
    assert.equal(wider.res.status, 400);
    assert.match(wider.html, /scope: system\/\*\.rs needs an administrator/);
    const registered = await register(server, { ...backend, scope: 'system/Patient.rs system/Observation.rs' });
    const stored = await storedClient(server, registered.client_id);
    assert.deepEqual(stored?.grant_types, ['client_credentials']);
    assert.equal(stored?.smart_scope, 'system/Patient.rs system/Observation.rs');
  });

  it('registers an app under the purposes of use its initial access token limits it to', async () => {
    const iat = await issueInitialAccessToken(server.db, server.host.provider, 600, { purposes: ['TREAT'] });
    const registered = await register(server, { client_name: 'Treatment App', redirect_uris: 'https://treat.example.org/cb', auth: 'public', initial_access_token: iat });
    assert.deepEqual((await storedClient(server, registered.client_id))?.purposes_of_use, ['TREAT']);
  });

  it('binds a backend service to the organization its initial access token names', async () => {
    const organization = { organizationId: 'urn:oid:2.16.840.1.113883.19.5', organizationName: 'Example Lab' };
    const iat = await issueInitialAccessToken(server.db, server.host.provider, 600, { systemScope: 'system/Patient.rs', ...organization });
    const registered = await register(server, {
      client_name: 'Lab Feed', redirect_uris: '', auth: 'jwks-uri', jwks_uri: 'https://lab.example.org/jwks.json', scope: 'system/Patient.rs', initial_access_token: iat,
    });
    const stored = await storedClient(server, registered.client_id);
    assert.deepEqual([stored?.organization_id, stored?.organization_name], [organization.organizationId, organization.organizationName]);

    // Its page offers no organization field, and an edit that sends one anyway leaves the binding as it was.
    const { browser, html } = await openManage(server, registered.client_id, registered.rat);
    assert.doesNotMatch(html, /name="organization/);
    const res = await browser.fetch(`${server.issuer}/apps/manage/edit`, {
      method: 'POST',
      body: form({
        csrf: hiddenValue(html, 'csrf'), client_id: registered.client_id, registration_access_token: registered.rat, jwks_uri: 'https://lab.example.org/jwks-2.json',
        organization_id: 'urn:oid:1.2.999', organization_name: 'Another Lab',
      }),
    });
    assert.equal(res.status, 200, (await res.text()).slice(0, 800));
    const edited = await storedClient(server, registered.client_id);
    assert.deepEqual([edited?.jwks_uri, edited?.organization_id, edited?.organization_name], ['https://lab.example.org/jwks-2.json', organization.organizationId, organization.organizationName]);
  });
});
