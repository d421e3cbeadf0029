// A person's account pages: sign in, list the apps they granted (the SMART management_endpoint),
// and revoke one, after which its tokens stop working everywhere.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { startTestServer, type TestServer } from '../support/server.ts';
import { refuseAuditRecords } from '../support/audit-refusal.ts';
import { authorize, Browser, exchangeCode, form, hiddenValue, introspectToken, tokenRequest } from '../support/oauth.ts';

const SCOPE = 'launch/patient openid fhirUser offline_access patient/*.rs';
const XSS = '<img src=x onerror=alert(1)>';

/** Signs in at /account/login; returns the response to the form post. */
async function signIn(server: TestServer, browser: Browser, username: string, password: string, returnTo?: string) {
  const page = await browser.fetch(`${server.issuer}/account/login${returnTo === undefined ? '' : `?return_to=${encodeURIComponent(returnTo)}`}`);
  const html = await page.text();
  const fields: Record<string, string> = { csrf: hiddenValue(html, 'csrf'), username, password, return_to: hiddenValue(html, 'return_to') };
  return browser.fetch(`${server.issuer}/account/login`, { method: 'POST', body: form(fields) });
}

async function appsPage(server: TestServer, browser: Browser) {
  const res = await browser.fetch(`${server.issuer}/account/apps`);
  return { res, html: await res.text() };
}

/** The grant ids of the revoke forms: a card of repeated grants sends them space-separated. */
const grantIds = (html: string) => [...html.matchAll(/name="grant_id" value="([^"]*)"/g)].flatMap((m) => m[1].split(' '));

describe('account: your apps (/account/apps)', () => {
  let server: TestServer;
  let app: { client_id: string; client_secret?: string; redirect_uri: string };
  before(async () => {
    server = await startTestServer();
    app = await server.addClient({ name: XSS, auth: { kind: 'secret' } });
  });
  after(() => server.stop());

  const fhirStatus = async (token: string) => (await fetch(`${server.fhirBase}/Patient/pat-1`, { headers: { authorization: `Bearer ${token}` } })).status;
  const introspect = async (token: string) => {
    const res = await introspectToken(server.issuer, app, token);
    assert.equal(res.status, 200);
    return (await res.json()) as { active: boolean };
  };

  it('sends a visitor without a session to the login page, and back after login', async () => {
    const browser = new Browser();
    const res = await browser.fetch(`${server.issuer}/account/apps`);
    assert.equal(res.status, 303);
    assert.equal(res.headers.get('location'), '/account/login?return_to=%2Faccount%2Fapps');
    const revoke = await browser.fetch(`${server.issuer}/account/apps/revoke`, { method: 'POST', body: form({ grant_id: 'x' }) });
    assert.equal(revoke.status, 303);
    assert.match(revoke.headers.get('location')!, /^\/account\/login/);

    const login = await signIn(server, browser, 'amy', 'demo-password-3', '/account/apps');
    assert.equal(login.status, 303);
    assert.equal(login.headers.get('location'), '/account/apps');
    const cookie = login.headers.getSetCookie().find((c) => c.startsWith('smart_auth.account='))!;
    assert.match(cookie, /httponly/i);
    assert.match(cookie, /samesite=lax/i);
    assert.match(cookie, /path=\/(;|$)/i, 'Path=/, as its __Host- name over https needs');
    assert.match(cookie, /max-age=28800|expires=/i);
    const page = await appsPage(server, browser);
    assert.equal(page.res.status, 200);
    assert.match(page.html, /Your apps/);
    assert.match(page.html, /Amy Shaw/);
  });

  it('returns only to local paths under /account/ after login', async () => {
    for (const target of ['https://evil.example.org/account/apps', '//evil.example.org/account/', '/account/../admin', '/\\evil.example.org', '/launcher']) {
      const res = await signIn(server, new Browser(), 'amy', 'demo-password-3', target);
      assert.equal(res.status, 303);
      assert.equal(res.headers.get('location'), '/account/apps', target);
    }
  });

  it('gives one generic message for every failed login and starts no session', async () => {
    const messages: string[] = [];
    for (const [username, password] of [['amy', 'wrong-password'], ['nobody', 'demo-password-3'], ['amy', ''], ['', '']]) {
      const browser = new Browser();
      const res = await signIn(server, browser, username, password);
      assert.equal(res.status, 200);
      const html = await res.text();
      messages.push(/class="error" role="alert">([^<]*)</.exec(html)?.[1] ?? '');
      assert.equal(res.headers.getSetCookie().some((c) => c.startsWith('smart_auth.account=')), false);
      assert.equal((await browser.fetch(`${server.issuer}/account/apps`)).status, 303);
    }
    assert.deepEqual(new Set(messages), new Set(['The username or password is not correct.']));
    const browser = new Browser();
    const page = await browser.fetch(`${server.issuer}/account/login`);
    const noCsrf = await browser.fetch(`${server.issuer}/account/login`, { method: 'POST', body: form({ username: 'amy', password: 'demo-password-3' }) });
    assert.equal(page.status, 200);
    assert.equal(noCsrf.status, 403, 'the login form is CSRF-protected');
  });

  it('refuses a forged, tampered, expired or ended session cookie', async () => {
    const { id } = await server.db('users').where('username', 'amy').first('id');
    // A cookie signed as koa (keygrip) signs it, with the server's first cookie secret.
    const signed = (value: string) => {
      const sig = createHmac('sha1', server.config.cookieSecrets[0]).update(`smart_auth.account=${value}`).digest('base64')
        .replace(/\/|\+|=/g, (c) => ({ '/': '_', '+': '-', '=': '' })[c]!);
      return `smart_auth.account=${value}; smart_auth.account.sig=${sig}`;
    };
    const status = async (cookie: string) => (await fetch(`${server.issuer}/account/apps`, { headers: { cookie }, redirect: 'manual' })).status;
    const browser = new Browser();
    await signIn(server, browser, 'amy', 'demo-password-3');
    const token = browser.cookie('smart_auth.account')!;
    assert.equal(await status(signed(token)), 200, 'a correctly signed, live session works (so the cases below test what they say)');
    assert.equal(await status(`smart_auth.account=${token}`), 303, 'unsigned');
    assert.equal(await status(signed(token).replace(/sig=(.*)$/, 'sig=$1x')), 303, 'bad signature');
    const now = Math.floor(Date.now() / 1000);
    assert.equal(await status(signed(`${id}.${now + 600}`)), 303, 'a signed user id is no session (the old stateless cookie)');
    assert.equal(await status(signed('a-token-the-server-never-issued')), 303, 'unknown token');
    await server.db('user_sessions').where({ user_id: id, kind: 'account' }).update({ expires_at: now - 1 });
    assert.equal(await status(signed(token)), 303, 'expired');
  });

  it('lists the granted app with its patient and scopes, and revoking it ends every token', async () => {
    const launch = await authorize({ server, client: app, scope: SCOPE, username: 'amy', password: 'demo-password-3' });
    const tokens = (await exchangeCode(server.issuer, launch, app)).body;
    assert.equal(tokens.patient, 'pat-1');
    assert.equal(await fhirStatus(tokens.access_token), 200);
    assert.equal((await introspect(tokens.access_token)).active, true);

    const browser = new Browser();
    await signIn(server, browser, 'amy', 'demo-password-3');
    const { html } = await appsPage(server, browser);
    assert.ok(html.includes('&lt;img src=x onerror=alert(1)&gt;'), 'the app name, escaped');
    assert.ok(!html.includes('<img src=x'), 'never raw markup');
    assert.match(html, /Patient: <strong>Amy V\. Shaw<\/strong> <span class="muted">\(pat-1\)<\/span>/);
    assert.match(html, /all types of your data/, 'scopes in plain words');
    assert.match(html, /Keep access when you are not using the app/);
    assert.match(html, /Allowed \d{4}-\d\d-\d\d \d\d:\d\d UTC/);
    const ids = grantIds(html);
    assert.equal(ids.length, 1);
    assert.equal(ids[0], (await server.host.provider.RefreshToken.find(tokens.refresh_token))?.grantId);

    const noCsrf = await browser.fetch(`${server.issuer}/account/apps/revoke`, { method: 'POST', body: form({ grant_id: ids[0] }) });
    assert.equal(noCsrf.status, 403);
    assert.equal(await fhirStatus(tokens.access_token), 200, 'nothing was revoked without CSRF');

    const revoke = await browser.fetch(`${server.issuer}/account/apps/revoke`, { method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), grant_id: ids[0] }) });
    assert.equal(revoke.status, 303);
    assert.equal(revoke.headers.get('location'), '/account/apps?revoked=1');
    const after = await (await browser.fetch(`${server.issuer}/account/apps?revoked=1`)).text();
    assert.match(after, /Access revoked/);
    assert.deepEqual(grantIds(after), []);

    const refresh = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, app);
    assert.equal(refresh.res.status, 400);
    assert.equal(refresh.body.error, 'invalid_grant');
    assert.equal((await introspect(tokens.access_token)).active, false);
    assert.equal((await introspect(tokens.refresh_token)).active, false);
    assert.equal(await fhirStatus(tokens.access_token), 401);

    const again = await browser.fetch(`${server.issuer}/account/apps/revoke`, { method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), grant_id: ids[0] }) });
    assert.equal(again.status, 404);
    assert.match(await again.text(), /That access was not found/);
  });

  it("records a revocation in the audit trail: who ended which app's access, as for /revoke and a logout", async () => {
    const launch = await authorize({ server, client: app, scope: SCOPE, username: 'amy', password: 'demo-password-3' });
    await exchangeCode(server.issuer, launch, app);
    const browser = new Browser();
    await signIn(server, browser, 'amy', 'demo-password-3');
    const { html } = await appsPage(server, browser);
    const before = (await server.audit.search({ subtype: '110135', limit: 1000 })).length;
    const revoke = await browser.fetch(`${server.issuer}/account/apps/revoke`, { method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), grant_id: grantIds(html).join(' ') }) });
    assert.equal(revoke.status, 303);
    const recorded = (await server.audit.search({ subtype: '110135', limit: 1000 })).slice(before) as any[];
    const amy = (await server.db('users').where('username', 'amy').first('id')).id;
    assert.ok(recorded.length > 0, 'the revocation is in the trail');
    for (const event of recorded) {
      assert.deepEqual([event.action, event.outcome], ['D', '0']);
      assert.ok(event.agent.some((a: any) => a.who?.identifier?.value === amy), 'the person who revoked it');
      assert.ok(event.agent.some((a: any) => a.who?.identifier?.value === app.client_id), 'the app whose access ended');
      assert.ok(!JSON.stringify(event).includes(grantIds(html)[0]), 'the grant by its digest only');
    }
  });

  it('revokes nothing when the revocation cannot be recorded', async () => {
    const launch = await authorize({ server, client: app, scope: SCOPE, username: 'amy', password: 'demo-password-3' });
    const tokens = (await exchangeCode(server.issuer, launch, app)).body;
    const browser = new Browser();
    await signIn(server, browser, 'amy', 'demo-password-3');
    const { html } = await appsPage(server, browser);
    await refuseAuditRecords(server.db, true, '110113');
    try {
      const revoke = await browser.fetch(`${server.issuer}/account/apps/revoke`, { method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), grant_id: grantIds(html).join(' ') }) });
      assert.equal(revoke.status, 503);
      assert.doesNotMatch(await revoke.text(), /refused|SQLITE|audit_events/i, 'no internals');
    } finally {
      await refuseAuditRecords(server.db, false);
    }
    assert.equal(await fhirStatus(tokens.access_token), 200, 'the access goes on');
    assert.equal((await introspect(tokens.refresh_token)).active, true);
  });

  it("does nothing with another person's grant id but say it was not found", async () => {
    const launch = await authorize({ server, client: app, scope: SCOPE, username: 'amy', password: 'demo-password-3' });
    const tokens = (await exchangeCode(server.issuer, launch, app)).body;
    const amy = new Browser();
    await signIn(server, amy, 'amy', 'demo-password-3');
    const [amysGrant] = grantIds((await appsPage(server, amy)).html);
    assert.ok(amysGrant);

    const smith = new Browser();
    await signIn(server, smith, 'dr.smith', 'demo-password-1');
    const page = await appsPage(server, smith);
    assert.ok(!grantIds(page.html).includes(amysGrant), "amy's grant is not on dr.smith's list");
    const res = await smith.fetch(`${server.issuer}/account/apps/revoke`, { method: 'POST', body: form({ csrf: hiddenValue(page.html, 'csrf'), grant_id: amysGrant }) });
    assert.equal(res.status, 404);
    const html = await res.text();
    assert.match(html, /That access was not found/);
    assert.doesNotMatch(html, /Amy Shaw/);

    assert.ok(await server.host.provider.Grant.find(amysGrant), 'the grant is still there');
    assert.equal(await fhirStatus(tokens.access_token), 200);
    assert.equal((await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, app)).res.status, 200);
  });

  it('signs out with a CSRF-protected POST', async () => {
    const browser = new Browser();
    await signIn(server, browser, 'dr.smith', 'demo-password-1');
    const { html } = await appsPage(server, browser);
    assert.match(html, /Jane Smith/);
    const noCsrf = await browser.fetch(`${server.issuer}/account/logout`, { method: 'POST', body: form({}) });
    assert.equal(noCsrf.status, 403);
    assert.equal((await appsPage(server, browser)).res.status, 200, 'still signed in');
    const out = await browser.fetch(`${server.issuer}/account/logout`, { method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf') }) });
    assert.equal(out.status, 303);
    assert.equal((await appsPage(server, browser)).res.status, 303);
  });
});
