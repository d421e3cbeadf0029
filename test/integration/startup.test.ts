// `npm start` as an operator runs it: the process starts, serves, stops on SIGTERM, and refuses unsafe production settings.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../support/server.ts';

const ROOT = new URL('../../', import.meta.url).pathname;

function start(env: Record<string, string>) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => { output += d; });
  child.stderr.on('data', (d) => { output += d; });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, exited, output: () => output };
}

/** Until the server says it listens: a first start makes its keys and hashes the demo passwords, seconds and more on a loaded machine (within the test's 60 s). */
async function listening(proc: ReturnType<typeof start>) {
  for (let i = 0; i < 450 && !proc.output().includes('listening'); i++) await new Promise((r) => setTimeout(r, 100));
}

describe('server process', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'smart-auth-start-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('starts with migrations, keys and demo data, serves discovery, and stops cleanly on SIGTERM', async () => {
    const port = await freePort();
    const proc = start({ PORT: String(port), HOST: '127.0.0.1', DATABASE_URL: `sqlite:${join(dir, 'a', 'db.sqlite')}` });
    await listening(proc);
    assert.match(proc.output(), /listening/);
    const doc = await (await fetch(`http://127.0.0.1:${port}/.well-known/smart-configuration`)).json();
    assert.equal(doc.issuer, `http://localhost:${port}`);
    await fetch(`http://127.0.0.1:${port}/fhir/Patient?access_token=secret-in-query`, { headers: { 'x-request-id': 'log-line-1' } });
    await new Promise((r) => setTimeout(r, 100));
    const lines = proc.output().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    const logged = lines.find((l) => l.request_id === 'log-line-1');
    assert.ok(logged, 'one JSON line per request, with its request id');
    assert.equal(logged.path, '/fhir/Patient');
    assert.equal(logged.status, 401);
    assert.ok(!proc.output().includes('secret-in-query'), 'no query strings, no tokens in the logs');
    proc.child.kill('SIGTERM');
    assert.equal(await proc.exited, 0);
  });

  it('refuses NODE_ENV=production with default secrets, with a clear message', async () => {
    const proc = start({ NODE_ENV: 'production', PORT: '0', DATABASE_URL: `sqlite:${join(dir, 'b.sqlite')}` });
    assert.equal(await proc.exited, 1);
    assert.match(proc.output(), /refusing to start with NODE_ENV=production/);
    assert.match(proc.output(), /COOKIE_SECRETS must be set/);
    assert.doesNotMatch(proc.output(), /at [\w.]+ \(/, 'no stack trace');
  });

  it('refuses an ISSUER with a path, with a clear message', async () => {
    const proc = start({ ISSUER: 'https://example.org/auth', PORT: '0', DATABASE_URL: `sqlite:${join(dir, 'path.sqlite')}` });
    assert.equal(await proc.exited, 1);
    assert.match(proc.output(), /ISSUER must be an origin \(scheme:\/\/host\[:port\]\) without a path, got "https:\/\/example.org\/auth"/);
    assert.doesNotMatch(proc.output(), /at [\w.]+ \(/, 'no stack trace');
  });

  it('refuses NODE_ENV=production on a database holding the demo accounts', async () => {
    const databaseUrl = `sqlite:${join(dir, 'c.sqlite')}`;
    const port = await freePort();
    const demo = start({ PORT: String(port), HOST: '127.0.0.1', DATABASE_URL: databaseUrl });
    await listening(demo);
    demo.child.kill('SIGTERM');
    await demo.exited;
    const prod = start({ NODE_ENV: 'production', ISSUER: 'https://auth.example.org', COOKIE_SECRETS: 'p'.repeat(40), KEY_ENCRYPTION_SECRET: 'k'.repeat(40), PORT: '0', DATABASE_URL: databaseUrl });
    assert.equal(await prod.exited, 1);
    assert.match(prod.output(), /demo accounts/);
  });

  it('refuses a bad setting with the setting named', async () => {
    const proc = start({ PORT: 'eighty' });
    assert.equal(await proc.exited, 1);
    assert.match(proc.output(), /PORT must be a whole number/);
  });

  it('refuses an operation in GUARD_OPERATIONS that the guard does not know, naming it, instead of refusing it per request', async () => {
    const proc = start({ GUARD_OPERATIONS: 'everything,frob', PORT: '0', DATABASE_URL: `sqlite:${join(dir, 'operations.sqlite')}` });
    assert.equal(await proc.exited, 1);
    assert.match(proc.output(), /GUARD_OPERATIONS names operations the guard does not know: \$frob/);
    assert.doesNotMatch(proc.output(), /at [\w.]+ \(/, 'no stack trace');
  });
});
