// A real Chromium for end-to-end tests of the server-rendered authorization pages.
import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';

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
