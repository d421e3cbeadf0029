// Starts the real server on a free port with a fresh SQLite file, as a person would run it.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../server/config.ts';
import { startServer, type RunningServer } from '../../server/app.ts';
import { addClient, type NewClient } from '../../server/oidc/clients.ts';

export interface TestServer extends RunningServer {
  issuer: string;
  fhirBase: string;
  addClient(input: Partial<NewClient> & Pick<NewClient, 'auth'>): Promise<{ client_id: string; client_secret?: string; redirect_uri: string }>;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

export async function startTestServer(env: Record<string, string> = {}): Promise<TestServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'smart-auth-test-'));
  const issuer = `http://127.0.0.1:${port}`;
  const config = loadConfig({
    PORT: String(port), HOST: '127.0.0.1', ISSUER: issuer, DATABASE_URL: `sqlite:${join(dir, 'test.sqlite')}`, LOG_LEVEL: 'warn', ...env,
  });
  const running = await startServer(config);
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
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
