// Shared pieces of the benchmarks: a server in its own process, and a small closed-loop HTTP load driver.
import { spawn, type ChildProcess } from 'node:child_process';
import { Agent, request } from 'node:http';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { freePort } from '../../test/support/server.ts';
import { loadConfig } from '../../server/config.ts';
import { migrate, openDatabase } from '../../server/db.ts';
import { addClient } from '../../server/oidc/clients.ts';
import { createToolProvider } from '../../server/oidc/provider-host.ts';

export interface ServerProcess {
  url: string;
  databaseUrl: string;
  env: Record<string, string>;
  stop(): Promise<void>;
}

/** The real server, `node --import tsx server/main.ts`, on a fresh SQLite file unless DATABASE_URL is given. */
export async function startServerProcess(env: Record<string, string> = {}): Promise<ServerProcess> {
  const port = await freePort();
  const databaseUrl = env.DATABASE_URL ?? `sqlite:${join(mkdtempSync(join(tmpdir(), 'smart-auth-bench-')), 'bench.sqlite')}`;
  const fullEnv = { PORT: String(port), HOST: '127.0.0.1', ISSUER: `http://127.0.0.1:${port}`, DATABASE_URL: databaseUrl, ...env };
  // BENCH_SERVER_NODE_ARGS, e.g. "--cpu-prof --cpu-prof-dir=var/prof", profiles the server process.
  const nodeArgs = process.env.BENCH_SERVER_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', 'server/main.ts'], {
    cwd: new URL('../../', import.meta.url).pathname, env: { ...process.env, ...fullEnv }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (d) => { output += d; });
  child.stderr!.on('data', (d) => { output += d; });
  for (let i = 0; i < 200 && !output.includes('listening'); i++) await new Promise((r) => setTimeout(r, 50));
  if (!output.includes('listening')) throw new Error(`server did not start:\n${output}`);
  return {
    url: fullEnv.ISSUER, databaseUrl, env: fullEnv,
    stop: () => new Promise((resolve) => { child.once('exit', () => resolve()); child.kill('SIGTERM'); }),
  };
}

export interface LoadRequest {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string;
}

export interface LoadResult {
  requests: number;
  seconds: number;
  rps: number;
  p50: number;
  p99: number;
  statuses: Record<number, number>;
}

/**
 * Sends `total` requests over `connections` keep-alive connections, each connection sending its next
 * request when the previous answer has arrived. `next(i)` builds request number i.
 */
export async function load(baseUrl: string, total: number, connections: number, next: (i: number) => LoadRequest): Promise<LoadResult> {
  const url = new URL(baseUrl);
  const agent = new Agent({ keepAlive: true, maxSockets: connections });
  const latencies: number[] = [];
  const statuses: Record<number, number> = {};
  let issued = 0;
  const one = (r: LoadRequest) => new Promise<void>((resolve, reject) => {
    const started = process.hrtime.bigint();
    const req = request({ host: url.hostname, port: url.port, method: r.method, path: r.path, headers: r.headers, agent }, (res) => {
      res.resume();
      res.on('end', () => {
        latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
        statuses[res.statusCode!] = (statuses[res.statusCode!] ?? 0) + 1;
        resolve();
      });
    });
    req.on('error', reject);
    req.end(r.body);
  });
  const start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: connections }, async () => {
    while (issued < total) await one(next(issued++));
  }));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
  return { requests: total, seconds, rps: total / seconds, p50: at(0.5), p99: at(0.99), statuses };
}

export function report(name: string, r: LoadResult) {
  console.log(`${name.padEnd(52)} ${r.rps.toFixed(0).padStart(6)} req/s  p50 ${r.p50.toFixed(1).padStart(6)} ms  p99 ${r.p99.toFixed(1).padStart(6)} ms  statuses ${JSON.stringify(r.statuses)}`);
}

export interface BenchClients {
  /** A backend service (ES384 private_key_jwt) and a fresh client assertion of it for each call. */
  backend: { clientId: string; assertion(): Promise<string> };
  /** A resource-server client that may introspect any token. */
  resourceServer: { clientId: string; clientSecret: string };
}

/** Registers the clients a benchmark needs in the server's database, as the CLI does. */
export async function registerBenchClients(server: ServerProcess, scope: string): Promise<BenchClients> {
  const config = loadConfig(server.env);
  const db = openDatabase(server.databaseUrl);
  try {
    await migrate(db);
    const provider = await createToolProvider(config, db);
    const { publicKey, privateKey } = await generateKeyPair('ES384', { extractable: true });
    const backend = await addClient(db, provider, {
      name: 'bench backend', redirectUris: [], grantTypes: ['client_credentials'], scope,
      auth: { kind: 'jwks', jwks: { keys: [{ ...(await exportJWK(publicKey)), kid: 'bench', alg: 'ES384' }] } },
    });
    const rs = await addClient(db, provider, { name: 'bench resource server', redirectUris: [], auth: { kind: 'secret' }, resourceServer: true });
    const clientId = String(backend.client_id);
    return {
      backend: {
        clientId,
        assertion: () => {
          const now = Math.floor(Date.now() / 1000);
          return new SignJWT({ iss: clientId, sub: clientId, aud: `${server.url}/token`, jti: randomUUID(), iat: now, exp: now + 280 })
            .setProtectedHeader({ alg: 'ES384', kid: 'bench', typ: 'JWT' }).sign(privateKey);
        },
      },
      resourceServer: { clientId: String(rs.client_id), clientSecret: String(rs.client_secret) },
    };
  } finally {
    await db.destroy();
  }
}
