// One knex connection for SQLite (the embedded default) and PostgreSQL (several instances).
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import type sqlite3 from 'sqlite3';
import { finalizeStatements } from './sqlite-statements.ts';
import { isPg } from './db-statements.ts';
import { migrations } from '../db/migrations/index.ts';
import { DEFAULT_POOL, type PoolSettings } from './config.ts';

export type Db = Knex;

export function openDatabase(databaseUrl: string, pool: PoolSettings = DEFAULT_POOL): Db {
  if (databaseUrl.startsWith('sqlite:')) {
    const filename = databaseUrl.slice('sqlite:'.length) || ':memory:';
    if (filename === ':memory:') return openSqlite(filename);
    mkdirSync(dirname(filename), { recursive: true });
    return withReadConnection(openSqlite(filename), filename);
  }
  return knexFactory({
    client: 'pg',
    connection: { connectionString: databaseUrl, statement_timeout: pool.statementTimeoutMs || undefined },
    pool: { min: 0, max: pool.max },
    acquireConnectionTimeout: pool.acquireTimeoutMs,
  });
}

function openSqlite(filename: string): Db {
  const db = knexFactory({
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
  // The statements kept for a connection (sqlite-statements.ts) are finalized before knex closes it.
  const client = db.client as { destroyRawConnection(connection: sqlite3.Database): Promise<void> };
  const destroyRawConnection = client.destroyRawConnection.bind(client);
  client.destroyRawConnection = async (connection) => {
    await finalizeStatements(connection);
    return destroyRawConnection(connection);
  };
  return db;
}

/** A read-only connection beside a SQLite file's one read-write connection: see readConnection. */
const readConnections = new WeakMap<Db, () => Promise<sqlite3.Database>>();

/**
 * SQLite in WAL mode lets other connections read while the writer is inside a transaction (the group
 * commit's, whose COMMIT waits for the disk): the hot reads take this connection instead of queueing
 * for the writer's. It is opened on first use (after the migrations made the file) and closed with `db`.
 */
function withReadConnection(db: Db, filename: string): Db {
  let reader: Promise<sqlite3.Database> | undefined;
  // The driver is imported here, as knex does, so that a PostgreSQL-only install needs no sqlite3.
  const open = async () => {
    const { default: driver } = await import('sqlite3');
    return new Promise<sqlite3.Database>((resolve, reject) => {
      const connection = new driver.Database(filename, driver.OPEN_READONLY, (err) => {
        if (err) return reject(err);
        connection.run('PRAGMA busy_timeout = 5000', (pragmaErr) => (pragmaErr ? reject(pragmaErr) : resolve(connection)));
      });
    });
  };
  readConnections.set(db, () => (reader ??= open().catch((err) => { reader = undefined; throw err; })));
  // knex's own destroy() is read-only; it ends in its client's, which closes this connection first.
  const client = db.client as { destroy(callback?: unknown): Promise<void> };
  const destroy = client.destroy.bind(client);
  client.destroy = async (callback?: unknown) => {
    const opened = await reader?.catch(() => undefined);
    reader = undefined;
    if (opened) {
      await finalizeStatements(opened);
      await new Promise<void>((resolve) => opened.close(() => resolve()));
    }
    return destroy(callback);
  };
  return db;
}

/** The read-only connection of a SQLite file database; undefined for PostgreSQL and SQLite :memory:. */
export function readConnection(db: Db): Promise<sqlite3.Database> | undefined {
  return readConnections.get(db)?.();
}

/** The advisory lock instances on one PostgreSQL database take turns on to migrate it (any fixed bigint). */
const MIGRATION_LOCK = 7591_0001;
/** How long an instance waits for another's migrations before it fails to start. */
const MIGRATION_WAIT = '120s';

/**
 * Brings the schema up to date. On PostgreSQL instances starting together take turns: knex's own migration lock
 * lives in tables it creates without a lock, so on an empty schema they race to create them (one fails on a
 * duplicate type) and may insert two lock rows, after which every migration counts as locked. The turn is an
 * advisory lock held on a connection of its own (the pool may have one connection only), bounded by MIGRATION_WAIT.
 */
export async function migrate(db: Db): Promise<void> {
  if (!isPg(db)) return migrateLatest(db);
  const turn = knexFactory({ client: 'pg', connection: db.client.config.connection, pool: { min: 0, max: 1 } });
  try {
    await turn.transaction(async (trx) => {
      await trx.raw(`set local lock_timeout = '${MIGRATION_WAIT}'`);
      await trx.raw('select pg_advisory_xact_lock(?)', [MIGRATION_LOCK]);
      await migrateLatest(db);
    });
  } finally {
    await turn.destroy();
  }
}

async function migrateLatest(db: Db): Promise<void> {
  await db.migrate.latest({
    migrationSource: {
      getMigrations: async () => migrations.map((m) => m.name),
      getMigrationName: (name: string) => name,
      getMigration: async (name: string) => migrations.find((m) => m.name === name)!,
    },
  });
}

/** Whether smart-auth has migrated this database to the schema this code knows (a guard sharing it migrates nothing). */
export async function migrated(db: Db): Promise<boolean> {
  if (!(await db.schema.hasTable('knex_migrations'))) return false;
  const applied = new Set((await db('knex_migrations').select('name')).map((row: { name: string }) => row.name));
  return migrations.every((m) => applied.has(m.name));
}

/** Epoch seconds: the unit of every expiry column. */
export const nowSeconds = () => Math.floor(Date.now() / 1000);
