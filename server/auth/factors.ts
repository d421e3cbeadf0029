// A user's second factors, stored in `user_factors`: TOTP authenticators (secret encrypted at rest
// like the signing keys), passkeys (public keys) and one-time recovery codes (sha256; they are
// random, so a plain hash is enough). Every check that consumes a code does so atomically.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Db } from '../db.ts';
import { nowSeconds } from '../db.ts';
import { openSecret, sealSecret } from '../oidc/keys.ts';
import { newTotpSecret, totpStep } from './totp.ts';
import { endPendingSetUps, liveSessionIds } from './sessions.ts';

export type FactorKind = 'totp' | 'passkey' | 'recovery';

export interface Factor {
  id: string;
  kind: FactorKind;
  createdAt: number;
  usedAt: number | null;
}

export interface Passkey {
  id: string;
  credentialId: string;
  publicKey: Uint8Array<ArrayBuffer>;
  counter: number;
  deviceType: 'singleDevice' | 'multiDevice';
  transports: string[];
}

const RECOVERY_CODES = 10;
const TABLE = 'user_factors';
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
const label = (factorId: string) => `totp:${factorId}`;
/** Recovery codes are typed by people: lower case, a dash, no ambiguity about spaces. */
const normalise = (code: string) => code.trim().toLowerCase().replace(/[\s-]/g, '');

/** The second factors a user has confirmed (recovery codes not yet used included). */
export async function factorsOf(db: Db, userId: string): Promise<Factor[]> {
  const rows = await db(TABLE).where({ user_id: userId, confirmed: true }).orderBy('created_at');
  return rows.map((r) => ({ id: r.id, kind: r.kind, createdAt: Number(r.created_at), usedAt: r.used_at === null ? null : Number(r.used_at) }));
}

/** Whether the user has a TOTP authenticator or a passkey (recovery codes alone do not count). */
export async function hasSecondFactor(db: Db, userId: string): Promise<{ totp: boolean; passkey: boolean }> {
  const kinds = new Set((await factorsOf(db, userId)).map((f) => f.kind));
  return { totp: kinds.has('totp'), passkey: kinds.has('passkey') };
}

/**
 * Starts a TOTP set-up in a session (user_sessions.id: a pending sign-in, or an /account session): a new
 * unconfirmed secret that only this session's set-up shows and confirms, replacing its earlier one. Another
 * session's set-up is left alone; unconfirmed secrets of sessions that have ended go.
 */
export async function startTotp(db: Db, userId: string, sessionId: string, encryptionSecret: string): Promise<{ id: string; secret: string }> {
  const id = randomUUID();
  const secret = newTotpSecret();
  await db.transaction(async (trx) => {
    await trx(TABLE).where({ user_id: userId, kind: 'totp', confirmed: false })
      .andWhere((q) => q.where('session_id', sessionId).orWhereNull('session_id').orWhereNotIn('session_id', liveSessionIds(trx, userId)))
      .delete();
    await trx(TABLE).insert({ id, user_id: userId, kind: 'totp', secret: sealSecret(secret, label(id), encryptionSecret), confirmed: false, session_id: sessionId, created_at: nowSeconds() });
  });
  return { id, secret };
}

/** The secret of the unconfirmed set-up of this session, to show it again (e.g. after a wrong first code). */
export async function pendingTotp(db: Db, userId: string, sessionId: string, encryptionSecret: string): Promise<{ id: string; secret: string } | undefined> {
  const row = await db(TABLE).where({ user_id: userId, kind: 'totp', confirmed: false, session_id: sessionId }).first();
  return row && { id: row.id, secret: openSecret(row.secret, label(row.id), encryptionSecret) };
}

/**
 * Accepts a TOTP code of one of the user's authenticators (`setUp`: of the unconfirmed one of that session's
 * set-up) whose time step is newer than any accepted before; the step is recorded in the same statement, so a
 * code is never accepted twice, also by two instances at once. Returns the factor id.
 */
export async function useTotp(db: Db, userId: string, code: string, encryptionSecret: string, setUp?: string): Promise<string | undefined> {
  const rows = await db(TABLE).where({ user_id: userId, kind: 'totp', confirmed: !setUp }).modify((q) => setUp && q.where('session_id', setUp));
  for (const row of rows) {
    const step = totpStep(openSecret(row.secret, label(row.id), encryptionSecret), code.trim());
    if (step === undefined) continue;
    const taken = await db(TABLE).where('id', row.id)
      .andWhere((q) => q.whereNull('last_step').orWhere('last_step', '<', step))
      .update({ last_step: step, used_at: nowSeconds() });
    return taken ? row.id : undefined;
  }
  return undefined;
}

/**
 * Confirms the set-up of a session (`sessionId`) with its first code: from now on the user is asked for codes.
 * Replaces any earlier authenticator and recovery codes and ends every other set-up (newSecondFactor); returns
 * the new recovery codes (shown once).
 */
export async function confirmTotp(db: Db, userId: string, sessionId: string, code: string, encryptionSecret: string): Promise<string[] | undefined> {
  const id = await useTotp(db, userId, code, encryptionSecret, sessionId);
  if (!id) return undefined;
  return db.transaction((trx) => adoptTotp(trx, userId, id, sessionId));
}

/** Makes the unconfirmed authenticator `id` the user's only one; its new recovery codes. */
async function adoptTotp(trx: Db, userId: string, id: string, sessionId?: string): Promise<string[]> {
  await trx(TABLE).where({ user_id: userId, kind: 'totp', confirmed: true }).delete();
  await trx(TABLE).where('id', id).update({ confirmed: true, session_id: null });
  await newSecondFactor(trx, userId, sessionId);
  return replaceRecoveryCodes(trx, userId);
}

/**
 * A second factor was added: every other set-up in progress ends (unconfirmed secrets, and sign-ins waiting
 * to set one up, but the one of `sessionId`). A sign-in told to set up a factor must now show the one the user has.
 */
async function newSecondFactor(trx: Db, userId: string, sessionId?: string): Promise<void> {
  await trx(TABLE).where({ user_id: userId, kind: 'totp', confirmed: false }).delete();
  await endPendingSetUps(trx, userId, sessionId);
}

async function replaceRecoveryCodes(db: Db, userId: string): Promise<string[]> {
  await db(TABLE).where({ user_id: userId, kind: 'recovery' }).delete();
  const codes = Array.from({ length: RECOVERY_CODES }, () => {
    const raw = randomBytes(5).toString('hex'); // 40 bits each; ten tries before lockout
    return `${raw.slice(0, 5)}-${raw.slice(5)}`;
  });
  await db(TABLE).insert(codes.map((code) => ({
    id: randomUUID(), user_id: userId, kind: 'recovery', secret: sha256(normalise(code)), confirmed: true, created_at: nowSeconds(),
  })));
  return codes;
}

/** Uses up one recovery code; true when it was one of the user's unused codes. */
export async function useRecoveryCode(db: Db, userId: string, code: string): Promise<boolean> {
  const used = await db(TABLE).where({ user_id: userId, kind: 'recovery', secret: sha256(normalise(code)) }).delete();
  return used === 1;
}

/** Administrator enrolment (`user mfa --totp`): a confirmed authenticator and recovery codes at once. */
export async function enrolTotpDirectly(db: Db, userId: string, encryptionSecret: string): Promise<{ secret: string; recoveryCodes: string[] }> {
  const id = randomUUID();
  const secret = newTotpSecret();
  const recoveryCodes = await db.transaction(async (trx) => {
    await trx(TABLE).insert({ id, user_id: userId, kind: 'totp', secret: sealSecret(secret, label(id), encryptionSecret), confirmed: false, created_at: nowSeconds() });
    return adoptTotp(trx, userId, id);
  });
  return { secret, recoveryCodes };
}

/** Removes one factor of the user (a TOTP authenticator takes the recovery codes along when it was the last factor). */
export async function removeFactor(db: Db, userId: string, factorId: string): Promise<FactorKind | undefined> {
  return db.transaction(async (trx) => {
    const row = await trx(TABLE).where({ id: factorId, user_id: userId }).whereNot('kind', 'recovery').first('kind');
    if (!row) return undefined;
    await trx(TABLE).where('id', factorId).delete();
    const left = await trx(TABLE).where({ user_id: userId, confirmed: true }).whereNot('kind', 'recovery').first('id');
    if (!left) await trx(TABLE).where({ user_id: userId }).delete();
    return row.kind as FactorKind;
  });
}

/** Removes every factor of a user (an administrator's reset after a lost device); how many there were. */
export async function removeAllFactors(db: Db, userId: string): Promise<number> {
  const count = (await factorsOf(db, userId)).filter((f) => f.kind !== 'recovery').length;
  await db(TABLE).where({ user_id: userId }).delete();
  return count;
}

// ---- passkeys ----

const toPasskey = (r: Record<string, any>): Passkey => ({
  id: r.id,
  credentialId: r.credential_id,
  publicKey: Uint8Array.from(Buffer.from(r.public_key, 'base64url')),
  counter: Number(r.counter),
  deviceType: r.device_type,
  transports: r.transports ? JSON.parse(r.transports) : [],
});

export async function passkeysOf(db: Db, userId: string): Promise<Passkey[]> {
  return (await db(TABLE).where({ user_id: userId, kind: 'passkey' })).map(toPasskey);
}

/** The passkey with a credential id and whose it is. */
export async function findPasskey(db: Db, credentialId: string): Promise<(Passkey & { userId: string }) | undefined> {
  const row = await db(TABLE).where({ kind: 'passkey', credential_id: credentialId }).first();
  return row && { ...toPasskey(row), userId: row.user_id };
}

/** Adds a passkey, ending every other set-up in progress (newSecondFactor) but the one of `sessionId`. */
export async function addPasskey(db: Db, userId: string, key: Omit<Passkey, 'id'>, sessionId?: string): Promise<string> {
  const id = randomUUID();
  await db.transaction(async (trx) => {
    await newSecondFactor(trx, userId, sessionId);
    await trx(TABLE).insert({
      id, user_id: userId, kind: 'passkey', credential_id: key.credentialId, public_key: Buffer.from(key.publicKey).toString('base64url'),
      counter: key.counter, device_type: key.deviceType, transports: JSON.stringify(key.transports), confirmed: true, created_at: nowSeconds(),
    });
  });
  return id;
}

/** Records a passkey's use; false when the signature counter went backwards (a cloned authenticator). */
export async function passkeyUsed(db: Db, id: string, counter: number): Promise<boolean> {
  const updated = await db(TABLE).where('id', id)
    .andWhere((q) => q.where('counter', '<', counter).orWhere('counter', 0))
    .update({ counter, used_at: nowSeconds() });
  return updated === 1;
}
