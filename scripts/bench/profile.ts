// Where a hot path's time goes: `perf record -g` of the whole smart-auth server process (every thread:
// the main thread, libuv's workers running sqlite3 and WebCrypto) under one path's load, then a report by
// shared object and by symbol. V8's own --cpu-prof is not used: on a 2-core machine it counts the main
// thread's waits for those worker threads as JavaScript time. Needs Debian's linux-perf.
//   node --import tsx scripts/bench/profile.ts client_credentials|code|introspection|read [seconds=10] [connections=10]
// The raw profile stays in var/perf/<path>.data (`perf report -i …` reads it again).
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { BENCH_CODE_VERIFIER, BENCH_REDIRECT_URI, mintSmartAuthCodes } from './codes.ts';
import { backendToken, load, registerBenchClients, startServerProcess, statementCounter, warmUp, type LoadRequest } from './lib.ts';

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const path = process.argv[2] ?? 'client_credentials';
const seconds = Number(process.argv[3] ?? 10);
const connections = Number(process.argv[4] ?? 10);
const form = (data: Record<string, string>, headers: Record<string, string> = {}): LoadRequest =>
  ({ method: 'POST', path: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams(data).toString() });

// --perf-basic-prof writes /tmp/perf-<pid>.map (JavaScript function names for perf) and turns on V8's log, sent nowhere.
process.env.BENCH_SERVER_NODE_ARGS = `--perf-basic-prof --no-logfile-per-isolate --logfile=/dev/null ${process.env.BENCH_SERVER_NODE_ARGS ?? ''}`;
const server = await startServerProcess();
const clients = await registerBenchClients(server, 'system/Patient.rs');
// Requests that use something up (assertions, codes) are built beforehand: a warm-up of WARM, then up to
// MEASURED (codes expire after a minute, so they are few enough to be minted and used within it).
const WARM = 1000;
const MEASURED = path === 'code' ? 2000 : Math.ceil(seconds * 1000);
const count = WARM + MEASURED + 2 * connections;
const presign = async (sign: () => Promise<string>) => { const out: string[] = []; for (let i = 0; i < count; i++) out.push(await sign()); return out; };

let request: (i: number) => LoadRequest;
let reusable = true;
if (path === 'client_credentials') {
  const assertions = await presign(clients.backend.assertion);
  request = (i) => form({ grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: ASSERTION_TYPE, client_assertion: assertions[i] });
  reusable = false;
} else if (path === 'code') {
  const assertions = await presign(clients.app.assertion);
  const codes = await mintSmartAuthCodes(server, clients.app.clientId, count);
  request = (i) => form({ grant_type: 'authorization_code', code: codes[i], redirect_uri: BENCH_REDIRECT_URI, code_verifier: BENCH_CODE_VERIFIER.verifier, client_assertion_type: ASSERTION_TYPE, client_assertion: assertions[i] });
  reusable = false;
} else if (path === 'introspection') {
  const token = await backendToken(server, clients);
  const basic = `Basic ${Buffer.from(`${clients.resourceServer.clientId}:${clients.resourceServer.clientSecret}`).toString('base64')}`;
  request = () => ({ ...form({ token }, { authorization: basic }), path: '/introspect' });
} else if (path === 'read') {
  const token = await backendToken(server, clients);
  request = () => ({ method: 'GET', path: '/fhir/Patient/pat-1', headers: { authorization: `Bearer ${token}` } });
} else {
  throw new Error(`unknown path ${path}: client_credentials, code, introspection or read`);
}

// Warm: by time where requests can be repeated, else by the first WARM of those built.
if (reusable) await warmUp(server.url, connections, request);
else await load(server.url, { requests: WARM }, connections, request);
const offset = reusable ? 0 : WARM + connections;
mkdirSync('var/perf', { recursive: true });
const data = `var/perf/${path}.data`;
const perf = spawn('perf', ['record', '-F', '997', '-g', '-p', String(server.pid), '-o', data], { stdio: 'inherit' });
await new Promise((r) => setTimeout(r, 500));
const result = await load(server.url, reusable ? { seconds } : { requests: MEASURED }, connections, (i) => request(i + offset), server.pid, statementCounter(server.url));
perf.kill('SIGINT');
await new Promise((r) => perf.once('exit', r));
await server.stop();
console.log(`${path}: ${result.rps.toFixed(0)}/s, ${result.cpuPerRequest?.toFixed(2)} ms CPU and ${result.statementsPerRequest?.toFixed(2)} statements per request, statuses ${JSON.stringify(result.statuses)} (perf running alongside)`);
const shares = breakdown(execFileSync('perf', ['script', '-i', data, '-F', 'tid,ip,sym'], { encoding: 'utf8', maxBuffer: 1 << 30 }));
const line = (share: number, what: string) => `${(100 * share).toFixed(1).padStart(5)}%  ${((result.cpuPerRequest ?? 0) * share * 1000).toFixed(0).padStart(4)} µs  ${what}`;
console.log(`\nwhere the server's CPU went (${result.cpuPerRequest?.toFixed(2)} ms per request), by part:`);
const parts = new Map<string, number>();
for (const [owner, share] of shares) parts.set(partOf(owner), (parts.get(partOf(owner)) ?? 0) + share);
for (const [part, share] of [...parts].sort((a, b) => b[1] - a[1])) console.log(line(share, part));
console.log('\nby the nearest JavaScript frame of each sample, or by thread where none (≥ 0.5%):');
for (const [owner, share] of shares) if (share >= 0.005) console.log(line(share, owner));

/** The part of the server an owner (see breakdown) belongs to. */
function partOf(owner: string): string {
  if (owner.startsWith('server/')) return 'smart-auth\'s own code (server/)';
  if (owner === 'oidc-provider') return 'oidc-provider';
  if (/^(koa|@koa\/|koa-|delegates|statuses|http-errors|on-finished|raw-body|co-body|content-type|media-typer|type-is|accepts|negotiator|cookies|keygrip|only|destroy|encodeurl|escape-html|vary|fresh|depd|mime)/.test(owner)) return 'Koa and its helpers';
  if (/^(knex|tarn|sqlite3|pg|pg-|getopts|lodash|colorette|debug)/.test(owner) || owner.endsWith(': sqlite3')) return 'SQL: knex, drivers, SQLite';
  if (owner === 'jose' || owner.includes('crypto')) return 'cryptography: jose, WebCrypto, OpenSSL';
  if (owner.includes('V8')) return 'V8: compiler and garbage collector';
  if (owner.startsWith('node:') || owner.includes('libuv') || owner.includes('thread pool')) return 'Node.js: HTTP, streams, promises, event loop, thread pool';
  return 'other packages and unattributed';
}

/**
 * Shares of the samples by owner: the package (node_modules/…), the product file (server/…) or Node's
 * module (node:…) of the innermost JavaScript frame; samples with no JavaScript frame by what their
 * thread was doing (libuv's worker threads run sqlite3 and WebCrypto; V8's compile and GC threads).
 */
export function breakdown(script: string): [string, number][] {
  const counts = new Map<string, number>();
  let mainThread: string | undefined;
  let total = 0;
  for (const block of script.split(/\n\s*\n/)) {
    const [head, ...frames] = block.split('\n').map((l) => l.trim()).filter(Boolean);
    if (!head) continue;
    mainThread ??= head;
    const owner = ownerOf(frames, head === mainThread);
    counts.set(owner, (counts.get(owner) ?? 0) + 1);
    total++;
  }
  return [...counts].map(([owner, n]): [string, number] => [owner, n / total]).sort((a, b) => b[1] - a[1]);
}

function ownerOf(frames: string[], onMainThread: boolean): string {
  const js = frames.find((f) => f.includes('JS:'));
  if (js) {
    const where = /node_modules\/((?:@[^/]+\/)?[^/]+)|\/(server\/[^:]+|scripts\/[^:]+)|(node:[\w/]+)/.exec(js);
    return where ? (where[1] ?? where[2] ?? where[3]) : 'other JavaScript';
  }
  const stack = frames.join(' ');
  const thread = onMainThread ? 'main thread' : 'worker threads';
  if (/sqlite3/.test(stack)) return `${thread}: sqlite3`;
  if (/Compile|compiler::/.test(stack)) return `${thread}: V8 compiler`;
  if (/Heap|Scaveng|MarkCompact|Sweeper|GC/.test(stack)) return `${thread}: V8 garbage collector`;
  if (/EVP_|ecdsa|ECDSA|crypto|BN_|sha256|SHA256/i.test(stack)) return `${thread}: crypto (OpenSSL)`;
  if (onMainThread && /uv__io_poll|epoll/.test(stack)) return 'main thread: libuv event loop, no JavaScript (sockets, completions of worker-thread work)';
  return onMainThread ? 'main thread: other' : 'worker threads: handing work to and from the thread pool (futex, eventfd, scheduler)';
}
