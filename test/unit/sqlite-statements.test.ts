// Prepared statements kept per SQLite connection (server/sqlite-statements.ts).
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase, type Db } from '../../server/db.ts';
import { rawTransaction, readRows } from '../../server/db-statements.ts';

describe('kept SQLite statements', () => {
  let db: Db;
  beforeEach(async () => {
    db = openDatabase(`sqlite:${join(mkdtempSync(join(tmpdir(), 'smart-auth-stmt-')), 'db.sqlite')}`);
    await db.schema.createTable('items', (t) => { t.string('id').primary(); t.integer('n'); });
  });
  afterEach(() => db.destroy());

  it('runs the same SQL again and again with other bindings, inside and outside transactions', async () => {
    for (let n = 0; n < 5; n++) await rawTransaction(db, ({ q, rows }) => rows(q('items').insert({ id: `i${n}`, n })));
    const read = (n: number) => readRows<{ id: string }>(db, db('items').where('n', n).select('id'));
    assert.deepEqual(await Promise.all([0, 1, 2, 3, 4].map(read)), [0, 1, 2, 3, 4].map((n) => [{ id: `i${n}` }]));
  });

  it('reports a statement that does not prepare to its caller, every time, and stays usable', async () => {
    const broken = () => rawTransaction(db, ({ q, rows }) => rows(q('no_such_table').insert({ id: 'x' })));
    await assert.rejects(broken, /no such table/);
    await assert.rejects(broken, /no such table/);
    await rawTransaction(db, ({ q, rows }) => rows(q('items').insert({ id: 'after', n: 1 })));
    assert.deepEqual(await db('items').pluck('id'), ['after']);
  });

  it('reports a failing run (a constraint) without losing the statement', async () => {
    const insert = (id: string) => rawTransaction(db, ({ q, rows }) => rows(q('items').insert({ id, n: 1 })));
    await insert('a');
    await assert.rejects(() => insert('a'), /UNIQUE/);
    await insert('b');
    assert.deepEqual(await db('items').orderBy('id').pluck('id'), ['a', 'b']);
  });

  it('reads beside a writer that holds the one read-write connection (WAL), seeing what was committed', async () => {
    await rawTransaction(db, ({ q, rows }) => rows(q('items').insert({ id: 'committed', n: 1 })));
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const writer = rawTransaction(db, async ({ q, rows }) => {
      await rows(q('items').insert({ id: 'uncommitted', n: 2 }));
      await held;
    });
    try {
      // Without the read-only connection this would wait for the writer's connection, which waits for it.
      const read = await Promise.race([
        readRows<{ id: string }>(db, db('items').orderBy('id').select('id')),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the read waited for the writer')), 2000)),
      ]);
      assert.deepEqual(read, [{ id: 'committed' }]);
    } finally {
      release();
      await writer;
    }
    assert.deepEqual(await readRows(db, db('items').orderBy('id').select('id')), [{ id: 'committed' }, { id: 'uncommitted' }]);
  });

  it('closes the database with statements kept on both its connections', async () => {
    await rawTransaction(db, ({ q, rows }) => rows(q('items').insert({ id: 'a', n: 1 })));
    await readRows(db, db('items').select('id'));
    await db.destroy();
    db = openDatabase('sqlite::memory:'); // for afterEach
  });
});
