// `npm run bench`: every throughput benchmark in one run and one table, each smart-auth figure next
// to its baseline measured in the same run, and the peak memory of the smart-auth processes.
//   npm run bench -- [requests per token row=3000] [connections=10]
//   BENCH_SECONDS=10 BENCH_WARM_UP_SECONDS=5 npm run bench    seconds of the timed rows (introspection, reads) and of their warm-up
//   BENCH_DATABASE_URL=postgres://… npm run bench    smart-auth on PostgreSQL (the baselines stay as they are)
import { benchTokens } from './tokens.ts';
import { benchReads } from './reads.ts';
import { runBenches } from './lib.ts';

await runBenches('all benchmarks', [benchTokens, benchReads]);
