// DPoP (RFC 9449) at the resource server: a token bound to a key (`cnf.jkt`) is only good with
// `Authorization: DPoP <token>` and a proof signed by that key for this very request (section 7.1).
// No server-provided nonce: freshness is a short `iat` window plus a store of seen `jti`s, which must be
// shared by every instance of a resource server for a replay to be refused across them.
import { createHash } from 'node:crypto';
import { calculateJwkThumbprint, decodeJwt, decodeProtectedHeader, EmbeddedJWK, errors as joseErrors, jwtVerify, type JWK } from 'jose';

/** RFC 9449 section 7.1 error codes, sent in a `WWW-Authenticate: DPoP` challenge. */
export type DpopErrorCode = 'invalid_token' | 'invalid_dpop_proof';

export class DpopError extends Error {
  override name = 'DpopError';
  constructor(readonly error: DpopErrorCode, message: string) {
    super(message);
  }
}

/** Seen proof `jti`s. `firstUse` records one until `expiresAt` (epoch seconds) and tells whether it was new. */
export interface DpopReplayStore {
  firstUse(id: string, expiresAt: number): Promise<boolean>;
}

/** A replay store in this process only: enough for one instance; several need a shared one. */
export function memoryReplayStore(now: () => number = () => Date.now() / 1000, maxEntries = 100_000): DpopReplayStore {
  const seen = new Map<string, number>();
  return {
    async firstUse(id, expiresAt) {
      const t = now();
      if ((seen.get(id) ?? 0) > t) return false;
      if (seen.size >= maxEntries) for (const [key, until] of seen) if (until <= t || seen.size >= maxEntries) seen.delete(key);
      seen.set(id, expiresAt);
      return true;
    },
  };
}

/** The asymmetric algorithms a proof may use (the authorization server's `dpop_signing_alg_values_supported`). */
export const DPOP_ALGORITHMS = ['ES256', 'ES384', 'PS256', 'RS256', 'Ed25519', 'EdDSA'] as const;

export interface DpopOptions {
  replay?: DpopReplayStore;
  /** How old a proof's `iat` may be, in seconds (default 60). */
  maxAgeSeconds?: number;
  /** How far in the future `iat` may be, in seconds (default 5). */
  clockTolerance?: number;
  now?: () => number;
}

/** What the guard knows of one request when it checks its DPoP proof. */
export interface DpopRequest {
  /** The Authorization scheme the token came with. */
  scheme: 'bearer' | 'dpop';
  accessToken: string;
  /** The token's `cnf.jkt`, if it is bound. */
  jkt?: string;
  /** The `DPoP` header(s) as received. */
  proof: string | string[] | undefined;
  method: string;
  /** The public URL of the request (after the public-base rewrite); query and fragment are ignored. */
  url: string;
}

const hash = (value: string) => createHash('sha256').update(value).digest('base64url');
const withoutQuery = (url: string) => {
  const parsed = URL.parse(url);
  return parsed ? `${parsed.origin}${parsed.pathname}` : undefined;
};

/**
 * Whether a DPoP proof names a URL other than `url` as its htu. oidc-provider compares a proof at /token
 * with the URL the request's Host header spells, so a proof made for another server would pass there.
 * False for a proof that does not decode or has no htu: those are refused by the full check anyway.
 */
export function proofForAnotherUrl(proof: string, url: string): boolean {
  let htu: unknown;
  try {
    htu = decodeJwt(proof).htu;
  } catch {
    return false;
  }
  return typeof htu === 'string' && withoutQuery(htu) !== withoutQuery(url);
}

/** The `cnf.jkt` of token claims, if any. */
export function boundKey(claims: Record<string, unknown>): string | undefined {
  const jkt = (claims.cnf as { jkt?: unknown } | undefined)?.jkt;
  return typeof jkt === 'string' ? jkt : undefined;
}

/** A `WWW-Authenticate` DPoP challenge (RFC 9449 section 7.1). */
export function dpopChallenge(error: DpopErrorCode, description: string): string {
  return `DPoP error="${error}", error_description="${description.replace(/["\\]/g, '')}", algs="${DPOP_ALGORITHMS.join(' ')}"`;
}

/** Checks the DPoP rules for one request; throws DpopError when the token may not be used so. */
export function createDpopCheck(options: DpopOptions = {}) {
  const replay = options.replay ?? memoryReplayStore(options.now);
  const maxAge = options.maxAgeSeconds ?? 60;
  const tolerance = options.clockTolerance ?? 5;
  const now = options.now ?? (() => Date.now() / 1000);

  return async function checkDpop(request: DpopRequest): Promise<void> {
    if (!request.jkt) {
      // A DPoP scheme with an unbound token would let a stolen bearer token pass as a bound one.
      if (request.scheme === 'dpop') throw new DpopError('invalid_token', 'the access token is not bound to a DPoP key');
      return;
    }
    if (request.scheme !== 'dpop') throw new DpopError('invalid_token', 'a DPoP-bound access token must be sent with the DPoP authorization scheme and a DPoP proof');
    if (typeof request.proof !== 'string' || !request.proof) throw new DpopError('invalid_dpop_proof', 'exactly one DPoP proof header is required');

    let header: ReturnType<typeof decodeProtectedHeader>;
    let payload: Record<string, unknown>;
    try {
      header = decodeProtectedHeader(request.proof);
      ({ payload } = await jwtVerify(request.proof, EmbeddedJWK, { typ: 'dpop+jwt', algorithms: [...DPOP_ALGORITHMS] }));
    } catch (err) {
      if (err instanceof joseErrors.JOSEError || err instanceof TypeError) throw new DpopError('invalid_dpop_proof', 'the DPoP proof is not a valid signed dpop+jwt');
      throw err;
    }
    const fail = (message: string): never => {
      throw new DpopError('invalid_dpop_proof', message);
    };
    if (typeof payload.jti !== 'string' || !payload.jti || payload.jti.length > 256) fail('the DPoP proof needs a jti');
    if (payload.htm !== request.method) fail('the DPoP proof htm does not match the request method');
    if (typeof payload.htu !== 'string' || withoutQuery(payload.htu) !== withoutQuery(request.url)) fail('the DPoP proof htu does not match the request URL');
    const iat = Number(payload.iat);
    const t = now();
    if (!Number.isFinite(iat) || iat < t - maxAge || iat > t + tolerance) fail('the DPoP proof iat is not recent');
    if (payload.ath !== hash(request.accessToken)) fail('the DPoP proof ath does not match the access token');
    if (await calculateJwkThumbprint(header.jwk as JWK, 'sha256') !== request.jkt) fail('the DPoP proof is not signed by the key the access token is bound to');
    // Last: only a proof that is good in every other way uses up its jti.
    if (!(await replay.firstUse(hash(`${request.jkt}:${payload.jti as string}`), iat + maxAge + tolerance))) fail('the DPoP proof has been used before');
  };
}

export type DpopCheck = ReturnType<typeof createDpopCheck>;
