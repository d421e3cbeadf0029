// Revocation state of access tokens, which are JWTs and not stored: a jti denylist, and the
// grant each token came from (revoking a grant makes its access tokens inactive).
import type Provider from 'oidc-provider';
import type { Db } from '../db.ts';
import { nowSeconds } from '../db.ts';

export async function recordTokenGrant(db: Db, jti: string, grantId: string, expiresAt: number): Promise<void> {
  await db('token_grants').insert({ jti, grant_id: grantId, expires_at: expiresAt }).onConflict('jti').ignore();
}

export async function revokeAccessToken(db: Db, jti: string, expiresAt: number): Promise<void> {
  await db('revoked_tokens').insert({ jti, expires_at: expiresAt }).onConflict('jti').ignore();
}

/** Whether an access token (its jti) was revoked, directly or through its grant. */
export async function isAccessTokenRevoked(db: Db, provider: Provider, jti: string): Promise<boolean> {
  // One round trip for both tables: this runs on every introspection and every bundled FHIR request.
  const row: { revoked: string | null; grant_id: string | null } | undefined = await db
    .select('r.jti as revoked', 'g.grant_id')
    .from(db.raw('(select cast(? as varchar(255)) as jti) as q', [jti]))
    .leftJoin('revoked_tokens as r', 'r.jti', 'q.jti')
    .leftJoin('token_grants as g', 'g.jti', 'q.jti')
    .first();
  if (row?.revoked) return true;
  return Boolean(row?.grant_id && !(await provider.Grant.find(row.grant_id)));
}

/** Drops rows nobody needs any more: revocations and links of expired tokens. */
export async function purgeExpiredRevocations(db: Db): Promise<void> {
  const now = nowSeconds();
  await db('revoked_tokens').where('expires_at', '<', now).delete();
  await db('token_grants').where('expires_at', '<', now).delete();
}
