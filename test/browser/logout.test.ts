// RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) in a real browser, under the server's
// real Content-Security-Policy: the confirmation page, "No, stay signed in", "Yes", and no session at all.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appRedirect, chromiumSuite } from '../support/browser.ts';
import { addUser } from '../../server/oidc/users.ts';
import { auditEvents } from '../../server/audit/store.ts';

const SCOPE = 'launch/patient openid fhirUser patient/*.rs';
const ALLOW = 'button[name=decision][value=allow]';
const PASSWORD = 'correct horse battery';
const SIGNED_OUT = 'http://127.0.0.1:9999/signed-out';

describe('RP-initiated logout in Chromium', function () {
  this.timeout(60_000);
  const suite = chromiumSuite({ app: { auth: { kind: 'secret' }, postLogoutRedirectUris: [SIGNED_OUT] } });
  let n = 0;

  /** Signs a new user in to the app in the test's page; returns the app's id token. */
  async function signedInToApp(): Promise<string> {
    const username = `leaver${++n}`;
    await addUser(suite.server.db, { username, password: PASSWORD, fhirUser: 'Patient/pat-1' });
    const { verifier } = await suite.startAuthorization(SCOPE);
    await suite.signIn(username, PASSWORD);
    const { body } = await suite.exchange(await suite.backToApp(ALLOW), verifier);
    assert.ok(body.id_token, 'the app got an id token');
    return body.id_token;
  }

  /** The app sends the browser to the end_session_endpoint discovery names; returns the state it sent. */
  async function appLogout(idToken?: string): Promise<string> {
    const discovery = await (await fetch(`${suite.server.issuer}/.well-known/openid-configuration`)).json();
    const state = randomBytes(8).toString('hex');
    const params = new URLSearchParams({ post_logout_redirect_uri: SIGNED_OUT, state, ...(idToken ? { id_token_hint: idToken } : { client_id: suite.app.client_id }) });
    await suite.page.goto(`${discovery.end_session_endpoint}?${params}`, { waitUntil: 'commit' });
    return state;
  }

  const signOuts = async () => (await auditEvents(suite.server.db, { subtype: '110123' })).length;

  /** Whether a new authorization by the app goes straight to consent (no sign-in asked). */
  async function stillSignedIn(): Promise<boolean> {
    await suite.startAuthorization(SCOPE);
    await suite.page.locator(`${ALLOW}, input[name=password]`).first().waitFor();
    return (await suite.page.locator(ALLOW).count()) === 1;
  }

  it('asks on a page of the product; "No, stay signed in" keeps the session and records no sign-out', async () => {
    const idToken = await signedInToApp();
    const before = await signOuts();
    const state = await appLogout(idToken);
    assert.equal(await suite.page.locator('link[rel=stylesheet][href="/static/style.css"]').count(), 1, 'the layout, with the product style');
    assert.equal(await suite.page.locator('header .brand').innerText(), 'smart-auth');
    const back = await Promise.all([appRedirect(suite.page, SIGNED_OUT), suite.page.getByRole('button', { name: 'No, stay signed in' }).click()]).then(([url]) => url);
    assert.equal(back.searchParams.get('state'), state, 'the app is sent back with its state');
    assert.equal(await signOuts(), before, 'no sign-out recorded');
    assert.ok(await stillSignedIn(), 'a new authorization needs no sign-in');
  });

  it('"Yes, sign me out" ends the session, sends the app its state and records the sign-out', async () => {
    const idToken = await signedInToApp();
    const before = await signOuts();
    const state = await appLogout(idToken);
    const back = await Promise.all([appRedirect(suite.page, SIGNED_OUT), suite.page.getByRole('button', { name: 'Yes, sign me out' }).click()]).then(([url]) => url);
    assert.equal(back.origin + back.pathname, SIGNED_OUT);
    assert.equal(back.searchParams.get('state'), state);
    assert.equal(await signOuts(), before + 1, 'the sign-out is recorded');
    assert.ok(!(await stillSignedIn()), 'a new authorization asks to sign in');
  });

  it('sends a browser without a session on to the app from a page of the product that runs no inline script', async () => {
    const page = suite.page.waitForResponse((r) => r.url().startsWith(`${suite.server.issuer}/logout?`));
    const [back, state] = await Promise.all([appRedirect(suite.page, SIGNED_OUT), appLogout()]);
    assert.equal(back.origin + back.pathname, SIGNED_OUT);
    assert.equal(back.searchParams.get('state'), state);
    const shown = await page;
    assert.match(shown.headers()['content-security-policy'], /script-src 'self';/, 'only the server\'s own scripts, no inline one');
    assert.match(await (await fetch(shown.url())).text(), /<link rel="stylesheet" href="\/static\/style.css">[\s\S]*<script src="\/static\/logout.js"><\/script>/);
  });
});
