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

/** Every requested scope token, as sent (before oidc-provider filtered it). */
function rawRequestedScope(ctx: KoaContextWithOIDC): string {
  // A pushed request (PAR) arrives as a request object that oidc-provider made from the pushed parameters.
  const pushed = (ctx.oidc.entities.PushedAuthorizationRequest as { request?: string } | undefined)?.request;
  if (pushed) return String(decodeJwt(pushed).scope ?? '');
  const query = ctx.query.scope;
  const body = (ctx.oidc.body as Record<string, unknown> | undefined)?.scope;
  return typeof body === 'string' ? body : typeof query === 'string' ? query : '';
}

/** The `aud` validator (extraParams). */
export function audienceRule({ config }: RuleDeps) {
  return async function audience(ctx: KoaContextWithOIDC, value: string | undefined) {
    if (!isAuthorizationRoute(ctx)) return;
    if (!ctx.oidc.params?.state) throw new errors.InvalidRequest('state is required');
    const params = ctx.oidc.params!;
    // PAR (RFC 9126): oidc-provider keeps the pushed parameters as a request object whose JWT `aud` is the
    // issuer, so SMART's aud travels as `resource` (RFC 8707, which SMART allows as its synonym).
    const pushed = ctx.oidc.route === 'authorization' && Boolean(ctx.oidc.entities.PushedAuthorizationRequest);
    const smartAud = pushed ? (params.resource as string | undefined) : value;
    if (!smartAud) throw new errors.InvalidRequest('aud is required: the FHIR base URL the token is for');
    if (!fhirAudience(config, smartAud)) throw new errors.InvalidTarget('aud is not a FHIR server this authorization server serves');
    if (ctx.oidc.route === 'pushed_authorization_request') params.resource ??= smartAud;
    params.aud = smartAud;
    const requested = rawRequestedScope(ctx).split(' ');
    const current = new Set(String(params.scope ?? '').split(' ').filter(Boolean));
    if (requested.includes('offline_access') && ctx.oidc.client?.grantTypeAllowed('refresh_token')) current.add('offline_access');
    params.scope = [...current].join(' ');
  };
}
