// Revocation state of access tokens, which are JWTs and not stored: a jti denylist, the grant each
// token came from (revoking a grant makes its access tokens inactive), and the removed clients (their
// tokens, a backend's too, which have no grant, are inactive).
import type { Db } from '../db.ts';
import { nowSeconds } from '../db.ts';
import type { RowInsert } from '../group-commit.ts';
import { PAYLOAD_TABLE } from './first-use.ts';
import { CLOCK_SKEW, MAX_ACCESS_TOKEN_TTL } from './token-lifetimes.ts';

/** The row linking an access token to its grant (to be committed by the caller: see RequestFacts.write). */
export function tokenGrantLink(jti: string, grantId: string, expiresAt: number): RowInsert {
  return { table: 'token_grants', row: { jti, grant_id: grantId, expires_at: expiresAt }, tail: 'on conflict (??) do nothing', tailBindings: ['jti'] };
}

export async function revokeAccessToken(db: Db, jti: string, expiresAt: number): Promise<void> {
  await db('revoked_tokens').insert({ jti, expires_at: expiresAt }).onConflict('jti').ignore();
  noteRevocation();
}

/** The longest an access token can live: ACCESS_TOKEN_TTL at its maximum, and the clock skew allowed. */
const LONGEST_TOKEN_SECONDS = MAX_ACCESS_TOKEN_TTL + CLOCK_SKEW;

/**
 * A client's entry in the denylist: the access tokens issued to it up to a time (`iat` at most the entry's
 * `expires_at` minus LONGEST_TOKEN_SECONDS) are inactive; the entry goes when the last of them has expired.
 */
const clientEntry = (clientId: string) => `client:${clientId}`;

/** The claims a revocation check reads: the token's id, its client and when it was issued. */
export type RevocationClaims = Record<string, unknown>;

/**
 * Makes the access tokens issued to a client up to `issuedUpTo` (seconds) inactive: by default every
 * token for as long as any could live (a removed client).
 */
export async function revokeClientTokens(db: Db, clientId: string, issuedUpTo = nowSeconds() + LONGEST_TOKEN_SECONDS): Promise<void> {
  const expiresAt = issuedUpTo + LONGEST_TOKEN_SECONDS;
  await db('revoked_tokens').insert({ jti: clientEntry(clientId), expires_at: expiresAt })
    .onConflict('jti').merge(['expires_at']);
  noteRevocation();
}

/**
 * Counts revocations made by this process (tokens, grants, clients). A cached "not revoked" answer
 * from before the latest one is not trusted; see revocationCheck.
 */
let localRevocations = 0;
export function noteRevocation(): void {
  localRevocations++;
}

/**
 * The guard's revocation check where it shares the authorization server's database (the bundled /fhir,
 * the guard proxy with DATABASE_URL): the database, with "not revoked" remembered for `ttlMs`.
 * A revocation made in this process takes effect at once; one made by another process within `ttlMs`.
 */
export function revocationCheck(db: Db, ttlMs: number) {
  const notRevoked = new Map<string, { epoch: number; until: number }>();
  return async function isRevoked(claims: RevocationClaims): Promise<boolean> {
    const now = Date.now();
    const jti = String(claims.jti);
    const hit = notRevoked.get(jti);
    if (hit && hit.epoch === localRevocations && hit.until > now) return false;
    const epoch = localRevocations;
    const revoked = await isAccessTokenRevoked(db, claims);
    if (!revoked && ttlMs > 0) {
      if (notRevoked.size >= 10_000) notRevoked.clear();
      notRevoked.set(jti, { epoch, until: now + ttlMs });
    }
    return revoked;
  };
}

/**
 * Whether an access token (its claims jti, client_id, iat) was revoked, directly, through its grant (gone or
 * expired: a revoked grant's row is deleted) or with its client (removed, or its organization changed, after
 * the token was issued). Read from the tables alone, so that any process sharing the database can ask.
 */
export async function isAccessTokenRevoked(db: Db, claims: RevocationClaims): Promise<boolean> {
  const jti = String(claims.jti);
  // One round trip for the three tables: this runs on every introspection and every guarded FHIR request.
  const row: { revoked: string | null; client_ended: number | string | null; grant_id: string | null; grant_alive: string | null } | undefined = await db
    .select('r.jti as revoked', 'c.expires_at as client_ended', 'g.grant_id', 'p.id as grant_alive')
    .from(db.raw('(select cast(? as varchar(255)) as jti, cast(? as varchar(255)) as client_entry) as q', [jti, clientEntry(String(claims.client_id))]))
    .leftJoin('revoked_tokens as r', 'r.jti', 'q.jti')
    .leftJoin('revoked_tokens as c', 'c.jti', 'q.client_entry')
    .leftJoin('token_grants as g', 'g.jti', 'q.jti')
    .leftJoin(`${PAYLOAD_TABLE} as p`, (on) => on.on('p.id', 'g.grant_id').andOnVal('p.model', 'Grant')
      .andOn((live) => live.onNull('p.expires_at').orOnVal('p.expires_at', '>', nowSeconds())))
    .first();
  if (row?.revoked) return true;
  // A token without a numeric iat counts as issued before any client entry: fail closed.
  const issuedAt = typeof claims.iat === 'number' ? claims.iat : -Infinity;
  if (row?.client_ended != null && issuedAt <= Number(row.client_ended) - LONGEST_TOKEN_SECONDS) return true;
  return Boolean(row?.grant_id && !row.grant_alive);
}

/** Drops rows nobody needs any more: revocations and links of expired tokens. */
export async function purgeExpiredRevocations(db: Db): Promise<void> {
  const now = nowSeconds();
  await db('revoked_tokens').where('expires_at', '<', now).delete();
  await db('token_grants').where('expires_at', '<', now).delete();
}
