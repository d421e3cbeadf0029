// Second factors and sessions in a real browser: TOTP set up from the QR page, passkeys with a
// virtual authenticator (Chrome DevTools Protocol), break-the-glass step-up, logout and password change.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { startTestServer, type TestServer } from '../support/server.ts';
import { decodeJwt, exchangeCode, pkce } from '../support/oauth.ts';
import { appRedirect, launchChromium, requireChromium } from '../support/browser.ts';
import { addUser } from '../../server/oidc/users.ts';
import { totpCode } from '../../server/auth/totp.ts';

const SCOPE = 'launch/patient openid fhirUser patient/*.rs';
const ALLOW = 'button[name=decision][value=allow]';
const PASSWORD = 'correct horse battery';

describe('second factors and sessions in Chromium', function () {
  this.timeout(60_000);
  let browser: Browser | undefined;
  let server: TestServer | undefined;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  let context: BrowserContext;
  let page: Page;
  let n = 0;

  before(async function () {
    requireChromium(this);
    browser = await launchChromium();
    // WebAuthn needs a domain as relying-party id, not an IP address.
    server = await startTestServer({}, { issuerHost: 'localhost' });
    app = await server.addClient({ auth: { kind: 'secret' } });
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

  async function newUser(attributes: Parameters<typeof addUser>[1]['attributes'] = {}, fhirUser = 'Patient/pat-1') {
    const username = `person${++n}`;
    await addUser(server!.db, { username, password: PASSWORD, fhirUser, attributes });
    return username;
  }

  async function accountSignIn(p: Page, username: string, password = PASSWORD) {
    await p.goto(`${server!.issuer}/account/login`);
    await p.fill('input[name=username]', username);
    await p.fill('input[name=password]', password);
    await p.getByRole('button', { name: 'Sign in', exact: true }).click();
    await p.waitForURL(/\/account\/apps/);
  }

  /** A virtual platform authenticator with user verification, as a phone or laptop has; `synced`: its passkeys are backed up (a password manager's). */
  async function addAuthenticator(p: Page, synced = false) {
    const cdp = await p.context().newCDPSession(p);
    await cdp.send('WebAuthn.enable');
    await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: {
        protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
        ...(synced && { defaultBackupEligibility: true, defaultBackupState: true }),
      },
    });
  }

  async function startAuthorization(scope = SCOPE, extra: Record<string, string> = {}) {
    const { verifier, challenge } = pkce();
    const params = new URLSearchParams({
      response_type: 'code', client_id: app.client_id, redirect_uri: app.redirect_uri, scope, state: randomBytes(8).toString('hex'),
      aud: server!.fhirBase, code_challenge: challenge, code_challenge_method: 'S256', ...extra,
    });
    await page.goto(`${server!.issuer}/authorize?${params}`);
    return verifier;
  }

  async function allowAndExchange(verifier: string) {
    const [back] = await Promise.all([appRedirect(page, app.redirect_uri), page.click(ALLOW)]);
    const code = back.searchParams.get('code');
    assert.ok(code, `no code: ${back}`);
    const { body } = await exchangeCode(server!.issuer, { code, verifier } as Parameters<typeof exchangeCode>[1], app);
    return decodeJwt(body.access_token).payload;
  }

  it('sets up TOTP from the QR page, then asks for codes: wrong and reused ones are refused', async () => {
    const username = await newUser();
    await accountSignIn(page, username);
    await page.getByRole('link', { name: 'Sign-in and security' }).click();
    await page.getByRole('link', { name: 'Set up an authenticator app' }).click();
    const qr = page.locator('img.qr');
    assert.match(await qr.getAttribute('src') ?? '', /^data:image\/png;base64,/);
    assert.ok(await qr.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth > 100), 'the QR code is shown');
    const secret = (await page.locator('.totp-secret').innerText()).replace(/\s/g, '');
    const enrolmentCode = totpCode(secret);
    await page.fill('input[name=code]', '123456' === enrolmentCode ? '654321' : '123456');
    await page.getByRole('button', { name: 'Confirm' }).click();
    assert.match(await page.getByRole('alert').innerText(), /not correct/);
    await page.fill('input[name=code]', enrolmentCode);
    await page.getByRole('button', { name: 'Confirm' }).click();
    assert.equal(await page.locator('.recovery-codes li').count(), 10, 'the recovery codes are shown once');
    await page.getByRole('button', { name: /I have saved them/ }).click();
    assert.match(await page.locator('ul.factors').innerText(), /Authenticator app/);

    // A new sign-in to an app asks for a code after the password.
    const verifier = await startAuthorization();
    await page.fill('input[name=username]', username);
    await page.fill('input[name=password]', PASSWORD);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.fill('input[name=otp]', enrolmentCode);
    await page.getByRole('button', { name: 'Verify' }).click();
    assert.match(await page.getByRole('alert').innerText(), /already used/, 'the code used to set up is not accepted again');
    await page.fill('input[name=otp]', '000000');
    await page.getByRole('button', { name: 'Verify' }).click();
    assert.match(await page.getByRole('alert').innerText(), /not correct/);
    await page.fill('input[name=otp]', totpCode(secret, Date.now() + 30_000));
    await page.getByRole('button', { name: 'Verify' }).click();
    const token = await allowAndExchange(verifier);
    assert.deepEqual(token.amr, ['pwd', 'otp', 'mfa']);
    assert.equal(token.acr, 'urn:smart-auth:acr:mfa');
  });

  it('registers a passkey and signs in with it alone (phishing-resistant)', async () => {
    const username = await newUser();
    await addAuthenticator(page);
    await accountSignIn(page, username);
    await page.goto(`${server!.issuer}/account/security`);
    await page.getByRole('button', { name: 'Register a passkey' }).click();
    await page.waitForURL(/added=passkey/);
    assert.match(await page.locator('ul.factors').innerText(), /Passkey/);

    // Signing in to an app: the passkey instead of password and code.
    const verifier = await startAuthorization();
    await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
    await page.waitForSelector(ALLOW);
    const token = await allowAndExchange(verifier);
    assert.deepEqual(token.amr, ['hwk', 'mfa']);
    assert.equal(token.acr, 'urn:smart-auth:acr:phr');

    // Another browser without the passkey cannot use it.
    const other = await browser!.newContext();
    try {
      const otherPage = await other.newPage();
      await addAuthenticator(otherPage);
      await otherPage.goto(`${server!.issuer}/account/login`);
      await otherPage.getByRole('button', { name: 'Sign in with a passkey' }).click();
      await otherPage.locator('.passkey-error').waitFor();
      assert.match(await otherPage.url(), /\/account\/login/);
    } finally {
      await other.close();
    }
  });

  it('says swk for a synced passkey', async () => {
    const username = await newUser();
    await addAuthenticator(page, true);
    await accountSignIn(page, username);
    await page.goto(`${server!.issuer}/account/security`);
    await page.getByRole('button', { name: 'Register a passkey' }).click();
    await page.waitForURL(/added=passkey/);
    const verifier = await startAuthorization();
    await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
    await page.waitForSelector(ALLOW);
    const token = await allowAndExchange(verifier);
    assert.deepEqual(token.amr, ['swk', 'mfa']);
    assert.equal(token.acr, 'urn:smart-auth:acr:phr');
  });

  it('lets a user who must have a second factor register a passkey at sign-in instead of an authenticator app', async () => {
    const username = await newUser({ requireMfa: true });
    await addAuthenticator(page);
    const verifier = await startAuthorization();
    await page.fill('input[name=username]', username);
    await page.fill('input[name=password]', PASSWORD);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    assert.equal(await page.locator('img.qr').count(), 1, 'led to set up a second factor');
    await page.getByRole('button', { name: 'Register a passkey' }).click();
    await page.waitForSelector(ALLOW);
    const token = await allowAndExchange(verifier);
    assert.deepEqual(token.amr, ['pwd', 'hwk', 'mfa']);
    assert.equal(token.acr, 'urn:smart-auth:acr:phr');

    // Signing in again (prompt=login): password, then the passkey as the second step.
    const again = await startAuthorization(SCOPE, { prompt: 'login' });
    await page.fill('input[name=username]', username);
    await page.fill('input[name=password]', PASSWORD);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    assert.equal(await page.locator('input[name=otp]').count(), 0, 'no code field without an authenticator app');
    await page.getByRole('button', { name: 'Use a passkey' }).click();
    await page.waitForSelector(ALLOW);
    assert.deepEqual((await allowAndExchange(again)).amr, ['pwd', 'hwk', 'mfa']);
  });

  it('steps up break-the-glass at consent with the passkey', async () => {
    const username = await newUser({
      roles: [{ system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', code: 'doctor' }], purposes: ['TREAT'], breakGlass: true,
    }, 'Practitioner/dr-jones');
    await addAuthenticator(page);
    await accountSignIn(page, username);
    await page.goto(`${server!.issuer}/account/security`);
    await page.getByRole('button', { name: 'Register a passkey' }).click();
    await page.waitForURL(/added=passkey/);

    const verifier = await startAuthorization();
    await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
    await page.check('input[type=radio][name=patient][value="pat-1"]');
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.selectOption('select[name=purpose_of_use]', 'BTG');
    await page.fill('textarea[name=btg_reason]', 'unconscious patient');
    await page.click(ALLOW);
    assert.match(await page.getByRole('alert').first().innerText(), /confirm it is you/, 'no emergency access without a fresh step-up');

    await page.getByRole('button', { name: /Confirm with your passkey/ }).click();
    assert.match(await page.getByRole('status').innerText(), /Passkey confirmed/);
    await page.selectOption('select[name=purpose_of_use]', 'BTG');
    await page.fill('textarea[name=btg_reason]', 'unconscious patient');
    const token = await allowAndExchange(verifier);
    assert.equal(token.extensions.ihe_iua.purpose_of_use[0].code, 'BTG');
    assert.deepEqual(token.amr, ['hwk', 'mfa']);
    const events = (await server!.db('audit_events').orderBy('seq').select('event')).map((r) => JSON.parse(r.event));
    const alert = events.find((e) => e.subtype?.[0]?.code === '110127');
    assert.equal(alert.entity.flatMap((e: any) => e.detail ?? []).find((d: any) => d.type === 'step_up')?.valueString, 'hwk');
  });

  it('refuses the session cookie copied before logout', async () => {
    const username = await newUser();
    await accountSignIn(page, username);
    const copied = await context.cookies();
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL(/\/account\/login/);

    const thief = await browser!.newContext();
    try {
      await thief.addCookies(copied);
      const stolen = await thief.newPage();
      await stolen.goto(`${server!.issuer}/account/apps`);
      assert.match(stolen.url(), /\/account\/login/, 'the copied cookie no longer opens the account');
    } finally {
      await thief.close();
    }
  });

  it('ends the other sessions when the password is changed', async () => {
    const username = await newUser();
    const other = await browser!.newContext();
    try {
      const otherPage = await other.newPage();
      await accountSignIn(otherPage, username);
      await accountSignIn(page, username);
      await page.goto(`${server!.issuer}/account/security`);
      await page.fill('input[name=current_password]', PASSWORD);
      await page.fill('input[name=new_password]', 'a whole new sentence');
      await page.fill('input[name=confirm_password]', 'a whole new sentence');
      await page.getByRole('button', { name: 'Change password' }).click();
      assert.match(await page.getByRole('status').innerText(), /password was changed/);
      await otherPage.reload();
      assert.match(otherPage.url(), /\/account\/login/, 'the other browser was signed out');
      await accountSignIn(otherPage, username, 'a whole new sentence');
    } finally {
      await other.close();
    }
  });
});
