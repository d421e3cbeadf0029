// OpenID Connect Core 5.3 UserInfo. Access tokens here are JWTs (RFC 9068) for a FHIR server (RFC 8707), and
// oidc-provider's own endpoint refuses every one of them (it finds no stored token, and a token for a resource
// is not one for userinfo), so this route answers in front of it; discovery still names it as userinfo_endpoint.
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import { accessTokenOf } from '../resource-server/verify-token.ts';
import { boundKey, dpopChallenge, DpopError, type DpopCheck } from '../resource-server/dpop.ts';
import { corsHeaders, preflightHeaders, type OriginCheck } from '../resource-server/cors.ts';
import { tokenUser } from '../resource-server/user-facts.ts';
import { findUser } from './user-records.ts';
import { accountClaims, SCOPE_CLAIMS } from './token/account.ts';
import { isClientOrigin } from './client-origins.ts';
import type { TokenContext } from './introspection.ts';

/** The userinfo endpoint's path (oidc-provider's `routes.userinfo`, which discovery advertises). */
export const USERINFO_PATH = '/userinfo';

/** The claims `scope` releases, of those the user has: what the id token of the same grant carries. Pure. */
export function scopedClaims(scope: string, claims: Record<string, unknown>): Record<string, unknown> {
  const released = new Set(scope.split(' ').flatMap((s) => (Object.hasOwn(SCOPE_CLAIMS, s) ? SCOPE_CLAIMS[s] : [])));
  return Object.fromEntries(Object.entries(claims).filter(([name, value]) => released.has(name) && value !== undefined));
}

export interface UserinfoDeps extends Pick<TokenContext, 'db' | 'issuer' | 'fhirBase' | 'verifyOwn' | 'isRevoked'> {
  /** The DPoP check of /fhir (its replay store). */
  dpop: DpopCheck;
  /** The current provider, for the token's client (CORS). */
  provider: () => Provider;
  /** Origins allowed before a token names its client: the registered apps' (preflights, refusals). */
  origins: OriginCheck;
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
  challenge?: string;
  /** The client of a verified token: its redirect URIs' origins get CORS. */
  clientId?: string;
}

const form = bodyParser({ enableTypes: ['form'], formLimit: '64kb' });

export function userinfoRoutes(deps: UserinfoDeps): Router {
  const router = new Router();
  const url = `${deps.issuer}${USERINFO_PATH}`;
  const quoted = (value: string) => value.replace(/["\\]/g, '');
  const refused = (status: 400 | 401 | 403, error: string, description: string, clientId?: string): Answer => ({
    status, clientId, body: { error, error_description: description },
    challenge: status === 400 ? undefined : `Bearer realm="${quoted(deps.issuer)}", error="${error}", error_description="${quoted(description)}"`,
  });

  async function answer(ctx: Context): Promise<Answer> {
    const header = accessTokenOf(ctx.get('authorization'));
    if (ctx.method === 'POST') await form(ctx, async () => {});
    const inBody = ctx.method === 'POST' ? (ctx.request.body as Record<string, unknown>).access_token : undefined;
    // RFC 6750 section 2: one way only; never the query string (OIDC Core 5.3.1).
    if (inBody !== undefined && (header || typeof inBody !== 'string')) return refused(400, 'invalid_request', 'the access token may be sent one way only');
    const sent = header ?? (inBody ? { scheme: 'bearer' as const, token: inBody as string } : undefined);
    // RFC 6750 section 3.1: no error code when the request carries no token.
    if (!sent) return { status: 401, body: { error_description: 'an access token is required' }, challenge: `Bearer realm="${quoted(deps.issuer)}"` };

    const claims = await deps.verifyOwn(sent.token);
    if (!claims || (await deps.isRevoked(claims))) {
      return refused(401, 'invalid_token', 'the access token is not a valid access token of this server');
    }
    const clientId = String(claims.client_id);
    try {
      await deps.dpop({ scheme: sent.scheme, accessToken: sent.token, jkt: boundKey(claims), proof: ctx.headers.dpop, method: ctx.method, url });
    } catch (err) {
      if (!(err instanceof DpopError)) throw err;
      return { status: 401, clientId, body: { error: err.error, error_description: err.message }, challenge: dpopChallenge(err.error, err.message) };
    }
    const scope = String(claims.scope ?? '');
    // A backend service's token ends here: client_credentials never grants openid.
    if (!scope.split(' ').includes('openid')) return refused(403, 'insufficient_scope', 'the access token was not granted openid', clientId);
    const userId = tokenUser(claims);
    const user = userId === undefined ? undefined : await findUser(deps.db, userId);
    if (!user || user.disabled) return refused(401, 'invalid_token', 'the user of the access token is disabled or removed', clientId);
    return { status: 200, clientId, body: scopedClaims(scope, accountClaims(deps.fhirBase, user)) };
  }

  /** As at the token endpoint: the origins of the client's redirect URIs (the registered apps' until it is known). */
  const allowedOrigins = (clientId: string | undefined): OriginCheck => (clientId === undefined
    ? deps.origins
    : async (origin) => isClientOrigin((await deps.provider().Client.find(clientId))?.redirectUris, origin));

  const userinfo = async (ctx: Context) => {
    const result = await answer(ctx);
    ctx.set(await corsHeaders(ctx.get('origin') || undefined, allowedOrigins(result.clientId)));
    ctx.set('Cache-Control', 'no-store');
    if (result.challenge) ctx.set('WWW-Authenticate', result.challenge);
    ctx.status = result.status;
    ctx.body = result.body;
  };
  router.get(USERINFO_PATH, userinfo);
  router.post(USERINFO_PATH, userinfo);
  router.options(USERINFO_PATH, async (ctx) => {
    ctx.set(await preflightHeaders(ctx.get('origin') || undefined, deps.origins));
    ctx.status = 204;
  });
  return router;
}
