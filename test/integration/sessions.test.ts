// Sessions that end: /account and authorization-server sessions live in the database; logout, the
// session list, a password change and disabling the user end them, and a copied cookie stops working.
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, authorizedTokens, Browser, exchangeCode, form, hiddenValue, scopeCheckboxes, shownTotpSecret, tokenRequest } from '../support/oauth.ts';
import { addUser, disableUser, findUserByUsername, setPassword } from '../../server/oidc/users.ts';
import { auditEvents } from '../../server/audit/store.ts';
import { totpCode } from '../../server/auth/totp.ts';
import { enrolTotpDirectly } from '../../server/auth/factors.ts';
import { runCli, runCliPiped } from '../support/cli.ts';

const SCOPE = 'launch/patient openid fhirUser offline_access patient/*.rs';

describe('sessions that end, and changing a password', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  let n = 0;
  before(async () => {
    server = await startTestServer();
    app = await server.addClient({ auth: { kind: 'secret' } });
  });
  after(() => server.stop());

  async function patientUser() {
    const username = `pat${++n}`;
    await addUser(server.db, { username, password: 'correct horse battery', fhirUser: 'Patient/pat-1' });
    return { username, password: 'correct horse battery' };
  }

  async function accountSignIn(username: string, password: string, userAgent = 'Mozilla/5.0 (X11; Linux x86_64) Chrome/150.0') {
    const browser = new Browser();
    const headers = { 'user-agent': userAgent };
    const page = await (await browser.fetch(`${server.issuer}/account/login`, { headers })).text();
    const res = await browser.fetch(`${server.issuer}/account/login`, { method: 'POST', headers, body: form({ csrf: hiddenValue(page, 'csrf'), username, password }) });
    assert.equal(res.status, 303);
    return browser;
  }
  const cookieOf = (browser: Browser) => `smart_auth.account=${browser.cookie('smart_auth.account')}; smart_auth.account.sig=${browser.cookie('smart_auth.account.sig')}`;
  const appsStatus = async (cookie: string) => (await fetch(`${server.issuer}/account/apps`, { headers: { cookie }, redirect: 'manual' })).status;
  const securityPage = async (browser: Browser) => (await browser.fetch(`${server.issuer}/account/security`)).text();
  /** Starts an authenticator set-up at /account/security (its button): the set-up page. */
  const startSetUp = async (browser: Browser) => (await browser.fetch(`${server.issuer}/account/security/totp/new`, { method: 'POST', body: form({ csrf: hiddenValue(await securityPage(browser), 'csrf') }) })).text();
  const storedEvents = async () => (await auditEvents(server.db)) as any[];

  it('refuses a copied /account cookie after logout', async () => {
    const user = await patientUser();
    const browser = await accountSignIn(user.username, user.password);
    const copied = cookieOf(browser);
    assert.equal(await appsStatus(copied), 200);
    const page = await (await browser.fetch(`${server.issuer}/account/apps`)).text();
    const out = await browser.fetch(`${server.issuer}/account/logout`, { method: 'POST', body: form({ csrf: hiddenValue(page, 'csrf') }) });
    assert.equal(out.status, 303);
    assert.equal(await appsStatus(copied), 303, 'the copied cookie no longer opens /account');
  });

  it('lists the sessions with device, address and time, and ends one from another', async () => {
    const user = await patientUser();
    const laptop = await accountSignIn(user.username, user.password);
    const phone = await accountSignIn(user.username, user.password, 'Mozilla/5.0 (Linux; Android 14) Chrome/150.0 Mobile');
    await authorize({ server, client: app, scope: SCOPE, username: user.username, password: user.password });
    const page = await securityPage(laptop);
    assert.match(page, /Chrome on Linux/);
    assert.match(page, /Chrome on Android/);
    assert.match(page, /signing in to apps/);
    assert.match(page, /127\.0\.0\.1/);
    assert.match(page, /\(this session\)/);
    const ids = [...page.matchAll(/name="session_id" value="([^"]+)"/g)].map((m) => m[1]);
    assert.equal(ids.length, 3);
    // The phone's row is the Android one.
    const phoneId = /Chrome on Android[\s\S]*?name="session_id" value="([^"]+)"/.exec(page)![1];
    const end = await laptop.fetch(`${server.issuer}/account/sessions/end`, { method: 'POST', body: form({ csrf: hiddenValue(page, 'csrf'), session_id: phoneId }) });
    assert.equal(end.status, 303);
    assert.equal(await appsStatus(cookieOf(phone)), 303, 'the ended session is refused');
    assert.equal(await appsStatus(cookieOf(laptop)), 200, 'the others go on');
    const again = await laptop.fetch(`${server.issuer}/account/sessions/end`, { method: 'POST', body: form({ csrf: hiddenValue(page, 'csrf'), session_id: phoneId }) });
    assert.equal(again.status, 404);
    const other = await patientUser();
    const stranger = await accountSignIn(other.username, other.password);
    const strangerPage = await securityPage(stranger);
    const foreign = await stranger.fetch(`${server.issuer}/account/sessions/end`, { method: 'POST', body: form({ csrf: hiddenValue(strangerPage, 'csrf'), session_id: ids.find((id) => id !== phoneId)! }) });
    assert.equal(foreign.status, 404, "another person's session cannot be ended");
    const noCsrf = await laptop.fetch(`${server.issuer}/account/sessions/end`, { method: 'POST', body: form({ session_id: ids[0] }) });
    assert.equal(noCsrf.status, 403);
    const ended = (await storedEvents()).filter((e) => e.subtype?.[0]?.code === '110123' && e.entity?.[0]?.detail?.some((d: any) => d.valueString === 'ended by the user from the session list'));
    assert.equal(ended.length, 1, 'ending a session is audited');
  });

  it('ends a sign-in session at the authorization server: the next authorization asks for the password again', async () => {
    const user = await patientUser();
    const browser = new Browser();
    await authorize({ server, client: app, scope: SCOPE, username: user.username, password: user.password, browser });
    const sso = await authorize({ server, client: app, scope: SCOPE, browser });
    assert.ok(!sso.pages.some((p) => p.includes('name="password"')), 'the session signs in without the password');
    const account = await accountSignIn(user.username, user.password);
    const page = await securityPage(account);
    const signInId = /signing in to apps[\s\S]*?name="session_id" value="([^"]+)"/.exec(page)![1];
    await account.fetch(`${server.issuer}/account/sessions/end`, { method: 'POST', body: form({ csrf: hiddenValue(page, 'csrf'), session_id: signInId }) });
    const after = await authorize({ server, client: app, scope: SCOPE, browser, username: user.username, password: user.password });
    assert.ok(after.pages.some((p) => p.includes('name="password"')), 'the ended session no longer signs in');
  });

  it('ends an online_access refresh token with its sign-in session for good: signing in again in that browser does not bring it back', async () => {
    const user = await patientUser();
    const online = { server, client: app, scope: 'launch/patient openid fhirUser online_access patient/*.rs', username: user.username, password: user.password, browser: new Browser() };
    const tokens = await authorizedTokens(online);
    const account = await accountSignIn(user.username, user.password);
    const page = await securityPage(account);
    const signInId = /signing in to apps[\s\S]*?name="session_id" value="([^"]+)"/.exec(page)![1];
    await account.fetch(`${server.issuer}/account/sessions/end`, { method: 'POST', body: form({ csrf: hiddenValue(page, 'csrf'), session_id: signInId }) });
    const refresh = () => tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, app);
    assert.equal((await refresh()).res.status, 400, 'ending the session ends the token');
    assert.ok((await authorizedTokens(online)).refresh_token, 'the browser signs in again');
    const after = await refresh();
    assert.equal(after.res.status, 400, 'the token of the ended session stays dead');
    assert.equal(after.body.error, 'invalid_grant');
  });

  it('ends the sign-in session at RP-initiated logout (/logout), audited', async () => {
    const user = await patientUser();
    const browser = new Browser();
    const tokens = await authorizedTokens({ server, client: app, scope: SCOPE, username: user.username, password: user.password, browser });
    const confirm = await (await browser.fetch(`${server.issuer}/logout?${new URLSearchParams({ id_token_hint: tokens.id_token, client_id: app.client_id })}`)).text();
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(confirm)![1];
    const out = await browser.fetch(`${server.issuer}/logout/confirm`, { method: 'POST', body: form({ xsrf, logout: 'yes' }) });
    assert.ok(out.status < 400, String(out.status));
    const userId = (await server.db('users').where('username', user.username).first('id')).id;
    assert.equal((await server.db('user_sessions').where({ user_id: userId, kind: 'sign-in' })).length, 0);
    const after = await authorize({ server, client: app, scope: SCOPE, browser, username: user.username, password: user.password });
    assert.ok(after.pages.some((p) => p.includes('name="password"')));
    const ended = (await storedEvents()).filter((e) => e.subtype?.[0]?.code === '110123' && e.agent[0].who?.identifier?.value === userId);
    assert.equal(ended.length, 1, 'the logout is audited');
  });

  describe('the RP-initiated logout confirmation', () => {
    const signedOut = 'http://127.0.0.1:9999/signed-out';
    let logoutApp: typeof app;
    before(async () => {
      logoutApp = await server.addClient({ name: 'Growth <Charts> & "Co"', auth: { kind: 'secret' }, postLogoutRedirectUris: [signedOut] });
    });

    /** A person signed in to the app, at its logout confirmation page. */
    async function atConfirmation() {
      const user = await patientUser();
      const browser = new Browser();
      const tokens = await authorizedTokens({ server, client: logoutApp, scope: SCOPE, username: user.username, password: user.password, browser });
      const res = await browser.fetch(`${server.issuer}/logout?${new URLSearchParams({ id_token_hint: tokens.id_token, post_logout_redirect_uri: signedOut, state: 'st-1' })}`);
      const userId: string = (await server.db('users').where('username', user.username).first('id')).id;
      return { browser, user, userId, page: await res.text(), res };
    }
    const signOutsOf = async (userId: string) => (await storedEvents()).filter((e) => e.subtype?.[0]?.code === '110123' && e.agent[0].who?.identifier?.value === userId).length;
    const sessionKept = async (userId: string) => (await server.db('user_sessions').where({ user_id: userId, kind: 'sign-in' })).length === 1;

    it('is a page of the product, with the app named (escaped) and oidc-provider\'s xsrf token', async () => {
      const { page, res } = await atConfirmation();
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('cache-control'), 'no-store');
      assert.match(page, /<link rel="stylesheet" href="\/static\/style.css">/);
      assert.match(page, /<strong>Growth &lt;Charts&gt; &amp; &#34;Co&#34;<\/strong>/);
      assert.match(hiddenValue(page, 'xsrf'), /^[0-9a-f]{48}$/);
      assert.doesNotMatch(page, /<script/);
    });

    for (const [name, data] of [['without the xsrf token', { logout: 'yes' }], ['with another xsrf token', { logout: 'yes', xsrf: '0'.repeat(48) }]] as const) {
      it(`refuses the confirmation ${name}: the session is kept, nothing is recorded`, async () => {
        const { browser, userId } = await atConfirmation();
        const out = await browser.fetch(`${server.issuer}/logout/confirm`, { method: 'POST', body: form(data) });
        assert.equal(out.status, 400);
        assert.match(await out.text(), /invalid_request[\s\S]*(xsrf token invalid|could not find logout details)/);
        assert.ok(await sessionKept(userId));
        assert.equal(await signOutsOf(userId), 0);
      });
    }

    it('"No, stay signed in" keeps the session, records no sign-out and sends the app back with its state', async () => {
      const { browser, user, userId, page } = await atConfirmation();
      const out = await browser.fetch(`${server.issuer}/logout/confirm`, { method: 'POST', body: form({ xsrf: hiddenValue(page, 'xsrf') }) });
      assert.equal(out.status, 303);
      assert.equal(out.headers.get('location'), `${signedOut}?state=st-1`);
      assert.ok(await sessionKept(userId));
      assert.equal(await signOutsOf(userId), 0);
      const again = await authorize({ server, client: logoutApp, scope: SCOPE, browser, username: user.username, password: user.password });
      assert.ok(again.code && !again.pages.some((p) => p.includes('name="password"')), 'still signed in');
    });

    it('shows the product\'s signed-out page when the app names no post_logout_redirect_uri', async () => {
      const { browser } = await atConfirmation();
      const answer = async (logout: Record<string, string>) => {
        const page = await (await browser.fetch(`${server.issuer}/logout?client_id=${logoutApp.client_id}`)).text();
        const { res } = await browser.follow(`${server.issuer}/logout/confirm`, server.issuer, { method: 'POST', body: form({ xsrf: hiddenValue(page, 'xsrf'), ...logout }) });
        const shown = await res.text();
        assert.match(shown, /<link rel="stylesheet" href="\/static\/style.css">/);
        return shown;
      };
      assert.match(await answer({}), /signed out of <strong>Growth &lt;Charts&gt; &amp; &#34;Co&#34;<\/strong>. You are still signed in to smart-auth/);
      assert.match(await answer({ logout: 'yes' }), /You have signed out of smart-auth\./);
    });
  });

  it('changes the password on /account: checks the old one and the new one, ends other sessions and refresh tokens', async () => {
    const user = await patientUser();
    const here = await accountSignIn(user.username, user.password);
    const elsewhere = await accountSignIn(user.username, user.password);
    const sso = new Browser();
    const launch = await authorize({ server, client: app, scope: SCOPE, username: user.username, password: user.password, browser: sso });
    const tokens = (await exchangeCode(server.issuer, launch, app)).body;
    const page = await securityPage(here);
    const change = (data: Record<string, string>) => here.fetch(`${server.issuer}/account/password`, { method: 'POST', body: form({ csrf: hiddenValue(page, 'csrf'), ...data }) });
    const cases: [Record<string, string>, RegExp][] = [
      [{ current_password: 'wrong password', new_password: 'a brand new secret', confirm_password: 'a brand new secret' }, /current password is not correct/],
      [{ current_password: user.password, new_password: 'short', confirm_password: 'short' }, /at least 8 characters/],
      [{ current_password: user.password, new_password: 'password123', confirm_password: 'password123' }, /most common/],
      [{ current_password: user.password, new_password: `${user.username}-2025`, confirm_password: `${user.username}-2025` }, /must not contain your username/],
      [{ current_password: user.password, new_password: 'a brand new secret', confirm_password: 'a brand new secreT' }, /differ/],
    ];
    for (const [data, message] of cases) {
      const res = await change(data);
      assert.equal(res.status, 400);
      const html = await res.text();
      assert.match(html, message);
      assert.doesNotMatch(html, /a brand new secret|wrong password/, 'passwords are never echoed');
    }
    assert.equal(await appsStatus(cookieOf(elsewhere)), 200, 'refused changes end nothing');

    const done = await change({ current_password: user.password, new_password: 'a brand new secret', confirm_password: 'a brand new secret' });
    assert.equal(done.status, 303);
    assert.equal(await appsStatus(cookieOf(here)), 200, 'the session that changed it goes on');
    assert.equal(await appsStatus(cookieOf(elsewhere)), 303, 'every other /account session ended');
    const refresh = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, app);
    assert.equal(refresh.body.error, 'invalid_grant', 'refresh tokens ended');
    const again = await authorize({ server, client: app, scope: SCOPE, browser: sso, username: user.username, password: 'a brand new secret' });
    assert.ok(again.pages.some((p) => p.includes('name="password"')), 'the sign-in session at the authorization server ended');
    assert.ok(again.code);
    const changed = (await storedEvents()).filter((e) => e.subtype?.[0]?.code === '110137' && e.entity[0].detail.some((d: any) => d.valueString === 'password'));
    assert.equal(changed.length, 1, 'the password change is audited');
    assert.equal(changed[0].action, 'U');
  });

  it('gives no code to an authorization waiting at its consent page when the password is changed meanwhile', async () => {
    const user = await patientUser();
    const browser = new Browser();
    const start = await browser.follow(`${server.issuer}/authorize?${new URLSearchParams({
      response_type: 'code', client_id: app.client_id, redirect_uri: app.redirect_uri, scope: SCOPE, state: 'some-state',
      aud: server.fhirBase, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256',
    })}`, server.issuer);
    const login = await start.res.text();
    const signedIn = await browser.follow(`${start.url}/login`, server.issuer, {
      method: 'POST', body: form({ csrf: hiddenValue(login, 'csrf'), username: user.username, password: user.password }),
    });
    const consent = await signedIn.res.text();
    assert.match(consent, /name="decision"/);
    await setPassword(server.db, (await findUserByUsername(server.db, user.username))!, 'a brand new secret');
    const allowed = await browser.follow(`${signedIn.url}/consent`, server.issuer, {
      method: 'POST', body: form({ csrf: hiddenValue(consent, 'csrf'), decision: 'allow', scope: scopeCheckboxes(consent).filter((c) => c.checked).map((c) => c.value) }),
    });
    assert.equal(new URL(allowed.url).searchParams.get('code'), null, 'no code for the sign-in made with the old password');
    assert.ok(allowed.res.status >= 400, String(allowed.res.status));
    const userId = (await findUserByUsername(server.db, user.username))!.id;
    assert.equal((await server.db('oidc_payloads').where({ model: 'Grant', account_id: userId })).length, 0, 'nothing was granted');
  });

  it('asks for the second factor at /account too; the session records how', async () => {
    const user = await patientUser();
    const cli = await runCli(server, 'user', 'mfa', user.username, '--totp', '--json');
    const secret = new URL(cli.json.otpauth_uri).searchParams.get('secret')!;
    const browser = new Browser();
    const page = await (await browser.fetch(`${server.issuer}/account/login`)).text();
    const login = await browser.fetch(`${server.issuer}/account/login`, { method: 'POST', body: form({ csrf: hiddenValue(page, 'csrf'), username: user.username, password: user.password }) });
    assert.equal(login.headers.get('location'), '/account/login/next?return_to=%2Faccount%2Fapps');
    assert.equal(browser.cookie('smart_auth.account'), undefined, 'no session after the password alone');
    const pendingCookie = `smart_auth.account_pending=${browser.cookie('smart_auth.account_pending')}; smart_auth.account_pending.sig=${browser.cookie('smart_auth.account_pending.sig')}`;
    const step = await (await browser.fetch(`${server.issuer}/account/login/next`)).text();
    assert.match(step, /name="otp"/);
    const wrong = await browser.fetch(`${server.issuer}/account/login/second-factor`, { method: 'POST', body: form({ csrf: hiddenValue(step, 'csrf'), otp: '000000' }) });
    assert.match(await wrong.text(), /not correct/);
    const ok = await browser.fetch(`${server.issuer}/account/login/second-factor`, { method: 'POST', body: form({ csrf: hiddenValue(step, 'csrf'), otp: totpCode(secret) }) });
    assert.equal(ok.status, 303);
    assert.equal(await appsStatus(cookieOf(browser)), 200);
    assert.match(await securityPage(browser), /pwd otp mfa/);
    // The pending sign-in was used up: its cookie, copied, leads nowhere.
    const replay = await fetch(`${server.issuer}/account/login/next`, { headers: { cookie: pendingCookie } });
    assert.match(await replay.text(), /took too long/);
  });

  it('starts each set-up at /account/security with a new secret (not one shown to another session); a wrong code shows it again', async () => {
    const user = await patientUser();
    const setUp = startSetUp;
    const seen = shownTotpSecret(await setUp(await accountSignIn(user.username, user.password)));
    const browser = await accountSignIn(user.username, user.password);
    const page = await setUp(browser);
    const secret = shownTotpSecret(page);
    assert.ok(seen && secret);
    assert.notEqual(secret, seen, 'a set-up started later is shown a secret of its own');
    const wrong = await browser.fetch(`${server.issuer}/account/security/totp`, { method: 'POST', body: form({ csrf: hiddenValue(page, 'csrf'), code: '000000' }) });
    assert.equal(shownTotpSecret(await wrong.text()), secret, 'after a wrong code the same secret is shown again');
    const ok = await browser.fetch(`${server.issuer}/account/security/totp`, { method: 'POST', body: form({ csrf: hiddenValue(page, 'csrf'), code: totpCode(secret!) }) });
    assert.match(await ok.text(), /class="recovery-codes"/);
  });

  it('keeps each set-up at /account/security to the secret it showed: another session setting one up meanwhile swaps nothing', async () => {
    const user = await patientUser();
    const mine = await accountSignIn(user.username, user.password);
    const other = await accountSignIn(user.username, user.password);
    const secret = shownTotpSecret(await startSetUp(mine))!;
    const theirs = shownTotpSecret(await startSetUp(other))!;
    assert.notEqual(theirs, secret);
    const confirm = async (browser: Browser, code: string) => browser.fetch(`${server.issuer}/account/security/totp`, { method: 'POST', body: form({ csrf: hiddenValue(await securityPage(browser), 'csrf'), code }) });
    const wrong = await confirm(mine, '000000');
    assert.equal(shownTotpSecret(await wrong.text()), secret, 'a wrong code shows the secret of this set-up again');
    assert.match(await (await confirm(mine, totpCode(secret))).text(), /class="recovery-codes"/, 'the secret shown is the one confirmed');
    const late = await confirm(other, totpCode(theirs));
    assert.equal(late.status, 400, 'the other set-up ended when an authenticator was confirmed');
    const confirmed = await server.db('user_factors').where({ kind: 'totp', confirmed: true }).whereIn('user_id', server.db('users').where('username', user.username).select('id'));
    assert.equal(confirmed.length, 1, 'one authenticator: the one set up with the secret shown');
  });

  it('changes nothing at a GET of /account/security/totp: a set-up starts by its button (a form with the CSRF token)', async () => {
    const user = await patientUser();
    const browser = await accountSignIn(user.username, user.password);
    assert.match(await securityPage(browser), /<form method="post" action="\/account\/security\/totp\/new"/);
    const secret = shownTotpSecret(await startSetUp(browser))!;
    const link = await browser.fetch(`${server.issuer}/account/security/totp`);
    assert.equal(link.status, 303, 'a GET goes to the page with the button');
    assert.equal((await browser.fetch(`${server.issuer}/account/security/totp/new`, { method: 'POST', body: form({}) })).status, 403, 'no CSRF token, no new set-up');
    const page = await securityPage(browser);
    const ok = await browser.fetch(`${server.issuer}/account/security/totp`, { method: 'POST', body: form({ csrf: hiddenValue(page, 'csrf'), code: totpCode(secret) }) });
    assert.match(await ok.text(), /class="recovery-codes"/, 'the set-up started by the button is confirmed with its secret');
  });

  it('removes a second factor from /account/security, but not the last one of a user who must have one', async () => {
    for (const requireMfa of [true, false]) {
      const username = `factor${++n}`;
      const user = await addUser(server.db, { username, password: 'correct horse battery', fhirUser: 'Patient/pat-1', attributes: { requireMfa } });
      const { recoveryCodes } = await enrolTotpDirectly(server.db, user.id, server.config.keyEncryptionSecret);
      const browser = new Browser();
      const login = await (await browser.fetch(`${server.issuer}/account/login`)).text();
      await browser.fetch(`${server.issuer}/account/login`, { method: 'POST', body: form({ csrf: hiddenValue(login, 'csrf'), username, password: 'correct horse battery' }) });
      const step = await (await browser.fetch(`${server.issuer}/account/login/next`)).text();
      await browser.fetch(`${server.issuer}/account/login/second-factor`, { method: 'POST', body: form({ csrf: hiddenValue(step, 'csrf'), otp: recoveryCodes[0] }) });
      const page = await securityPage(browser);
      assert.match(page, /Unused recovery codes: 9/);
      const factorId = /name="factor_id" value="([^"]+)"/.exec(page)![1];
      const res = await browser.fetch(`${server.issuer}/account/security/remove`, { method: 'POST', body: form({ csrf: hiddenValue(page, 'csrf'), factor_id: factorId }) });
      const left = await server.db('user_factors').where({ user_id: user.id });
      if (requireMfa) {
        assert.equal(res.status, 400);
        assert.match(await res.text(), /must keep a second factor/);
        assert.equal(left.length, 10, 'nothing removed');
      } else {
        assert.equal(res.status, 303);
        assert.equal(left.length, 0, 'the authenticator and its recovery codes are gone');
        const removed = (await storedEvents()).filter((e) => e.subtype?.[0]?.code === '110137' && e.action === 'D' && e.entity[0].what.identifier.value === user.id);
        assert.equal(removed.length, 1, 'the removal is audited');
      }
    }
  });

  it('lets only a recent sign-in change the second factors: an older session is ended and asked to sign in again', async () => {
    const username = `stale${++n}`;
    const user = await addUser(server.db, { username, password: 'correct horse battery', fhirUser: 'Patient/pat-1' });
    const { recoveryCodes } = await enrolTotpDirectly(server.db, user.id, server.config.keyEncryptionSecret);
    /** A session signed in with a recovery code, as if its cookie were used an hour later. */
    async function staleSession(code: string) {
      const browser = new Browser();
      const login = await (await browser.fetch(`${server.issuer}/account/login`)).text();
      await browser.fetch(`${server.issuer}/account/login`, { method: 'POST', body: form({ csrf: hiddenValue(login, 'csrf'), username, password: 'correct horse battery' }) });
      const step = await (await browser.fetch(`${server.issuer}/account/login/next`)).text();
      await browser.fetch(`${server.issuer}/account/login/second-factor`, { method: 'POST', body: form({ csrf: hiddenValue(step, 'csrf'), otp: code }) });
      const page = await securityPage(browser);
      assert.match(page, /Sign-in and security/);
      await server.db('user_sessions').where({ user_id: user.id, kind: 'account' }).update({ created_at: Math.floor(Date.now() / 1000) - 3600 });
      return { browser, page };
    }
    const expectReauth = async (res: Response) => {
      assert.equal(res.status, 303);
      assert.match(res.headers.get('location') ?? '', /^\/account\/login\?reauth=1/);
      assert.equal((await server.db('user_sessions').where({ user_id: user.id, kind: 'account' })).length, 0, 'the stale session is ended');
    };
    const first = await staleSession(recoveryCodes[0]);
    const factorId = /name="factor_id" value="([^"]+)"/.exec(first.page)![1];
    await expectReauth(await first.browser.fetch(`${server.issuer}/account/security/remove`, { method: 'POST', body: form({ csrf: hiddenValue(first.page, 'csrf'), factor_id: factorId }) }));
    assert.equal((await server.db('user_factors').where({ user_id: user.id, kind: 'totp' })).length, 1, 'nothing removed');
    assert.match(await (await first.browser.fetch(`${server.issuer}/account/login?reauth=1`)).text(), /Sign in again to change how you sign in/);
    const second = await staleSession(recoveryCodes[1]);
    assert.equal((await second.browser.fetch(`${server.issuer}/account/security/totp`)).status, 303);
    assert.equal((await server.db('user_sessions').where({ user_id: user.id, kind: 'account' })).length, 1, 'a GET ends no session');
    await expectReauth(await second.browser.fetch(`${server.issuer}/account/security/totp/new`, { method: 'POST', body: form({ csrf: hiddenValue(second.page, 'csrf') }) }));
  });

  it('answers bad input at the /account sign-in steps with a plain message, starting no session', async () => {
    const browser = new Browser();
    const page = await (await browser.fetch(`${server.issuer}/account/login`)).text();
    const csrf = hiddenValue(page, 'csrf');
    const post = (path: string, data: Record<string, string>) => browser.fetch(`${server.issuer}/account/${path}`, { method: 'POST', body: form(data) });
    for (const path of ['login/second-factor', 'login/enrol', 'login/continue']) {
      assert.match(await (await post(path, { csrf, otp: '123456', code: '123456' })).text(), /took too long/, path);
    }
    for (const credential of ['', 'not json', '{"id":"AAAA"}']) {
      const html = await (await post('passkey', { csrf, credential })).text();
      assert.match(html, /That passkey could not be used/);
      assert.doesNotMatch(html, /Error:|\bat \S+ \(/);
    }
    assert.equal((await post('passkey/options', { csrf: '' })).status, 403);
    assert.equal((await post('passkey', { credential: '{}' })).status, 403, 'CSRF-protected');
    assert.equal(browser.cookie('smart_auth.account'), undefined);
  });

  it('no longer lets a password-only /account session in once the user must use a second factor: the next sign-in sets one up', async () => {
    const user = await patientUser();
    const browser = await accountSignIn(user.username, user.password);
    assert.equal(await appsStatus(cookieOf(browser)), 200);
    await server.db('users').where('username', user.username).update({ attributes: JSON.stringify({ requireMfa: true }) });
    assert.equal(await appsStatus(cookieOf(browser)), 303, 'the session without a second factor opens nothing');
    const page = await (await browser.fetch(`${server.issuer}/account/login`)).text();
    assert.match(page, /name="password"/, 'asked to sign in again');
    await browser.fetch(`${server.issuer}/account/login`, { method: 'POST', body: form({ csrf: hiddenValue(page, 'csrf'), username: user.username, password: user.password }) });
    assert.ok(shownTotpSecret(await (await browser.fetch(`${server.issuer}/account/login/next`)).text()), 'and to set up a second factor');
  });

  it('ends every session and grant of a user who is disabled', async () => {
    const user = await patientUser();
    const browser = await accountSignIn(user.username, user.password);
    const tokens = await authorizedTokens({ server, client: app, scope: SCOPE, username: user.username, password: user.password });
    await disableUser(server.db, user.username);
    assert.equal(await appsStatus(cookieOf(browser)), 303);
    assert.equal((await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, app)).body.error, 'invalid_grant');
    assert.equal(await server.db('user_sessions').whereIn('user_id', server.db('users').where('username', user.username).select('id')).count({ n: '*' }).first().then((r) => Number(r!.n)), 0);
  });

  describe('CLI', () => {
    const cli = (...args: string[]) =>
      runCliPiped(server, { input: args.includes('password') && !args.includes('--password') ? 'piped in secret words\n' : '' }, ...args);

    it('user add --require-mfa leads the user to set up a second factor at the next sign-in', async () => {
      const added = await cli('user', 'add', 'nurse.mfa', '--password', 'correct horse battery', '--fhir-user', 'Practitioner/dr-jones',
        '--role', 'http://terminology.hl7.org/CodeSystem/practitioner-role|nurse', '--purpose', 'TREAT', '--require-mfa', '--json');
      assert.equal(added.code, 0);
      assert.equal(added.json.requireMfa, true);
      const enrolled: { secret?: string } = {};
      const launch = await authorize({ server, client: app, scope: 'openid patient/*.rs launch/patient', username: 'nurse.mfa', password: 'correct horse battery', enrolled, patient: 'pat-1' });
      assert.ok(enrolled.secret);
      assert.ok(launch.code, launch.error);
    });

    it('user mfa --totp prints an otpauth:// URI whose codes sign the user in; --remove takes every factor away', async () => {
      const user = await patientUser();
      const out = await cli('user', 'mfa', user.username, '--totp', '--json');
      assert.equal(out.code, 0);
      const uri = new URL(out.json.otpauth_uri);
      assert.equal(uri.protocol, 'otpauth:');
      assert.equal(uri.host, 'totp');
      assert.equal(uri.searchParams.get('issuer'), '127.0.0.1');
      assert.equal(decodeURIComponent(uri.pathname), `/127.0.0.1:${user.username}`);
      const secret = uri.searchParams.get('secret')!;
      assert.equal(out.json.recovery_codes.length, 10);
      const launch = await authorize({ server, client: app, scope: SCOPE, username: user.username, password: user.password, otp: () => totpCode(secret) });
      assert.ok(launch.code);
      assert.equal((await cli('user', 'mfa', user.username, '--remove')).code, 0);
      const plain = await authorize({ server, client: app, scope: SCOPE, username: user.username, password: user.password });
      assert.ok(plain.code, 'no second factor asked after removal');
      assert.notEqual((await cli('user', 'mfa', user.username)).code, 0, 'one of --totp and --remove is required');
      assert.notEqual((await cli('user', 'mfa', 'nobody-here', '--totp')).code, 0);
    });

    it('user password sets a new password (from --password or stdin) under the same rules, ending sessions', async () => {
      const user = await patientUser();
      const browser = await accountSignIn(user.username, user.password);
      const weak = await cli('user', 'password', user.username, '--password', 'password1');
      assert.notEqual(weak.code, 0);
      assert.match(weak.stderr ?? '', /most common/);
      assert.equal(await appsStatus(cookieOf(browser)), 200);
      assert.equal((await cli('user', 'password', user.username)).code, 0);
      assert.equal(await appsStatus(cookieOf(browser)), 303, 'sessions ended');
      await accountSignIn(user.username, 'piped in secret words');
    });
  });
});
