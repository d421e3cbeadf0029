// A PostgreSQL schema of its own for one test, on TEST_POSTGRES_URL (default 127.0.0.1:5432, database `test`).
import { randomBytes } from 'node:crypto';
import knexFactory from 'knex';

export const POSTGRES_URL = process.env.TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export interface PostgresSchema {
  /** Connection URL whose search_path is the new schema. */
  url: string;
  drop(): Promise<void>;
}

/**
 * Creates a fresh schema, or returns undefined when PostgreSQL is not reachable so the caller can
 * skip — except when CI is set, where an unreachable PostgreSQL fails the run.
 */
export async function freshPostgresSchema(prefix: string, databaseUrl = POSTGRES_URL): Promise<PostgresSchema | undefined> {
  const admin = knexFactory({ client: 'pg', connection: databaseUrl, pool: { min: 0, max: 1 }, acquireConnectionTimeout: 3000 });
  try {
    await admin.raw('select 1');
  } catch (err) {
    await admin.destroy();
    if (process.env.CI) throw new Error(`PostgreSQL is not reachable at ${databaseUrl} (CI is set, so this fails): ${(err as Error).message}`);
    return undefined;
  }
  const schema = `${prefix}_${randomBytes(6).toString('hex')}`;
  await admin.raw(`create schema ${schema}`);
  const url = new URL(databaseUrl);
  url.searchParams.set('options', `-c search_path=${schema}`);
  return {
    url: url.toString(),
    async drop() {
      try {
        await admin.raw(`drop schema if exists ${schema} cascade`);
      } finally {
        await admin.destroy();
      }
    },
  };
}
