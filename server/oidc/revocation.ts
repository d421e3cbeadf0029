// Revocation state of access tokens, which are JWTs and not stored: a jti denylist, and the
// grant each token came from (revoking a grant makes its access tokens inactive).
import type { Db } from '../db.ts';
import { nowSeconds } from '../db.ts';
import type { RowInsert } from '../group-commit.ts';
import { PAYLOAD_TABLE } from './first-use.ts';

/** The row linking an access token to its grant (to be committed by the caller: see RequestFacts.write). */
export function tokenGrantLink(jti: string, grantId: string, expiresAt: number): RowInsert {
  return { table: 'token_grants', row: { jti, grant_id: grantId, expires_at: expiresAt }, tail: 'on conflict (??) do nothing', tailBindings: ['jti'] };
}

export async function revokeAccessToken(db: Db, jti: string, expiresAt: number): Promise<void> {
  await db('revoked_tokens').insert({ jti, expires_at: expiresAt }).onConflict('jti').ignore();
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
  return async function isRevoked(jti: string): Promise<boolean> {
    const now = Date.now();
    const hit = notRevoked.get(jti);
    if (hit && hit.epoch === localRevocations && hit.until > now) return false;
    const epoch = localRevocations;
    const revoked = await isAccessTokenRevoked(db, jti);
    if (!revoked && ttlMs > 0) {
      if (notRevoked.size >= 10_000) notRevoked.clear();
      notRevoked.set(jti, { epoch, until: now + ttlMs });
    }
    return revoked;
  };
}

/**
 * Whether an access token (its jti) was revoked, directly or through its grant (gone or expired: a revoked
 * grant's row is deleted). Read from the tables alone, so that any process sharing the database can ask.
 */
export async function isAccessTokenRevoked(db: Db, jti: string): Promise<boolean> {
  // One round trip for the three tables: this runs on every introspection and every guarded FHIR request.
  const row: { revoked: string | null; grant_id: string | null; grant_alive: string | null } | undefined = await db
    .select('r.jti as revoked', 'g.grant_id', 'p.id as grant_alive')
    .from(db.raw('(select cast(? as varchar(255)) as jti) as q', [jti]))
    .leftJoin('revoked_tokens as r', 'r.jti', 'q.jti')
    .leftJoin('token_grants as g', 'g.jti', 'q.jti')
    .leftJoin(`${PAYLOAD_TABLE} as p`, (on) => on.on('p.id', 'g.grant_id').andOnVal('p.model', 'Grant')
      .andOn((live) => live.onNull('p.expires_at').orOnVal('p.expires_at', '>', nowSeconds())))
    .first();
  if (row?.revoked) return true;
  return Boolean(row?.grant_id && !row.grant_alive);
}

/** Drops rows nobody needs any more: revocations and links of expired tokens. */
export async function purgeExpiredRevocations(db: Db): Promise<void> {
  const now = nowSeconds();
  await db('revoked_tokens').where('expires_at', '<', now).delete();
  await db('token_grants').where('expires_at', '<', now).delete();
}
