// Signed-in sessions, stored server-side so that every instance sees them and any can end them:
// a person's /account session (the cookie holds a random token; the table its sha256) and their
// authorization-server session (oidc-provider's, by its uid). Deleting the row ends the session.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { Db } from '../db.ts';
import { nowSeconds } from '../db.ts';
import { endGrants } from '../oidc/grants.ts';
import { PAYLOAD_TABLE } from '../oidc/first-use.ts';

export type SessionKind = 'account' | 'sign-in';

/** What a sign-in between password and second factor (at /account, or in an authorization) does next. */
export type PendingStep = 'verify' | 'enrol' | 'codes';

export interface SessionInfo {
  id: string;
  kind: SessionKind;
  amr: string[];
  address: string | null;
  userAgent: string | null;
  createdAt: number;
  expiresAt: number;
}

export interface SessionOrigin {
  address?: string;
  userAgent?: string;
  amr: readonly string[];
}

const TABLE = 'user_sessions';
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** Drops a user's ended-by-time rows whenever a new one is written, so the table does not grow. */
const forgetExpired = (db: Db, userId: string) => db(TABLE).where('user_id', userId).andWhere('expires_at', '<=', nowSeconds()).delete();

const row = (userId: string, kind: SessionKind | 'pending', origin: SessionOrigin, ttlSeconds: number) => ({
  id: randomUUID(),
  user_id: userId,
  kind,
  amr: origin.amr.join(' '),
  address: origin.address?.slice(0, 64) ?? null,
  user_agent: origin.userAgent?.slice(0, 256) ?? null,
  created_at: nowSeconds(),
  expires_at: nowSeconds() + ttlSeconds,
});

/** Starts an /account session; the token goes in the cookie and nowhere else. */
export async function startAccountSession(db: Db, userId: string, origin: SessionOrigin, ttlSeconds: number): Promise<string> {
  const token = randomBytes(32).toString('base64url');
  await forgetExpired(db, userId);
  await db(TABLE).insert({ ...row(userId, 'account', origin, ttlSeconds), token_hash: sha256(token) });
  return token;
}

/** The live /account session of a cookie token. */
export async function findAccountSession(db: Db, token: string): Promise<{ id: string; userId: string; amr: string[] } | undefined> {
  const found = await db(TABLE).where({ token_hash: sha256(token), kind: 'account' }).andWhere('expires_at', '>', nowSeconds()).first('id', 'user_id', 'amr');
  return found && { id: found.id, userId: found.user_id, amr: found.amr ? String(found.amr).split(' ') : [] };
}

const PENDING_TTL = 600;

/**
 * Starts a sign-in whose password was right but whose second step is still to come; its token (in a cookie at
 * /account, in the interaction of an authorization). It ends with the user's other sessions (endAllSessions).
 */
export async function startPendingSignIn(db: Db, userId: string, origin: SessionOrigin, step: PendingStep): Promise<{ id: string; token: string }> {
  const token = randomBytes(32).toString('base64url');
  const pending = row(userId, 'pending', origin, PENDING_TTL);
  await forgetExpired(db, userId);
  await db(TABLE).insert({ ...pending, token_hash: sha256(token), step });
  return { id: pending.id, token };
}

export interface PendingSignIn {
  id: string;
  userId: string;
  step: PendingStep;
  /** The methods shown so far (amr values, or `recovery`). */
  methods: string[];
}

export async function findPendingSignIn(db: Db, token: string): Promise<PendingSignIn | undefined> {
  const found = await db(TABLE).where({ token_hash: sha256(token), kind: 'pending' }).andWhere('expires_at', '>', nowSeconds()).first('id', 'user_id', 'step', 'amr');
  return found && { id: found.id, userId: found.user_id, step: found.step, methods: found.amr ? String(found.amr).split(' ') : [] };
}

/** The ids of a user's live sessions of any kind (a subquery). */
export const liveSessionIds = (db: Db, userId: string) => db(TABLE).where('user_id', userId).andWhere('expires_at', '>', nowSeconds()).select('id');

/** Ends a user's sign-ins waiting to set up a second factor, but `except`: the user has one now (auth/factors.ts). */
export async function endPendingSetUps(db: Db, userId: string, except?: string): Promise<void> {
  await db(TABLE).where({ user_id: userId, kind: 'pending', step: 'enrol' }).modify((q) => except && q.whereNot('id', except)).delete();
}

export async function advancePendingSignIn(db: Db, id: string, step: PendingStep, methods: readonly string[]): Promise<void> {
  await db(TABLE).where({ id, kind: 'pending' }).update({ step, amr: methods.join(' ') });
}

/** Turns a pending sign-in into an /account session under a new token (the pending one is used up); undefined if it was gone. */
export async function completePendingSignIn(db: Db, id: string, amr: readonly string[], ttlSeconds: number): Promise<string | undefined> {
  const token = randomBytes(32).toString('base64url');
  const updated = await db(TABLE).where({ id, kind: 'pending' }).andWhere('expires_at', '>', nowSeconds())
    .update({ kind: 'account', token_hash: sha256(token), step: null, amr: amr.join(' '), created_at: nowSeconds(), expires_at: nowSeconds() + ttlSeconds });
  return updated === 1 ? token : undefined;
}

/** Records an authorization-server session (oidc-provider's session uid) after a sign-in. */
export async function recordSignInSession(db: Db, userId: string, oidcUid: string, origin: SessionOrigin, ttlSeconds: number): Promise<void> {
  await db(TABLE).where('oidc_uid', oidcUid).delete();
  await forgetExpired(db, userId);
  await db(TABLE).insert({ ...row(userId, 'sign-in', origin, ttlSeconds), oidc_uid: oidcUid });
}

/** Whether an authorization-server session is still live for this user. */
export async function signInSessionLive(db: Db, userId: string, oidcUid: string): Promise<boolean> {
  return Boolean(await db(TABLE).where({ oidc_uid: oidcUid, user_id: userId }).andWhere('expires_at', '>', nowSeconds()).first('id'));
}

export async function sessionsOf(db: Db, userId: string): Promise<SessionInfo[]> {
  const rows = await db(TABLE).where('user_id', userId).whereIn('kind', ['account', 'sign-in']).andWhere('expires_at', '>', nowSeconds()).orderBy('created_at', 'desc');
  return rows.map((r) => ({
    id: r.id, kind: r.kind, amr: r.amr ? String(r.amr).split(' ') : [], address: r.address, userAgent: r.user_agent,
    createdAt: Number(r.created_at), expiresAt: Number(r.expires_at),
  }));
}

/**
 * Deletes the sessions `which` selects; how many. The oidc-provider session of an authorization-server one goes
 * too, so the browser's next sign-in starts a new one (with a new uid): an online_access refresh token of the
 * ended session never lives again.
 */
async function endRows(db: Db, which: (q: Knex.QueryBuilder) => void): Promise<number> {
  const uids: string[] = await db(TABLE).where(which).whereNotNull('oidc_uid').pluck('oidc_uid');
  if (uids.length) await db(PAYLOAD_TABLE).where('model', 'Session').whereIn('uid', uids).delete();
  return db(TABLE).where(which).delete();
}

/** Ends one session of the user; false when there was none with that id. */
export async function endSession(db: Db, userId: string, id: string): Promise<boolean> {
  return (await endRows(db, (q) => q.where({ id, user_id: userId }))) > 0;
}

/** Ends the authorization-server session with this oidc-provider uid (its logout). */
export async function endSignInSession(db: Db, oidcUid: string): Promise<string | undefined> {
  const found = await db(TABLE).where('oidc_uid', oidcUid).first('user_id');
  await db(TABLE).where('oidc_uid', oidcUid).delete();
  return found?.user_id;
}

/** Ends every session of a user but `except` (the one changing the password); how many ended. */
export async function endAllSessions(db: Db, userId: string, except?: string): Promise<number> {
  return endRows(db, (q) => {
    q.where('user_id', userId);
    if (except) q.whereNot('id', except);
  });
}

/**
 * Ends everything a user signed in to: every session but `exceptSession`, and every grant (their
 * refresh tokens die, their access tokens introspect inactive). After a password change or when
 * the user is disabled.
 */
export async function endUserAccess(db: Db, userId: string, exceptSession?: string): Promise<void> {
  await endAllSessions(db, userId, exceptSession);
  const grants: { id: string }[] = await db('oidc_payloads').where({ model: 'Grant', account_id: userId }).select('id');
  await endGrants(db, grants.map((g) => g.id));
}
