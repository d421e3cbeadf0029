// SMART rules for client metadata, from the CLI, the /apps page and RFC 7591 registration alike.
// Runs inside oidc-provider's client schema (extraClientMetadata.validator) before its own checks.
import { isDeepStrictEqual } from 'node:util';
import { errors } from 'oidc-provider';
import { isSmartScopeString } from '../smart/client-scopes.ts';
import { isConfidentiality, isPurposeOfUse } from '../hcs/codes.ts';
import { knownSensitivities } from '../hcs/label-vocabulary.ts';
import { ALL_SENSITIVITIES } from './registration-privileges.ts';
import { classifyAddress } from '../net/address-class.ts';

export const CUSTOM_CLIENT_METADATA = ['smart_scope', 'launch_uri', 'resource_server', 'purposes_of_use', 'clearance', 'sensitivity', 'organization_id', 'organization_name'] as const;

/** Human-readable metadata a person sees: on the login and consent pages, in access reports. */
const DISPLAY_METADATA = ['client_name', 'organization_name'] as const;
export const MAX_DISPLAY_LENGTH = 100;
// Control characters, bidi controls (which reorder what is shown, e.g. U+202E), and line and paragraph separators.
const UNSAFE_DISPLAY = /[\p{Cc}\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069\p{Zl}\p{Zp}]/u;

/** Normalises a display string to NFC; a problem when it is too long or holds characters that hide what it says. */
export function displayText(name: string, value: string): { text: string } | { problem: string } {
  const text = value.normalize('NFC');
  if (UNSAFE_DISPLAY.test(text)) return { problem: `${name} must not contain control or bidirectional-control characters` };
  if ([...text].length > MAX_DISPLAY_LENGTH) return { problem: `${name} must be at most ${MAX_DISPLAY_LENGTH} characters` };
  return { text };
}

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

/** In production the server fetches only public hosts for a client: a loopback name or internal address literal is refused now. */
function fetchedUrlProblem(name: string, value: unknown): string | undefined {
  const host = typeof value === 'string' ? URL.parse(value)?.hostname.toLowerCase() : undefined;
  if (!host) return undefined;
  const internal = host === 'localhost' || host.endsWith('.localhost') || !['public', 'invalid'].includes(classifyAddress(host));
  return internal ? `${name} must name a public host` : undefined;
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
  // Only for pairwise subject identifiers, which this server does not issue; oidc-provider would fetch it.
  if (md.sector_identifier_uri !== undefined) fail('sector_identifier_uri is not supported: subject identifiers are public, not pairwise');
  for (const name of ['redirect_uris', 'post_logout_redirect_uris'] as const) {
    for (const uri of Array.isArray(md[name]) ? md[name] : []) {
      const problem = urlProblem(name, uri, production);
      if (problem) fail(problem);
    }
  }
  for (const key of Object.keys(md)) {
    const name = key.split('#')[0]; // language-tagged variants (client_name#de) are shown too
    if (!(DISPLAY_METADATA as readonly string[]).includes(name) || typeof md[key] !== 'string') continue;
    const checked = displayText(name, md[key]);
    if ('problem' in checked) fail(checked.problem);
    else md[key] = checked.text;
  }
  for (const name of ['jwks_uri', 'launch_uri', 'logo_uri', 'client_uri', 'policy_uri', 'tos_uri'] as const) {
    const problem = md[name] === undefined ? undefined : urlProblem(name, md[name], production) ?? (typeof md[name] === 'string' ? undefined : `${name} must be a URL`);
    if (problem) fail(problem);
  }
  const fetched = production ? fetchedUrlProblem('jwks_uri', md.jwks_uri) : undefined;
  if (fetched) fail(fetched);
  if (md.resource_server !== undefined && typeof md.resource_server !== 'boolean') fail('resource_server must be a boolean');
  if (md.purposes_of_use !== undefined && (!Array.isArray(md.purposes_of_use) || md.purposes_of_use.some((p) => typeof p !== 'string' || !isPurposeOfUse(p)))) {
    fail('purposes_of_use must list v3-ActReason purpose-of-use codes');
  }
  if (md.clearance !== undefined && (typeof md.clearance !== 'string' || !isConfidentiality(md.clearance))) fail('clearance must be a v3-Confidentiality code: U, L, M, N, R or V');
  if (md.sensitivity !== undefined && (!Array.isArray(md.sensitivity)
      || md.sensitivity.some((c) => c !== ALL_SENSITIVITIES && !knownSensitivities().includes(c as string)))) {
    fail(`sensitivity must list sensitivity codes (${knownSensitivities().join(', ')}) or "*"`);
  }
  if (md.organization_id !== undefined && (typeof md.organization_id !== 'string' || !URL.canParse(md.organization_id))) fail('organization_id must be a URI, e.g. urn:oid:1.2.3.4');
  if (md.organization_name !== undefined && (typeof md.organization_name !== 'string' || md.organization_id === undefined)) {
    fail('organization_name must be a string, and names the organization_id the client is bound to');
  }
  if (md.resource_server === true && md.token_endpoint_auth_method === 'none') fail('a resource server must be a confidential client');
  if (Array.isArray(md.grant_types) && md.grant_types.includes('client_credentials') && md.token_endpoint_auth_method === 'none') {
    fail('client_credentials needs client authentication (private_key_jwt or a client secret)');
  }
}

/** The names of the fields that differ between two versions of a client's metadata (RFC 7592's registration_* answer fields aside). */
export function changedMetadata(before: Metadata, after: Metadata): string[] {
  const names = new Set([...Object.keys(before), ...Object.keys(after)].filter((name) => !name.startsWith('registration_')));
  return [...names].filter((name) => !isDeepStrictEqual(before[name], after[name]));
}
