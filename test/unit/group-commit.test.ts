// Group commit on a real SQLite file: concurrent writes share transactions, each settles with its own
// outcome, and one kind's failure does not fail the other kinds of the same batch.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import knexFactory from 'knex';
import { commitInsert, GroupCommit, NotWritten, type WriteKind } from '../../server/group-commit.ts';
import type { Db } from '../../server/db.ts';

describe('group commit', () => {
  let dir: string;
  let db: Db;
  /** Calls of insertOnce.write: one per transaction it takes part in. */
  let transactions: number;
  /** The items of each of those calls. */
  let batches: string[][];

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'smart-auth-group-commit-'));
    db = knexFactory({ client: 'sqlite3', connection: { filename: join(dir, 'g.sqlite') }, useNullAsDefault: true, pool: { min: 1, max: 1 } });
    await db.schema.createTable('items', (t) => t.string('id').primary());
    transactions = 0;
    batches = [];
  });
  afterEach(async () => {
    await db.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Inserts ids; an id already stored (or given twice) is refused alone, as Error. */
  const insertOnce: WriteKind<string, string> = {
    async write({ q, rows }, ids) {
      transactions++;
      batches.push(ids);
      const inserted = new Set((await rows<{ id: string }>(q('items').insert([...new Set(ids)].map((id) => ({ id }))).onConflict('id').ignore().returning('id'))).map((r) => r.id));
      const seen = new Set<string>();
      return { outcomes: ids.map((id) => (inserted.has(id) && !seen.has(id) && seen.add(id) ? id : new Error(`${id} is taken`))) };
    },
  };
  const broken: WriteKind<string, void> = {
    async write({ q, rows }) {
      await rows(q.raw('select * from no_such_table'));
      return { outcomes: [] };
    },
  };

  it('writes what arrives in one turn of the event loop in one transaction, settling each item alone', async () => {
    const writer = new GroupCommit(db);
    const results = await Promise.allSettled(['a', 'b', 'a', 'c'].map((id) => writer.submit(insertOnce, id)));
    assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    assert.equal(transactions, 1);
    assert.deepEqual((await db('items').orderBy('id').pluck('id')), ['a', 'b', 'c']);
  });

  it('writes that arrive during a flush wait for the next one, and nothing is lost', async () => {
    const writer = new GroupCommit(db);
    const all: Promise<string>[] = [];
    for (let i = 0; i < 50; i++) {
      all.push(writer.submit(insertOnce, `id-${i}`));
      if (i % 10 === 9) await new Promise((r) => setImmediate(r));
    }
    assert.equal((await Promise.all(all)).length, 50);
    await writer.idle();
    assert.equal(Number((await db('items').count({ n: '*' }).first())?.n), 50);
    assert.ok(transactions < 50, `${transactions} transactions for 50 writes`);
  });

  it('a failing kind fails its own writes only; the others of the batch are still written', async () => {
    const writer = new GroupCommit(db);
    const [good, bad] = await Promise.allSettled([writer.submit(insertOnce, 'x'), writer.submit(broken, 'y')]);
    assert.equal(good.status, 'fulfilled');
    assert.equal(bad.status, 'rejected');
    assert.match(String((bad as PromiseRejectedResult).reason), /no_such_table/);
    assert.deepEqual(await db('items').pluck('id'), ['x']);
  });

  describe('under load, a flush waits briefly for its batch to fill', () => {
    // A linger longer than the test's timeout: a test passes only if nothing waits for it to end.
    const FOREVER = 10 * 60_000;
    const tick = () => new Promise((r) => setImmediate(r));

    it('waits for as many writes as the previous batch had, and flushes as soon as they are there', async () => {
      const writer = new GroupCommit(db, FOREVER);
      await Promise.all(['a1', 'a2', 'a3'].map((id) => writer.submit(insertOnce, id)));
      // Three writers arriving a few event-loop turns apart: one batch, not three.
      const next: Promise<string>[] = [];
      for (const id of ['b1', 'b2', 'b3']) {
        next.push(writer.submit(insertOnce, id));
        for (let i = 0; i < 5; i++) await tick();
      }
      await Promise.all(next);
      assert.deepEqual(batches, [['a1', 'a2', 'a3'], ['b1', 'b2', 'b3']]);
    });

    it('flushes a short batch once the linger is over', async () => {
      const writer = new GroupCommit(db, 20);
      await Promise.all(['a1', 'a2', 'a3'].map((id) => writer.submit(insertOnce, id)));
      await writer.submit(insertOnce, 'b1');
      assert.deepEqual(batches, [['a1', 'a2', 'a3'], ['b1']]);
    });

    it('after a lone write, the next write does not wait for company', async () => {
      const writer = new GroupCommit(db, FOREVER);
      await writer.submit(insertOnce, 'a');
      await writer.submit(insertOnce, 'b');
      assert.deepEqual(batches, [['a'], ['b']]);
    });
  });

  describe('guarded writes (a token request: its jti guards its other writes)', () => {
    /** A guard kind: true when the id was new. */
    const isNew: WriteKind<string, boolean> = {
      guard: 1,
      async write({ q, rows }, ids) {
        transactions++;
        const inserted = new Set((await rows<{ id: string }>(q('items').insert([...new Set(ids)].map((id) => ({ id }))).onConflict('id').ignore().returning('id'))).map((r) => r.id));
        return { outcomes: ids.map((id) => inserted.has(id)) };
      },
    };

    it('writes the dependents in the same transaction when every guard is true', async () => {
      const writer = new GroupCommit(db);
      const { guards, dependents } = writer.submitGuarded([[[isNew, 'jti-1'], [isNew, 'jti-2']]], () => [writer.submit(insertOnce, 'record-1')]);
      assert.deepEqual(await Promise.all(guards[0]), [true, true]);
      assert.deepEqual(await Promise.all(dependents), ['record-1']);
      assert.equal(transactions, 2, 'one transaction: each kind writes once in it');
      assert.deepEqual(await db('items').orderBy('id').pluck('id'), ['jti-1', 'jti-2', 'record-1']);
    });

    it('writes none of the dependents when a guard is false, and leaves other writes of the batch alone', async () => {
      await db('items').insert({ id: 'jti-used' });
      const writer = new GroupCommit(db);
      // Another request's write arrives first in the same batch: the guard still runs before its kind.
      const other = writer.submit(insertOnce, 'other');
      const { guards, dependents } = writer.submitGuarded([[[isNew, 'jti-new'], [isNew, 'jti-used']]], () => [writer.submit(insertOnce, 'record-2')]);
      assert.deepEqual(await Promise.all(guards[0]), [true, false]);
      await assert.rejects(dependents[0], NotWritten);
      assert.equal(await other, 'other');
      assert.deepEqual(await db('items').orderBy('id').pluck('id'), ['jti-new', 'jti-used', 'other']);
    });

    it('writes a later stage of guards only when the earlier one is true', async () => {
      await db('items').insert({ id: 'jti-used' });
      const writer = new GroupCommit(db);
      const later: WriteKind<string, boolean> = { ...isNew, guard: 2 };
      const { guards, dependents } = writer.submitGuarded([[[isNew, 'jti-used']], [[later, 'code-1']]], () => [writer.submit(insertOnce, 'record-4')]);
      assert.deepEqual(await Promise.all(guards[0]), [false]);
      await assert.rejects(guards[1][0], NotWritten);
      await assert.rejects(dependents[0], NotWritten);
      assert.deepEqual(await db('items').pluck('id'), ['jti-used'], 'the code is not consumed');
    });

    it('writes none of the dependents when the guard cannot be written (fail closed)', async () => {
      const writer = new GroupCommit(db);
      const failing: WriteKind<string, boolean> = { guard: 1, write: broken.write as WriteKind<string, boolean>['write'] };
      const { guards, dependents } = writer.submitGuarded([[[failing, 'x']]], () => [writer.submit(insertOnce, 'record-3')]);
      await assert.rejects(guards[0][0]);
      await assert.rejects(dependents[0], NotWritten);
      assert.deepEqual(await db('items').pluck('id'), []);
    });
  });

  it('inserts the rows of a batch with one multi-row INSERT per table and shape, each settling alone', async () => {
    await db.schema.createTable('links', (t) => { t.string('jti').primary(); t.string('grant_id'); });
    const statements: string[] = [];
    db.on('query', (q: { sql: string }) => statements.push(q.sql));
    const link = (jti: string) => commitInsert(db, { table: 'links', row: { jti, grant_id: 'g' }, tail: 'on conflict (??) do nothing', tailBindings: ['jti'] });
    await Promise.all([link('a'), link('b'), link('c'), commitInsert(db, { table: 'items', row: { id: 'x' } })]);
    assert.deepEqual(statements.filter((sql) => /^insert/i.test(sql)).map((sql) => /into [`"](\w+)/.exec(sql)![1]).sort(), ['items', 'links']);
    assert.deepEqual(await db('links').orderBy('jti').pluck('jti'), ['a', 'b', 'c']);
    // A row that cannot be written fails alone.
    const results = await Promise.allSettled([commitInsert(db, { table: 'items', row: { id: 'x' } }), link('d')]);
    assert.deepEqual(results.map((r) => r.status), ['rejected', 'fulfilled']);
  });
});
