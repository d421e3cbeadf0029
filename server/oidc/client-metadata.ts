// SMART rules for client metadata, from the CLI, the /apps page and RFC 7591 registration alike.
// Runs inside oidc-provider's client schema (extraClientMetadata.validator) before its own checks.
import { errors } from 'oidc-provider';
import { isSmartScopeString } from '../smart/client-scopes.ts';
import { isPurposeOfUse } from '../hcs/codes.ts';

export const CUSTOM_CLIENT_METADATA = ['smart_scope', 'launch_uri', 'resource_server', 'purposes_of_use'] as const;

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

/** https, or http on a loopback host outside production; never a fragment. */
export function urlProblem(name: string, value: unknown, production: boolean): string | undefined {
  if (typeof value !== 'string') return undefined; // oidc-provider reports wrong types itself
  const url = URL.parse(value);
  if (!url) return `${name} must be absolute URLs`;
  if (url.hash || value.includes('#')) return `${name} must not contain fragments`;
  if (url.protocol === 'https:') return undefined;
  if (url.protocol === 'http:' && !production && LOOPBACK.has(url.hostname)) return undefined;
  return production ? `${name} must use https` : `${name} must use https, or http on localhost`;
}

type Metadata = Record<string, unknown>;

/** All checks on one client's metadata; `scope` (RFC 7591) holds SMART scopes and is kept as `smart_scope`. */
export function checkSmartClientMetadata(md: Metadata, production: boolean): void {
  if (md.scope !== undefined) {
    md.smart_scope = md.scope;
    delete md.scope;
  }
  const fail = (message: string) => {
    throw new errors.InvalidClientMetadata(message);
  };
  if (md.smart_scope !== undefined && (typeof md.smart_scope !== 'string' || !isSmartScopeString(md.smart_scope))) {
    fail('scope must be a space-separated list of SMART scopes');
  }
  for (const uri of Array.isArray(md.redirect_uris) ? md.redirect_uris : []) {
    const problem = urlProblem('redirect_uris', uri, production);
    if (problem) fail(problem);
  }
  for (const name of ['jwks_uri', 'launch_uri', 'logo_uri'] as const) {
    const problem = md[name] === undefined ? undefined : urlProblem(name, md[name], production) ?? (typeof md[name] === 'string' ? undefined : `${name} must be a URL`);
    if (problem) fail(problem);
  }
  if (md.resource_server !== undefined && typeof md.resource_server !== 'boolean') fail('resource_server must be a boolean');
  if (md.purposes_of_use !== undefined && (!Array.isArray(md.purposes_of_use) || md.purposes_of_use.some((p) => typeof p !== 'string' || !isPurposeOfUse(p)))) {
    fail('purposes_of_use must list v3-ActReason purpose-of-use codes');
  }
  if (md.resource_server === true && md.token_endpoint_auth_method === 'none') fail('a resource server must be a confidential client');
  if (Array.isArray(md.grant_types) && md.grant_types.includes('client_credentials') && md.token_endpoint_auth_method === 'none') {
    fail('client_credentials needs client authentication (private_key_jwt or a client secret)');
  }
}
