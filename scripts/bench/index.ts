// `npm run bench`: every throughput benchmark in one run and one table, each smart-auth figure next
// to its baseline measured in the same run, and the peak memory of the smart-auth processes.
//   npm run bench -- [requests=3000] [connections=10]
//   BENCH_DATABASE_URL=postgres://… npm run bench    smart-auth on PostgreSQL (the baselines stay as they are)
import { benchTokens } from './tokens.ts';
import { benchReads } from './reads.ts';
import { peakRssMb, printTable, type BenchRow } from './lib.ts';

const total = Number(process.argv[2] ?? 3000);
const connections = Number(process.argv[3] ?? 10);

const rows: BenchRow[] = [];
const peaks: number[] = [];
for (const bench of [benchTokens, benchReads]) {
  const run = await bench(total, connections);
  rows.push(...run.rows);
  peaks.push(peakRssMb(run.serverPid));
  await run.stop();
}
if (!printTable(`${total} requests per row, ${connections} connections, smart-auth on ${process.env.BENCH_DATABASE_URL ? 'PostgreSQL' : 'a SQLite file'}, every server in its own process`, rows)) process.exitCode = 1;
console.log(`peak RSS of the smart-auth server under these loads: ${Math.max(...peaks).toFixed(0)} MB (${peaks.map((p) => p.toFixed(0)).join(' MB, ')} MB)`);
