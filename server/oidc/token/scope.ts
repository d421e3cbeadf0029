// /token (and /authorize): what a token may carry for the FHIR server it names: the granted scope (the
// request's, the code's or the refresh token's, within the client's allow-list; system/ scopes only for
// backend services), its audience, format, signing algorithm and lifetime (lifetime.ts).
import { errors, type KoaContextWithOIDC, type ResourceServer } from 'oidc-provider';
import { grantableScope } from '../../smart/client-scopes.ts';
import { allowedScopeOf } from '../clients.ts';
import { fhirAudience } from './audience.ts';
import { accessTokenLifetime, mayRefresh } from './lifetime.ts';
import { factsOf } from './request.ts';
import type { RuleDeps } from './rules.ts';
import { tokenEndpointFailure } from '../../sandbox.ts';

/** oidc-provider's getResourceServerInfo. */
export function scopeAndLifetimeRule({ config, db }: RuleDeps) {
  return async function scopeAndLifetime(ctx: KoaContextWithOIDC, resource: string, client: Parameters<typeof allowedScopeOf>[0]): Promise<ResourceServer> {
    const audience = fhirAudience(config, resource);
    if (!audience) throw new errors.InvalidTarget('aud is not a FHIR server this authorization server serves');
    const backend = ctx.oidc.route === 'token' && ctx.oidc.params?.grant_type === 'client_credentials';
    const { AuthorizationCode: code, RefreshToken: refresh } = ctx.oidc.entities;
    const scope = grantableScope({
      requested: [ctx.oidc.params?.scope as string | undefined, code?.scope, refresh?.scope],
      allowed: allowedScopeOf(client),
      backend,
    });
    if (backend && !scope) throw new errors.InvalidScope('none of the requested scopes is allowed for this client', String(ctx.oidc.params?.scope ?? ''));
    const grant = await factsOf(db, ctx).grantContext(code?.grantId ?? refresh?.grantId);
    // The sandbox (demo mode only) can make the token endpoint refuse a launch's code or refresh token.
    const refused = config.demo && ctx.oidc.route === 'token' ? tokenEndpointFailure(grant?.sandboxFailure, ctx.oidc.params?.grant_type) : undefined;
    if (refused) throw new errors.InvalidGrant(refused);
    return {
      scope,
      audience,
      accessTokenFormat: 'jwt',
      accessTokenTTL: accessTokenLifetime(config, { backend, grant }),
      jwt: { sign: { alg: config.accessTokenAlg } },
    };
  };
}

/** oidc-provider's issueRefreshToken: for offline_access or online_access, never for an emergency access. */
export function refreshRule({ db }: RuleDeps) {
  return async function refresh(ctx: KoaContextWithOIDC, client: { grantTypeAllowed(type: string): boolean }, code: { scopes: Set<string>; grantId?: string }): Promise<boolean> {
    if (!client.grantTypeAllowed('refresh_token') || !(code.scopes.has('offline_access') || code.scopes.has('online_access'))) return false;
    return mayRefresh(await factsOf(db, ctx).grantContext(code.grantId));
  };
}
