// Holds the live node-oidc-provider instance and replaces it when the signing keys change.
// oidc-provider fixes its key set when it is constructed; every piece of its state lives in the
// database, so a new instance with the new keys takes over seamlessly, also across instances
// that share the database (each one polls the key table).
import type { Middleware } from 'koa';
import mount from 'koa-mount';
import type Provider from 'oidc-provider';
import { createLocalJWKSet, type JWTVerifyGetKey } from 'jose';
import type { Config } from '../config.ts';
import type { Db } from '../db.ts';
import { nowSeconds } from '../db.ts';
import { ensureSigningKeys, keyPolicy, loadKeyRing, type KeyRing } from './keys.ts';
import { createProvider, defaultLog, type ProviderDeps } from './provider.ts';

/** A provider for command-line tools (validation, initial access tokens): current keys, no reloading. */
export async function createToolProvider(config: Config, db: Db): Promise<Provider> {
  const policy = keyPolicy(config);
  await ensureSigningKeys(db, policy);
  return createProvider({ config, db, jwks: (await loadKeyRing(db, policy)).privateJwks });
}

export interface ProviderHost {
  /** The current provider: read it at use, never keep it. */
  readonly provider: Provider;
  /** Verification keys for tokens this server signed (follows rotation). */
  readonly verificationKeys: JWTVerifyGetKey;
  /** Koa middleware that serves the current provider. */
  readonly middleware: Middleware;
  /** How many keys /jwks publishes now (readiness: at least one). */
  readonly publishedKeys: number;
  /** Reloads the keys; true when the provider was replaced. */
  refresh(): Promise<boolean>;
  close(): void;
}

export async function createProviderHost(config: Config, db: Db, hooks: Pick<ProviderDeps, 'onTokenIssued' | 'log' | 'audit' | 'isRevoked' | 'introspections'> = {}): Promise<ProviderHost> {
  const policy = keyPolicy(config);
  await ensureSigningKeys(db, policy);

  let ring: KeyRing = await loadKeyRing(db, policy);
  let provider = createProvider({ config, db, jwks: ring.privateJwks, ...hooks });
  let served = mount(provider);
  let localKeys = createLocalJWKSet(ring.publicJwks);
  let timer: NodeJS.Timeout | undefined;
  let closed = false;

  async function refresh(): Promise<boolean> {
    const next = await loadKeyRing(db, policy);
    if (next.version === ring.version) return false;
    ring = next;
    provider = createProvider({ config, db, jwks: ring.privateJwks, ...hooks });
    served = mount(provider);
    localKeys = createLocalJWKSet(ring.publicJwks);
    return true;
  }

  /** Polls for keys added by other processes; wakes early when a key is due to activate or leave /jwks. */
  function schedule() {
    if (closed) return;
    const untilChange = ring.nextChangeAt === null ? Infinity : Math.max(0, ring.nextChangeAt - nowSeconds()) + 1;
    const delay = Math.min(config.keyRefreshInterval, untilChange) * 1000;
    timer = setTimeout(() => {
      refresh()
        .catch((err) => (hooks.log ?? defaultLog)('error', 'reloading signing keys failed; keeping the current ones', { err }))
        .finally(schedule);
    }, delay);
    timer.unref();
  }
  schedule();

  // oidc-provider builds its own URLs (discovery's endpoints, the token endpoint it checks assertions and
  // DPoP proofs against) from the request's URL (ctx.href), i.e. from the Host header a client sends: they
  // come from ISSUER instead, so that no Host can put another server's address in them. ISSUER is an origin
  // (config.ts), so each is ISSUER + its path, as the SMART configuration and the /token DPoP check name it.
  const fromIssuer: Middleware = (ctx, next) => {
    Object.defineProperty(ctx.request, 'href', { get: () => config.issuer + ctx.originalUrl, configurable: true });
    return served(ctx, next);
  };

  return {
    get provider() {
      return provider;
    },
    get publishedKeys() {
      return ring.publicJwks.keys.length;
    },
    verificationKeys: (header, token) => localKeys(header, token),
    middleware: fromIssuer,
    refresh,
    close() {
      closed = true;
      clearTimeout(timer);
    },
  };
}
