// Which scopes a client may be granted: the request, limited to the client's allow-list
// and to the kind of grant. Pure.
import { formatScope, narrowToAllowed, parseScopes, type Scope } from './scopes.ts';

/** Scopes node-oidc-provider treats as OpenID Connect scopes (everything else is a resource scope). */
export const OIDC_SCOPES = ['openid', 'profile', 'fhirUser', 'offline_access', 'online_access'] as const;

/** Allowed to every authorization-code client unless its registration leaves them out. */
export const LAUNCH_AND_IDENTITY_SCOPES = 'openid fhirUser profile launch launch/patient launch/encounter offline_access online_access';

/** The allow-list of an authorization-code client registered without one. */
export const DEFAULT_APP_SCOPE = `patient/*.cruds user/*.cruds ${LAUNCH_AND_IDENTITY_SCOPES}`;

export function isSmartScopeString(value: string): boolean {
  const { scopes, invalid } = parseScopes(value);
  return invalid.length === 0 && scopes.every((s) => s.kind !== 'purpose');
}

const isSystemScope = (s: Scope) => s.kind === 'resource' && s.level === 'system';

/** What suits the grant: backend services get system/ scopes (and `introspect`), apps everything else. */
function fitsGrant(s: Scope, backend: boolean): boolean {
  if (s.kind === 'purpose') return false; // decided by the purpose-of-use policy, never granted as a scope
  if (backend) return isSystemScope(s) || (s.kind === 'other' && s.value === 'introspect');
  return !isSystemScope(s);
}

/**
 * The scope a client can be granted for a request: the requested scopes (joined from every
 * source the caller has), minus malformed ones, minus those unfit for the grant, limited to
 * the client's allow-list. Order of first appearance is kept.
 */
export function grantableScope(input: { requested: (string | undefined)[]; allowed: string | undefined; backend: boolean }): string {
  const { scopes } = parseScopes(input.requested.filter(Boolean).join(' '));
  const allowed = parseScopes(input.allowed ?? (input.backend ? '' : DEFAULT_APP_SCOPE)).scopes;
  return narrowToAllowed(scopes.filter((s) => fitsGrant(s, input.backend)), allowed).map(formatScope).join(' ');
}
