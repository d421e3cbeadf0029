// A real Chromium for end-to-end tests of the server-rendered authorization pages.
import { existsSync } from 'node:fs';
import { chromium, type Browser, type BrowserContext } from 'playwright-core';

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
 * Stands in for the app at `origin` (where nothing listens): answers every request with a small
 * page and records the URLs it was sent to.
 */
export async function fakeApp(context: BrowserContext, origin: string): Promise<URL[]> {
  const hits: URL[] = [];
  await context.route(`${origin}/**`, async (route) => {
    hits.push(new URL(route.request().url()));
    await route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>app</title><p>Back in the app.</p>' });
  });
  return hits;
}
