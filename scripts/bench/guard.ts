// What the standalone guard proxy costs on a FHIR read (GET Patient/pat-1), in one run, every server in
// its own process: the demo FHIR server unguarded (the baseline), and the proxy in front of it with local
// verification without the token cache, with the cache, and by introspection (every request, and trusting
// an answer for 30 s); each with the full rules and the durable audit into the issuer's database. smart-auth's bundled /fhir is measured by reads.ts (npm run bench).
//   node --import tsx scripts/bench/guard.ts [requests=3000] [connections=10]
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../test/support/server.ts';
import { startScript } from '../../test/support/processes.ts';
import { backendToken, load, registerBenchClients, report, startServerProcess, warmUp } from './lib.ts';

const total = Number(process.argv[2] ?? 3000);
const connections = Number(process.argv[3] ?? 10);
const dir = mkdtempSync(join(tmpdir(), 'smart-auth-bench-guard-'));

const upstreamPort = await freePort();
const upstream = await startScript('scripts/demo-fhir-server.ts', { PORT: String(upstreamPort), DATABASE_URL: `sqlite:${join(dir, 'upstream.sqlite')}` }, /listening/);
const upstreamUrl = `http://127.0.0.1:${upstreamPort}/fhir`;

const variants: { name: string; env: Record<string, string> }[] = [
  { name: 'guard proxy, local verification, no token cache', env: { GUARD_VERIFICATION: 'local', GUARD_TOKEN_CACHE: 'false' } },
  { name: 'guard proxy, local verification, token cache', env: { GUARD_VERIFICATION: 'local', GUARD_TOKEN_CACHE: 'true' } },
  { name: 'guard proxy, introspection every request', env: { GUARD_VERIFICATION: 'introspection', GUARD_INTROSPECTION_CACHE: '0' } },
  { name: 'guard proxy, introspection trusted 30 s', env: { GUARD_VERIFICATION: 'introspection', GUARD_INTROSPECTION_CACHE: '30' } },
];
const proxies = await Promise.all(variants.map(async (v) => {
  const port = await freePort();
  return { ...v, port, base: `http://127.0.0.1:${port}/r4` };
}));

const issuer = await startServerProcess({ ADDITIONAL_FHIR_BASES: proxies.map((v) => v.base).join(',') });
const stops: (() => Promise<void>)[] = [() => issuer.stop(), () => upstream.stop()];
try {
  const clients = await registerBenchClients(issuer, 'system/Patient.rs');

  for (const v of proxies) {
    const proxy = await startScript('scripts/guard-proxy.ts', {
      PORT: String(v.port), HOST: '127.0.0.1', ISSUER: issuer.url, FHIR_BASE_URL: v.base, FHIR_UPSTREAM_URL: upstreamUrl, DATABASE_URL: issuer.databaseUrl,
      INTROSPECTION_CLIENT_ID: clients.resourceServer.clientId, INTROSPECTION_CLIENT_SECRET: clients.resourceServer.clientSecret, ...v.env,
    }, /listening/);
    stops.unshift(() => proxy.stop());
  }

  const results: [string, Awaited<ReturnType<typeof load>>][] = [];
  const run = async (name: string, base: string, token?: string) => {
    const url = new URL(base);
    const request = () => ({ method: 'GET', path: `${url.pathname.replace(/\/$/, '')}/Patient/pat-1`, headers: token ? { authorization: `Bearer ${token}` } : undefined });
    await warmUp(url.origin, connections, request);
    results.push([name, await load(url.origin, { requests: total }, connections, request)]);
  };

  await run('unguarded demo FHIR server (baseline)', upstreamUrl);
  for (const v of proxies) await run(v.name, v.base, await backendToken(issuer, clients, v.base));

  console.log(`smart-auth guard on GET Patient/pat-1, Node ${process.version}, ${total} requests, ${connections} connections, each server its own process`);
  const baseline = results[0][1].rps;
  for (const [name, r] of results) {
    report(name, r);
    if (r !== results[0][1]) console.log(`${''.padEnd(52)} ${(100 * r.rps / baseline).toFixed(0)}% of the unguarded throughput`);
  }
} finally {
  for (const stop of stops) await stop();
}
