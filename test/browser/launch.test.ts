// The authorization pages in a real browser: login, patient picker, consent, back to the app.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { startTestServer, type TestServer } from '../support/server.ts';
import { exchangeCode, pkce } from '../support/oauth.ts';
import { appRedirect, launchChromium, requireChromium } from '../support/browser.ts';

const SCREENSHOTS = fileURLToPath(new URL('../../var/screenshots/', import.meta.url));
const LAB = 'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
const ALLOW = 'button[name=decision][value=allow]';
const DENY = 'button[name=decision][value=deny]';
const PICKER = 'input[type=radio][name=patient]';

describe('authorization pages in Chromium', function () {
  this.timeout(60_000);
  let browser: Browser | undefined;
  let server: TestServer | undefined;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  let context: BrowserContext;
  let page: Page;

  before(async function () {
    requireChromium(this);
    browser = await launchChromium();
    server = await startTestServer();
    app = await server.addClient({ auth: { kind: 'public' } });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  beforeEach(async () => {
    context = await browser!.newContext();
    page = await context.newPage();
  });
  afterEach(async () => {
    await context?.close();
  });

  /** Opens the app's authorization request; returns what the app keeps to check the answer. */
  async function startAuthorization(scope: string) {
    const { verifier, challenge } = pkce();
    const state = randomBytes(16).toString('hex');
    const params = new URLSearchParams({
      response_type: 'code', client_id: app.client_id, redirect_uri: app.redirect_uri, scope, state,
      aud: server!.fhirBase, code_challenge: challenge, code_challenge_method: 'S256',
    });
    await page.goto(`${server!.issuer}/authorize?${params}`);
    return { state, verifier };
  }

  async function signIn(username: string, password: string) {
    await page.fill('input[name=username]', username);
    await page.fill('input[name=password]', password);
    await page.click('button[type=submit]');
  }

  /** Clicks the button and returns the URL the browser is then sent to at the app. */
  async function clickBackToApp(selector: string): Promise<URL> {
    const [url] = await Promise.all([appRedirect(page, app.redirect_uri), page.click(selector)]);
    return url;
  }

  async function exchange(code: string, verifier: string) {
    return exchangeCode(server!.issuer, { code, verifier } as Parameters<typeof exchangeCode>[1], app);
  }

  it('takes a clinician through login, picker and consent (standalone launch)', async () => {
    const { state, verifier } = await startAuthorization('launch/patient openid fhirUser offline_access patient/*.rs');
    await signIn('dr.smith', 'demo-password-1');

    await page.check(`${PICKER}[value="pat-2"]`);
    await page.getByRole('button', { name: 'Continue' }).click();

    await page.waitForSelector(ALLOW);
    const boxes = page.locator('input[type=checkbox][name=scope]');
    for (const scope of ['launch/patient', 'openid', 'fhirUser', 'offline_access', 'patient/*.rs']) {
      assert.equal(await boxes.and(page.locator(`[value="${scope}"]`)).isChecked(), true, `${scope} is not ticked by default`);
    }
    mkdirSync(SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: `${SCREENSHOTS}consent.png`, fullPage: true });

    const back = await clickBackToApp(ALLOW);
    assert.equal(back.searchParams.get('state'), state);
    const code = back.searchParams.get('code');
    assert.ok(code, `no code: ${back}`);
    const { res, body } = await exchange(code, verifier);
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.patient, 'pat-2');
    assert.ok(body.refresh_token, 'no refresh_token');
  });

  it('lets a patient user narrow the consent to laboratory results', async () => {
    const { state, verifier } = await startAuthorization('launch/patient openid fhirUser offline_access patient/*.rs');
    await signIn('amy', 'demo-password-3');

    await page.waitForSelector(ALLOW);
    assert.equal(await page.locator(PICKER).count(), 0, 'a patient user was shown the patient picker');
    await page.uncheck('input[type=checkbox][name=scope][value="patient/*.rs"]');
    const lab = page.locator(`input[type=checkbox][name=scope][value="${LAB}"]`);
    assert.equal(await lab.isChecked(), false, 'the narrower alternative is ticked by default');
    await page.locator('details', { has: lab }).locator('summary').click();
    await lab.check();

    const back = await clickBackToApp(ALLOW);
    assert.equal(back.searchParams.get('state'), state);
    const code = back.searchParams.get('code');
    assert.ok(code, `no code: ${back}`);
    const { res, body } = await exchange(code, verifier);
    assert.equal(res.status, 200, JSON.stringify(body));
    const granted: string[] = body.scope.split(' ');
    assert.ok(granted.includes(LAB), `granted scope lacks the laboratory scope: ${body.scope}`);
    assert.ok(!granted.includes('patient/*.rs'), `granted scope still has patient/*.rs: ${body.scope}`);
    assert.equal(body.patient, 'pat-1');
  });

  it('sends access_denied with the state back to the app on Deny', async () => {
    const { state } = await startAuthorization('launch/patient openid fhirUser patient/*.rs');
    await signIn('amy', 'demo-password-3');

    const back = await clickBackToApp(DENY);
    assert.equal(back.searchParams.get('error'), 'access_denied');
    assert.equal(back.searchParams.get('state'), state);
    assert.equal(back.searchParams.get('code'), null);
  });

  it('shows the login form again with a generic message after a wrong password', async () => {
    await startAuthorization('launch/patient openid fhirUser patient/*.rs');
    const loginUrl = new URL(page.url());
    assert.equal(loginUrl.origin, server!.issuer);
    await signIn('dr.smith', 'not-the-password');

    const alert = page.getByRole('alert');
    await alert.waitFor();
    assert.equal((await alert.innerText()).trim(), 'The username or password is not correct.');
    assert.equal(new URL(page.url()).origin, server!.issuer);
    assert.equal(new URL(page.url()).pathname.split('/')[2], loginUrl.pathname.split('/')[2], 'a different interaction');
    assert.equal(await page.locator('input[name=password]').count(), 1);
    assert.equal(await page.locator('h1').innerText(), 'Sign in');
    const text = await page.locator('body').innerText();
    assert.doesNotMatch(text, /Error:|\bat \S+ \(|\.ts:\d+/, `the page shows error internals:\n${text}`);

    // The form shown again works.
    await signIn('dr.smith', 'demo-password-1');
    await page.waitForSelector(PICKER);
  });
});
