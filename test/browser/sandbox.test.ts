// The sandbox launcher, option by option, in Chromium: the developer uses /launcher, the test plays the
// app (it follows the launch link, sends the browser to /authorize, exchanges the code, calls /fhir).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { freePort, startTestServer, type TestServer } from '../support/server.ts';
import { pkce, tokenRequest } from '../support/oauth.ts';
import { appRedirect, launchChromium, requireChromium } from '../support/browser.ts';

const EHR_SCOPE = 'launch openid fhirUser offline_access patient/*.rs';
const ALLOW = 'button[name=decision][value=allow]';

interface App { client_id: string; client_secret?: string; redirect_uri: string }

describe('sandbox launcher in Chromium', function () {
  this.timeout(60_000);
  let browser: Browser | undefined;
  let server: TestServer | undefined;
  // The app's pages: a real HTTP server that answers its launch URL and redirect URI with a blank page.
  let appServer: Server | undefined;
  let LAUNCH_URI: string;
  let REDIRECT_URI: string;
  let app: App;
  let context: BrowserContext;
  let page: Page;

  before(async function () {
    requireChromium(this);
    browser = await launchChromium();
    const port = await freePort();
    appServer = createServer((_req, res) => res.end('the app')).listen(port, '127.0.0.1');
    LAUNCH_URI = `http://127.0.0.1:${port}/launch`;
    REDIRECT_URI = `http://127.0.0.1:${port}/app`;
    server = await startTestServer();
    app = await server.addClient({ name: 'Registered app', auth: { kind: 'public' }, redirectUris: [REDIRECT_URI], launchUri: LAUNCH_URI });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    appServer?.close();
  });
  beforeEach(async () => {
    context = await browser!.newContext();
    page = await context.newPage();
  });
  afterEach(() => context?.close());

  /** On the launcher (app and patient chosen by URL), sets the launch form and follows the link it gives. */
  async function launch(options: { client?: string; patient?: string; encounter?: string; user?: string; skipLogin?: boolean; skipConsent?: boolean; failure?: string } = {}) {
    await page.goto(`${server!.issuer}/launcher?${new URLSearchParams({ client_id: options.client ?? app.client_id, patient: options.patient ?? 'pat-1' })}`);
    if (options.encounter) await page.selectOption('select[name=encounter]', options.encounter);
    if (options.user) await page.selectOption('select[name=user]', options.user);
    if (options.skipLogin) await page.check('input[name=skip_login]');
    if (options.skipConsent) await page.check('input[name=skip_consent]');
    if (options.failure) await page.selectOption('select[name=failure]', options.failure);
    await page.click('button:has-text("Get launch link")');
    const [opened] = await Promise.all([appRedirect(page, LAUNCH_URI), page.click('#launch-link')]);
    assert.equal(opened.searchParams.get('iss'), server!.fhirBase);
    return opened.searchParams.get('launch') ?? undefined;
  }

  /** The app sends the browser to /authorize; returns what it keeps to check the answer. */
  async function authorize(client: App, scope: string, launchId?: string) {
    const { verifier, challenge } = pkce();
    const state = randomBytes(16).toString('hex');
    const params = new URLSearchParams({
      response_type: 'code', client_id: client.client_id, redirect_uri: client.redirect_uri, scope, state,
      aud: server!.fhirBase, code_challenge: challenge, code_challenge_method: 'S256', ...(launchId ? { launch: launchId } : {}),
    });
    const back = appRedirect(page, client.redirect_uri);
    await page.goto(`${server!.issuer}/authorize?${params}`);
    return { state, verifier, back };
  }

  async function signIn(username: string, password: string) {
    await page.fill('input[name=username]', username);
    await page.fill('input[name=password]', password);
    await page.click('button[type=submit]');
  }

  const exchange = (client: App, code: string, verifier: string) =>
    tokenRequest(server!.issuer, { grant_type: 'authorization_code', code, redirect_uri: client.redirect_uri, code_verifier: verifier }, client);
  const fhir = (path: string, token: string) => fetch(`${server!.fhirBase}/${path}`, { headers: { authorization: `Bearer ${token}` } });

  /** Launch with login and consent skipped; the code comes straight back. */
  async function skipToCode(options: Parameters<typeof launch>[0] = {}, client: App = app) {
    const launchId = await launch({ user: 'dr.smith', skipLogin: true, skipConsent: true, ...options });
    const { verifier, back } = await authorize(client, EHR_SCOPE, launchId);
    return { redirect: await back, verifier };
  }

  it('registers a public app on the fly from its launch URL and redirect URI, and launches it', async () => {
    await page.goto(`${server!.issuer}/launcher`);
    await page.locator('summary', { hasText: 'register a new app' }).click();
    await page.fill('input[name=client_name]', 'My new app');
    await page.fill('input[name=launch_uri]', LAUNCH_URI);
    await page.fill('input[name=redirect_uri]', REDIRECT_URI);
    await page.click('button:has-text("Register app")');
    const clientId = await page.locator('#client-id').innerText();
    assert.equal(await page.locator('#client-secret').count(), 0, 'a public client has no secret');
    const fresh: App = { client_id: clientId, redirect_uri: REDIRECT_URI };

    const launchId = await launch({ client: clientId, patient: 'pat-2', encounter: 'enc-2a' });
    const { state, verifier, back } = await authorize(fresh, EHR_SCOPE, launchId);
    await signIn('dr.smith', 'demo-password-1');
    await page.click(ALLOW);
    const redirect = await back;
    assert.equal(redirect.searchParams.get('state'), state);
    const { res, body } = await exchange(fresh, redirect.searchParams.get('code')!, verifier);
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.patient, 'pat-2');
    assert.equal(body.encounter, 'enc-2a');
  });

  it('registers a confidential app on the fly: the secret is shown once and authenticates the code exchange', async () => {
    await page.goto(`${server!.issuer}/launcher`);
    await page.locator('summary', { hasText: 'register a new app' }).click();
    await page.fill('input[name=launch_uri]', LAUNCH_URI);
    await page.fill('input[name=redirect_uri]', REDIRECT_URI);
    await page.check('input[name=client_type][value=confidential]');
    await page.click('button:has-text("Register app")');
    const confidential: App = { client_id: await page.locator('#client-id').innerText(), client_secret: await page.locator('#client-secret').innerText(), redirect_uri: REDIRECT_URI };
    assert.ok(confidential.client_secret);
    const { redirect, verifier } = await skipToCode({ client: confidential.client_id }, confidential);
    assert.equal((await exchange({ ...confidential, client_secret: 'wrong' }, redirect.searchParams.get('code')!, verifier)).res.status, 401);
    const again = await skipToCode({ client: confidential.client_id }, confidential);
    const { res, body } = await exchange(confidential, again.redirect.searchParams.get('code')!, again.verifier);
    assert.equal(res.status, 200, JSON.stringify(body));
  });

  it('refuses to register an app with a bad redirect URI, saying why', async () => {
    await page.goto(`${server!.issuer}/launcher`);
    await page.locator('summary', { hasText: 'register a new app' }).click();
    await page.fill('input[name=launch_uri]', LAUNCH_URI);
    await page.fill('input[name=redirect_uri]', `${REDIRECT_URI}#fragment`);
    await page.click('button:has-text("Register app")');
    assert.match(await page.getByRole('alert').innerText(), /The app cannot be registered: .*fragment/);
  });

  it("picks a registered app and a patient found by name; the encounters are that patient's", async () => {
    await page.goto(`${server!.issuer}/launcher?client_id=${app.client_id}`);
    await page.fill('form[role=search] input[name=q]', 'shaw');
    await page.click('button:has-text("Search")');
    await page.waitForURL(/q=shaw/);
    const patients = await page.locator('select[name=patient] option').evaluateAll((o) => o.map((x) => (x as HTMLOptionElement).value));
    assert.deepEqual(patients, ['pat-1']);
    await page.goto(`${server!.issuer}/launcher?client_id=${app.client_id}`);
    await page.selectOption('select[name=patient]', 'pat-2');
    await page.click('button:has-text("Choose patient")');
    await page.waitForURL(/patient=pat-2/);
    const encounters = await page.locator('select[name=encounter] option').evaluateAll((o) => o.map((x) => (x as HTMLOptionElement).value).filter(Boolean));
    assert.ok(encounters.length > 0, 'pat-2 has encounters');
    for (const id of encounters) assert.match(id, /^enc-2/, `encounter ${id} is not one of pat-2's: ${encounters}`);
    assert.match(await page.locator('form[action="/launcher"][method=post]').innerText(), /patient Amy|patient .*\(pat-2\)/);
  });

  it('skips the login: the chosen user is signed in, the consent page is shown', async () => {
    const launchId = await launch({ user: 'dr.smith', skipLogin: true });
    await authorize(app, EHR_SCOPE, launchId);
    await page.waitForSelector(ALLOW);
    assert.equal(await page.locator('input[name=password]').count(), 0, 'no login page');
  });

  it('skips login and consent: the code comes straight back, for a provider with the patient and encounter', async () => {
    const { redirect, verifier } = await skipToCode({ patient: 'pat-3', encounter: 'enc-3a' });
    const { body } = await exchange(app, redirect.searchParams.get('code')!, verifier);
    assert.equal(body.patient, 'pat-3');
    assert.equal(body.encounter, 'enc-3a');
    assert.equal(body.scope.split(' ').sort().join(' '), EHR_SCOPE.split(' ').sort().join(' '), 'what was asked is granted');
    assert.equal((await fhir('Patient/pat-3', body.access_token)).status, 200);
  });

  it('launches as a patient user, who gets their own record only', async () => {
    const { redirect, verifier } = await skipToCode({ user: 'amy', patient: 'pat-1' });
    const { body } = await exchange(app, redirect.searchParams.get('code')!, verifier);
    assert.equal(body.patient, 'pat-1');
    const claims = JSON.parse(Buffer.from(body.id_token.split('.')[1], 'base64url').toString());
    assert.equal(claims.fhirUser, `${server!.fhirBase}/Patient/pat-1`);

    await page.goto(`${server!.issuer}/launcher?client_id=${app.client_id}&patient=pat-2`);
    await page.selectOption('select[name=user]', 'amy');
    await page.click('button:has-text("Get launch link")');
    assert.match(await page.getByRole('alert').innerText(), /amy is a patient user: launch their own record \(pat-1\)/);
  });

  for (const [failure, error] of [['auth_denied', 'access_denied'], ['auth_invalid_scope', 'invalid_scope']] as const) {
    it(`simulates ${failure}: the redirect URI gets error=${error} with the state`, async () => {
      const launchId = await launch({ failure });
      const { state, back } = await authorize(app, EHR_SCOPE, launchId);
      const redirect = await back;
      assert.equal(redirect.searchParams.get('error'), error);
      assert.equal(redirect.searchParams.get('state'), state);
      assert.equal(redirect.searchParams.get('code'), null);
    });
  }

  it('simulates a token endpoint error: the code exchange gets 400 invalid_grant', async () => {
    const { redirect, verifier } = await skipToCode({ failure: 'token_error' });
    const { res, body } = await exchange(app, redirect.searchParams.get('code')!, verifier);
    assert.equal(res.status, 400);
    assert.equal(body.error, 'invalid_grant');
  });

  it('simulates a short-lived access token: expires_in 10, then /fhir answers 401', async function () {
    this.timeout(40_000);
    const { redirect, verifier } = await skipToCode({ failure: 'token_expires' });
    const { body } = await exchange(app, redirect.searchParams.get('code')!, verifier);
    assert.equal(body.expires_in, 10);
    assert.equal((await fhir('Patient/pat-1', body.access_token)).status, 200);
    await new Promise((r) => setTimeout(r, 16_500)); // 10 s, and the guard's 5 s clock tolerance
    const expired = await fhir('Patient/pat-1', body.access_token);
    assert.equal(expired.status, 401);
    assert.match(expired.headers.get('www-authenticate') ?? '', /invalid_token/);
    const refreshed = await tokenRequest(server!.issuer, { grant_type: 'refresh_token', refresh_token: body.refresh_token }, app);
    assert.equal(refreshed.res.status, 200, 'the app recovers with its refresh token');
  });

  it('simulates a revoked access token: /fhir answers 401 invalid_token', async () => {
    const { redirect, verifier } = await skipToCode({ failure: 'token_revoked' });
    const { res, body } = await exchange(app, redirect.searchParams.get('code')!, verifier);
    assert.equal(res.status, 200);
    const read = await fhir('Patient/pat-1', body.access_token);
    assert.equal(read.status, 401);
    assert.match(read.headers.get('www-authenticate') ?? '', /invalid_token/);
  });

  it('simulates a refused refresh token: the refresh gets 400 invalid_grant, the access token works', async () => {
    const { redirect, verifier } = await skipToCode({ failure: 'refresh_refused' });
    const { body } = await exchange(app, redirect.searchParams.get('code')!, verifier);
    assert.equal((await fhir('Patient/pat-1', body.access_token)).status, 200);
    const refreshed = await tokenRequest(server!.issuer, { grant_type: 'refresh_token', refresh_token: body.refresh_token }, app);
    assert.equal(refreshed.res.status, 400);
    assert.equal(refreshed.body.error, 'invalid_grant');
  });

  for (const [audience, username, password, picker] of [['patient', 'amy', 'demo-password-3', false], ['provider', 'dr.smith', 'demo-password-1', true]] as const) {
    it(`gives a ${audience}-facing standalone launch link`, async () => {
      await page.goto(`${server!.issuer}/launcher?client_id=${app.client_id}`);
      const [opened] = await Promise.all([appRedirect(page, LAUNCH_URI), page.click(`#standalone-${audience}`)]);
      assert.equal(opened.searchParams.get('iss'), server!.fhirBase);
      assert.equal(opened.searchParams.get('launch'), null);
      const { verifier, back } = await authorize(app, 'launch/patient openid fhirUser patient/*.rs');
      await signIn(username, password);
      if (picker) {
        await page.check('input[type=radio][name=patient][value="pat-2"]');
        await page.getByRole('button', { name: 'Continue' }).click();
      }
      await page.click(ALLOW);
      const { body } = await exchange(app, (await back).searchParams.get('code')!, verifier);
      assert.equal(body.patient, picker ? 'pat-2' : 'pat-1');
    });
  }
});
