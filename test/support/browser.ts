// A real Chromium for end-to-end tests of the server-rendered authorization pages.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { startTestServer, type TestServer } from './server.ts';
import { pkce, tokenRequest } from './oauth.ts';

export const CHROMIUM = '/usr/bin/chromium';

const ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

/** Skips the suite when Chromium is missing on a workstation; fails it on CI, where it must be there. */
export function requireChromium(ctx: Mocha.Context): void {
  if (existsSync(CHROMIUM)) return;
  if (process.env.CI) throw new Error(`${CHROMIUM} is missing on CI: the browser tests cannot run (.ci/run installs it with apt-get).`);
  console.warn(`    skipping browser tests: ${CHROMIUM} not found; install it with: apt-get install -y chromium`);
  ctx.skip();
}

/** Headless Chromium with a new, empty, temporary profile. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
}

/**
 * The URL the browser is sent to at the app's redirect_uri (where nothing listens). Call it before
 * the click that leads there. This watches requests rather than using page.route(): the server
 * reaches the app through a redirect, and Playwright's routing does not intercept redirected requests.
 */
export async function appRedirect(page: Page, redirectUri: string): Promise<URL> {
  const errorPage = page.waitForEvent('framenavigated', { predicate: (frame) => frame === page.mainFrame() && frame.url().startsWith('chrome-error:'), timeout: 10_000 })
    .catch(() => undefined);
  const request = await page.waitForRequest((r) => r.isNavigationRequest() && r.url().startsWith(redirectUri));
  // Where nothing listens, the browser lands on its error page, and that navigation would interrupt the
  // test's next one if it were not awaited here.
  if (!(await request.response())) await errorPage;
  return new URL(request.url());
}

/** A registered app as the tests use it. */
export type TestApp = Awaited<ReturnType<TestServer['addClient']>>;

/** What the tests of a suite driven in Chromium share; read it in hooks and tests, not in the describe body. */
export interface ChromiumSuite {
  browser: Browser;
  server: TestServer;
  /** The app registered for the suite. */
  app: TestApp;
  /** A new context (an empty profile) and page for each test. */
  context: BrowserContext;
  page: Page;
  /** Opens the app's (or `client`'s) authorization request in the page; returns what the app keeps to check the answer. */
  startAuthorization(scope: string, extra?: Record<string, string>, client?: TestApp): Promise<{ state: string; verifier: string }>;
  /** Fills and submits the password form of a login page (on `page`, the test's page by default). */
  signIn(username: string, password: string, page?: Page): Promise<void>;
  /** Clicks `selector` and returns the URL the browser is then sent to at the app. */
  backToApp(selector: string): Promise<URL>;
  /** The app (or `client`) exchanges the code it got at its redirect URI (`back`) for tokens. */
  exchange(back: URL, verifier: string, client?: TestApp): ReturnType<typeof tokenRequest>;
}

type NewApp = Parameters<TestServer['addClient']>[0];

interface ChromiumSuiteOptions {
  /** The app to register; a function is called in the suite's before hook, after the describe's own earlier ones (an app server has its port). */
  app: NewApp | (() => NewApp);
  /** The issuer's host name, as for startTestServer. */
  issuerHost?: string;
  /** More for the suite, once the server runs (users, say). */
  setup?: (server: TestServer) => Promise<unknown>;
}

/**
 * Call in a describe body: one Chromium, one real server and one registered app for the suite, a new
 * context and page for each test.
 */
export function chromiumSuite({ app, issuerHost, setup }: ChromiumSuiteOptions): ChromiumSuite {
  const suite = {
    async startAuthorization(scope, extra = {}, client = suite.app) {
      const { verifier, challenge } = pkce();
      const state = randomBytes(16).toString('hex');
      const params = new URLSearchParams({
        response_type: 'code', client_id: client.client_id, redirect_uri: client.redirect_uri, scope, state,
        aud: suite.server.fhirBase, code_challenge: challenge, code_challenge_method: 'S256', ...extra,
      });
      await suite.page.goto(`${suite.server.issuer}/authorize?${params}`);
      return { state, verifier };
    },
    async signIn(username, password, page = suite.page) {
      await page.fill('input[name=username]', username);
      await page.fill('input[name=password]', password);
      await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    },
    async backToApp(selector) {
      const [url] = await Promise.all([appRedirect(suite.page, suite.app.redirect_uri), suite.page.click(selector)]);
      return url;
    },
    async exchange(back, verifier, client = suite.app) {
      const code = back.searchParams.get('code');
      assert.ok(code, `no code: ${back}`);
      return tokenRequest(suite.server.issuer, { grant_type: 'authorization_code', code, redirect_uri: client.redirect_uri, code_verifier: verifier }, client);
    },
  } as ChromiumSuite;

  before(async function () {
    requireChromium(this);
    suite.browser = await launchChromium();
    suite.server = await startTestServer({}, { issuerHost });
    suite.app = await suite.server.addClient(typeof app === 'function' ? app() : app);
    await setup?.(suite.server);
  });
  after(async () => {
    await suite.browser?.close();
    await suite.server?.stop();
  });
  beforeEach(async () => {
    suite.context = await suite.browser.newContext();
    suite.page = await suite.context.newPage();
  });
  afterEach(() => suite.context?.close());
  return suite;
}
