// Access-token verification: an RFC 9068 JWT signed by the issuer, for this audience, not expired.
// Imports nothing from the authorization server, so a resource server can use it alone.
import { errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';

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

export interface TokenVerifierOptions {
  issuer: string;
  audience: string;
  keys: JWTVerifyGetKey;
  /** Seconds of clock skew tolerated on exp and nbf. */
  clockTolerance?: number;
}

export function createTokenVerifier(options: TokenVerifierOptions) {
  return async function verifyAccessToken(token: string): Promise<AccessTokenClaims> {
    try {
      const { payload } = await jwtVerify(token, options.keys, {
        issuer: options.issuer,
        audience: options.audience,
        typ: 'at+jwt',
        algorithms: ['RS256', 'RS384', 'ES256', 'ES384', 'PS256'],
        clockTolerance: options.clockTolerance ?? 5,
        requiredClaims: ['exp', 'iat', 'jti', 'client_id'],
      });
      if (typeof payload.scope !== 'string') throw new InvalidTokenError('the token has no scope');
      return payload as AccessTokenClaims;
    } catch (err) {
      if (err instanceof InvalidTokenError) throw err;
      if (err instanceof joseErrors.JWTExpired) throw new InvalidTokenError('the access token has expired');
      if (err instanceof joseErrors.JOSEError) throw new InvalidTokenError('the access token is not valid for this server');
      throw err;
    }
  };
}

/** The bearer token of an Authorization header (RFC 6750 section 2.1), or undefined. */
export function bearerToken(authorization: string | undefined): string | undefined {
  const match = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/i.exec(authorization ?? '');
  return match?.[1];
}
