// Durability: a process appending as fast as it can is killed with SIGKILL; after reopening, the chain
// verifies and every event whose append had resolved (the child printed its id) is stored.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CompactSign, compactVerify, exportJWK, generateKeyPair, type CryptoKey } from 'jose';
import { migrate, openDatabase } from '../../server/db.ts';
import { createAuditStore } from '../../server/audit/audit-store.ts';
import { freshPostgresSchema, POSTGRES_URL } from '../support/postgres.ts';

const ROOT = new URL('../../', import.meta.url).pathname;

/**
 * Runs the child until it has answered `appends` appends (or for 20 s), then SIGKILLs it; returns the ids it printed.
 * A count, not a time: a loaded machine answers fewer in a given time.
 */
async function appendUntilKilled(databaseUrl: string, jwk: object, appends: number): Promise<{ ids: string[]; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/audit-crash-child.ts'], {
    cwd: ROOT,
    env: { ...process.env, DATABASE_URL: databaseUrl, AUDIT_CRASH_JWK: JSON.stringify(jwk), WORKERS: '32', CHECKPOINT_EVERY: '250' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  for (let i = 0; i < 300 && !/^ready /m.test(stdout) && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 50));
  assert.match(stdout, /^ready /m, `the child did not start:\n${stderr}`);
  const answered = () => stdout.split('\n').length - 2; // the ready line and the line being written
  for (let i = 0; i < 400 && answered() < appends && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(child.exitCode, null, `the child stopped by itself:\n${stderr}`);
  child.kill('SIGKILL');
  await exited; // 'close': stdout fully read
  const lines = stdout.split('\n');
  lines.pop(); // a line cut by the kill is not an answered append
  return { ids: lines.filter((l) => !l.startsWith('ready ')), stderr };
}

async function crashAndCheck(databaseUrl: string, processes = 1) {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const setup = openDatabase(databaseUrl);
  await migrate(setup);
  await setup.destroy();

  const jwk = await exportJWK(privateKey);
  const children = await Promise.all(Array.from({ length: processes }, () => appendUntilKilled(databaseUrl, jwk, 1000)));
  for (const { ids: answered, stderr } of children) assert.ok(answered.length > 100, `only ${answered.length} appends were answered in 20 s:\n${stderr}`);
  const ids = children.flatMap((c) => c.ids);

  const db = openDatabase(databaseUrl);
  try {
    const store = createAuditStore(db, {
      sign: async (payload) => new CompactSign(new TextEncoder().encode(JSON.stringify(payload))).setProtectedHeader({ alg: 'ES256' }).sign(privateKey as CryptoKey),
      verify: async (jws) => JSON.parse(new TextDecoder().decode((await compactVerify(jws, publicKey)).payload)) as object,
    });
    const result = await store.verify();
    assert.equal(result.ok, true, JSON.stringify(result));
    const stored = new Set<string>();
    for (let after = 0; ;) {
      const rows: { seq: number; id: string }[] = await db('audit_events').where('seq', '>', after).orderBy('seq').limit(5000).select('seq', 'id');
      if (!rows.length) break;
      for (const r of rows) stored.add(r.id);
      after = Number(rows[rows.length - 1].seq);
    }
    const lost = ids.filter((id) => !stored.has(id));
    assert.deepEqual(lost, [], `${lost.length} of ${ids.length} answered appends are not stored`);
    assert.ok(result.ok && result.records >= ids.length);
    assert.ok(result.ok && result.checkpoints >= 1, 'checkpoints were written under load');
    // The chain goes on after the crash.
    await store.append([{ resourceType: 'AuditEvent', id: randomUUID(), recorded: new Date().toISOString(), type: { code: 'rest' } }]);
    assert.equal((await store.verify()).ok, true);
    await store.close();
    console.log(`      (${ids.length} appends answered before SIGKILL, ${result.ok && result.records} records stored, ${result.ok && result.checkpoints} checkpoints)`);
  } finally {
    await db.destroy();
  }
}

describe('audit store after kill -9 under load', function () {
  this.timeout(60_000);

  it('on SQLite: the chain verifies and no answered append is lost', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'audit-crash-'));
    try {
      await crashAndCheck(`sqlite:${join(dir, 'audit.sqlite')}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('on SQLite, two processes on one file: one chain that verifies, no answered append lost', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'audit-crash-'));
    try {
      await crashAndCheck(`sqlite:${join(dir, 'audit.sqlite')}`, 2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('on PostgreSQL: the chain verifies and no answered append is lost', async function () {
    const pg = await freshPostgresSchema('audit_crash');
    if (!pg) {
      console.log(`      (skipped: PostgreSQL is not reachable at ${POSTGRES_URL}; set TEST_POSTGRES_URL)`);
      return this.skip();
    }
    try {
      await crashAndCheck(pg.url);
    } finally {
      await pg.drop();
    }
  });
});
