// Where smart-auth reads an answer oidc-provider already gave, because oidc-provider has no hook for it:
//   - client authentication fails before any hook runs, with 400 invalid_request when the request names
//     no client at all or sends a client_assertion that is not a JWT; RFC 6749 section 5.2 (and RFC 7662,
//     RFC 7009, SMART) want 401 invalid_client. Both are recognised from the request itself (typed checks,
//     as oidc-provider reads it), not from the message;
//   - introspection and revocation refuse JWT access tokens with unsupported_token_type and no hook lets
//     them accept one; that standard error code (RFC 7009 section 2.2.1) is the signal that the client
//     was authenticated and the token is ours to answer for.
import type { KoaContextWithOIDC } from 'oidc-provider';
import { decodeJwt } from 'jose';

const errorOf = (ctx: KoaContextWithOIDC) => (ctx.body as { error?: unknown } | undefined)?.error;

/** The client_id and secret of a Basic Authorization header (RFC 6749 section 2.3.1), undefined when it is none. */
export function basicCredentials(authorization: string | undefined): { id: string; secret: string } | undefined {
  const encoded = /^Basic\s+(\S+)$/i.exec(authorization ?? '')?.[1];
  if (!encoded) return undefined;
  const basic = Buffer.from(encoded, 'base64').toString('utf8');
  const at = basic.indexOf(':');
  if (at < 0) return undefined;
  const decode = (part: string) => {
    try {
      return decodeURIComponent(part.replace(/\+/g, '%20'));
    } catch {
      return part;
    }
  };
  return { id: decode(basic.slice(0, at)), secret: decode(basic.slice(at + 1)) };
}

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

/**
 * oidc-provider refused a request that names no client: one mechanism at most, and no client_id in it
 * (no parameter, no assertion, no Authorization header or a Basic one with an empty client_id).
 */
export function refusedWithoutCredentials(ctx: KoaContextWithOIDC): boolean {
  const params = ctx.oidc?.params;
  const authorization = ctx.get('authorization');
  const mechanisms = [authorization, params?.client_assertion, params?.client_secret].filter(Boolean).length;
  return ctx.status === 400 && errorOf(ctx) === 'invalid_request' && !ctx.oidc?.client && mechanisms <= 1
    && !params?.client_id && params?.client_assertion === undefined && (!authorization || basicCredentials(authorization)?.id === '');
}

const CLIENT_AUTHENTICATING_ROUTES = new Set(['token', 'introspection', 'revocation']);

/** The answers to a client that did not authenticate, by what it sent. */
const NO_CLIENT = { error: 'invalid_client', error_description: 'client authentication is required' };
const MALFORMED_ASSERTION = { error: 'invalid_client', error_description: 'the client assertion is not a valid JWT' };

/**
 * One rule for the token, introspection and revocation endpoints: a request that names no client, or
 * whose client assertion is not a JWT, is 401 invalid_client (RFC 6749 section 5.2: client authentication
 * failed, "no client authentication included"; SMART: every assertion failure is invalid_client), with
 * the schemes the endpoint takes (RFC 9110 section 15.5.2): Basic, and a bearer token at introspection.
 */
export async function clientAuthenticationRequired(ctx: KoaContextWithOIDC, next: () => Promise<void>) {
  await next();
  const route = ctx.oidc?.route ?? '';
  if (!CLIENT_AUTHENTICATING_ROUTES.has(route)) return;
  const answer = refusedWithoutCredentials(ctx) ? NO_CLIENT : refusedMalformedAssertion(ctx) ? MALFORMED_ASSERTION : undefined;
  if (!answer) return;
  const realm = `realm="${ctx.oidc.provider.issuer}"`;
  ctx.status = 401;
  ctx.set('WWW-Authenticate', route === 'introspection' ? `Basic ${realm}, Bearer ${realm}` : `Basic ${realm}`);
  ctx.body = { ...answer };
}

/** oidc-provider refused to introspect or revoke a structured (JWT) token. */
export const refusedStructuredToken = (ctx: KoaContextWithOIDC) => ctx.status === 400 && errorOf(ctx) === 'unsupported_token_type';
