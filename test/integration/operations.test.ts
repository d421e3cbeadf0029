// What operators rely on: health endpoints, HTTPS with TLS 1.2 at least, X-Forwarded-* trusted only when
// configured, security headers and cookie flags, body size limits.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestServer, type TestServer } from '../support/server.ts';
import { Browser, form, hiddenValue, tokenRequest } from '../support/oauth.ts';
import { addUser } from '../../server/oidc/users.ts';

describe('operations', () => {
  describe('health', () => {
    let server: TestServer;
    before(async () => { server = await startTestServer(); });
    after(() => server.stop());

    it('answers liveness and readiness', async () => {
      assert.deepEqual(await (await fetch(`${server.issuer}/health/live`)).json(), { status: 'ok' });
      const ready = await fetch(`${server.issuer}/health/ready`);
      assert.equal(ready.status, 200);
      assert.deepEqual((await ready.json()).checks, { database: true, keys: true });
    });

    it('is not ready when the database does not answer', async () => {
      const broken = await startTestServer();
      await broken.db.destroy();
      try {
        const res = await fetch(`${broken.issuer}/health/ready`);
        assert.equal(res.status, 503);
        assert.equal((await res.json()).checks.database, false);
      } finally {
        await broken.stop().catch(() => undefined);
      }
    });

    it('names its endpoints from ISSUER whatever X-Forwarded-Proto and -Host say, behind a trusted proxy too', async () => {
      const doc = async (target: TestServer) => (await (await fetch(`${target.issuer}/.well-known/openid-configuration`, { headers: { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil.example' } })).json());
      assert.equal((await doc(server)).token_endpoint, `${server.issuer}/token`, 'forwarded headers ignored by default');
      const proxied = await startTestServer({ TRUST_PROXY: 'true' });
      try {
        assert.equal((await doc(proxied)).token_endpoint, `${proxied.issuer}/token`, 'and behind a proxy, which may pass on what a client sent');
      } finally {
        await proxied.stop();
      }
    });
  });

  describe('HTTPS', () => {
    let dir: string;
    let server: TestServer;
    before(async function () {
      dir = mkdtempSync(join(tmpdir(), 'smart-auth-tls-'));
      try {
        execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
          '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
      } catch {
        this.skip(); // no openssl on this machine
      }
      server = await startTestServer({ TLS_CERT_FILE: join(dir, 'cert.pem'), TLS_KEY_FILE: join(dir, 'key.pem') });
    });
    after(async () => {
      await server?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    const get = (maxVersion: 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3') => new Promise<number>((resolve, reject) => {
      const req = request(`${server.url}/health/live`, { rejectUnauthorized: false, maxVersion, minVersion: maxVersion === 'TLSv1.1' ? 'TLSv1' : 'TLSv1.2' }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      req.end();
    });

    it('serves TLS 1.2 and 1.3, and refuses TLS 1.1', async () => {
      assert.ok(server.url.startsWith('https://'));
      assert.equal(await get('TLSv1.2'), 200);
      assert.equal(await get('TLSv1.3'), 200);
      await assert.rejects(get('TLSv1.1'));
    });
  });

  it('refuses half a TLS configuration with a clear message', async () => {
    await assert.rejects(startTestServer({ TLS_CERT_FILE: '/nonexistent/cert.pem' }), /TLS_CERT_FILE and TLS_KEY_FILE go together/);
  });
});

describe('metrics', () => {
  it('counts requests by route and status, tokens by grant type, guard decisions and audit writes', async () => {
    const server = await startTestServer();
    try {
      const client = await server.addClient({ name: 'm', redirectUris: [], auth: { kind: 'secret' }, grantTypes: ['client_credentials'], scope: 'system/Patient.rs' });
      const { access_token: token } = (await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, client)).body;
      await fetch(`${server.fhirBase}/Patient/pat-1`, { headers: { authorization: `Bearer ${token}` } });
      await fetch(`${server.fhirBase}/Patient/pat-1`);
      const text = await (await fetch(`${server.issuer}/metrics`)).text();
      assert.match(text, /smart_auth_http_requests_total\{route="\/token",method="POST",status="200"\} 1/);
      assert.match(text, /smart_auth_tokens_issued_total\{grant_type="client_credentials"\} 1/);
      assert.match(text, /smart_auth_guard_decisions_total\{interaction="read",outcome="allowed"\} 1/);
      assert.match(text, /smart_auth_guard_decisions_total\{interaction="none",outcome="refused"\} 1/);
      assert.match(text, /smart_auth_audit_write_seconds_count\{result="stored"\} 2/);
      assert.match(text, /smart_auth_db_pool_connections\{state="used"\}/);
      assert.ok(!text.includes(token), 'no token in metrics');
    } finally {
      await server.stop();
    }
  });
});

describe('what every page and cookie carries', () => {
  let server: TestServer;
  let proxied: TestServer;
  /** An https ISSUER behind a TLS proxy the server was not told to trust (TRUST_PROXY off): it sees plain http. */
  let untrustedProxy: TestServer;
  before(async () => {
    server = await startTestServer();
    proxied = await startTestServer({ TRUST_PROXY: 'true' });
    untrustedProxy = await startTestServer({ ISSUER: 'https://auth.example.org' });
  });
  after(async () => {
    await server.stop();
    await proxied.stop();
    await untrustedProxy.stop();
  });

  /** An authorization request, and the login page it leads to, as a browser reaching `target` over http or (through a proxy) https. */
  async function loginPage(target: TestServer, proto: 'http' | 'https') {
    const app = await target.addClient({ auth: { kind: 'public' } });
    const headers = { 'x-forwarded-proto': proto };
    const params = new URLSearchParams({
      response_type: 'code', client_id: app.client_id, redirect_uri: app.redirect_uri, scope: 'openid launch/patient patient/*.rs', state: 's',
      aud: target.fhirBase, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256',
    });
    const authorize = await fetch(`${target.issuer}/authorize?${params}`, { headers, redirect: 'manual' });
    const cookies = authorize.headers.getSetCookie();
    const interaction = new URL(authorize.headers.get('location')!, target.issuer);
    const page = await fetch(new URL(`${interaction.pathname}${interaction.search}`, target.issuer), {
      headers: { ...headers, cookie: cookies.map((c) => c.split(';')[0]).join('; ') },
    });
    return { authorize, cookies, page };
  }

  it('sends a CSP without inline script, no framing and no referrer on every page; HSTS only over https', async () => {
    for (const [target, proto] of [[server, 'http'], [proxied, 'https']] as const) {
      const { authorize, page } = await loginPage(target, proto);
      assert.equal(page.status, 200);
      assert.match(await page.text(), /name="password"/);
      for (const res of [authorize, page, await fetch(`${target.issuer}/.well-known/smart-configuration`, { headers: { 'x-forwarded-proto': proto } })]) {
        const csp = res.headers.get('content-security-policy') ?? '';
        // Only pages with a passkey form load a script, and only this server's own file.
        assert.match(csp, /script-src '(none|self)'/);
        assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
        assert.match(csp, /frame-ancestors 'none'/);
        assert.equal(res.headers.get('referrer-policy'), 'no-referrer');
        assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
        assert.equal(Boolean(res.headers.get('strict-transport-security')), proto === 'https', `HSTS over ${proto}`);
      }
    }
  });

  it('sets cookies HttpOnly and SameSite, and Secure behind https', async () => {
    for (const [target, proto] of [[server, 'http'], [proxied, 'https']] as const) {
      const { cookies } = await loginPage(target, proto);
      assert.ok(cookies.length > 0);
      for (const cookie of cookies) {
        assert.match(cookie, /;\s*httponly/i, cookie);
        assert.match(cookie, /;\s*samesite=lax/i, cookie);
        assert.equal(/;\s*secure/i.test(cookie), proto === 'https', `${proto}: ${cookie}`);
      }
    }
  });

  it('sets cookies Secure and sends HSTS under an https ISSUER, also when the server sees plain http (TRUST_PROXY off)', async () => {
    const { authorize, cookies, page } = await loginPage(untrustedProxy, 'http');
    assert.equal(page.status, 200);
    assert.ok(cookies.length > 0);
    for (const cookie of [...cookies, ...page.headers.getSetCookie()]) assert.match(cookie, /;\s*secure/i, cookie);
    for (const res of [authorize, page]) assert.equal(res.headers.get('strict-transport-security'), 'max-age=31536000; includeSubDomains');
  });

  it('names its cookies __Host- under an https ISSUER, so that no sibling subdomain can plant them', async () => {
    const { cookies, page } = await loginPage(untrustedProxy, 'http');
    const set = [...cookies, ...page.headers.getSetCookie()];
    const hostOnly = (cookie: string) => /^__Host-/.test(cookie) && /;\s*path=\/(;|$)/i.test(cookie) && /;\s*secure/i.test(cookie) && !/;\s*domain=/i.test(cookie);
    assert.ok(set.some((c) => c.startsWith('__Host-smart_auth.csrf=')) && set.every((c) => hostOnly(c) || /^_interaction/.test(c)), set.join('\n'));

    // The account session, after a sign-in at /account; oidc-provider's session (which /logout starts).
    const browser = new Browser();
    await addUser(untrustedProxy.db, { username: 'host.cookie', password: 'correct horse battery', fhirUser: 'Patient/pat-1' });
    const login = await (await browser.fetch(`${untrustedProxy.issuer}/account/login`)).text();
    const res = await browser.fetch(`${untrustedProxy.issuer}/account/login`, {
      method: 'POST', body: form({ csrf: hiddenValue(login, 'csrf'), username: 'host.cookie', password: 'correct horse battery' }),
    });
    assert.equal(res.status, 303);
    const sessions = [...res.headers.getSetCookie(), ...(await fetch(`${untrustedProxy.issuer}/logout`)).headers.getSetCookie()];
    for (const name of ['__Host-smart_auth.account=', '__Host-_session=']) assert.ok(sessions.some((c) => c.startsWith(name)), `${name} in ${sessions.join('\n')}`);
    assert.ok(sessions.every(hostOnly), sessions.join('\n'));
  });

  it('refuses an oversized body with 413 at the OAuth endpoints, on forms and at /fhir', async () => {
    const big = `grant_type=client_credentials&x=${'a'.repeat(2 * 1024 * 1024)}`;
    for (const path of ['/token', '/register', '/introspect', '/revoke', '/interaction/x/login', '/apps', '/fhir/Patient']) {
      const type = path === '/register' ? 'application/json' : path.startsWith('/fhir') ? 'application/fhir+json' : 'application/x-www-form-urlencoded';
      const res = await fetch(`${server.issuer}${path}`, { method: 'POST', headers: { 'content-type': type }, body: big });
      assert.equal(res.status, 413, path);
      const body = await res.text();
      assert.doesNotMatch(body, /at \w+ \(|node_modules/, `${path}: no stack trace`);
      if (['/token', '/register', '/introspect', '/revoke'].includes(path)) assert.equal(JSON.parse(body).error, 'invalid_request');
    }
  });
});
