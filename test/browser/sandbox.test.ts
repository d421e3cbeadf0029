// The sandbox launcher, option by option, in Chromium: the developer uses /launcher, the test plays the
// app (it follows the launch link, sends the browser to /authorize, exchanges the code, calls /fhir).
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { freePort } from '../support/server.ts';
import { decodeJwt, tokenRequest } from '../support/oauth.ts';
import { appRedirect, chromiumSuite, type TestApp } from '../support/browser.ts';

const EHR_SCOPE = 'launch openid fhirUser offline_access patient/*.rs';
const ALLOW = 'button[name=decision][value=allow]';

describe('sandbox launcher in Chromium', function () {
  this.timeout(60_000);
  // The app's pages: a real HTTP server that answers its launch URL and redirect URI with a blank page.
  let appServer: Server | undefined;
  let LAUNCH_URI: string;
  let REDIRECT_URI: string;
  before(async () => {
    const port = await freePort();
    appServer = createServer((_req, res) => res.end('the app')).listen(port, '127.0.0.1');
    LAUNCH_URI = `http://127.0.0.1:${port}/launch`;
    REDIRECT_URI = `http://127.0.0.1:${port}/app`;
  });
  after(() => appServer?.close());
  const suite = chromiumSuite({ app: () => ({ name: 'Registered app', auth: { kind: 'public' }, redirectUris: [REDIRECT_URI], launchUri: LAUNCH_URI }) });

  /** On the launcher (app and patient chosen by URL), sets the launch form and follows the link it gives. */
  async function launch(options: { client?: string; patient?: string; encounter?: string; user?: string; skipLogin?: boolean; skipConsent?: boolean; failure?: string } = {}) {
    await suite.page.goto(`${suite.server.issuer}/launcher?${new URLSearchParams({ client_id: options.client ?? suite.app.client_id, patient: options.patient ?? 'pat-1' })}`);
    if (options.encounter) await suite.page.selectOption('select[name=encounter]', options.encounter);
    if (options.user) await suite.page.selectOption('select[name=user]', options.user);
    if (options.skipLogin) await suite.page.check('input[name=skip_login]');
    if (options.skipConsent) await suite.page.check('input[name=skip_consent]');
    if (options.failure) await suite.page.selectOption('select[name=failure]', options.failure);
    await suite.page.click('button:has-text("Get launch link")');
    const [opened] = await Promise.all([appRedirect(suite.page, LAUNCH_URI), suite.page.click('#launch-link')]);
    assert.equal(opened.searchParams.get('iss'), suite.server.fhirBase);
    return opened.searchParams.get('launch') ?? undefined;
  }

  /** The app sends the browser to /authorize; returns what it keeps to check the answer, and where the browser comes back. */
  async function authorize(client: TestApp, scope: string, launchId?: string) {
    const back = appRedirect(suite.page, client.redirect_uri);
    return { ...(await suite.startAuthorization(scope, launchId ? { launch: launchId } : {}, client)), back };
  }

  const fhir = (path: string, token: string) => fetch(`${suite.server.fhirBase}/${path}`, { headers: { authorization: `Bearer ${token}` } });

  /** Launch with login and consent skipped; the code comes straight back. */
  async function skipToCode(options: Parameters<typeof launch>[0] = {}, client = suite.app) {
    const launchId = await launch({ user: 'dr.smith', skipLogin: true, skipConsent: true, ...options });
    const { verifier, back } = await authorize(client, EHR_SCOPE, launchId);
    return { redirect: await back, verifier };
  }

  it('registers a public app on the fly from its launch URL and redirect URI, and launches it', async () => {
    await suite.page.goto(`${suite.server.issuer}/launcher`);
    await suite.page.locator('summary', { hasText: 'register a new app' }).click();
    await suite.page.fill('input[name=client_name]', 'My new app');
    await suite.page.fill('input[name=launch_uri]', LAUNCH_URI);
    await suite.page.fill('input[name=redirect_uri]', REDIRECT_URI);
    await suite.page.click('button:has-text("Register app")');
    const clientId = await suite.page.locator('#client-id').innerText();
    assert.equal(await suite.page.locator('#client-secret').count(), 0, 'a public client has no secret');
    const fresh: TestApp = { client_id: clientId, redirect_uri: REDIRECT_URI };

    const launchId = await launch({ client: clientId, patient: 'pat-2', encounter: 'enc-2a' });
    const { state, verifier, back } = await authorize(fresh, EHR_SCOPE, launchId);
    await suite.signIn('dr.smith', 'demo-password-1');
    await suite.page.click(ALLOW);
    const redirect = await back;
    assert.equal(redirect.searchParams.get('state'), state);
    const { res, body } = await suite.exchange(redirect, verifier, fresh);
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.patient, 'pat-2');
    assert.equal(body.encounter, 'enc-2a');
  });

  it('registers a confidential app on the fly: the secret is shown once and authenticates the code exchange', async () => {
    await suite.page.goto(`${suite.server.issuer}/launcher`);
    await suite.page.locator('summary', { hasText: 'register a new app' }).click();
    await suite.page.fill('input[name=launch_uri]', LAUNCH_URI);
    await suite.page.fill('input[name=redirect_uri]', REDIRECT_URI);
    await suite.page.check('input[name=client_type][value=confidential]');
    await suite.page.click('button:has-text("Register app")');
    const confidential: TestApp = { client_id: await suite.page.locator('#client-id').innerText(), client_secret: await suite.page.locator('#client-secret').innerText(), redirect_uri: REDIRECT_URI };
    assert.ok(confidential.client_secret);
    const { redirect, verifier } = await skipToCode({ client: confidential.client_id }, confidential);
    assert.equal((await suite.exchange(redirect, verifier, { ...confidential, client_secret: 'wrong' })).res.status, 401);
    const again = await skipToCode({ client: confidential.client_id }, confidential);
    const { res, body } = await suite.exchange(again.redirect, again.verifier, confidential);
    assert.equal(res.status, 200, JSON.stringify(body));
  });

  it('refuses to register an app with a bad redirect URI, saying why', async () => {
    await suite.page.goto(`${suite.server.issuer}/launcher`);
    await suite.page.locator('summary', { hasText: 'register a new app' }).click();
    await suite.page.fill('input[name=launch_uri]', LAUNCH_URI);
    await suite.page.fill('input[name=redirect_uri]', `${REDIRECT_URI}#fragment`);
    await suite.page.click('button:has-text("Register app")');
    assert.match(await suite.page.getByRole('alert').innerText(), /The app cannot be registered: .*fragment/);
  });

  it("picks a registered app and a patient found by name; the encounters are that patient's", async () => {
    await suite.page.goto(`${suite.server.issuer}/launcher?client_id=${suite.app.client_id}`);
    await suite.page.fill('form[role=search] input[name=q]', 'shaw');
    await suite.page.click('button:has-text("Search")');
    await suite.page.waitForURL(/q=shaw/);
    const patients = await suite.page.locator('select[name=patient] option').evaluateAll((o) => o.map((x) => (x as HTMLOptionElement).value));
    assert.deepEqual(patients, ['pat-1']);
    await suite.page.goto(`${suite.server.issuer}/launcher?client_id=${suite.app.client_id}`);
    await suite.page.selectOption('select[name=patient]', 'pat-2');
    await suite.page.click('button:has-text("Choose patient")');
    await suite.page.waitForURL(/patient=pat-2/);
    const encounters = await suite.page.locator('select[name=encounter] option').evaluateAll((o) => o.map((x) => (x as HTMLOptionElement).value).filter(Boolean));
    assert.ok(encounters.length > 0, 'pat-2 has encounters');
    for (const id of encounters) assert.match(id, /^enc-2/, `encounter ${id} is not one of pat-2's: ${encounters}`);
    assert.match(await suite.page.locator('form[action="/launcher"][method=post]').innerText(), /patient Amy|patient .*\(pat-2\)/);
  });

  it('skips the login: the chosen user is signed in, the consent page is shown', async () => {
    const launchId = await launch({ user: 'dr.smith', skipLogin: true });
    await authorize(suite.app, EHR_SCOPE, launchId);
    await suite.page.waitForSelector(ALLOW);
    assert.equal(await suite.page.locator('input[name=password]').count(), 0, 'no login page');
  });

  it('skips login and consent: the code comes straight back, for a provider with the patient and encounter', async () => {
    const { redirect, verifier } = await skipToCode({ patient: 'pat-3', encounter: 'enc-3a' });
    const { body } = await suite.exchange(redirect, verifier);
    assert.equal(body.patient, 'pat-3');
    assert.equal(body.encounter, 'enc-3a');
    assert.equal(body.scope.split(' ').sort().join(' '), EHR_SCOPE.split(' ').sort().join(' '), 'what was asked is granted');
    assert.equal((await fhir('Patient/pat-3', body.access_token)).status, 200);
  });

  it('launches as a patient user, who gets their own record only', async () => {
    const { redirect, verifier } = await skipToCode({ user: 'amy', patient: 'pat-1' });
    const { body } = await suite.exchange(redirect, verifier);
    assert.equal(body.patient, 'pat-1');
    const claims = decodeJwt(body.id_token).payload;
    assert.equal(claims.fhirUser, `${suite.server.fhirBase}/Patient/pat-1`);

    await suite.page.goto(`${suite.server.issuer}/launcher?client_id=${suite.app.client_id}&patient=pat-2`);
    await suite.page.selectOption('select[name=user]', 'amy');
    await suite.page.click('button:has-text("Get launch link")');
    assert.match(await suite.page.getByRole('alert').innerText(), /amy is a patient user: launch their own record \(pat-1\)/);
  });

  for (const [failure, error] of [['auth_denied', 'access_denied'], ['auth_invalid_scope', 'invalid_scope']] as const) {
    it(`simulates ${failure}: the redirect URI gets error=${error} with the state`, async () => {
      const launchId = await launch({ failure });
      const { state, back } = await authorize(suite.app, EHR_SCOPE, launchId);
      const redirect = await back;
      assert.equal(redirect.searchParams.get('error'), error);
      assert.equal(redirect.searchParams.get('state'), state);
      assert.equal(redirect.searchParams.get('code'), null);
    });
  }

  it('simulates a token endpoint error: the code exchange gets 400 invalid_grant', async () => {
    const { redirect, verifier } = await skipToCode({ failure: 'token_error' });
    const { res, body } = await suite.exchange(redirect, verifier);
    assert.equal(res.status, 400);
    assert.equal(body.error, 'invalid_grant');
  });

  it('simulates a short-lived access token: expires_in 10, then /fhir answers 401', async function () {
    this.timeout(40_000);
    const { redirect, verifier } = await skipToCode({ failure: 'token_expires' });
    const { body } = await suite.exchange(redirect, verifier);
    assert.equal(body.expires_in, 10);
    assert.equal((await fhir('Patient/pat-1', body.access_token)).status, 200);
    await new Promise((r) => setTimeout(r, 16_500)); // 10 s, and the guard's 5 s clock tolerance
    const expired = await fhir('Patient/pat-1', body.access_token);
    assert.equal(expired.status, 401);
    assert.match(expired.headers.get('www-authenticate') ?? '', /invalid_token/);
    const refreshed = await tokenRequest(suite.server.issuer, { grant_type: 'refresh_token', refresh_token: body.refresh_token }, suite.app);
    assert.equal(refreshed.res.status, 200, 'the app recovers with its refresh token');
  });

  it('simulates a revoked access token: /fhir answers 401 invalid_token', async () => {
    const { redirect, verifier } = await skipToCode({ failure: 'token_revoked' });
    const { res, body } = await suite.exchange(redirect, verifier);
    assert.equal(res.status, 200);
    const read = await fhir('Patient/pat-1', body.access_token);
    assert.equal(read.status, 401);
    assert.match(read.headers.get('www-authenticate') ?? '', /invalid_token/);
  });

  it('simulates a refused refresh token: the refresh gets 400 invalid_grant, the access token works', async () => {
    const { redirect, verifier } = await skipToCode({ failure: 'refresh_refused' });
    const { body } = await suite.exchange(redirect, verifier);
    assert.equal((await fhir('Patient/pat-1', body.access_token)).status, 200);
    const refreshed = await tokenRequest(suite.server.issuer, { grant_type: 'refresh_token', refresh_token: body.refresh_token }, suite.app);
    assert.equal(refreshed.res.status, 400);
    assert.equal(refreshed.body.error, 'invalid_grant');
  });

  for (const [audience, username, password, picker] of [['patient', 'amy', 'demo-password-3', false], ['provider', 'dr.smith', 'demo-password-1', true]] as const) {
    it(`gives a ${audience}-facing standalone launch link`, async () => {
      await suite.page.goto(`${suite.server.issuer}/launcher?client_id=${suite.app.client_id}`);
      const [opened] = await Promise.all([appRedirect(suite.page, LAUNCH_URI), suite.page.click(`#standalone-${audience}`)]);
      assert.equal(opened.searchParams.get('iss'), suite.server.fhirBase);
      assert.equal(opened.searchParams.get('launch'), null);
      const { verifier, back } = await authorize(suite.app, 'launch/patient openid fhirUser patient/*.rs');
      await suite.signIn(username, password);
      if (picker) {
        await suite.page.check('input[type=radio][name=patient][value="pat-2"]');
        await suite.page.getByRole('button', { name: 'Continue' }).click();
      }
      await suite.page.click(ALLOW);
      const { body } = await suite.exchange(await back, verifier);
      assert.equal(body.patient, picker ? 'pat-2' : 'pat-1');
    });
  }
});
