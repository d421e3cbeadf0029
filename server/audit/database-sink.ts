// The guard's audit into smart-auth's own tamper-evident chain, for a guard (the proxy, or the package in
// someone's service) that shares the authorization server's database (DATABASE_URL: SQLite or
// PostgreSQL). The authorization server created the tables and signs the checkpoints; this only appends,
// through the same group-committed writer, so records of every process form one chain.
import { openDatabase, type Db } from '../db.ts';
import { appendToChain } from './audit-store.ts';
import type { AuditEvent } from './types.ts';

export interface DatabaseAudit {
  /** Commits the events to the chain; rejects when they could not be (the guard then answers 503). */
  append(events: AuditEvent[]): Promise<void>;
  /** Closes the database when this opened it. */
  close(): Promise<void>;
}

/** A database URL (opened here, closed by close()) or a knex handle the caller keeps. */
export function databaseAudit(database: string | Db): DatabaseAudit {
  const db = typeof database === 'string' ? openDatabase(database) : database;
  return {
    append: (events) => appendToChain(db, events),
    close: async () => { if (typeof database === 'string') await db.destroy(); },
  };
}
