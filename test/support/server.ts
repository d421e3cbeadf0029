// Starts the real server on a free port with a fresh SQLite file, as a person would run it.
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../server/config.ts';
import { freshPostgresSchema, POSTGRES_URL, type PostgresSchema } from './postgres.ts';
import { startServer, type RunningServer } from '../../server/app.ts';
import { addClient, type NewClient } from '../../server/oidc/clients.ts';
import { DEMO_ACCOUNTS } from '../../server/demo-accounts.ts';
import type { Db } from '../../server/db.ts';
import { hashPasswordAtCost } from '../../server/oidc/passwords.ts';

export interface TestServer extends RunningServer {
  issuer: string;
  fhirBase: string;
  addClient(input: Partial<NewClient> & Pick<NewClient, 'auth'>): Promise<{ client_id: string; client_secret?: string; redirect_uri: string }>;
  stop(): Promise<void>;
}

const PORT_LOCKS = join(tmpdir(), 'smart-auth-test-ports');
const reserved: string[] = [];
process.on('exit', () => { for (const lock of reserved) rmSync(lock, { force: true }); });

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
}

/**
 * A port for a server a test starts. It is below Linux's ephemeral range (32768 and up), so no outgoing
 * connection takes it before the server listens, and reserved by creating a lock file exclusively, so two
 * suites running side by side (CI) never get the same one.
 */
export async function freePort(): Promise<number> {
  mkdirSync(PORT_LOCKS, { recursive: true });
  for (let attempt = 0; attempt < 500; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const lock = join(PORT_LOCKS, String(port));
    try {
      writeFileSync(lock, String(process.pid), { flag: 'wx' });
    } catch {
      // Taken; a lock left by a killed run is removed once it is an hour old.
      if (Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now()) > 3_600_000) rmSync(lock, { force: true });
      continue;
    }
    reserved.push(lock);
    if (await bindable(port)) return port;
  }
  throw new Error('no free port for a test server');
}

/**
 * TEST_DATABASE=postgres runs the servers on PostgreSQL (see postgres.ts), each in a schema of its
 * own; otherwise each gets a fresh SQLite file.
 */
async function testDatabase(dir: string): Promise<PostgresSchema> {
  if (process.env.TEST_DATABASE !== 'postgres') return { url: `sqlite:${join(dir, 'test.sqlite')}`, drop: async () => {} };
  const schema = await freshPostgresSchema('t');
  if (!schema) throw new Error(`TEST_DATABASE=postgres but PostgreSQL is not reachable at ${POSTGRES_URL}`);
  return schema;
}

/**
 * The demo accounts' passwords (published in the README) hashed with scrypt at N=2^10 instead of 2^15.
 * Signing in runs the same verifyPassword, which reads the parameters from the stored hash, in a few
 * milliseconds instead of 0.1-0.2 s of CPU on the CI machine, and the suite signs in some thousand times.
 * Accounts a test adds keep the product's parameters.
 */
const cheapHashes = new Map<string, Promise<string>>();
async function cheapenDemoPasswords(db: Db): Promise<void> {
  for (const { username, password } of DEMO_ACCOUNTS) {
    if (!cheapHashes.has(password)) cheapHashes.set(password, hashPasswordAtCost(password, 2 ** 10));
    await db('users').where({ username }).update({ password_hash: await cheapHashes.get(password)! });
  }
}

/** `issuerHost`: the issuer's host name (default 127.0.0.1); WebAuthn needs a domain, e.g. localhost. */
export async function startTestServer(env: Record<string, string> = {}, { issuerHost = '127.0.0.1' } = {}): Promise<TestServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'smart-auth-test-'));
  const issuer = `http://${issuerHost}:${port}`;
  const database = await testDatabase(dir);
  let running: RunningServer;
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig({
      PORT: String(port), HOST: '127.0.0.1', ISSUER: issuer, DATABASE_URL: database.url, LOG_LEVEL: 'warn', ...env,
    });
    running = await startServer(config);
    if (config.demo) await cheapenDemoPasswords(running.db);
  } catch (err) {
    await database.drop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    ...running,
    issuer,
    fhirBase: config.fhirBase,
    async addClient(input) {
      const redirect = input.redirectUris ?? ['http://127.0.0.1:9999/callback'];
      const metadata = await addClient(running.db, running.host.provider, { name: 'Test app', redirectUris: redirect, ...input });
      return { client_id: String(metadata.client_id), client_secret: metadata.client_secret as string | undefined, redirect_uri: redirect[0] };
    },
    async stop() {
      await running.close();
      await database.drop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
