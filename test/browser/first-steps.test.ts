// What a new user meets first, in a real browser: the home page, the picker and consent as a clinician,
// a tester and a patient see them, and the apps page after repeated launches.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { startTestServer, type TestServer } from '../support/server.ts';
import { exchangeCode, pkce } from '../support/oauth.ts';
import { appRedirect, launchChromium, requireChromium } from '../support/browser.ts';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { addUser } from '../../server/oidc/users.ts';
import { mintLaunch } from '../../server/launcher.ts';

const ALLOW = 'button[name=decision][value=allow]';
const PICKER = 'input[type=radio][name=patient]';
const PURPOSE = 'select[name=purpose_of_use]';

describe('first steps of a new user, in Chromium', function () {
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
    app = await server.addClient({ name: 'Growth Chart', auth: { kind: 'public' } });
    // A tester: may assert HTEST (is-a HOPERAT, which the policy lets a user without a role assert) besides HOPERAT.
    await addUser(server.db, { username: 'tester', password: 'tester-password', name: 'Terry Tester', fhirUser: 'Practitioner/dr-smith', attributes: { purposes: ['HOPERAT', 'HTEST'] } });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });
  beforeEach(async () => {
    context = await browser!.newContext();
    page = await context.newPage();
  });
  afterEach(() => context?.close());

  async function startAuthorization(scope: string, extra: Record<string, string> = {}) {
    const { verifier, challenge } = pkce();
    const state = randomBytes(16).toString('hex');
    const params = new URLSearchParams({
      response_type: 'code', client_id: app.client_id, redirect_uri: app.redirect_uri, scope, state,
      aud: server!.fhirBase, code_challenge: challenge, code_challenge_method: 'S256', ...extra,
    });
    await page.goto(`${server!.issuer}/authorize?${params}`);
    return { state, verifier };
  }

  async function signIn(username: string, password: string) {
    await page.fill('input[name=username]', username);
    await page.fill('input[name=password]', password);
    await page.click('button[type=submit]');
  }

  async function allow(verifier: string) {
    const [back] = await Promise.all([appRedirect(page, app.redirect_uri), page.click(ALLOW)]);
    const code = back.searchParams.get('code');
    assert.ok(code, `no code: ${back}`);
    const { res, body } = await exchangeCode(server!.issuer, { code, verifier } as Parameters<typeof exchangeCode>[1], app);
    assert.equal(res.status, 200, JSON.stringify(body));
    return body;
  }

  const read = (path: string, token: string) => fetch(`${server!.fhirBase}/${path}`, { headers: { authorization: `Bearer ${token}` } });
  const pickerIds = () => page.locator(PICKER).evaluateAll((inputs) => inputs.map((i) => (i as HTMLInputElement).value));

  it('links every page a person can use from the home page, by who they are', async () => {
    await page.goto(server!.issuer);
    for (const [audience, paths] of [
      ['App developers', ['/.well-known/smart-configuration', '/fhir/metadata', '/apps', '/launcher', '/brands']],
      ['Patients and clinicians', ['/account/apps', '/account/disclosures']],
      ['Administrators', ['/.well-known/openid-configuration']],
    ] as const) {
      const section = page.locator('section.audience', { has: page.getByRole('heading', { name: audience }) });
      assert.equal(await section.count(), 1, `no section for ${audience}`);
      for (const path of paths) assert.equal(await section.locator(`a[href="${path}"]`).count(), 1, `${audience}: no link to ${path}`);
    }
    await page.click('a[href="/account/apps"]');
    assert.equal(await page.locator('input[name=username]').count(), 1, 'the link leads to the sign-in of the apps page');
  });

  it('does not offer a clinician the test patient, whose record no purpose of theirs would show; and searches by name', async () => {
    await startAuthorization('launch/patient openid fhirUser patient/*.rs');
    await signIn('dr.smith', 'demo-password-1');
    await page.waitForSelector(PICKER);
    const ids = await pickerIds();
    assert.ok(ids.includes('pat-1') && ids.includes('pat-2'), ids.join());
    assert.ok(!ids.includes('pat-4'), `the HTEST patient is offered to dr.smith: ${ids}`);

    await page.fill('input[name=q]', 'amy');
    await page.click('button:has-text("Search")');
    await page.waitForURL(/q=amy/);
    assert.deepEqual(await pickerIds(), ['pat-1']);
    await page.fill('input[name=q]', 'nobody at all');
    await page.click('button:has-text("Search")');
    await page.waitForURL(/q=nobody/);
    assert.equal(await page.locator(PICKER).count(), 0);
    assert.match(await page.locator('p.error').innerText(), /No patient you may open matches "nobody at all"/);

    // Choosing the test patient by hand is refused too.
    await page.goto(`${page.url().split('?')[0]}?patient=pat-4`);
    assert.match(await page.getByRole('alert').innerText(), /Choose one of the patients listed/);
  });

  it('shows a tester the test patient, marked, preselects a test purpose for it, and the token reads it', async () => {
    const { verifier } = await startAuthorization('launch/patient openid fhirUser patient/*.rs');
    await signIn('tester', 'tester-password');
    await page.waitForSelector(PICKER);
    const test = page.locator('li', { has: page.locator(`${PICKER}[value="pat-4"]`) });
    assert.match(await test.innerText(), /test patient/);
    await page.check(`${PICKER}[value="pat-4"]`);
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.waitForSelector(ALLOW);
    assert.equal(await page.locator(PURPOSE).inputValue(), 'HTEST', 'the purpose under which pat-4 is visible');
    const body = await allow(verifier);
    assert.equal(body.patient, 'pat-4');
    assert.equal((await read('Patient/pat-4', body.access_token)).status, 200);
  });

  it('preselects a purpose under which an ordinary patient is visible for the same tester', async () => {
    const { verifier } = await startAuthorization('launch/patient openid fhirUser patient/*.rs');
    await signIn('tester', 'tester-password');
    await page.check(`${PICKER}[value="pat-1"]`);
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.waitForSelector(ALLOW);
    assert.equal(await page.locator(PURPOSE).inputValue(), 'HOPERAT');
    const body = await allow(verifier);
    assert.equal((await read('Patient/pat-1', body.access_token)).status, 200);
  });

  it('says so at consent when no purpose the clinician may choose shows the launched patient', async () => {
    const launch = await mintLaunch(server!.db, server!.config, { patient: 'pat-4' });
    await startAuthorization('launch openid fhirUser patient/*.rs', { launch });
    await signIn('dr.smith', 'demo-password-1');
    await page.waitForSelector(ALLOW);
    assert.match(await page.getByRole('alert').innerText(), /None of the purposes of use you may choose lets you see the record of Test Patient: it is test data \(HTEST\)/);
  });

  it('lets an auditor added with the CLI without --purpose sign in to an app', async () => {
    const bin = new URL('../../scripts/smart-auth.js', import.meta.url).pathname;
    await promisify(execFile)(process.execPath, [bin, 'user', 'add', 'new.auditor', '--password', 'auditor-password', '--auditor'],
      { env: { ...process.env, DATABASE_URL: server!.config.databaseUrl, ISSUER: server!.issuer } });
    const { verifier } = await startAuthorization('openid fhirUser user/AuditEvent.rs');
    await signIn('new.auditor', 'auditor-password');
    await page.waitForSelector(ALLOW);
    const body = await allow(verifier);
    assert.equal((await read('AuditEvent?_count=1', body.access_token)).status, 200);
  });

  it('tells a patient about "your record" in plain words', async () => {
    await startAuthorization('launch/patient openid fhirUser patient/*.rs');
    await signIn('amy', 'demo-password-3');
    await page.waitForSelector(ALLOW);
    const text = await page.locator('main').innerText();
    assert.match(text, /asks for the access below to your record/);
    assert.doesNotMatch(text, /the record of Amy/);
    assert.doesNotMatch(text, /PATRQT|patient requested|Patient or Practitioner/);
    assert.match(text, /Know that you are the patient whose record it is/);
    assert.match(text, /Know that the record it opens is yours/);
    assert.match(text, /You asked for it: it is your own record/);
  });

  it('shows one card for repeated grants of one app for one patient, with when, the patient and the scopes in words', async () => {
    for (let i = 0; i < 2; i++) {
      const { verifier } = await startAuthorization('launch/patient openid fhirUser patient/*.rs');
      if (i === 0) await signIn('amy', 'demo-password-3');
      await page.waitForSelector(ALLOW);
      await allow(verifier);
    }
    await page.goto(`${server!.issuer}/account/apps`);
    await signIn('amy', 'demo-password-3');
    const cards = page.locator('li.grant', { has: page.getByRole('heading', { name: 'Growth Chart' }) });
    assert.equal(await cards.count(), 1, 'repeated grants of Growth Chart for Amy are shown apart');
    const card = await cards.innerText();
    assert.match(card, /Allowed 2 times, last on \d{4}-\d\d-\d\d \d\d:\d\d UTC, first on \d{4}-\d\d-\d\d \d\d:\d\d UTC/);
    assert.match(card, /Patient: Amy V\. Shaw \(pat-1\)/);
    assert.match(card, /Read and search all types of your data/);
    await cards.getByRole('button', { name: 'Revoke access' }).click();
    await page.getByRole('status').waitFor();
    assert.equal(await page.locator('li.grant', { has: page.getByRole('heading', { name: 'Growth Chart' }) }).count(), 0, 'revoking the card revokes every grant in it');
  });
});
