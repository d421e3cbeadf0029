// Shared pieces of the benchmarks: a server in its own process, and the load driver (autocannon).
import { spawn, type ChildProcess } from 'node:child_process';
import autocannon from 'autocannon';
import { closeSync, fdatasyncSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { cpus, tmpdir } from 'node:os';
import { pathToFileURL } from 'node:url';
import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import { BENCH_APP_SCOPE, BENCH_REDIRECT_URI } from './codes.ts';
import { freePort } from '../../test/support/server.ts';
import { freshPostgresSchema } from '../../test/support/postgres.ts';
import { loadConfig } from '../../server/config.ts';
import { migrate, openDatabase } from '../../server/db.ts';
import { addClient } from '../../server/oidc/clients.ts';
import { createToolProvider } from '../../server/oidc/provider-host.ts';

export interface ServerProcess {
  url: string;
  databaseUrl: string;
  env: Record<string, string>;
  pid: number;
  stop(): Promise<void>;
}

/** A fresh SQLite file, or a fresh schema on the PostgreSQL database of BENCH_DATABASE_URL (dropped by `drop`). */
async function benchDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  if (!process.env.BENCH_DATABASE_URL) return { url: `sqlite:${join(mkdtempSync(join(tmpdir(), 'smart-auth-bench-')), 'bench.sqlite')}`, drop: async () => {} };
  const schema = await freshPostgresSchema('bench', process.env.BENCH_DATABASE_URL);
  if (!schema) throw new Error(`BENCH_DATABASE_URL: PostgreSQL is not reachable at ${process.env.BENCH_DATABASE_URL}`);
  return schema;
}

/**
 * The real server, `node --import tsx server/main.ts`, on the database of env.DATABASE_URL, or on a
 * fresh one (see benchDatabase: with BENCH_DATABASE_URL=postgres://… the benchmarks measure smart-auth on PostgreSQL).
 */
export async function startServerProcess(env: Record<string, string> = {}): Promise<ServerProcess> {
  const port = await freePort();
  const database = env.DATABASE_URL ? { url: env.DATABASE_URL, drop: async () => {} } : await benchDatabase();
  const databaseUrl = database.url;
  // The per-address limit on /token would cut a load from one address short; the bench measures throughput.
  const fullEnv = { PORT: String(port), HOST: '127.0.0.1', ISSUER: `http://127.0.0.1:${port}`, DATABASE_URL: databaseUrl, RATE_LIMIT_TOKEN_PER_MINUTE: '1000000', RATE_LIMIT_INTROSPECT_PER_MINUTE: '1000000', ...env };
  // BENCH_SERVER_NODE_ARGS, e.g. "--cpu-prof --cpu-prof-dir=var/prof", profiles the server process.
  const nodeArgs = process.env.BENCH_SERVER_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', 'server/main.ts'], {
    cwd: new URL('../../', import.meta.url).pathname, env: { ...process.env, ...fullEnv }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Only the start-up output is kept; the request log that follows is read and dropped.
  let output = '';
  const keep = (d: Buffer) => { if (output.length < 65_536) output += d; };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  for (let i = 0; i < 600 && !output.includes('listening'); i++) await new Promise((r) => setTimeout(r, 50));
  if (!output.includes('listening')) throw new Error(`server did not start:\n${output}`);
  return {
    url: fullEnv.ISSUER, databaseUrl, env: fullEnv, pid: child.pid!,
    stop: async () => {
      await new Promise<void>((resolve) => { child.once('exit', () => resolve()); child.kill('SIGTERM'); });
      await database.drop();
    },
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
  /** CPU time (all threads) the server process spent per request, in ms, when its pid was given. */
  cpuPerRequest?: number;
  /** SQL statements the server sent per request, when it counts them (smart-auth's /metrics). */
  statementsPerRequest?: number;
  /** The load driver's own CPU time over the run's time (1 = one core busy). */
  driverCpuShare: number;
}

/** A running smart-auth server's statement counter (`smart_auth_db_statements_total` of its /metrics). */
export function statementCounter(url: string): () => Promise<number> {
  return async () => {
    const text = await (await fetch(`${url}/metrics`)).text();
    return Number(/^smart_auth_db_statements_total (\d+)/m.exec(text)?.[1] ?? NaN);
  };
}

/** CPU time (user + system, all threads) a process has used, in ms (Linux /proc; clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** How much load: a number of requests (for requests that use something up) or a time in seconds. */
export type Amount = { requests: number } | { seconds: number };

/** Seconds each reusable row is measured (BENCH_SECONDS, default 10); warm-up: BENCH_WARM_UP_SECONDS (default 5). */
export const benchSeconds = () => Number(process.env.BENCH_SECONDS ?? 10);

/**
 * Drives the load with autocannon (closed loop: each of `connections` keep-alive connections sends its
 * next request when the previous answer has arrived). `next(i)` gives request number i, built beforehand
 * by the caller, so that the driver only sends; it asks for up to `connections` more than it sends (one
 * per connection when it starts), so callers build that many spare ones. Measures the server's CPU (when its pid is given), its
 * SQL statements (when it counts them) and the driver's own CPU share.
 */
export async function load(baseUrl: string, amount: Amount, connections: number, next: (i: number) => LoadRequest, serverPid?: number, statements?: () => Promise<number>): Promise<LoadResult> {
  const statementsBefore = await statements?.();
  const cpuBefore = serverPid === undefined ? 0 : cpuMs(serverPid);
  const driverBefore = process.cpuUsage();
  const started = process.hrtime.bigint();
  let finished = started;
  const latencies: number[] = [];
  const statuses: Record<number, number> = {};
  let issued = 0;
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon({
      url: baseUrl,
      connections,
      ...('requests' in amount ? { amount: amount.requests } : { duration: amount.seconds }),
      requests: [{ setupRequest: (request) => {
        const r = next(issued++);
        return { ...request, method: r.method, path: r.path, headers: r.headers ?? {}, body: r.body };
      } }],
    }, (err, done) => (err ? reject(err) : resolve(done)));
    // Timed here: autocannon ends a run on its next one-second tick, and its latencies are whole ms.
    instance.on('response', (_client, status, _bytes, responseTime) => {
      finished = process.hrtime.bigint();
      latencies.push(responseTime);
      statuses[status] = (statuses[status] ?? 0) + 1;
    });
  });
  const seconds = Number(finished - started) / 1e9;
  const driver = process.cpuUsage(driverBefore);
  const total = latencies.length;
  if (result.errors || result.timeouts) statuses[0] = result.errors + result.timeouts;
  latencies.sort((x, y) => x - y);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
  return {
    requests: total,
    seconds,
    rps: total / seconds,
    p50: at(0.5),
    p99: at(0.99),
    statuses,
    cpuPerRequest: serverPid === undefined ? undefined : (cpuMs(serverPid) - cpuBefore) / total,
    statementsPerRequest: statements && ((await statements()) - statementsBefore!) / total,
    driverCpuShare: (driver.user + driver.system) / 1000 / (seconds * 1000),
  };
}

/**
 * Sends requests for BENCH_WARM_UP_SECONDS (default 5): a server's throughput keeps rising for several
 * thousand requests while V8 optimizes it (measured: the demo store goes from 1.6k/s in its first 3000
 * requests to 6-7k/s after 9000), so a short warm-up by count compared a cold server with a warm one.
 */
export async function warmUp(baseUrl: string, connections: number, next: (i: number) => LoadRequest): Promise<void> {
  const seconds = Number(process.env.BENCH_WARM_UP_SECONDS ?? 5);
  if (seconds > 0) await load(baseUrl, { seconds }, connections, next);
}

/** True when the module at `moduleUrl` is the script node was started with. */
export const isMain = (moduleUrl: string) => process.argv[1] !== undefined && pathToFileURL(process.argv[1]).href === moduleUrl;

/** One line of the benchmark table: a smart-auth measurement and its baseline from the same run. */
export interface BenchRow {
  name: string;
  result: LoadResult;
  baselineName: string;
  baseline: LoadResult;
}

const unexpected = (r: LoadResult) => Object.keys(r.statuses).filter((s) => Number(s) >= 400);

/** A benchmark: its rows, the smart-auth process it measured, and a way to stop its servers. */
export interface BenchRun {
  rows: BenchRow[];
  serverPid: number;
  stop(): Promise<void>;
}
export type Bench = (total: number, connections: number) => Promise<BenchRun>;

/**
 * Runs benchmarks one after the other with `[requests=3000] [connections=10]` from the command line, and
 * prints one table and the peak memory of the smart-auth processes. A row with error answers fails the run.
 */
export async function runBenches(what: string, benches: Bench[]): Promise<void> {
  const total = Number(process.argv[2] ?? 3000);
  const connections = Number(process.argv[3] ?? 10);
  const rows: BenchRow[] = [];
  const peaks: number[] = [];
  for (const bench of benches) {
    const run = await bench(total, connections);
    rows.push(...run.rows);
    peaks.push(peakRssMb(run.serverPid));
    await run.stop();
  }
  const database = process.env.BENCH_DATABASE_URL ? 'PostgreSQL' : 'a SQLite file';
  const amounts = `${total} requests per token row (they use up assertions and codes), ${benchSeconds()} s per introspection and read row after a ${process.env.BENCH_WARM_UP_SECONDS ?? 5} s warm-up`;
  if (!printTable(`${what}, ${amounts}, ${connections} connections (autocannon), smart-auth on ${database}, every server in its own process`, rows)) process.exitCode = 1;
  console.log(`peak RSS of the smart-auth server under these loads: ${Math.max(...peaks).toFixed(0)} MB (${peaks.map((p) => p.toFixed(0)).join(' MB, ')} MB)`);
  const sync = commitLatencyMs();
  console.log(`durable ceiling: a 4 KiB write + fdatasync takes ${sync.toFixed(2)} ms (median of 200) on this disk; a durable row's every answer waits for at least one such commit, so ${connections} connections (closed loop) cannot exceed ${(connections * 1000 / sync).toFixed(0)} req/s on it`);
}

/**
 * The median time of a 4 KiB write and fdatasync in the benchmarks' temporary directory (where their SQLite files
 * are): the least a durable commit waits. With C connections each waiting for its commit, no row can exceed
 * C / that time, however cheap its CPU.
 */
function commitLatencyMs(): number {
  const dir = mkdtempSync(join(tmpdir(), 'smart-auth-bench-sync-'));
  const fd = openSync(join(dir, 'probe'), 'w');
  const page = Buffer.alloc(4096, 1);
  const times: number[] = [];
  try {
    for (let i = 0; i < 200; i++) {
      const started = process.hrtime.bigint();
      writeSync(fd, page, 0, page.length, 0);
      fdatasyncSync(fd);
      times.push(Number(process.hrtime.bigint() - started) / 1e6);
    }
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
  return times.sort((a, b) => a - b)[times.length >> 1];
}

/** The most memory the process has held (VmHWM), in MB. */
function peakRssMb(pid: number): number {
  const kb = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb) / 1024;
}

/** Prints the table; false when a row got answers it should not have (it then measures something else). */
function printTable(title: string, rows: BenchRow[]): boolean {
  let clean = true;
  const cpu = (r: LoadResult) => (r.cpuPerRequest === undefined ? '' : r.cpuPerRequest.toFixed(2));
  const sql = (r: LoadResult) => (r.statementsPerRequest === undefined ? '' : r.statementsPerRequest.toFixed(2));
  const cell = (r: LoadResult) => `${r.rps.toFixed(0).padStart(6)}/s ${r.p50.toFixed(1).padStart(5)} ${r.p99.toFixed(1).padStart(5)} ${cpu(r).padStart(5)} ${sql(r).padStart(5)} ${(100 * r.driverCpuShare).toFixed(0).padStart(3)}%`;
  console.log(`smart-auth benchmarks: ${title}; Node ${process.version}, ${cpus().length} × ${cpus()[0]?.model.trim()}, ${new Date().toISOString().slice(0, 10)}`);
  console.log(`${'measure'.padEnd(60)} ${'smart-auth  p50   p99   cpu   sql  drv'.padStart(39)} | ${'baseline  p50   p99   cpu   sql  drv'.padStart(39)} | ratio | baseline`);
  for (const row of rows) {
    console.log(`${row.name.padEnd(60)} ${cell(row.result).padStart(39)} | ${cell(row.baseline).padStart(39)} | ${`${(100 * row.result.rps / row.baseline.rps).toFixed(0)}%`.padStart(5)} | ${row.baselineName}`);
    for (const [label, r] of [['smart-auth', row.result], ['baseline', row.baseline]] as const) {
      if (!unexpected(r).length) continue;
      clean = false;
      console.log(`  ! ${label} answered ${JSON.stringify(r.statuses)}: this row does not measure what it says`);
    }
  }
  console.log('(throughput; p50 and p99 latency in ms; cpu: ms of server CPU per request, all threads; sql: SQL statements per request, BEGIN and COMMIT included, where the server counts them; drv: the load driver’s own CPU, % of one core)');
  return clean;
}

export function report(name: string, r: LoadResult) {
  console.log(`${name.padEnd(52)} ${r.rps.toFixed(0).padStart(6)} req/s  p50 ${r.p50.toFixed(1).padStart(6)} ms  p99 ${r.p99.toFixed(1).padStart(6)} ms  statuses ${JSON.stringify(r.statuses)}`);
}

export interface BenchClients {
  /** A backend service (ES384 private_key_jwt) and a fresh client assertion of it for each call. */
  backend: { clientId: string; assertion(): Promise<string> };
  /** A confidential SMART app with the same key, allowed BENCH_APP_SCOPE. */
  app: { clientId: string; assertion(): Promise<string> };
  /** A resource-server client that may introspect any token. */
  resourceServer: { clientId: string; clientSecret: string };
  /** The public half of the clients' ES384 key. */
  publicJwk: JWK;
}

/** An ES384 key pair and client assertions signed with it, as SMART backend services send them. */
export async function assertionSigner(tokenEndpoint: string) {
  const { publicKey, privateKey } = await generateKeyPair('ES384', { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid: 'bench', alg: 'ES384' };
  const assertion = (clientId: string) => {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ iss: clientId, sub: clientId, aud: tokenEndpoint, jti: randomUUID(), iat: now, exp: now + 280 })
      .setProtectedHeader({ alg: 'ES384', kid: 'bench', typ: 'JWT' }).sign(privateKey);
  };
  return { publicJwk, assertion };
}

/** Registers the clients a benchmark needs in the server's database, as the CLI does. */
export async function registerBenchClients(server: ServerProcess, scope: string): Promise<BenchClients> {
  const config = loadConfig(server.env);
  const db = openDatabase(server.databaseUrl);
  try {
    await migrate(db);
    const provider = await createToolProvider(config, db);
    const signer = await assertionSigner(`${server.url}/token`);
    const auth = { kind: 'jwks' as const, jwks: { keys: [signer.publicJwk] } };
    const backend = await addClient(db, provider, { name: 'bench backend', redirectUris: [], grantTypes: ['client_credentials'], scope, auth });
    const app = await addClient(db, provider, { name: 'bench app', redirectUris: [BENCH_REDIRECT_URI], grantTypes: ['authorization_code'], scope: BENCH_APP_SCOPE, auth });
    const rs = await addClient(db, provider, { name: 'bench resource server', redirectUris: [], auth: { kind: 'secret' }, resourceServer: true });
    const client = (id: unknown) => ({ clientId: String(id), assertion: () => signer.assertion(String(id)) });
    return {
      backend: client(backend.client_id),
      app: client(app.client_id),
      resourceServer: { clientId: String(rs.client_id), clientSecret: String(rs.client_secret) },
      publicJwk: signer.publicJwk,
    };
  } finally {
    await db.destroy();
  }
}

/** An access token of the bench backend service (client_credentials), for `resource` when given. */
export async function backendToken(server: ServerProcess, clients: BenchClients, resource?: string): Promise<string> {
  const res = await fetch(`${server.url}/token`, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'client_credentials', scope: 'system/Patient.rs', ...(resource && { resource }),
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: await clients.backend.assertion(),
    }),
  });
  const body = await res.json();
  if (!body.access_token) throw new Error(`no token: ${JSON.stringify(body)}`);
  return body.access_token;
}
