// How long one full standalone launch takes (authorize -> login -> picker -> consent -> code -> token),
// sequentially, against a real server on a SQLite file. Baselines in the same run: a discovery GET
// (the HTTP floor) and one scrypt password check (the cost login pays on purpose).
//   node --import tsx scripts/bench/standalone-launch.ts [launches=50]
import { performance } from 'node:perf_hooks';
import { startTestServer } from '../../test/support/server.ts';
import { authorize, exchangeCode } from '../../test/support/oauth.ts';
import { hashPassword, verifyPassword } from '../../server/oidc/passwords.ts';

const launches = Number(process.argv[2] ?? 50);

function summary(name: string, samples: number[]) {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))].toFixed(1);
  const mean = (samples.reduce((a, b) => a + b, 0) / samples.length).toFixed(1);
  console.log(`${name.padEnd(34)} n=${String(samples.length).padEnd(4)} mean ${mean.padStart(6)} ms  p50 ${at(0.5).padStart(6)} ms  p95 ${at(0.95).padStart(6)} ms`);
}

async function time<T>(fn: () => Promise<T>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

const server = await startTestServer();
try {
  const app = await server.addClient({ auth: { kind: 'public' } });
  const scope = 'launch/patient openid fhirUser offline_access patient/*.rs';
  await exchangeCode(server.issuer, await authorize({ server, client: app, scope }), app); // warm-up

  const discovery: number[] = [];
  for (let i = 0; i < launches; i++) discovery.push(await time(() => fetch(`${server.issuer}/.well-known/smart-configuration`).then((r) => r.json())));

  const hash = await hashPassword('demo-password-1');
  const scrypt: number[] = [];
  for (let i = 0; i < Math.min(launches, 20); i++) scrypt.push(await time(() => verifyPassword('demo-password-1', hash)));

  const full: number[] = [];
  const tokenOnly: number[] = [];
  for (let i = 0; i < launches; i++) {
    const start = performance.now();
    const launch = await authorize({ server, client: app, scope, patient: 'pat-2' });
    const exchangeStart = performance.now();
    const { res } = await exchangeCode(server.issuer, launch, app);
    if (res.status !== 200) throw new Error(`token exchange failed: ${res.status}`);
    tokenOnly.push(performance.now() - exchangeStart);
    full.push(performance.now() - start);
  }

  console.log(`smart-auth standalone launch, Node ${process.version}, SQLite file, ${launches} sequential launches`);
  summary('baseline: GET smart-configuration', discovery);
  summary('baseline: one scrypt verify', scrypt);
  summary('full launch (9 HTTP requests)', full);
  summary('  of which the token exchange', tokenOnly);
} finally {
  await server.stop();
}
