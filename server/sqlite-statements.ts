// Prepared statements kept per SQLite connection, for the statements the hot paths run through the
// connection itself (see db-statements.ts). node-sqlite3's Database#all prepares, runs and finalizes a
// statement as three separate jobs on libuv's thread pool, each a round trip between threads; a kept
// statement runs as one. The SQL of the hot paths takes few shapes (multi-row inserts by row count),
// so a small cache holds them all; the least recently used is finalized when it is full.
import type sqlite3 from 'sqlite3';

const KEPT_PER_CONNECTION = 256;

interface Kept {
  statement: sqlite3.Statement;
  /** Settles when the statement is prepared; rejects when it cannot be (node-sqlite3 then drops the runs queued on it without calling them). */
  prepared: Promise<void>;
}

const kept = new WeakMap<sqlite3.Database, Map<string, Kept>>();

function prepare(connection: sqlite3.Database, statements: Map<string, Kept>, sql: string): Kept {
  let statement!: sqlite3.Statement;
  const prepared = new Promise<void>((resolve, reject) => {
    statement = connection.prepare(sql, (err: Error | null) => {
      if (!err) return resolve();
      statements.delete(sql); // not kept
      reject(err);
    });
  });
  prepared.catch(() => undefined); // reported to the runs waiting for it
  if (statements.size >= KEPT_PER_CONNECTION) {
    const [oldest, old] = statements.entries().next().value!;
    statements.delete(oldest);
    old.statement.finalize();
  }
  return { statement, prepared };
}

/** Runs `sql` with `bindings` on `connection` and returns its rows, through a kept prepared statement. */
export function sqliteRows(connection: sqlite3.Database, sql: string, bindings: readonly unknown[]): Promise<unknown[]> {
  let statements = kept.get(connection);
  if (!statements) kept.set(connection, (statements = new Map()));
  const entry = statements.get(sql) ?? prepare(connection, statements, sql);
  statements.delete(sql);
  statements.set(sql, entry); // the most recently used last
  return new Promise((resolve, reject) => {
    entry.prepared.catch(reject);
    entry.statement.all(bindings as unknown[], (err: Error | null, rows: unknown[]) => (err ? reject(err) : resolve(rows ?? [])));
  });
}

/** Finalizes the statements kept for `connection`: SQLite closes a connection only without open statements. */
export async function finalizeStatements(connection: sqlite3.Database): Promise<void> {
  const statements = kept.get(connection);
  if (!statements) return;
  kept.delete(connection);
  await Promise.all([...statements.values()].map(({ statement }) => new Promise<void>((resolve) => statement.finalize(() => resolve()))));
}
