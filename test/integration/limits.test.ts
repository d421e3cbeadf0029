// Login throttling (per user, in the database; per address) and request rate limits on /token and on
// registration (/register, the developer portal's and the demo launcher's forms), through the real server.
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../support/server.ts';
import { Browser, form, hiddenValue } from '../support/oauth.ts';

/** The throttle and the rate limits are wired in app.ts with settings in config.ts; without them these tests cannot run. */
function requireWiring(this: Mocha.Context, server: TestServer, setting: string) {
  if (!(setting in server.config)) {
    console.log(`      (skipped: config has no ${setting}; login throttle / rate limits are not wired into server/app.ts yet)`);
    this.skip();
  }
}

const errorMessage = (html: string) => /<p class="error" role="alert">([^<]*)</.exec(html)?.[1];

/** Opens an authorization in a fresh browser and returns its login page. */
async function loginPage(server: TestServer, client: { client_id: string; redirect_uri: string }) {
  const browser = new Browser();
  const { res, url } = await browser.follow(`${server.issuer}/authorize?${new URLSearchParams({
    response_type: 'code', client_id: client.client_id, redirect_uri: client.redirect_uri, scope: 'openid patient/*.rs launch/patient', state: 's',
    aud: server.fhirBase, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256',
  })}`, server.issuer);
  return { browser, html: await res.text(), uid: /\/interaction\/([^/?]+)/.exec(url)![1] };
}

async function interactionLogin(server: TestServer, client: { client_id: string; redirect_uri: string }, username: string, password: string) {
  const { browser, html, uid } = await loginPage(server, client);
  return browser.fetch(`${server.issuer}/interaction/${uid}/login`, { method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), username, password }) });
}

async function accountLogin(server: TestServer, username: string, password: string) {
  const browser = new Browser();
  const html = await (await browser.fetch(`${server.issuer}/account/login`)).text();
  return browser.fetch(`${server.issuer}/account/login`, {
    method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), username, password, return_to: hiddenValue(html, 'return_to') }),
  });
}

describe('login throttling', () => {
  let server: TestServer;
  let client: Awaited<ReturnType<TestServer['addClient']>>;
  before(async function () {
    // A high address limit: this block is about the per-user lockout, all from 127.0.0.1.
    server = await startTestServer({ LOGIN_MAX_ADDRESS_FAILURES: '100' });
    requireWiring.call(this, server, 'loginMaxFailures');
    client = await server.addClient({ auth: { kind: 'public' } });
  });
  after(() => server?.stop());

  it('after 5 wrong passwords the right one fails too, with the same message as a wrong password; others are unaffected', async () => {
    const wrong: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await interactionLogin(server, client, 'dr.smith', `wrong-password-${i}`);
      assert.equal(res.status, 200);
      wrong.push(errorMessage(await res.text())!);
    }
    assert.ok(wrong[0]);
    assert.ok(wrong.every((m) => m === wrong[0]));

    const locked = await interactionLogin(server, client, 'dr.smith', 'demo-password-1');
    assert.equal(locked.status, 200);
    assert.equal(locked.headers.get('retry-after'), null);
    const page = await locked.text();
    assert.ok(page.includes('name="password"'), 'the login form is shown again');
    assert.equal(errorMessage(page), wrong[0], 'a locked user sees exactly the wrong-password message');
    assert.doesNotMatch(page, /lock/i);

    // The lock is in the database: the account pages refuse the user as well, the same way.
    const account = await accountLogin(server, 'Dr.Smith', 'demo-password-1');
    assert.equal(account.status, 200);
    assert.equal(errorMessage(await account.text()), wrong[0]);
    assert.equal((await accountLogin(server, 'dr.smith', 'demo-password-1')).status, 200);

    const other = await interactionLogin(server, client, 'dr.jones', 'demo-password-2');
    assert.ok([302, 303].includes(other.status), `another user signs in (status ${other.status})`);
    const amy = await accountLogin(server, 'amy', 'demo-password-3');
    assert.equal(amy.status, 303);
  });

  it('a successful login clears earlier failures', async () => {
    for (let i = 0; i < 4; i++) await accountLogin(server, 'amy', 'wrong-password');
    assert.equal((await accountLogin(server, 'amy', 'demo-password-3')).status, 303);
    for (let i = 0; i < 4; i++) await accountLogin(server, 'amy', 'wrong-password');
    assert.equal((await accountLogin(server, 'amy', 'demo-password-3')).status, 303);
  });
});

describe('per-address limits and request rate limits', () => {
  let server: TestServer;
  let client: Awaited<ReturnType<TestServer['addClient']>>;
  before(async function () {
    server = await startTestServer({ LOGIN_MAX_ADDRESS_FAILURES: '3', RATE_LIMIT_TOKEN_PER_MINUTE: '5', RATE_LIMIT_INTROSPECT_PER_MINUTE: '4', RATE_LIMIT_REGISTER_PER_MINUTE: '3' });
    requireWiring.call(this, server, 'rateLimitTokenPerMinute');
    client = await server.addClient({ auth: { kind: 'public' } });
  });
  after(() => server?.stop());

  it('answers 429 with Retry-After to an address over its login failures, on both login forms', async () => {
    for (const name of ['nobody-1', 'nobody-2', 'nobody-3']) assert.equal((await accountLogin(server, name, 'wrong-password')).status, 200);
    const account = await accountLogin(server, 'amy', 'demo-password-3');
    assert.equal(account.status, 429);
    assert.ok(Number(account.headers.get('retry-after')) > 0);
    assert.ok((await account.text()).includes('name="password"'));
    const interaction = await interactionLogin(server, client, 'dr.jones', 'demo-password-2');
    assert.equal(interaction.status, 429);
    assert.ok(Number(interaction.headers.get('retry-after')) > 0);
  });

  it('answers 429 with Retry-After at /token after the limit', async () => {
    const post = () => fetch(`${server.issuer}/token`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: 'nope', client_id: client.client_id, redirect_uri: client.redirect_uri, code_verifier: 'x'.repeat(43) }),
    });
    for (let i = 0; i < 5; i++) assert.notEqual((await post()).status, 429, `request ${i + 1}`);
    const res = await post();
    assert.equal(res.status, 429);
    const retryAfter = Number(res.headers.get('retry-after'));
    assert.ok(retryAfter > 0 && retryAfter <= 60, `Retry-After ${retryAfter}`);
    const body = await res.json();
    assert.equal(body.error, 'temporarily_unavailable');
    assert.match(body.error_description, /retry after \d+ seconds/);
    assert.notEqual((await fetch(`${server.issuer}/.well-known/openid-configuration`)).status, 429, 'other endpoints are not limited');
  });

  /** An OAuth endpoint's refusal over its limit: 429, Retry-After within the window, temporarily_unavailable. */
  async function assertLimited(res: Response) {
    assert.equal(res.status, 429);
    const retryAfter = Number(res.headers.get('retry-after'));
    assert.ok(retryAfter > 0 && retryAfter <= 60, `Retry-After ${retryAfter}`);
    assert.equal((await res.json()).error, 'temporarily_unavailable');
  }
  const postForm = (path: string, form: Record<string, string>) =>
    fetch(`${server.issuer}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form) });

  it('counts /revoke against the /token budget (after the test above used it up): 429 with Retry-After', async () => {
    await assertLimited(await postForm('/revoke', { token: 'x', client_id: client.client_id }));
    await assertLimited(await postForm('/Revoke/', { token: 'x', client_id: client.client_id }));
  });

  it('answers 429 with Retry-After at /introspect after its own limit, whatever the /token budget', async () => {
    // Unauthenticated callers too: each would otherwise cost a client lookup and a refusal record.
    for (let i = 0; i < 4; i++) assert.equal((await postForm('/introspect', { token: 'x' })).status, 401, `request ${i + 1}`);
    await assertLimited(await postForm('/introspect', { token: 'x' }));
    await assertLimited(await postForm('/Introspect/', { token: 'x' }));
  });

  it('answers 429 with Retry-After at /register after the limit', async () => {
    const register = (path = '/register') => fetch(`${server.issuer}${path}`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_name: 'Flood', redirect_uris: ['http://127.0.0.1:9999/callback'], token_endpoint_auth_method: 'none' }),
    });
    for (let i = 0; i < 3; i++) assert.equal((await register()).status, 201, `registration ${i + 1}`);
    const res = await register();
    assert.equal(res.status, 429);
    assert.ok(Number(res.headers.get('retry-after')) > 0);
    assert.equal((await res.json()).error, 'temporarily_unavailable');
    assert.equal((await register('/Register/')).status, 429, 'the provider routes /Register/ to /register: it counts the same');
  });
});

describe('the rate limit of the registration forms', () => {
  let server: TestServer;
  beforeEach(async () => {
    server = await startTestServer({ RATE_LIMIT_REGISTER_PER_MINUTE: '2' });
  });
  afterEach(() => server?.stop());

  /** A form over the limit gets a page like the portal's other errors: 429, Retry-After, a message, not cached. */
  async function assertRefusedWithPage(res: Response) {
    assert.equal(res.status, 429);
    assert.ok(Number(res.headers.get('retry-after')) > 0);
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.match(await res.text(), /<h1>Too many registrations<\/h1>[\s\S]*Too many apps were registered from your network\. Try again in \d+ seconds\./);
  }

  /** POST /register (RFC 7591) shares the forms' budget: one per address, whichever way it registers. */
  async function assertApiRefused() {
    const api = await fetch(`${server.issuer}/register`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_name: 'Flood', redirect_uris: ['http://127.0.0.1:9999/callback'], token_endpoint_auth_method: 'none' }),
    });
    assert.equal(api.status, 429, 'one budget per address for every way to register');
    assert.equal((await api.json()).error, 'temporarily_unavailable');
  }

  it('answers the developer portal\'s POST /apps with a 429 page after the limit, which /register shares', async () => {
    const browser = new Browser();
    const csrf = hiddenValue(await (await browser.fetch(`${server.issuer}/apps`)).text(), 'csrf');
    const register = (path = '/apps') => browser.fetch(`${server.issuer}${path}`, {
      method: 'POST', body: form({ csrf, client_name: 'Flood', redirect_uris: 'http://127.0.0.1:9999/callback', auth: 'public' }),
    });
    for (let i = 0; i < 2; i++) {
      const res = await register();
      assert.equal(res.status, 200, `registration ${i + 1}`);
      assert.match(await res.text(), /App registered/);
    }
    await assertRefusedWithPage(await register());
    await assertRefusedWithPage(await register('/Apps/'));
    await assertApiRefused();
  });

  it('answers the demo launcher\'s POST /launcher/register with the same page, on the same budget', async () => {
    const browser = new Browser();
    const csrf = hiddenValue(await (await browser.fetch(`${server.issuer}/launcher`)).text(), 'csrf');
    const register = () => browser.fetch(`${server.issuer}/launcher/register`, {
      method: 'POST', body: form({ csrf, launch_uri: 'http://127.0.0.1:9999/launch', redirect_uri: 'http://127.0.0.1:9999/callback', client_type: 'public' }),
    });
    for (let i = 0; i < 2; i++) assert.equal((await register()).status, 201, `registration ${i + 1}`);
    await assertRefusedWithPage(await register());
    await assertApiRefused();
  });
});
