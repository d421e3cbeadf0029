// Signing keys: generated on first start, stored in the database, newest first.
// oidc-provider signs with the first key that fits the algorithm, so the newest
// key signs and older, unretired keys stay published for verification.
import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import type { Db } from '../db.ts';
import { nowSeconds } from '../db.ts';

/** RS256: SMART requires RS256 id_tokens, and every resource server can verify it. */
const ALG = 'RS256';

export interface SigningKey {
  kid: string;
  alg: string;
  createdAt: number;
}

export async function createSigningKey(db: Db): Promise<SigningKey> {
  const { privateKey } = await generateKeyPair(ALG, { modulusLength: 2048, extractable: true });
  const kid = `${ALG.toLowerCase()}-${randomUUID()}`;
  const jwk = { ...(await exportJWK(privateKey)), kid, alg: ALG, use: 'sig' };
  const createdAt = nowSeconds();
  await db('signing_keys').insert({ kid, alg: ALG, private_jwk: JSON.stringify(jwk), created_at: createdAt });
  return { kid, alg: ALG, createdAt };
}

export async function listSigningKeys(db: Db): Promise<SigningKey[]> {
  const rows = await db('signing_keys').whereNull('retired_at').orderBy('created_at', 'desc').orderBy('kid');
  return rows.map((r) => ({ kid: r.kid, alg: r.alg, createdAt: Number(r.created_at) }));
}

/** The private JWKS for oidc-provider; creates the first key when there is none. */
export async function loadPrivateJwks(db: Db): Promise<{ keys: JWK[] }> {
  if ((await listSigningKeys(db)).length === 0) await createSigningKey(db);
  const rows = await db('signing_keys').whereNull('retired_at').orderBy('created_at', 'desc').orderBy('kid');
  return { keys: rows.map((r) => JSON.parse(r.private_jwk) as JWK) };
}
