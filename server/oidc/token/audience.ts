// /authorize and pushed authorization requests: `aud` names a FHIR server this authorization server
// serves, and `state` is present (SMART App Launch 2.2). It is also where offline_access is re-added:
// oidc-provider drops it unless prompt=consent (OIDC Core 11), and SMART apps never send prompt.
import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import { decodeJwt } from 'jose';
import type { Config } from '../../config.ts';
import { isAuthorizationRoute, type RuleDeps } from './rules.ts';

/** The FHIR base a requested audience names (with or without a trailing slash), if this server issues tokens for it. */
export function fhirAudience(config: Pick<Config, 'fhirAudiences'>, value: string | undefined): string | undefined {
  if (!value) return undefined;
  const base = value.replace(/\/$/, '');
  return config.fhirAudiences.includes(base) ? base : undefined;
}

/** The FHIR server a grant's tokens are for (its resource; this server's base when it names none), if it is still served here. */
export function grantAudience(config: Pick<Config, 'fhirBase' | 'fhirAudiences'>, resource: string | string[] | undefined): string | undefined {
  return fhirAudience(config, [resource ?? config.fhirBase].flat()[0]);
}

/** Every requested scope token, as sent (before oidc-provider filtered it). */
function rawRequestedScope(ctx: KoaContextWithOIDC): string {
  // A pushed request (PAR) arrives as a request object that oidc-provider made from the pushed parameters.
  const pushed = (ctx.oidc.entities.PushedAuthorizationRequest as { request?: string } | undefined)?.request;
  if (pushed) return String(decodeJwt(pushed).scope ?? '');
  const query = ctx.query.scope;
  const body = (ctx.oidc.body as Record<string, unknown> | undefined)?.scope;
  return typeof body === 'string' ? body : typeof query === 'string' ? query : '';
}

/**
 * The audience of an authorization request: `state` is present, SMART's `aud` names a FHIR server served
 * here, and a `resource` (RFC 8707), if sent too, names the same one (the patient picker and the consent page
 * show the patients of the server in `aud`, the token is issued for `resource`); throws invalid_request or
 * invalid_target otherwise.
 */
export function checkAudience(config: Pick<Config, 'fhirAudiences'>, request: { state: unknown; aud: string | undefined; resource?: unknown }): string {
  if (!request.state) throw new errors.InvalidRequest('state is required');
  if (!request.aud) throw new errors.InvalidRequest('aud is required: the FHIR base URL the token is for');
  const audience = fhirAudience(config, request.aud);
  if (!audience) throw new errors.InvalidTarget('aud is not a FHIR server this authorization server serves');
  const resources = request.resource === undefined ? [] : [request.resource].flat();
  if (resources.some((r) => typeof r !== 'string' || fhirAudience(config, r) !== audience)) {
    throw new errors.InvalidTarget('resource must name the FHIR server aud names');
  }
  return request.aud;
}

/** The scope oidc-provider kept (`scope`), with offline_access back when it was requested and the client may refresh. */
export function keepOfflineAccess(requested: string, scope: string, mayRefresh: boolean): string {
  const current = new Set(scope.split(' ').filter(Boolean));
  if (requested.split(' ').includes('offline_access') && mayRefresh) current.add('offline_access');
  return [...current].join(' ');
}

/** The `aud` validator (extraParams). */
export function audienceRule({ config }: RuleDeps) {
  return async function audience(ctx: KoaContextWithOIDC, value: string | undefined) {
    if (!isAuthorizationRoute(ctx)) return;
    const params = ctx.oidc.params;
    // PAR (RFC 9126): oidc-provider keeps the pushed parameters as a request object whose JWT `aud` is the
    // issuer, so SMART's aud travels as `resource` (RFC 8707, which SMART allows as its synonym).
    const pushed = ctx.oidc.route === 'authorization' && Boolean(ctx.oidc.entities.PushedAuthorizationRequest);
    const aud = pushed
      ? checkAudience(config, { state: params?.state, aud: params?.resource as string | undefined })
      : checkAudience(config, { state: params?.state, aud: value, resource: params?.resource });
    if (ctx.oidc.route === 'pushed_authorization_request') params!.resource ??= aud;
    params!.aud = aud;
    params!.scope = keepOfflineAccess(rawRequestedScope(ctx), String(params!.scope ?? ''), Boolean(ctx.oidc.client?.grantTypeAllowed('refresh_token')));
  };
}
