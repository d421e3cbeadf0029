// What a guard that shares smart-auth's database (DATABASE_URL) takes from it: the tamper-evident audit
// chain, and what the bundled /fhir knows besides (sharedDatabase). The `@smart-auth/guard/database`
// entry point; it needs knex and the driver (sqlite3 or pg).
import type { Db } from '../db.ts';
import { registeredOrigins } from '../oidc/client-origins.ts';
import { recordFirstUse } from '../oidc/first-use.ts';
import { revocationCheck } from '../oidc/revocation.ts';
import { findUser, isAuditor, reachablePatients, type User } from '../oidc/user-records.ts';
import type { OriginCheck } from './cors.ts';
import type { DpopReplayStore } from './dpop.ts';
import type { GuardVerification } from './verify-token.ts';

export { openDatabase } from '../db.ts';
export { databaseAudit, type DatabaseAudit } from '../audit/database-sink.ts';
export { registeredOrigins } from '../oidc/client-origins.ts';

export interface SharedDatabase {
  /** For `createGuardVerifier`: the patients each user may reach (`--patients`; none for a disabled user). */
  userPatients: NonNullable<GuardVerification['userPatients']>;
  /** For `createGuardVerifier`: whether a user may read AuditEvents (`--auditor`; not a disabled user). */
  auditor: NonNullable<GuardVerification['auditor']>;
  /** For `createGuardVerifier`: revoked tokens, and tokens of revoked grants. */
  isRevoked: NonNullable<GuardVerification['isRevoked']>;
  /** For `createDpopCheck({ replay })`: proofs seen by any instance. */
  dpopReplay: DpopReplayStore;
  /** For `allowOrigins(…, origins)`: the origins of the registered apps' redirect URIs. */
  origins: OriginCheck;
}

/**
 * What the bundled /fhir knows from the database, for any guard that shares it (the proxy, the package),
 * the audit trail's readers included:
 * `revoked` a jti check to share (the server's, with introspection), else one trusting "not revoked"
 * `revocationCacheMs` (1000); registered apps reread after `clientCacheMs` (1000).
 */
export function sharedDatabase(db: Db, options: { revoked?: (claims: Record<string, unknown>) => Promise<boolean>; revocationCacheMs?: number; clientCacheMs?: number } = {}): SharedDatabase {
  const revoked = options.revoked ?? revocationCheck(db, options.revocationCacheMs ?? 1000);
  // The verifier asks both of one token's user: one read (the claims are one object per verification).
  const users = new WeakMap<Record<string, unknown>, Promise<User | undefined>>();
  const userOf = (claims: Record<string, unknown>) => {
    const known = users.get(claims) ?? findUser(db, String(claims.sub));
    users.set(claims, known);
    return known;
  };
  return {
    userPatients: async (claims) => {
      const user = await userOf(claims);
      return user ? reachablePatients(user) : [];
    },
    auditor: async (claims) => {
      const user = await userOf(claims);
      return user !== undefined && isAuditor(user);
    },
    isRevoked: revoked,
    dpopReplay: { firstUse: (id, expiresAt) => recordFirstUse(db, 'DPoPProof', id, expiresAt) },
    origins: registeredOrigins(db, options.clientCacheMs ?? 1000),
  };
}
