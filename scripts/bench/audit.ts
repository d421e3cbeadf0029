// What the audit trail costs: guarded reads (GET Patient/pat-1) with every access stored in the
// hash chain before it is answered, against the same guard without it, in one run.
//   node --import tsx scripts/bench/audit.ts [requests=3000] [connections=10]
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../test/support/server.ts';
import { startScript } from '../../test/support/processes.ts';
import { load, report } from './lib.ts';

const total = Number(process.argv[2] ?? 3000);
const connections = Number(process.argv[3] ?? 10);
const dir = mkdtempSync(join(tmpdir(), 'smart-auth-bench-audit-'));

const results: [string, Awaited<ReturnType<typeof load>>][] = [];
for (const mode of ['off', 'on']) {
  const port = await freePort();
  const server = await startScript('scripts/bench/audited-server.ts', { PORT: String(port), DATABASE_URL: `sqlite:${join(dir, `${mode}.sqlite`)}`, AUDIT: mode }, /listening/);
  try {
    const token = /token=(\S+)/.exec(server.output())![1];
    const request = () => ({ method: 'GET', path: '/fhir/Patient/pat-1', headers: { authorization: `Bearer ${token}` } });
    await load(`http://127.0.0.1:${port}`, 100, 5, request);
    results.push([`guarded read, audit ${mode}`, await load(`http://127.0.0.1:${port}`, total, connections, request)]);
  } finally {
    await server.stop();
  }
}
console.log(`smart-auth audit trail on GET Patient/pat-1, Node ${process.version}, SQLite file (synchronous=FULL), ${total} requests, ${connections} connections`);
for (const [name, r] of results) report(name, r);
console.log(`audited throughput: ${(100 * results[1][1].rps / results[0][1].rps).toFixed(0)}% of unaudited`);
