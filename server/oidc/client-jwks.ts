// Caching of clients' jwks_uri key sets as SMART's asymmetric client authentication requires:
// never cache longer than the client's Cache-Control allows, and let an unknown kid trigger one rate-limited
// refetch so a client can roll its keys over without a restart.
//
// oidc-provider 9.13.3 caches a jwks_uri for at least 60 s whatever the client says, so this module reaches into
// its internals (there is no public hook). What it relies on, all in node_modules/oidc-provider/lib:
// - models/client.js: `Client.find` (static, returns cached Client instances), `client.asymmetricKeyStore`
//   (a ClientKeyStore created once per Client instance) and its `fresh()` / `refresh()` / `clear()`;
//   `refresh()` returns early when `this.fresh()` is true, fetches through the configured `fetch`, and only
//   replaces the keys when the fetch succeeds; on failure it throws InvalidClientMetadata.
// - helpers/jwt.js `verify()`: on no matching key or a failed signature it asks `keystore.fresh()`; if false it
//   awaits `keystore.refresh()` and verifies again. jwt_client_auth.js turns any error there into invalid_client.
// - helpers/fetch_request.js: passes an SSRF-guarding undici `dispatcher` in the fetch options, which is ignored:
//   requests go through client-fetch.ts (no redirects, bounded, public addresses only, checked after DNS).
// Recheck these when upgrading oidc-provider.
import type Provider from 'oidc-provider';
import { createClientFetch } from '../net/client-fetch.ts';

export interface ClientJwksOptions {
  /** Let jwks_uris on loopback addresses (localhost, 127.0.0.1, [::1]) be fetched. Never in production. */
  allowLoopback: boolean;
  /** Cache lifetime in seconds when a response has no Cache-Control. Default 300. */
  defaultMaxAge?: number;
  /** At most one unknown-kid refetch per client per this many seconds. Default 10. */
  minRefetchInterval?: number;
  /** Current time in epoch seconds (tests). */
  now?: () => number;
}

/** The subset of oidc-provider's ClientKeyStore used here (it is not in the public types). */
interface ClientKeyStore {
  fresh(): boolean;
  refresh(): Promise<void>;
  clear(): void;
}

interface KeyStoreState {
  href: string;
  /** The keys must be fetched before their next use: never fetched, or past their cache lifetime. */
  mustFetch: boolean;
  /** When the current keys stop being usable (epoch seconds). */
  expiresAt: number;
  /** When the last refetch caused by an unknown kid (or failed signature) was made. */
  kidRefetchAt?: number;
}

/** How long a response may be cached, in seconds: the stricter of Cache-Control and Expires, less Age. */
export function cacheLifetime(headers: Headers, defaultMaxAge: number, nowSeconds: number): number {
  let lifetime = defaultMaxAge;
  const cacheControl = headers.get('cache-control');
  if (cacheControl) {
    const directives = cacheControl.toLowerCase().split(',').map((d) => d.trim());
    const maxAge = directives.map((d) => /^max-age\s*=\s*"?(\d+)"?$/.exec(d)).find(Boolean);
    if (directives.some((d) => d === 'no-store' || d === 'no-cache' || d.startsWith('no-cache='))) lifetime = 0;
    else if (maxAge) lifetime = Number(maxAge[1]);
  }
  const expires = headers.get('expires');
  if (expires !== null) {
    // An invalid Expires (such as "0") means already expired (RFC 9111 section 5.3). Every HTTP-date names its
    // month; the check matters because Date.parse is lenient ("0" parses as the year 2000).
    const expiresAt = /jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec/i.test(expires) ? Date.parse(expires) : NaN;
    const date = Date.parse(headers.get('date') ?? '');
    const from = Number.isNaN(date) ? nowSeconds * 1000 : date;
    lifetime = Math.min(lifetime, Number.isNaN(expiresAt) ? 0 : (expiresAt - from) / 1000);
  }
  const age = Number(headers.get('age'));
  if (Number.isFinite(age) && age > 0) lifetime -= age;
  return Math.max(0, lifetime);
}

export function createClientJwksPolicy(options: ClientJwksOptions) {
  const defaultMaxAge = options.defaultMaxAge ?? 300;
  const minRefetchInterval = options.minRefetchInterval ?? 10;
  const now = options.now ?? (() => Date.now() / 1000);
  // A zero interval would let verify() refetch forever on a kid that is not in the set.
  if (!(minRefetchInterval > 0)) throw new RangeError('minRefetchInterval must be a positive number of seconds');
  if (!(defaultMaxAge >= 0)) throw new RangeError('defaultMaxAge must be a number of seconds');

  /** jwks_uris of the clients seen so far: only their responses are recorded, so the record stays bounded. */
  const watched = new Set<string>();
  /** The last response for each watched URL: when it came and how long it may be cached. */
  const responses = new Map<string, { at: number; lifetime: number }>();
  const states = new WeakMap<ClientKeyStore, KeyStoreState>();
  const clientFetch = createClientFetch({ allowLoopback: options.allowLoopback });

  /** Gives a client's keystore our freshness rule; once per keystore (oidc-provider caches Client instances). */
  function adopt(keystore: ClientKeyStore, jwksUri: string): KeyStoreState {
    const state: KeyStoreState = { href: new URL(jwksUri).href, mustFetch: true, expiresAt: 0 };
    states.set(keystore, state);
    watched.add(state.href);
    const originalRefresh = keystore.refresh;

    // false means "refetch": verify() asks this after a kid or signature miss, refresh() asks it before fetching.
    keystore.fresh = () =>
      !state.mustFetch && state.kidRefetchAt !== undefined && now() - state.kidRefetchAt < minRefetchInterval;

    keystore.refresh = async () => {
      if (keystore.fresh()) return;
      const kidMiss = !state.mustFetch;
      try {
        await originalRefresh.call(keystore); // calls keystore.fresh() again: still false, so it fetches
      } finally {
        // A failed refetch counts too: unknown kids must not hammer a client's server that is down.
        if (kidMiss) state.kidRefetchAt = now();
      }
      const response = responses.get(state.href);
      // No record means our fetch was not the one used: then do not cache at all.
      state.expiresAt = (response?.at ?? now()) + (response?.lifetime ?? 0);
      state.mustFetch = false;
    };
    return state;
  }

  return {
    /** Pass as oidc-provider's `fetch` configuration. */
    async fetch(url: string | URL, init: RequestInit & { dispatcher?: unknown }): Promise<Response> {
      const target = new URL(String(url));
      const response = await clientFetch(target, init);
      if (watched.has(target.href)) {
        responses.set(target.href, { at: now(), lifetime: cacheLifetime(response.headers, defaultMaxAge, now()) });
      }
      return response;
    },

    /** Call once after `new Provider(...)`. */
    install(provider: Provider): void {
      const Client = provider.Client;
      const find = Client.find.bind(Client);
      Client.find = async (id: string) => {
        const client = await find(id);
        if (!client?.jwksUri) return client;
        const keystore = (client as unknown as { asymmetricKeyStore: ClientKeyStore }).asymmetricKeyStore;
        const state = states.get(keystore) ?? adopt(keystore, client.jwksUri);
        if (!state.mustFetch && now() >= state.expiresAt) {
          // Past its cache lifetime: drop the keys rather than fetch here. The next verify() then finds no key,
          // and since fresh() is false it awaits refresh() before verifying, so a fetch that fails takes
          // oidc-provider's own path (invalid_client), and Client.find callers that verify nothing fetch nothing.
          keystore.clear();
          state.mustFetch = true;
        }
        return client;
      };
    },
  };
}

export type ClientJwksPolicy = ReturnType<typeof createClientJwksPolicy>;
