// A SMART app that runs in the browser on its own origin reads /fhir with its token (CORS), as
// fhirclient.js-style apps do; a page on an origin no app registered cannot.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { Browser } from 'playwright-core';
import { freePort, startTestServer, type TestServer } from '../support/server.ts';
import { authorize, exchangeCode } from '../support/oauth.ts';
import { launchChromium, requireChromium } from '../support/browser.ts';

describe('CORS at /fhir in Chromium', function () {
  this.timeout(60_000);
  let browser: Browser | undefined;
  let server: TestServer | undefined;
  let pages: Server | undefined;
  let appOrigin: string;
  let strangerOrigin: string;

  before(async function () {
    requireChromium(this);
    // The app's page and a stranger's page: two origins other than the server's (another port, another host name).
    const port = await freePort();
    appOrigin = `http://127.0.0.1:${port}`;
    strangerOrigin = `http://localhost:${port}`;
    pages = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>app</title>'));
    await new Promise<void>((resolve) => pages!.listen(port, resolve));
    browser = await launchChromium();
    server = await startTestServer();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    await new Promise((resolve) => (pages ? pages.close(resolve) : resolve(undefined)));
  });

  /** A read, then the conditional reads an app makes with what the first answer told it (ETag, Last-Modified). */
  async function readFromPage(origin: string, token: string) {
    const page = await browser!.newPage();
    try {
      await page.goto(`${origin}/index.html`);
      return await page.evaluate(async ([url, bearer]) => {
        try {
          const authorization = `Bearer ${bearer}`;
          const res = await fetch(url, { headers: { authorization, 'x-request-id': 'from-the-browser' } });
          const etag = res.headers.get('etag');
          const lastModified = res.headers.get('last-modified');
          // No named function in here: the test runner's transform would wrap it in a helper the page does not have.
          const conditional: number[] = [];
          for (const headers of [{ 'if-none-match': etag ?? '' }, { 'if-modified-since': lastModified ?? '' }, { 'if-match': 'W/"not-this-version"' }] as Record<string, string>[]) {
            conditional.push((await fetch(url, { headers: { authorization, ...headers } })).status);
          }
          return { status: res.status, body: await res.json(), requestId: res.headers.get('x-request-id'), etag, lastModified, conditional };
        } catch (err) {
          return { error: String(err) };
        }
      }, [`${server!.fhirBase}/Patient/pat-1`, token] as const);
    } finally {
      await page.close();
    }
  }

  it('lets the page of a registered app read a patient with its token, and nobody else\'s page', async () => {
    const app = await server!.addClient({ auth: { kind: 'public' }, redirectUris: [`${appOrigin}/callback`] });
    const launch = await authorize({ server: server!, client: app, scope: 'launch/patient openid patient/*.rs', patient: 'pat-1' });
    const token = (await exchangeCode(server!.issuer, launch, app)).body.access_token as string;

    const read = await readFromPage(appOrigin, token);
    assert.equal(read.status, 200, JSON.stringify(read));
    assert.equal(read.body.id, 'pat-1');
    assert.equal(read.requestId, 'from-the-browser', 'X-Request-Id is exposed');
    assert.match(String(read.etag), /^W\/"/, 'ETag is exposed');
    assert.ok(read.lastModified, 'Last-Modified is readable');
    assert.deepEqual(read.conditional, [304, 304, 412], 'conditional reads pass the preflight: If-None-Match, If-Modified-Since, If-Match');

    const stranger = await readFromPage(strangerOrigin, token);
    assert.match(String(stranger.error), /Failed to fetch/, 'the browser withholds the answer from another origin');
  });
});
