// The browser origins of the registered apps: the origins of their redirect URIs. The FHIR base allows
// them CORS (a SMART app in the browser calls the FHIR server from the page it was redirected to).
// Read from the database at most every few seconds, so a new registration counts soon on every instance.
import type { Db } from '../db.ts';
import { listClients } from './clients.ts';
import { originOf, type OriginCheck } from '../resource-server/cors.ts';

/** Whether a browser page on `origin` is one of an app's: the origin of one of its redirect URIs. */
export function isClientOrigin(redirectUris: readonly string[] | undefined, origin: string): boolean {
  return (redirectUris ?? []).some((uri) => originOf(uri) === origin);
}

export function registeredOrigins(db: Db, ttlMs = 5000): OriginCheck {
  let loaded: { at: number; origins: Promise<Set<string>> } | undefined;
  const load = async () => new Set((await listClients(db))
    .flatMap((client) => (client.redirect_uris ?? []).map(originOf))
    .filter((origin): origin is string => origin !== undefined));
  return async (origin) => {
    if (!loaded || Date.now() - loaded.at >= ttlMs) {
      const origins = load();
      loaded = { at: Date.now(), origins };
      origins.catch(() => { if (loaded?.origins === origins) loaded = undefined; });
    }
    // A database that cannot be read allows no origin: the browser is refused, nothing else changes.
    return (await loaded.origins.catch(() => new Set<string>())).has(origin);
  };
}
