// Access-token verification for a resource server: locally against the issuer's keys (RFC 9068),
// by introspection (RFC 7662), or both; verified tokens are cached by their hash until they expire,
// so a repeated token costs no cryptography. Imports nothing from the authorization server.
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { parseScopes, type ResourceScope } from '../smart/scopes.ts';
import type { TokenContext } from './types.ts';
import { VerifiedTokens } from './verified-tokens.ts';
import { tokenUser, userFactsOf, type UserFacts } from './user-facts.ts';

export interface AccessTokenClaims extends JWTPayload {
  client_id: string;
  scope: string;
  jti: string;
  patient?: string;
  encounter?: string;
  fhirUser?: string;
}

export class InvalidTokenError extends Error {
  override name = 'InvalidTokenError';
}

/** The verifier could not reach what it needs (JWKS, introspection endpoint): the guard refuses with 503. */
export class VerifierUnavailableError extends Error {
  override name = 'VerifierUnavailableError';
}

const ALGORITHMS = ['RS256', 'RS384', 'ES256', 'ES384', 'PS256'];

/** Verifies an RFC 9068 JWT access token: signature, typ, iss, aud, exp/nbf with a small tolerance. */
export async function verifyJwtAccessToken(
  token: string,
  options: { issuer: string; audience: string; keys: JWTVerifyGetKey; clockTolerance?: number },
): Promise<AccessTokenClaims> {
  try {
    const { payload } = await jwtVerify(token, options.keys, {
      issuer: options.issuer,
      audience: options.audience,
      typ: 'at+jwt',
      algorithms: ALGORITHMS,
      clockTolerance: options.clockTolerance ?? 5,
      requiredClaims: ['exp', 'iat', 'jti', 'client_id'],
    });
    if (typeof payload.scope !== 'string') throw new InvalidTokenError('the token has no scope');
    return payload as AccessTokenClaims;
  } catch (err) {
    if (err instanceof InvalidTokenError) throw err;
    if (err instanceof joseErrors.JWTExpired) throw new InvalidTokenError('the access token has expired');
    if (err instanceof joseErrors.JWKSTimeout) throw new VerifierUnavailableError('the issuer\'s keys could not be fetched in time');
    if (err instanceof joseErrors.JOSEError) throw new InvalidTokenError('the access token is not valid for this server');
    throw new VerifierUnavailableError(`the issuer's keys could not be fetched: ${(err as Error).message}`);
  }
}

/** Kept for the bundled server: a verifier bound to one issuer, audience and key set. */
export function createTokenVerifier(options: { issuer: string; audience: string; keys: JWTVerifyGetKey; clockTolerance?: number }) {
  return (token: string) => verifyJwtAccessToken(token, options);
}

/** The bearer token of an Authorization header (RFC 6750 section 2.1), or undefined. */
export function bearerToken(authorization: string | undefined): string | undefined {
  const sent = accessTokenOf(authorization);
  return sent?.scheme === 'bearer' ? sent.token : undefined;
}

/** The access token of an Authorization header and its scheme: Bearer (RFC 6750) or DPoP (RFC 9449), or undefined. */
export function accessTokenOf(authorization: string | undefined): { scheme: 'bearer' | 'dpop'; token: string } | undefined {
  const match = /^(Bearer|DPoP) ([A-Za-z0-9\-._~+/]+=*)$/i.exec(authorization ?? '');
  return match ? { scheme: match[1].toLowerCase() as 'bearer' | 'dpop', token: match[2] } : undefined;
}

/** The issuer's JWKS, found through its OpenID configuration; jose refetches at most once per cooldown on an unknown kid. */
export function discoveredJwks(issuer: string): JWTVerifyGetKey {
  let keys: Promise<JWTVerifyGetKey> | undefined;
  const load = async () => {
    const res = await fetch(`${issuer}/.well-known/openid-configuration`, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(5000) });
    if (!res.ok) throw new VerifierUnavailableError(`issuer discovery answered ${res.status}`);
    const { jwks_uri: jwksUri } = (await res.json()) as { jwks_uri?: string };
    if (!jwksUri) throw new VerifierUnavailableError('issuer discovery has no jwks_uri');
    return createRemoteJWKSet(new URL(jwksUri), { cooldownDuration: 30_000, cacheMaxAge: 10 * 60_000, timeoutDuration: 5000 });
  };
  return async (header, token) => {
    keys ??= load().catch((err) => {
      keys = undefined; // try discovery again next time
      throw err;
    });
    return (await keys)(header, token);
  };
}

export interface IntrospectionOptions {
  endpoint: string;
  /** HTTP Basic credentials of a resource-server client, or a function giving a bearer token with the `introspect` scope. */
  credentials: { clientId: string; clientSecret: string } | { bearer: () => Promise<string> };
}

/** Asks the authorization server whether a token is active; returns its claims, or undefined when inactive. */
export async function introspect(token: string, options: IntrospectionOptions): Promise<Record<string, unknown> | undefined> {
  const authorization = 'clientId' in options.credentials
    ? `Basic ${Buffer.from(`${encodeURIComponent(options.credentials.clientId)}:${encodeURIComponent(options.credentials.clientSecret)}`).toString('base64')}`
    : `Bearer ${await options.credentials.bearer()}`;
  let res: Response;
  try {
    res = await fetch(options.endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', authorization },
      body: new URLSearchParams({ token }),
      signal: AbortSignal.timeout(5000),
    });
  } catch (err) {
    throw new VerifierUnavailableError(`introspection failed: ${(err as Error).message}`);
  }
  if (res.status === 401) throw new VerifierUnavailableError('introspection answered 401: the issuer did not accept the guard\'s client credentials (introspection.credentials)');
  if (!res.ok) throw new VerifierUnavailableError(`introspection answered ${res.status}`);
  const body = (await res.json()) as Record<string, unknown>;
  return body.active === true ? body : undefined;
}

export interface GuardVerification {
  issuer: string;
  /** The FHIR base URL tokens must be issued for (`aud`). */
  audience: string;
  /**
   * local: signature with the issuer's keys (revoked tokens seen through `isRevoked`); introspection: ask the issuer every time (cached briefly);
   * local+introspection: local verification, then a revocation check by introspection (cached briefly).
   */
  mode: 'local' | 'introspection' | 'local+introspection';
  /** Verification keys; default: the issuer's JWKS found through discovery. */
  keys?: JWTVerifyGetKey;
  introspection?: IntrospectionOptions;
  /** How long an introspection answer is trusted, in seconds (default 30). */
  introspectionCacheSeconds?: number;
  /** An extra revocation check after local verification (the bundled server asks its database). */
  isRevoked?: (claims: Record<string, unknown>) => Promise<boolean>;
  /**
   * `unchecked`: mode `local` without `isRevoked`, knowingly. A revoked token (signed out, grant revoked,
   * refresh token reused, app removed) then works until it expires: only where access tokens live minutes.
   */
  revocation?: 'unchecked';
  /** Cache verified tokens by hash (default true): a repeated token costs no cryptography. */
  cache?: boolean;
  /** Entries the cache holds at most (default 10000). */
  cacheSize?: number;
  /**
   * For `user/` scopes of a user who is not a patient: the patients they may reach (undefined: all).
   * Unset: as the introspection answer tells (`user_patients`); without one, none.
   */
  userPatients?: (claims: Record<string, unknown>) => Promise<readonly string[] | undefined>;
  /** Whether a user holds the auditor attribute (reads AuditEvents). Unset: as the introspection answer tells (`auditor`); without one, no. */
  auditor?: (claims: Record<string, unknown>) => Promise<boolean>;
  clockTolerance?: number;
  now?: () => number;
}

const relativeReference = (reference: string) => /(?:^|\/)([A-Z][A-Za-z]{1,63}\/[A-Za-z0-9\-.]{1,64})$/.exec(reference)?.[1] ?? reference;

/** The token as the guard sees it. */
export function tokenContext(claims: Record<string, unknown>, audience: string, user?: UserFacts): TokenContext {
  const scopes = parseScopes(String(claims.scope ?? '')).scopes.filter((s): s is ResourceScope => s.kind === 'resource');
  // fhirUser is an absolute URL on the issuer's own FHIR base, which need not be this one (a guard in
  // front of another server): the relative "Type/id" is what compartments and consent actors name.
  const fhirUser = typeof claims.fhirUser === 'string' ? relativeReference(claims.fhirUser.replace(`${audience}/`, '')) : undefined;
  return {
    clientId: String(claims.client_id),
    sub: typeof claims.sub === 'string' ? claims.sub : undefined,
    issuer: String(claims.iss),
    jti: String(claims.jti),
    exp: Number(claims.exp),
    scopes,
    patient: typeof claims.patient === 'string' ? claims.patient : undefined,
    fhirUser,
    userPatients: user?.patients,
    auditor: user?.auditor,
    claims,
  };
}

/** Introspection `token_type` values of access tokens (RFC 6750 Bearer, RFC 9449 DPoP). */
const ACCESS_TOKEN_TYPES = new Set(['bearer', 'dpop']);

const VERIFICATION_MODES: readonly string[] = ['local', 'introspection', 'local+introspection'];
const nonEmpty = (value: unknown) => typeof value === 'string' && value !== '';
const credentialsGiven = (credentials: Partial<Record<string, unknown>> | undefined) =>
  typeof credentials?.bearer === 'function' || (nonEmpty(credentials?.clientId) && nonEmpty(credentials?.clientSecret));

/** Why these options make no verifier, or undefined. Fail closed: revoked tokens are refused unless the options say they are not checked. */
function verificationProblem(options: GuardVerification): string | undefined {
  // Plain JavaScript callers get no type error; jose checks no `iss` or `aud` it is not given.
  if (!nonEmpty(options.issuer)) return 'issuer must be the authorization server\'s URL (the `iss` of its tokens)';
  if (!nonEmpty(options.audience)) return 'audience must be the FHIR base URL the guard serves (the `aud` of the tokens it takes)';
  if (!VERIFICATION_MODES.includes(options.mode)) return `mode must be one of ${VERIFICATION_MODES.join(', ')}, got ${JSON.stringify(options.mode)}`;
  if (options.mode !== 'local' && !options.introspection) return `verification mode ${options.mode} needs introspection options`;
  if (options.introspection && !credentialsGiven(options.introspection.credentials)) {
    return 'introspection needs credentials: { clientId, clientSecret } of a resource-server client of the issuer, or { bearer }';
  }
  const checked = options.mode !== 'local' || options.isRevoked !== undefined;
  if (options.revocation === undefined) {
    return checked ? undefined : 'verification mode local cannot see revoked tokens: give isRevoked (sharedDatabase(db).isRevoked from '
      + '@smart-auth/guard/database), use mode local+introspection or introspection, or set revocation: \'unchecked\' to accept revoked tokens until they expire';
  }
  if (options.revocation !== 'unchecked') return `revocation is 'unchecked' or unset, not ${JSON.stringify(options.revocation)}`;
  return checked ? `revocation: 'unchecked' contradicts ${options.isRevoked ? 'isRevoked' : `mode ${options.mode}`}, which checks it` : undefined;
}

/** Verification as configured, with the cache: token in, TokenContext out (or InvalidTokenError). */
export function createGuardVerifier(options: GuardVerification): (token: string) => Promise<TokenContext> {
  const problem = verificationProblem(options);
  if (problem) throw new TypeError(problem);
  const now = options.now ?? (() => Date.now() / 1000);
  const keys = options.keys ?? discoveredJwks(options.issuer);
  const introspectionTtl = options.introspectionCacheSeconds ?? 30;
  const cache = new VerifiedTokens<TokenContext>(options.cacheSize);

  /** What the hooks, else the introspection answer, tell of the token's user. */
  async function userFacts(claims: Record<string, unknown>, answer: Record<string, unknown> | undefined): Promise<UserFacts | undefined> {
    if (!tokenUser(claims)) return undefined;
    const told = userFactsOf(answer);
    return {
      patients: options.userPatients ? await options.userPatients(claims) : told.patients,
      auditor: options.auditor ? await options.auditor(claims) : told.auditor,
    };
  }

  async function verifyUncached(token: string): Promise<{ context: TokenContext; until: number }> {
    let claims: Record<string, unknown>;
    let answer: Record<string, unknown> | undefined;
    let until: number;
    if (options.mode === 'introspection') {
      const active = await introspect(token, options.introspection!);
      if (!active) throw new InvalidTokenError('the access token is not active');
      // An active refresh token introspects too (RFC 7662): only an access token opens the FHIR server.
      if (active.token_type !== undefined && !ACCESS_TOKEN_TYPES.has(String(active.token_type).toLowerCase())) {
        throw new InvalidTokenError('the token is not an access token');
      }
      const aud = Array.isArray(active.aud) ? active.aud : [active.aud];
      if (active.iss !== options.issuer || !aud.includes(options.audience)) throw new InvalidTokenError('the access token is not valid for this server');
      claims = answer = active;
      until = Math.min(Number(active.exp), now() + introspectionTtl);
    } else {
      claims = await verifyJwtAccessToken(token, { issuer: options.issuer, audience: options.audience, keys, clockTolerance: options.clockTolerance });
      until = Number(claims.exp);
      if (options.mode === 'local+introspection') {
        answer = await introspect(token, options.introspection!);
        if (!answer) throw new InvalidTokenError('the access token has been revoked');
        until = Math.min(until, now() + introspectionTtl);
      }
    }
    if (options.isRevoked && (await options.isRevoked(claims))) throw new InvalidTokenError('the access token has been revoked');
    return { context: tokenContext(claims, options.audience, await userFacts(claims, answer)), until };
  }

  return async function verify(token: string): Promise<TokenContext> {
    if (options.cache === false) return (await verifyUncached(token)).context;
    const key = VerifiedTokens.keyOf(token);
    const hit = cache.get(key, now());
    if (hit) {
      // A revocation check that must stay live runs even on a cache hit.
      if (options.isRevoked && (await options.isRevoked(hit.claims))) {
        cache.delete(key);
        throw new InvalidTokenError('the access token has been revoked');
      }
      return hit;
    }
    const entry = await verifyUncached(token);
    cache.set(key, entry.context, entry.until);
    return entry.context;
  };
}
