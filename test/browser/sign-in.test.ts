// Second factors and sessions in a real browser: TOTP set up from the QR page, passkeys with a
// virtual authenticator (Chrome DevTools Protocol), break-the-glass step-up, logout and password change.
import assert from 'node:assert/strict';
import type { Page } from 'playwright-core';
import { decodeJwt } from '../support/oauth.ts';
import { chromiumSuite } from '../support/browser.ts';
import { addUser } from '../../server/oidc/users.ts';
import { auditEvents } from '../../server/audit/store.ts';
import { totpCode } from '../../server/auth/totp.ts';

const SCOPE = 'launch/patient openid fhirUser patient/*.rs';
const ALLOW = 'button[name=decision][value=allow]';
const PASSWORD = 'correct horse battery';

describe('second factors and sessions in Chromium', function () {
  this.timeout(60_000);
  // WebAuthn needs a domain as relying-party id, not an IP address.
  const suite = chromiumSuite({ app: { auth: { kind: 'secret' } }, issuerHost: 'localhost' });
  let n = 0;

  async function newUser(attributes: Parameters<typeof addUser>[1]['attributes'] = {}, fhirUser = 'Patient/pat-1') {
    const username = `person${++n}`;
    await addUser(suite.server.db, { username, password: PASSWORD, fhirUser, attributes });
    return username;
  }

  async function accountSignIn(p: Page, username: string, password = PASSWORD) {
    await p.goto(`${suite.server.issuer}/account/login`);
    await suite.signIn(username, password, p);
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

  async function allowAndExchange(verifier: string) {
    const { body } = await suite.exchange(await suite.backToApp(ALLOW), verifier);
    return decodeJwt(body.access_token).payload;
  }

  /** Signs in to the app with a passkey alone; returns the claims of the access token the app gets. */
  async function passkeyToken() {
    const { verifier } = await suite.startAuthorization(SCOPE);
    await suite.page.getByRole('button', { name: 'Sign in with a passkey' }).click();
    await suite.page.waitForSelector(ALLOW);
    return allowAndExchange(verifier);
  }

  /** In a browser with a virtual authenticator, signs in at the account pages and registers a passkey there. */
  async function registerPasskey(username: string, synced = false) {
    await addAuthenticator(suite.page, synced);
    await accountSignIn(suite.page, username);
    await suite.page.goto(`${suite.server.issuer}/account/security`);
    await suite.page.getByRole('button', { name: 'Register a passkey' }).click();
    await suite.page.waitForURL(/added=passkey/);
  }

  it('sets up TOTP from the QR page, then asks for codes: wrong and reused ones are refused', async () => {
    const username = await newUser();
    await accountSignIn(suite.page, username);
    await suite.page.getByRole('link', { name: 'Sign-in and security' }).click();
    await suite.page.getByRole('button', { name: 'Set up an authenticator app' }).click();
    const qr = suite.page.locator('img.qr');
    assert.match(await qr.getAttribute('src') ?? '', /^data:image\/png;base64,/);
    assert.ok(await qr.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth > 100), 'the QR code is shown');
    const secret = (await suite.page.locator('.totp-secret').innerText()).replace(/\s/g, '');
    const enrolmentCode = totpCode(secret);
    await suite.page.fill('input[name=code]', '123456' === enrolmentCode ? '654321' : '123456');
    await suite.page.getByRole('button', { name: 'Confirm' }).click();
    assert.match(await suite.page.getByRole('alert').innerText(), /not correct/);
    await suite.page.fill('input[name=code]', enrolmentCode);
    await suite.page.getByRole('button', { name: 'Confirm' }).click();
    assert.equal(await suite.page.locator('.recovery-codes li').count(), 10, 'the recovery codes are shown once');
    await suite.page.getByRole('button', { name: /I have saved them/ }).click();
    assert.match(await suite.page.locator('ul.factors').innerText(), /Authenticator app/);

    // A new sign-in to an app asks for a code after the password.
    const { verifier } = await suite.startAuthorization(SCOPE);
    await suite.signIn(username, PASSWORD);
    await suite.page.fill('input[name=otp]', enrolmentCode);
    await suite.page.getByRole('button', { name: 'Verify' }).click();
    assert.match(await suite.page.getByRole('alert').innerText(), /already used/, 'the code used to set up is not accepted again');
    await suite.page.fill('input[name=otp]', '000000');
    await suite.page.getByRole('button', { name: 'Verify' }).click();
    assert.match(await suite.page.getByRole('alert').innerText(), /not correct/);
    await suite.page.fill('input[name=otp]', totpCode(secret, Date.now() + 30_000));
    await suite.page.getByRole('button', { name: 'Verify' }).click();
    const token = await allowAndExchange(verifier);
    assert.deepEqual(token.amr, ['pwd', 'otp', 'mfa']);
    assert.equal(token.acr, 'urn:smart-auth:acr:mfa');
  });

  it('registers a passkey and signs in with it alone (phishing-resistant)', async () => {
    const username = await newUser();
    await registerPasskey(username);
    assert.match(await suite.page.locator('ul.factors').innerText(), /Passkey/);

    // Signing in to an app: the passkey instead of password and code.
    const token = await passkeyToken();
    assert.deepEqual(token.amr, ['hwk', 'mfa']);
    assert.equal(token.acr, 'urn:smart-auth:acr:phr');

    // Another browser without the passkey cannot use it.
    const other = await suite.browser.newContext();
    try {
      const otherPage = await other.newPage();
      await addAuthenticator(otherPage);
      await otherPage.goto(`${suite.server.issuer}/account/login`);
      await otherPage.getByRole('button', { name: 'Sign in with a passkey' }).click();
      await otherPage.locator('.passkey-error').waitFor();
      assert.match(await otherPage.url(), /\/account\/login/);
    } finally {
      await other.close();
    }
  });

  it('says swk for a synced passkey', async () => {
    const username = await newUser();
    await registerPasskey(username, true);
    const token = await passkeyToken();
    assert.deepEqual(token.amr, ['swk', 'mfa']);
    assert.equal(token.acr, 'urn:smart-auth:acr:phr');
  });

  it('lets a user who must have a second factor register a passkey at sign-in instead of an authenticator app', async () => {
    const username = await newUser({ requireMfa: true });
    await addAuthenticator(suite.page);
    const { verifier } = await suite.startAuthorization(SCOPE);
    await suite.signIn(username, PASSWORD);
    assert.equal(await suite.page.locator('img.qr').count(), 1, 'led to set up a second factor');
    await suite.page.getByRole('button', { name: 'Register a passkey' }).click();
    await suite.page.waitForSelector(ALLOW);
    const token = await allowAndExchange(verifier);
    assert.deepEqual(token.amr, ['pwd', 'hwk', 'mfa']);
    assert.equal(token.acr, 'urn:smart-auth:acr:phr');

    // Signing in again (prompt=login): password, then the passkey as the second step.
    const { verifier: again } = await suite.startAuthorization(SCOPE, { prompt: 'login' });
    await suite.signIn(username, PASSWORD);
    assert.equal(await suite.page.locator('input[name=otp]').count(), 0, 'no code field without an authenticator app');
    await suite.page.getByRole('button', { name: 'Use a passkey' }).click();
    await suite.page.waitForSelector(ALLOW);
    assert.deepEqual((await allowAndExchange(again)).amr, ['pwd', 'hwk', 'mfa']);
  });

  it('steps up break-the-glass at consent with the passkey', async () => {
    const username = await newUser({
      roles: [{ system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', code: 'doctor' }], purposes: ['TREAT'], breakGlass: true,
    }, 'Practitioner/dr-jones');
    await registerPasskey(username);

    const { verifier } = await suite.startAuthorization(SCOPE);
    await suite.page.getByRole('button', { name: 'Sign in with a passkey' }).click();
    await suite.page.check('input[type=radio][name=patient][value="pat-1"]');
    await suite.page.getByRole('button', { name: 'Continue' }).click();
    await suite.page.selectOption('select[name=purpose_of_use]', 'BTG');
    await suite.page.fill('textarea[name=btg_reason]', 'unconscious patient');
    await suite.page.click(ALLOW);
    assert.match(await suite.page.getByRole('alert').first().innerText(), /confirm it is you/, 'no emergency access without a fresh step-up');

    await suite.page.getByRole('button', { name: /Confirm with your passkey/ }).click();
    assert.match(await suite.page.getByRole('status').innerText(), /Passkey confirmed/);
    await suite.page.selectOption('select[name=purpose_of_use]', 'BTG');
    await suite.page.fill('textarea[name=btg_reason]', 'unconscious patient');
    const token = await allowAndExchange(verifier);
    assert.equal(token.extensions.ihe_iua.purpose_of_use[0].code, 'BTG');
    assert.deepEqual(token.amr, ['hwk', 'mfa']);
    const events = (await auditEvents(suite.server.db)) as any[];
    const alert = events.find((e) => e.subtype?.[0]?.code === '110127');
    assert.equal(alert.entity.flatMap((e: any) => e.detail ?? []).find((d: any) => d.type === 'step_up')?.valueString, 'hwk');
  });

  it('refuses the session cookie copied before logout', async () => {
    const username = await newUser();
    await accountSignIn(suite.page, username);
    const copied = await suite.context.cookies();
    await suite.page.getByRole('button', { name: 'Sign out' }).click();
    await suite.page.waitForURL(/\/account\/login/);

    const thief = await suite.browser.newContext();
    try {
      await thief.addCookies(copied);
      const stolen = await thief.newPage();
      await stolen.goto(`${suite.server.issuer}/account/apps`);
      assert.match(stolen.url(), /\/account\/login/, 'the copied cookie no longer opens the account');
    } finally {
      await thief.close();
    }
  });

  it('ends the other sessions when the password is changed', async () => {
    const username = await newUser();
    const other = await suite.browser.newContext();
    try {
      const otherPage = await other.newPage();
      await accountSignIn(otherPage, username);
      await accountSignIn(suite.page, username);
      await suite.page.goto(`${suite.server.issuer}/account/security`);
      await suite.page.fill('input[name=current_password]', PASSWORD);
      await suite.page.fill('input[name=new_password]', 'a whole new sentence');
      await suite.page.fill('input[name=confirm_password]', 'a whole new sentence');
      await suite.page.getByRole('button', { name: 'Change password' }).click();
      assert.match(await suite.page.getByRole('status').innerText(), /password was changed/);
      await otherPage.reload();
      assert.match(otherPage.url(), /\/account\/login/, 'the other browser was signed out');
      await accountSignIn(otherPage, username, 'a whole new sentence');
    } finally {
      await other.close();
    }
  });
});
