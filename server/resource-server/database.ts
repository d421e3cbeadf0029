// What a guard that shares smart-auth's database (DATABASE_URL) takes from it: the tamper-evident audit
// chain, and what the bundled /fhir knows besides (sharedDatabase). The `@smart-auth/guard/database`
// entry point; it needs knex and the driver (sqlite3 or pg).
import type { Db } from '../db.ts';
import { registeredOrigins } from '../oidc/client-origins.ts';
import { recordFirstUse } from '../oidc/first-use.ts';
import { revocationCheck } from '../oidc/revocation.ts';
import { findUser, patientsOfUser } from '../oidc/user-records.ts';
import type { OriginCheck } from './cors.ts';
import type { DpopReplayStore } from './dpop.ts';
import type { GuardVerification } from './verify-token.ts';
import type { GuardOptions } from './guard.ts';
import type { FhirInteraction, Refusal, TokenContext } from './types.ts';

export { openDatabase } from '../db.ts';
export { databaseAudit, type DatabaseAudit } from '../audit/database-sink.ts';
export { registeredOrigins } from '../oidc/client-origins.ts';

export interface SharedDatabase {
  /** For `createGuardVerifier`: the patients each user may reach (`--patients`; none for a disabled user). */
  userPatients: NonNullable<GuardVerification['userPatients']>;
  /** For `createGuardVerifier`: revoked tokens, and tokens of revoked grants. */
  isRevoked: NonNullable<GuardVerification['isRevoked']>;
  /** For `createDpopCheck({ replay })`: proofs seen by any instance. */
  dpopReplay: DpopReplayStore;
  /** For `allowOrigins(…, origins)`: the origins of the registered apps' redirect URIs. */
  origins: OriginCheck;
  /** For `ruleOptions(upstream, { authorize })`: who may read AuditEvents (see auditTrailReaders). */
  auditTrailReaders: NonNullable<GuardOptions['authorize']>;
}

/**
 * Reading the audit trail: a backend service by its system/ scopes, a patient user the events about
 * themselves (their compartment); any other user only with the auditor attribute.
 */
function auditTrailReaders(db: Db) {
  return async (token: TokenContext, interaction: FhirInteraction): Promise<Refusal | undefined> => {
    if (interaction.type !== 'AuditEvent') return undefined;
    if (!token.sub || token.sub === token.clientId || token.fhirUser?.startsWith('Patient/')) return undefined;
    const user = await findUser(db, token.sub);
    if (user?.attributes.auditor && !user.disabled) return undefined;
    return { status: 403, code: 'forbidden', message: 'reading the audit trail needs the auditor role' };
  };
}

/**
 * What the bundled /fhir knows from the database, for any guard that shares it (the proxy, the package),
 * the audit trail's readers included:
 * `revoked` a jti check to share (the server's, with introspection), else one trusting "not revoked"
 * `revocationCacheMs` (1000); registered apps reread after `clientCacheMs` (1000).
 */
export function sharedDatabase(db: Db, options: { revoked?: (jti: string, clientId: string) => Promise<boolean>; revocationCacheMs?: number; clientCacheMs?: number } = {}): SharedDatabase {
  const revoked = options.revoked ?? revocationCheck(db, options.revocationCacheMs ?? 1000);
  return {
    userPatients: (claims) => patientsOfUser(db, claims),
    isRevoked: (claims) => revoked(String(claims.jti), String(claims.client_id)),
    dpopReplay: { firstUse: (id, expiresAt) => recordFirstUse(db, 'DPoPProof', id, expiresAt) },
    origins: registeredOrigins(db, options.clientCacheMs ?? 1000),
    auditTrailReaders: auditTrailReaders(db),
  };
}
