// /token (and /authorize): what a token may carry for the FHIR server it names: the granted scope (the
// request's, the code's or the refresh token's, within the client's allow-list; system/ scopes only for
// backend services), its audience, format, signing algorithm and lifetime (lifetime.ts).
import { errors, type KoaContextWithOIDC, type ResourceServer } from 'oidc-provider';
import { grantableScope } from '../../smart/client-scopes.ts';
import { allowedScopeOf } from '../clients.ts';
import { fhirAudience } from './audience.ts';
import { accessTokenLifetime, mayRefresh, type LifetimeConfig } from './lifetime.ts';
import type { Config } from '../../config.ts';
import type { GrantContext } from '../launch-store.ts';
import { factsOf } from './request.ts';
import type { RuleDeps } from './rules.ts';
import { tokenEndpointFailure } from '../../sandbox.ts';

/** The grant_type of a token request (undefined elsewhere, e.g. at /authorize). */
type TokenRequest = { grantType: unknown };

const isBackend = ({ grantType }: TokenRequest) => grantType === 'client_credentials';

/**
 * The audience and scope a token may carry: `resource` names a FHIR server served here (invalid_target
 * otherwise), the scope is what was requested (the request's, the code's or the refresh token's) within the
 * client's allow-list, and a backend service gets at least one scope (invalid_scope otherwise).
 */
export function grantedScope(
  config: Pick<Config, 'fhirAudiences'>,
  request: TokenRequest & { resource: string; requested: [string | undefined, ...(string | undefined)[]]; allowed: string | undefined },
): { audience: string; scope: string } {
  const audience = fhirAudience(config, request.resource);
  if (!audience) throw new errors.InvalidTarget('aud is not a FHIR server this authorization server serves');
  const backend = isBackend(request);
  const scope = grantableScope({ requested: request.requested, allowed: request.allowed, backend });
  if (backend && !scope) throw new errors.InvalidScope('none of the requested scopes is allowed for this client', String(request.requested[0] ?? ''));
  return { audience, scope };
}

/** What oidc-provider is told about the token; invalid_grant when the sandbox (demo mode only) refuses the grant's code or refresh token. */
export function tokenResourceServer(
  config: LifetimeConfig & Pick<Config, 'accessTokenAlg'>,
  token: TokenRequest & { audience: string; scope: string; grant: GrantContext | undefined },
): ResourceServer {
  const refused = config.demo ? tokenEndpointFailure(token.grant?.sandboxFailure, token.grantType) : undefined;
  if (refused) throw new errors.InvalidGrant(refused);
  return {
    scope: token.scope,
    audience: token.audience,
    accessTokenFormat: 'jwt',
    accessTokenTTL: accessTokenLifetime(config, { backend: isBackend(token), grant: token.grant }),
    jwt: { sign: { alg: config.accessTokenAlg } },
  };
}

/** oidc-provider's getResourceServerInfo. */
export function scopeAndLifetimeRule({ config, db }: RuleDeps) {
  return async function scopeAndLifetime(ctx: KoaContextWithOIDC, resource: string, client: Parameters<typeof allowedScopeOf>[0]): Promise<ResourceServer> {
    const grantType = ctx.oidc.route === 'token' ? ctx.oidc.params?.grant_type : undefined;
    const { AuthorizationCode: code, RefreshToken: refresh } = ctx.oidc.entities;
    const { audience, scope } = grantedScope(config, {
      resource, grantType, requested: [ctx.oidc.params?.scope as string | undefined, code?.scope, refresh?.scope], allowed: allowedScopeOf(client),
    });
    const grant = await factsOf(db, ctx).grantContext(code?.grantId ?? refresh?.grantId);
    return tokenResourceServer(config, { grantType, audience, scope, grant });
  };
}

/** Whether a refresh token is asked for: the client may refresh and the grant has offline_access or online_access. */
export function asksForRefresh(refreshAllowed: boolean, scopes: Set<string>): boolean {
  return refreshAllowed && (scopes.has('offline_access') || scopes.has('online_access'));
}

/** oidc-provider's issueRefreshToken: for offline_access or online_access, never for an emergency access. */
export function refreshRule({ db }: RuleDeps) {
  return async function refresh(ctx: KoaContextWithOIDC, client: { grantTypeAllowed(type: string): boolean }, code: { scopes: Set<string>; grantId?: string }): Promise<boolean> {
    if (!asksForRefresh(client.grantTypeAllowed('refresh_token'), code.scopes)) return false;
    return mayRefresh(await factsOf(db, ctx).grantContext(code.grantId));
  };
}
