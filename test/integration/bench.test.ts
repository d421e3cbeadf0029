// `npm run bench` keeps working: a tiny run must finish, print every row, and exit 0 (it exits 1 when a
// row got error answers, i.e. when a benchmark stopped measuring what it says). The figures are not checked,
// but every smart-auth row reports its SQL statements per request and every row the driver's CPU share.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const ROWS = [
  'floor: client_credentials, bare, writes durable', 'floor: authorization-code exchange, bare, writes durable', 'floor: the store + one durable row per read',
  'client_credentials', 'authorization-code exchange', 'introspection',
  'guarded read, cached token, audit off', 'guarded read, cached token, durable audit (guard + store)', 'guarded read, cached token, durable audit (smart-auth /fhir)',
  'guard proxy, full rules, durable audit (in front of Medplum)',
];

describe('the benchmarks', function () {
  this.timeout(180_000);
  before(function () {
    if (process.env.TEST_DATABASE === 'postgres') this.skip(); // they run smart-auth on SQLite; once is enough
  });

  it('run end to end with a few requests and print one table', async () => {
    const root = new URL('../../', import.meta.url).pathname;
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'scripts/bench/index.ts', '30', '2'], {
      cwd: root, maxBuffer: 1 << 20, env: { ...process.env, BENCH_WARM_UP_SECONDS: '0', BENCH_SECONDS: '1' },
    });
    const lines = stdout.split('\n');
    for (const row of ROWS) assert.ok(lines.some((line) => line.startsWith(row) && /\d+%/.test(line)), `a row for ${row}:\n${stdout}`);
    // sql (statements per request) of the smart-auth rows, and drv (the driver's CPU share) of both sides.
    const smartAuthRows = lines.filter((line) => /^(client_credentials|authorization-code|introspection|guarded read.*smart-auth)/.test(line));
    for (const line of smartAuthRows) assert.match(line, /\/s +[\d.]+ +[\d.]+ +[\d.]+ +\d+\.\d\d +\d+% \|.*\d+% \|/, `sql and drv columns:\n${line}`);
    assert.doesNotMatch(stdout, /! /, 'no row got error answers');
    assert.match(stdout, /peak RSS of the smart-auth server under these loads: \d+ MB/);
    assert.match(stdout, /durable ceiling: .* takes [\d.]+ ms .* 2 connections \(closed loop\) cannot exceed \d+ req\/s/);
  });
});
