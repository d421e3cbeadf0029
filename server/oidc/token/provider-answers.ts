// Where smart-auth reads an answer oidc-provider already gave, because oidc-provider has no hook for it:
//   - client authentication fails before any hook runs, with 400 invalid_request when the request names
//     no client at all or sends a client_assertion that is not a JWT; SMART and RFC 7662 want 401
//     invalid_client. Both are recognised from the request itself (typed checks), not from the message;
//   - introspection and revocation refuse JWT access tokens with unsupported_token_type and no hook lets
//     them accept one; that standard error code (RFC 7009 section 2.2.1) is the signal that the client
//     was authenticated and the token is ours to answer for.
import type { KoaContextWithOIDC } from 'oidc-provider';
import { decodeJwt } from 'jose';

const errorOf = (ctx: KoaContextWithOIDC) => (ctx.body as { error?: unknown } | undefined)?.error;

/** oidc-provider refused a client_assertion that does not even decode as a JWT. */
export function refusedMalformedAssertion(ctx: KoaContextWithOIDC): boolean {
  const assertion = ctx.oidc?.params?.client_assertion;
  if (ctx.status !== 400 || errorOf(ctx) !== 'invalid_request' || typeof assertion !== 'string') return false;
  try {
    decodeJwt(assertion);
    return false;
  } catch {
    return true;
  }
}

/** oidc-provider refused a request that names no client: no Authorization header, client_id or assertion. */
export function refusedWithoutCredentials(ctx: KoaContextWithOIDC): boolean {
  const params = ctx.oidc?.params;
  return ctx.status === 400 && errorOf(ctx) === 'invalid_request' && !ctx.oidc?.client && !ctx.get('authorization')
    && params?.client_id === undefined && params?.client_assertion === undefined;
}

/** oidc-provider refused to introspect or revoke a structured (JWT) token. */
export const refusedStructuredToken = (ctx: KoaContextWithOIDC) => ctx.status === 400 && errorOf(ctx) === 'unsupported_token_type';
