// The PostgreSQL pool settings reach the connections: size, waiting for a connection, statement timeout.
import assert from 'node:assert/strict';
import { freshPostgresSchema, POSTGRES_URL, type PostgresSchema } from '../support/postgres.ts';
import { openDatabase, type Db } from '../../server/db.ts';
import { loadConfig } from '../../server/config.ts';

describe('database pool settings', () => {
  it('are read from the environment (bad values: config.test.ts)', () => {
    const config = loadConfig({ DATABASE_POOL_MAX: '25', DATABASE_ACQUIRE_TIMEOUT_MS: '2000', DATABASE_STATEMENT_TIMEOUT_MS: '0' });
    assert.deepEqual(config.databasePool, { max: 25, acquireTimeoutMs: 2000, statementTimeoutMs: 0 });
  });

  describe('on PostgreSQL', () => {
    let schema: PostgresSchema | undefined;
    let db: Db;
    before(async function () {
      schema = await freshPostgresSchema('pool_test');
      if (!schema) {
        console.log(`      (skipped: PostgreSQL is not reachable at ${POSTGRES_URL}; set TEST_POSTGRES_URL)`);
        return this.skip();
      }
      db = openDatabase(schema.url, { max: 2, acquireTimeoutMs: 300, statementTimeoutMs: 250 });
    });
    after(async () => {
      await db?.destroy();
      await schema?.drop();
    });

    it('sets statement_timeout on every connection, and a longer statement fails', async () => {
      assert.equal((await db.raw('show statement_timeout')).rows[0].statement_timeout, '250ms');
      await assert.rejects(db.raw('select pg_sleep(2)'), /statement timeout/);
    });

    it('holds at most DATABASE_POOL_MAX connections; a query that cannot get one fails after the acquire timeout', async () => {
      const held: (() => void)[] = [];
      const transactions = [0, 1].map(() => db.transaction((trx) => trx.raw('select 1').then(() => new Promise<void>((release) => held.push(release)))));
      while (held.length < 2) await new Promise((r) => setTimeout(r, 10));
      await assert.rejects(db.raw('select 1'), /Timeout acquiring a connection/);
      for (const release of held) release();
      await Promise.all(transactions);
      assert.equal((await db.raw('select 1 as one')).rows[0].one, 1);
    });
  });
});
