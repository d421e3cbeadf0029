// A DPoP (RFC 9449) key pair that signs proofs as a client would, with overrides to make bad ones.
import { createHash, randomUUID } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';

export interface ProofOptions {
  htm: string;
  htu: string;
  /** The access token the proof goes with (sets ath). */
  accessToken?: string;
  claims?: Record<string, unknown>;
  header?: Record<string, unknown>;
  /** Leave these claims out. */
  omit?: string[];
}

export interface DpopKey {
  jwk: JWK;
  jkt: string;
  privateKey: CryptoKey;
  proof(o: ProofOptions): Promise<string>;
}

export const ath = (token: string) => createHash('sha256').update(token).digest('base64url');

export async function dpopKey(alg: 'ES256' | 'ES384' = 'ES256'): Promise<DpopKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = await exportJWK(publicKey);
  return {
    jwk, privateKey, jkt: await calculateJwkThumbprint(jwk),
    async proof({ htm, htu, accessToken, claims = {}, header = {}, omit = [] }) {
      const payload: Record<string, unknown> = { htm, htu, jti: randomUUID(), iat: Math.floor(Date.now() / 1000), ...(accessToken && { ath: ath(accessToken) }), ...claims };
      for (const name of omit) delete payload[name];
      return new SignJWT(payload).setProtectedHeader({ alg, typ: 'dpop+jwt', jwk, ...header }).sign(privateKey);
    },
  };
}
