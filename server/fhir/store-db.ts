// The demo FHIR store in the server's database (SQLite or PostgreSQL through
// knex): one row per resource in `fhir_resources` (db/migrations/002_fhir_store.ts),
// the resource itself as JSON text. Only the current version is kept.
//
// Search loads every row of the type and matches in memory with search.ts: the
// demo data set is a few dozen resources, so that is simpler and exactly as
// faithful as the in-memory store; a real data set would need indexed search
// columns instead.
//
// Writes are safe across processes sharing the database: create relies on the
// primary key, update is a compare-and-set on version_id (optimistic locking),
// and seeding inserts with ON CONFLICT DO NOTHING.

import type { Knex } from 'knex';

import {
  FhirStoreError,
  checkId,
  checkType,
  checkUpdate,
  loadDemoBundle,
  prepareCreate,
  prepareUpdate,
  searchParamsOf,
  versionOf,
  type FhirStore,
  type StoreOptions,
} from './demo-store.ts';
import { matchesCriteria, parseSearch } from './search.ts';
import { provenanceFor } from './provenance.ts';
import { readRows } from '../db-statements.ts';
import type { FhirBundle, FhirResource } from './types.ts';

const TABLE = 'fhir_resources';
/** Concurrent updates retried before giving up with 'transient' (503). */
const UPDATE_ATTEMPTS = 5;

interface Row {
  type: string;
  id: string;
  version_id: number;
  last_updated: string;
  resource: string;
}

function toRow(resource: FhirResource): Row {
  return {
    type: resource.resourceType,
    id: resource.id!,
    version_id: versionOf(resource) || 1,
    last_updated: resource.meta?.lastUpdated ?? new Date().toISOString(),
    resource: JSON.stringify(resource),
  };
}

const fromRow = (row: Pick<Row, 'resource'>) => JSON.parse(row.resource) as FhirResource;

/** A primary-key violation (SQLite or PostgreSQL). */
function isUniqueViolation(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return e?.code === '23505' || (e?.code === 'SQLITE_CONSTRAINT' && /UNIQUE|PRIMARY KEY/i.test(e.message ?? ''));
}

export function createDbStore(db: Knex, options: StoreOptions = {}): FhirStore {
  const now = options.now ?? (() => new Date());
  /** Runs a write, with the Provenance of what it wrote in the same transaction when one is asked for. */
  const withProvenance = <T>(provenance: FhirResource | undefined, write: (q: Knex) => Promise<{ written?: FhirResource; result: T }>): Promise<T> =>
    (provenance
      ? db.transaction(async (trx) => {
        const { written, result } = await write(trx);
        if (written) await trx(TABLE).insert(toRow(provenanceFor(provenance, written)));
        return result;
      })
      : write(db).then((r) => r.result));
  const rowsOf = (type: string): Promise<Pick<Row, 'resource'>[]> => db(TABLE).where({ type }).orderBy('id').select('resource');

  return {
    async read(type, id) {
      const [row] = await readRows<Pick<Row, 'resource'>>(db, db(TABLE).where({ type, id }).first('resource'));
      return row && fromRow(row);
    },

    async search(type, params = '') {
      const criteria = parseSearch(params); // before any I/O: a bad query fails fast
      return (await rowsOf(type)).map(fromRow).filter((r) => matchesCriteria(r, criteria));
    },

    async create(input, { provenance } = {}) {
      const resource = prepareCreate(input, now());
      try {
        await withProvenance(provenance, async (q) => {
          await q(TABLE).insert(toRow(resource));
          return { written: resource, result: undefined };
        });
      } catch (err) {
        if (isUniqueViolation(err)) throw new FhirStoreError('duplicate', `${resource.resourceType}/${resource.id} already exists`);
        throw err;
      }
      return resource;
    },

    async update(type, id, input, { ifMatch, provenance } = {}) {
      checkUpdate(type, id, input); // a bad request is 400/422 before any version check
      for (let attempt = 0; attempt < UPDATE_ATTEMPTS; attempt++) {
        try {
          const outcome = await withProvenance(provenance, (q) => updateOnce(q, type, id, input, ifMatch));
          if (outcome) return outcome;
        } catch (err) {
          if (!isUniqueViolation(err)) throw err; // created meanwhile: update it instead
        }
        // Another writer got there first: with If-Match that is a conflict, else try again on the new version.
        if (ifMatch !== undefined) throw new FhirStoreError('conflict', `${type}/${id} was changed concurrently`);
      }
      throw new FhirStoreError('transient', `${type}/${id} is being changed concurrently; try again`);
    },

    async types() {
      const rows: { type: string }[] = await db(TABLE).distinct('type').orderBy('type');
      return rows.map((r) => r.type);
    },

    async searchParams(type) {
      return searchParamsOf(type, (await rowsOf(type)).map(fromRow));
    },
  };

  /** One compare-and-set attempt of an update; no result when another writer got there first. */
  async function updateOnce(q: Knex, type: string, id: string, input: FhirResource, ifMatch: string | undefined)
    : Promise<{ written?: FhirResource; result: { resource: FhirResource; created: boolean } | undefined }> {
    const current: Pick<Row, 'version_id'> | undefined = await q(TABLE).where({ type, id }).first('version_id');
    const version = current === undefined ? undefined : Number(current.version_id);
    if (ifMatch !== undefined && String(version) !== ifMatch) {
      throw new FhirStoreError('conflict', current === undefined
        ? `${type}/${id} does not exist (If-Match ${ifMatch})`
        : `${type}/${id} is at version ${version}, not ${ifMatch}`);
    }
    const resource = prepareUpdate(type, id, input, version, now());
    if (version === undefined) {
      await q(TABLE).insert(toRow(resource));
      return { written: resource, result: { resource, created: true } };
    }
    const { version_id, last_updated, resource: json } = toRow(resource);
    const changed = await q(TABLE).where({ type, id, version_id: version }).update({ version_id, last_updated, resource: json });
    return changed === 1 ? { written: resource, result: { resource, created: false } } : { result: undefined };
  }
}

/**
 * Inserts the resources of `bundle` (the bundled demo data by default) when the
 * table is empty; otherwise does nothing. Idempotent and safe when several
 * processes seed at once: one transaction of INSERT … ON CONFLICT DO NOTHING,
 * so a seed is all or nothing and rows another process inserted are kept.
 * Returns whether the table was empty (two concurrent seeders may both say so).
 */
export async function seedDemoResources(db: Knex, bundle: FhirBundle = loadDemoBundle()): Promise<boolean> {
  const existing = await db(TABLE).first('id');
  if (existing) return false;
  const rows: Row[] = [];
  const keys = new Set<string>();
  for (const entry of bundle.entry ?? []) {
    const resource = entry.resource;
    if (!resource) continue;
    checkType(resource.resourceType);
    checkId(resource.id);
    const key = `${resource.resourceType}/${resource.id}`;
    if (keys.has(key)) throw new FhirStoreError('duplicate', `Duplicate resource in bundle: ${key}`);
    keys.add(key);
    const seeded = new Date().toISOString();
    rows.push(toRow({ ...resource, meta: { ...resource.meta, versionId: resource.meta?.versionId ?? '1', lastUpdated: resource.meta?.lastUpdated ?? seeded } }));
  }
  // The first statement of the transaction writes: SQLite takes the write lock
  // (waiting busy_timeout for another seeder) instead of failing to upgrade a read.
  await db.transaction(async (trx) => {
    for (let i = 0; i < rows.length; i += 100) {
      await trx(TABLE).insert(rows.slice(i, i + 100)).onConflict(['type', 'id']).ignore();
    }
  });
  return true;
}
