// Guarded FHIR reads (GET Patient/pat-1 with a cached token) against the demo store unguarded, in one
// run, each server in its own process:
//   - the guard and the store in one process, audit off and on (scripts/bench/audited-server.ts);
//   - the floor: the store with one durable row committed per read and nothing else (the same script);
//   - smart-auth's bundled /fhir: the same plus the revocation check, the privacy rules and the durable
//     audit trail (every access committed to the hash chain before it is answered);
//   - the guard proxy with the full rules and the durable audit (into smart-auth's database) in front of
//     Medplum's in-memory FHIR repository, against that repository unguarded.
//   BENCH_SECONDS=10 node --import tsx scripts/bench/reads.ts [requests=3000] [connections=10]   (reads are timed)
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../test/support/server.ts';
import { startDemoFhirServer, startGuardProxy, startMedplumFhirServer, startScript } from '../../test/support/processes.ts';
import { backendToken, benchSeconds, isMain, statementCounter, load, warmUp, registerBenchClients, runBenches, startServerProcess, type Bench, type BenchRow, type LoadResult } from './lib.ts';

export const benchReads: Bench = async (_total, connections) => {
  const dir = mkdtempSync(join(tmpdir(), 'smart-auth-bench-reads-'));
  const stops: (() => Promise<void>)[] = [];
  const measure = async (pid: number, base: string, token?: string, statements?: () => Promise<number>): Promise<LoadResult> => {
    const url = new URL(base);
    const request = () => ({ method: 'GET', path: `${url.pathname.replace(/\/$/, '')}/Patient/pat-1`, headers: token ? { authorization: `Bearer ${token}` } : undefined });
    await warmUp(url.origin, connections, request);
    return load(url.origin, { seconds: benchSeconds() }, connections, request, pid, statements);
  };

  const store = await startDemoFhirServer(`sqlite:${join(dir, 'store.sqlite')}`);
  stops.push(() => store.stop());

  const guard = async (audit: 'on' | 'off' | 'floor') => {
    const port = await freePort();
    const server = await startScript('scripts/bench/audited-server.ts', { PORT: String(port), DATABASE_URL: `sqlite:${join(dir, `guard-${audit}.sqlite`)}`, AUDIT: audit }, /listening/);
    stops.push(() => server.stop());
    return { pid: server.pid, base: `http://127.0.0.1:${port}/fhir`, token: /token=(\S+)/.exec(server.output())![1] };
  };
  const floor = await guard('floor');
  const guardOnly = await guard('off');
  const guardAudited = await guard('on');

  const medplum = await startMedplumFhirServer();
  stops.push(() => medplum.stop());
  const proxyBase = `http://127.0.0.1:${await freePort()}/r4`;

  const smartAuth = await startServerProcess({ ADDITIONAL_FHIR_BASES: proxyBase });
  stops.push(() => smartAuth.stop());
  const clients = await registerBenchClients(smartAuth, 'system/Patient.rs');
  const smartAuthToken = await backendToken(smartAuth, clients);
  const proxy = await startGuardProxy({ issuer: smartAuth.url, config: { databaseUrl: smartAuth.databaseUrl } }, proxyBase, medplum.url);
  stops.unshift(() => proxy.stop());
  const proxyToken = await backendToken(smartAuth, clients, proxyBase);

  const baselineName = 'the demo store alone, unguarded';
  const rows: BenchRow[] = [];
  for (const [name, pid, base, token] of [
    ['floor: the store + one durable row per read, no guard', floor.pid, floor.base, undefined],
    ['guarded read, cached token, audit off (guard + store)', guardOnly.pid, guardOnly.base, guardOnly.token],
    ['guarded read, cached token, durable audit (guard + store)', guardAudited.pid, guardAudited.base, guardAudited.token],
    ['guarded read, cached token, durable audit (smart-auth /fhir)', smartAuth.pid, `${smartAuth.url}/fhir`, smartAuthToken],
  ] as const) {
    // The baseline is measured again before each row, so that both see the same machine.
    const baseline = await measure(store.pid, store.url);
    rows.push({ name, baselineName, baseline, result: await measure(pid, base, token, pid === smartAuth.pid ? statementCounter(smartAuth.url) : undefined) });
  }
  rows.push({
    name: 'guard proxy, full rules, durable audit (in front of Medplum)',
    baselineName: 'Medplum\'s in-memory FHIR repository alone, unguarded',
    baseline: await measure(medplum.pid, medplum.url),
    result: await measure(proxy.pid, proxyBase, proxyToken),
  });
  return { rows, serverPid: smartAuth.pid, stop: async () => { for (const stop of stops.reverse()) await stop(); } };
};

if (isMain(import.meta.url)) await runBenches('guarded reads', [benchReads]);
