// One knex connection for SQLite (the embedded default) and PostgreSQL (several instances).
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import { migrations } from '../db/migrations/index.ts';
import { DEFAULT_POOL, type PoolSettings } from './config.ts';

export type Db = Knex;

export function openDatabase(databaseUrl: string, pool: PoolSettings = DEFAULT_POOL): Db {
  if (databaseUrl.startsWith('sqlite:')) {
    const filename = databaseUrl.slice('sqlite:'.length) || ':memory:';
    if (filename !== ':memory:') mkdirSync(dirname(filename), { recursive: true });
    return knexFactory({
      client: 'sqlite3',
      connection: { filename },
      useNullAsDefault: true,
      // One connection: SQLite serialises writers anyway, and one connection keeps
      // ':memory:' databases whole and unique-constraint races impossible to misread.
      pool: {
        min: 1,
        max: 1,
        afterCreate(conn: { run(sql: string, cb: (err: Error | null) => void): void }, done: (err: Error | null, conn: unknown) => void) {
          conn.run('PRAGMA journal_mode = WAL', (walErr) => {
            if (walErr) return done(walErr, conn);
            conn.run('PRAGMA busy_timeout = 5000', (busyErr) => {
              if (busyErr) return done(busyErr, conn);
              // FULL: every commit is fsynced (WAL + NORMAL would only sync at checkpoints), so an audit
              // record whose append resolved survives kill -9 and power loss. The cost is one fsync per
              // write transaction; the audit store's group commit spreads it over every queued event.
              conn.run('PRAGMA synchronous = FULL', (syncErr) => {
                if (syncErr) return done(syncErr, conn);
                conn.run('PRAGMA foreign_keys = ON', (fkErr) => done(fkErr, conn));
              });
            });
          });
        },
      },
    });
  }
  return knexFactory({
    client: 'pg',
    connection: { connectionString: databaseUrl, statement_timeout: pool.statementTimeoutMs || undefined },
    pool: { min: 0, max: pool.max },
    acquireConnectionTimeout: pool.acquireTimeoutMs,
  });
}

export async function migrate(db: Db): Promise<void> {
  await db.migrate.latest({
    migrationSource: {
      getMigrations: async () => migrations.map((m) => m.name),
      getMigrationName: (name: string) => name,
      getMigration: async (name: string) => migrations.find((m) => m.name === name)!,
    },
  });
}

/** Epoch seconds: the unit of every expiry column. */
export const nowSeconds = () => Math.floor(Date.now() / 1000);
