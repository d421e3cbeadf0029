// Signing keys: stored in the database with their private parts encrypted, rotated with a delay.
//
// A key's life: created (published in /jwks at once) -> signs from `activates_at` -> stops signing
// when its successor activates (`retired_at`) -> stays published until every token it signed has
// expired (`retired_at` + the longest token lifetime) -> dropped from /jwks.
import { createCipheriv, createDecipheriv, randomBytes, randomUUID, scryptSync } from 'node:crypto';
import { CompactSign, compactVerify, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';
import type { Config } from '../config.ts';
import { CLOCK_SKEW, ID_TOKEN_TTL } from './token-lifetimes.ts';
import type { Db } from '../db.ts';
import { nowSeconds } from '../db.ts';
import { isPg } from '../db-statements.ts';

export type SigningAlg = 'RS256' | 'ES256' | 'ES384';

export interface KeyPolicy {
  /** Algorithms the server signs with: access tokens' and RS256 for id tokens (SMART requires RS256). */
  algs: readonly SigningAlg[];
  /** Seconds between `keys rotate` and the new key signing; resource servers fetch it meanwhile. */
  rotationDelay: number;
  /** The longest lifetime of a token signed by a key: how long a retired key stays published. */
  maxTokenLifetime: number;
  /** Encrypts the private parts at rest. */
  encryptionSecret: string;
}

/** A retired key stays published as long as the longest-lived token it signed. */
export function keyPolicy(config: Config): KeyPolicy {
  return {
    algs: [config.accessTokenAlg, 'RS256'],
    rotationDelay: config.keyRotationDelay,
    maxTokenLifetime: Math.max(config.accessTokenTtl, config.backendTokenTtl, ID_TOKEN_TTL) + CLOCK_SKEW,
    encryptionSecret: config.keyEncryptionSecret,
  };
}

export type KeyState = 'pending' | 'signing' | 'retiring' | 'expired';

export interface SigningKeyInfo {
  kid: string;
  alg: SigningAlg;
  state: KeyState;
  createdAt: number;
  activatesAt: number;
  retiredAt: number | null;
  /** When it leaves /jwks; null while it may still sign. */
  unpublishAt: number | null;
}

interface KeyRow {
  kid: string;
  alg: SigningAlg;
  private_jwk: string;
  created_at: number | string;
  activates_at: number | string;
  retired_at: number | string | null;
}

export class KeyEncryptionError extends Error {
  override name = 'KeyEncryptionError';
}

// --- encryption at rest: AES-256-GCM, the kid as additional data so a ciphertext cannot be moved to another row.

const derived = new Map<string, Buffer>();
function encryptionKey(secret: string): Buffer {
  let key = derived.get(secret);
  if (!key) {
    key = scryptSync(secret, 'smart-auth/signing-keys/v1', 32);
    derived.set(secret, key);
  }
  return key;
}

/** Encrypts a secret for storage; `label` (a row's id) is bound to it, so it cannot be moved to another row. */
export function sealSecret(text: string, label: string, secret: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', encryptionKey(secret), iv);
  cipher.setAAD(Buffer.from(label));
  const data = Buffer.concat([cipher.update(text), cipher.final()]);
  return ['v1', iv.toString('base64url'), cipher.getAuthTag().toString('base64url'), data.toString('base64url')].join('.');
}

/** The text sealSecret stored, or a KeyEncryptionError (wrong format, label or KEY_ENCRYPTION_SECRET). */
export function openSecret(stored: string, label: string, secret: string, name = label): string {
  const [version, iv, tag, data] = stored.split('.');
  if (version !== 'v1' || !iv || !tag || !data) throw new KeyEncryptionError(`${name} is not in the encrypted format`);
  try {
    const decipher = createDecipheriv('aes-256-gcm', encryptionKey(secret), Buffer.from(iv, 'base64url'));
    decipher.setAAD(Buffer.from(label));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(data, 'base64url')), decipher.final()]).toString();
  } catch {
    throw new KeyEncryptionError(`cannot decrypt ${name}: KEY_ENCRYPTION_SECRET is not the one it was stored with`);
  }
}

export function encryptJwk(jwk: JWK, kid: string, secret: string): string {
  return sealSecret(JSON.stringify(jwk), kid, secret);
}

export function decryptJwk(stored: string, kid: string, secret: string): JWK {
  return JSON.parse(openSecret(stored, kid, secret, `signing key ${kid}`)) as JWK;
}

// --- the rules: pure.

export function keyState(row: Pick<KeyRow, 'activates_at' | 'retired_at'>, now: number, maxTokenLifetime: number): KeyState {
  const retiredAt = row.retired_at === null ? null : Number(row.retired_at);
  if (retiredAt !== null && retiredAt <= now) return retiredAt + maxTokenLifetime > now ? 'retiring' : 'expired';
  return Number(row.activates_at) <= now ? 'signing' : 'pending';
}

function describe(row: KeyRow, now: number, maxTokenLifetime: number): SigningKeyInfo {
  const retiredAt = row.retired_at === null ? null : Number(row.retired_at);
  return {
    kid: row.kid,
    alg: row.alg,
    state: keyState(row, now, maxTokenLifetime),
    createdAt: Number(row.created_at),
    activatesAt: Number(row.activates_at),
    retiredAt,
    unpublishAt: retiredAt === null ? null : retiredAt + maxTokenLifetime,
  };
}

/** Newest first; per algorithm the signing key comes before every other, since oidc-provider signs with the first fit. */
function byPreference(a: SigningKeyInfo, b: SigningKeyInfo): number {
  const rank = (k: SigningKeyInfo) => (k.state === 'signing' ? 0 : 1);
  return rank(a) - rank(b) || b.activatesAt - a.activatesAt || a.kid.localeCompare(b.kid);
}

// --- storage.

async function rows(db: Db): Promise<KeyRow[]> {
  return db('signing_keys').select('kid', 'alg', 'private_jwk', 'created_at', 'activates_at', 'retired_at');
}

export async function listSigningKeys(db: Db, policy: Pick<KeyPolicy, 'maxTokenLifetime'>, now = nowSeconds()): Promise<SigningKeyInfo[]> {
  return (await rows(db)).map((r) => describe(r, now, policy.maxTokenLifetime)).sort(byPreference);
}

async function insertKey(db: Db, alg: SigningAlg, activatesAt: number, secret: string): Promise<SigningKeyInfo> {
  const { privateKey } = await generateKeyPair(alg, { modulusLength: 2048, extractable: true });
  const kid = `${alg.toLowerCase()}-${randomUUID()}`;
  const jwk = { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };
  const now = nowSeconds();
  const row = { kid, alg, private_jwk: encryptJwk(jwk, kid, secret), created_at: now, activates_at: activatesAt, retired_at: null };
  await db('signing_keys').insert(row);
  return describe(row, now, 0);
}

/**
 * Refuses a KEY_ENCRYPTION_SECRET that does not open the newest stored signing key: what it sealed (keys, TOTP
 * secrets) the servers could not read, and a key rotated in under it would stop them once the old keys retire.
 */
export async function checkEncryptionSecret(db: Db, secret: string): Promise<void> {
  const newest = await db('signing_keys').select('kid', 'private_jwk').orderBy('created_at', 'desc').first();
  if (!newest) return;
  try {
    decryptJwk(newest.private_jwk, newest.kid, secret);
  } catch (err) {
    if (!(err instanceof KeyEncryptionError)) throw err;
    throw new KeyEncryptionError('KEY_ENCRYPTION_SECRET is not the one the stored signing keys were encrypted with: nothing was changed; run smart-auth with the servers\' KEY_ENCRYPTION_SECRET');
  }
}

/**
 * Adds a key for every algorithm the stored keys sign with (not the caller's ACCESS_TOKEN_ALG: the CLI's may
 * differ from the servers'), signing after the rotation delay; the keys it replaces stop signing at that
 * moment and stay published until their tokens have expired. With no key to replace, the new ones sign at once.
 */
export async function rotateSigningKeys(db: Db, policy: KeyPolicy): Promise<SigningKeyInfo[]> {
  await checkEncryptionSecret(db, policy.encryptionSecret);
  const live = (await listSigningKeys(db, policy)).filter((k) => k.state === 'signing' || k.state === 'pending').map((k) => k.alg);
  const activatesAt = nowSeconds() + (live.length ? policy.rotationDelay : 0);
  const added: SigningKeyInfo[] = [];
  for (const alg of new Set(live.length ? live : policy.algs)) {
    await db.transaction(async (trx) => {
      await trx('signing_keys').where('alg', alg).whereNull('retired_at').update({ retired_at: activatesAt });
      added.push(await insertKey(trx, alg, activatesAt, policy.encryptionSecret));
    });
  }
  return added;
}

/**
 * Creates a signing key, active at once, for each algorithm that has none yet (the first start). Instances
 * starting together on one PostgreSQL database take turns (a lock that readers pass), so one creates the keys
 * and the others find them, rather than each signing with a key of its own the others do not publish yet.
 */
export async function ensureSigningKeys(db: Db, policy: KeyPolicy): Promise<void> {
  await db.transaction(async (trx) => {
    if (isPg(trx)) await trx.raw('LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE');
    const now = nowSeconds();
    const live = await listSigningKeys(trx, policy, now);
    for (const alg of new Set(policy.algs)) {
      if (!live.some((k) => k.alg === alg && (k.state === 'signing' || k.state === 'pending'))) await insertKey(trx, alg, now, policy.encryptionSecret);
    }
  });
}

export interface KeyRing {
  /** Changes whenever the published set or the signing order changes. */
  version: string;
  /** Private JWKs for oidc-provider, signing keys first per algorithm. */
  privateJwks: { keys: JWK[] };
  /** What /jwks publishes and what verifiers use. */
  publicJwks: { keys: JWK[] };
  /** The next moment the ring changes by itself (a key activates or leaves /jwks). */
  nextChangeAt: number | null;
}

const PUBLIC_MEMBERS = ['kty', 'kid', 'alg', 'use', 'n', 'e', 'crv', 'x', 'y'] as const;

export function publicJwk(jwk: JWK): JWK {
  return Object.fromEntries(PUBLIC_MEMBERS.filter((m) => jwk[m] !== undefined).map((m) => [m, jwk[m]])) as JWK;
}

export async function loadKeyRing(db: Db, policy: KeyPolicy, now = nowSeconds()): Promise<KeyRing> {
  const all = await rows(db);
  const byKid = new Map(all.map((r) => [r.kid, r]));
  const infos = all.map((r) => describe(r, now, policy.maxTokenLifetime)).filter((k) => k.state !== 'expired').sort(byPreference);
  const privateKeys = infos.map((k) => decryptJwk(byKid.get(k.kid)!.private_jwk, k.kid, policy.encryptionSecret));
  const upcoming = infos.flatMap((k) => (k.unpublishAt === null ? [k.activatesAt] : [k.activatesAt, k.unpublishAt])).filter((t) => t > now);
  return {
    version: infos.map((k) => `${k.kid}:${k.state}`).join(','),
    privateJwks: { keys: privateKeys },
    publicJwks: { keys: privateKeys.map(publicJwk) },
    nextChangeAt: upcoming.length ? Math.min(...upcoming) : null,
  };
}

/** The JWS type of signed audit checkpoints and purges; verify() takes no other (an access token of these keys is not a checkpoint). */
export const CHECKPOINT_TYP = 'audit-checkpoint+json';

/**
 * Signs and verifies audit checkpoints with the server's keys. Verification uses every key ever
 * stored, also the expired ones: a checkpoint must stay verifiable long after its key left /jwks.
 */
export function checkpointSigner(db: Db, policy: KeyPolicy) {
  let cached: { keys: { jwk: JWK; info: SigningKeyInfo }[]; at: number } | undefined;
  async function load() {
    const now = nowSeconds();
    cached = {
      keys: (await rows(db)).map((r) => ({ jwk: decryptJwk(r.private_jwk, r.kid, policy.encryptionSecret), info: describe(r, now, policy.maxTokenLifetime) })),
      at: Date.now(),
    };
    return cached.keys;
  }
  // Keys are read at most once a minute: a new key signs after KEY_ROTATION_DELAY anyway.
  const privateKeys = async () => (cached && Date.now() - cached.at < 60_000 ? cached.keys : load());
  return {
    /** Loads the keys now: call it before a transaction that signs (SQLite has a single connection). */
    async prepare(): Promise<void> {
      await load();
    },
    /** A JWS of `payload` with the current signing key; `typ` at+jwt makes it an access token of this server (the patient picker's own). */
    async sign(payload: object, typ = CHECKPOINT_TYP): Promise<string> {
      const keys = (await privateKeys()).filter((k) => k.info.state === 'signing').sort((a, b) => byPreference(a.info, b.info));
      const key = keys.find((k) => k.info.alg === policy.algs[0]) ?? keys[0];
      if (!key) throw new Error('no signing key for audit checkpoints');
      return new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
        .setProtectedHeader({ alg: key.info.alg, kid: key.info.kid, typ })
        .sign(await importJWK(key.jwk, key.info.alg));
    },
    async verify(jws: string): Promise<object> {
      let all = await privateKeys();
      const { payload, protectedHeader } = await compactVerify(jws, async (header) => {
        let key = all.find((k) => k.info.kid === header.kid);
        if (!key) key = (all = await load()).find((k) => k.info.kid === header.kid);
        if (!key) throw new Error(`audit checkpoint signed with an unknown key ${header.kid}`);
        return importJWK(publicJwk(key.jwk), key.info.alg);
      });
      if (protectedHeader.typ !== CHECKPOINT_TYP) throw new Error(`not an audit checkpoint: JWS type ${protectedHeader.typ} is not ${CHECKPOINT_TYP}`);
      return JSON.parse(new TextDecoder().decode(payload)) as object;
    },
  };
}
