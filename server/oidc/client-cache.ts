// Client metadata is read on every token request and introspection; it changes rarely. Reads are
// remembered for a short while per database handle. A change made in this process is seen at once
// (forgetClient); one made by another instance or the CLI within the cache lifetime.
import type { AdapterPayload } from 'oidc-provider';
import type { Db } from '../db.ts';

interface Entry {
  payload: Promise<AdapterPayload | undefined>;
  until: number;
}

const caches = new WeakMap<Db, Map<string, Entry>>();
const MAX_CLIENTS = 10_000;

const cacheOf = (db: Db) => {
  let cache = caches.get(db);
  if (!cache) caches.set(db, (cache = new Map()));
  return cache;
};

/** The client's stored metadata: from the cache when read less than `ttlMs` ago, else from `read`. */
export function cachedClient(db: Db, id: string, ttlMs: number, read: () => Promise<AdapterPayload | undefined>): Promise<AdapterPayload | undefined> {
  if (ttlMs <= 0) return read();
  const cache = cacheOf(db);
  const now = Date.now();
  const hit = cache.get(id);
  if (hit && hit.until > now) return hit.payload;
  if (cache.size >= MAX_CLIENTS) cache.clear();
  const payload = read();
  const entry = { payload, until: now + ttlMs };
  cache.set(id, entry);
  // A failed read is not remembered.
  payload.catch(() => cache.get(id) === entry && cache.delete(id));
  return payload;
}

export function forgetClient(db: Db, id: string): void {
  caches.get(db)?.delete(id);
}
