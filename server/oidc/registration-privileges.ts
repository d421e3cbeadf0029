// Who may register what (RFC 7591 section 3.2.2: the server decides which metadata it accepts).
// Anyone may register a SMART app; everything that reaches beyond one user's consent (client_credentials,
// system/ scopes, introspection, purposes of use, a backend's clearance, the organization it acts for) needs
// an administrator: the CLI, or an initial access token that carries those privileges. An RFC 7592 update
// never exceeds the client's own.
import type Provider from 'oidc-provider';
import type { Db } from '../db.ts';
import { nowSeconds } from '../db.ts';
import { parseScopes, narrowToAllowed, formatScope, type Scope } from '../smart/scopes.ts';
import { confidentialityRank, isConfidentiality, type ConfidentialityCode } from '../hcs/codes.ts';
import { knownSensitivities } from '../hcs/label-vocabulary.ts';

/** What a registration may ask for beyond a SMART app. */
export interface Privileges {
  /** system/ scope patterns it may register (and `introspect` with resourceServer). */
  systemScope?: string;
  resourceServer?: boolean;
  /** Purposes of use (v3-ActReason codes) it may register; when there are some, it must register some of them. */
  purposes?: string[];
  /** The highest backend clearance it may register (default N, which is also a client's that names none). */
  clearance?: ConfidentialityCode;
  /** Sensitivity codes it may register, or ['*'] for all. */
  sensitivity?: string[];
  /** client_credentials (implied by system scopes or resourceServer). */
  clientCredentials?: boolean;
  /** The organization (a URI) the client must be bound to, and the name it must give it, if any. */
  organizationId?: string;
  organizationName?: string;
}

/** Open registration: SMART apps only. */
export const NO_PRIVILEGES: Privileges = Object.freeze({});

/** Every known sensitivity code: what `--sensitivity '*'` stands for. */
export const ALL_SENSITIVITIES = '*';

const isSystem = (s: Scope) => s.kind === 'resource' && s.level === 'system';
const clientCredentialsAllowed = (p: Privileges) => Boolean(p.clientCredentials || p.resourceServer || parseScopes(p.systemScope ?? '').scopes.some(isSystem));

type Metadata = Record<string, unknown>;
const list = (value: unknown): unknown[] => (Array.isArray(value) ? value : []);

/**
 * The first privileged field of `md` that asks for more than `allowed`, as an error description naming it;
 * undefined when the registration stays within. `md` holds SMART scopes as `smart_scope` (see client-metadata.ts).
 */
export function privilegeProblem(md: Metadata, allowed: Privileges): string | undefined {
  const refused = (field: string, what: string) => `${field}: ${what} needs an administrator (the CLI, or an initial access token that allows it)`;
  if (list(md.grant_types).includes('client_credentials') && !clientCredentialsAllowed(allowed)) return refused('grant_types', 'client_credentials');
  const granted = parseScopes(allowed.systemScope ?? '').scopes;
  for (const scope of parseScopes(typeof md.smart_scope === 'string' ? md.smart_scope : '').scopes) {
    if (isSystem(scope) && !narrowToAllowed([scope], granted).length) return refused('scope', formatScope(scope));
    if (scope.kind === 'other' && scope.value === 'introspect' && !allowed.resourceServer) return refused('scope', 'introspect');
  }
  if (md.resource_server === true && !allowed.resourceServer) return refused('resource_server', 'a resource server');
  const purpose = list(md.purposes_of_use).find((p) => !allowed.purposes?.includes(String(p)));
  if (purpose !== undefined) return refused('purposes_of_use', `purpose of use ${String(purpose)}`);
  // Purposes of use limit a client, and no list means no limit: a ceiling that names purposes needs a list.
  if (allowed.purposes?.length && !list(md.purposes_of_use).length) return refused('purposes_of_use', 'any purpose of use');
  // A client that names no clearance has N.
  const clearance = typeof md.clearance === 'string' && isConfidentiality(md.clearance) ? md.clearance : 'N';
  if (confidentialityRank(clearance) > confidentialityRank(allowed.clearance ?? 'N')) return refused('clearance', `clearance ${clearance}`);
  const sensitivity = list(md.sensitivity).find((s) => !allowed.sensitivity?.includes(ALL_SENSITIVITIES) && !allowed.sensitivity?.includes(String(s)));
  if (sensitivity !== undefined) return refused('sensitivity', `sensitivity ${String(sensitivity)}`);
  // An unbound client's hl7-b2b organization is its own claim: a ceiling that names an organization needs the binding.
  if (md.organization_id !== allowed.organizationId) return refused('organization_id', md.organization_id === undefined ? 'acting for any organization' : `organization ${String(md.organization_id)}`);
  if (md.organization_name !== undefined && md.organization_name !== allowed.organizationName) return refused('organization_name', `organization name ${String(md.organization_name)}`);
  return undefined;
}

/**
 * An RFC 7592 update that would change the client's organization binding (add, change or drop its id or
 * name), as an error description naming the field; undefined when it sends the binding back as stored.
 * Only an administrator changes a binding (`client update`), which ends the tokens that carry the old one.
 */
export function bindingChangeProblem(md: Metadata, stored: Metadata): string | undefined {
  const field = (['organization_id', 'organization_name'] as const).find((f) => md[f] !== stored[f]);
  return field && `${field}: the organization binding is changed by an administrator only; send it as registered`;
}

/** What a registered client holds: the most an RFC 7592 update of it may ask for. */
export function privilegesOf(md: Metadata): Privileges {
  const scope = typeof md.smart_scope === 'string' ? md.smart_scope : '';
  return {
    systemScope: parseScopes(scope).scopes.filter(isSystem).map(formatScope).join(' ') || undefined,
    resourceServer: md.resource_server === true || undefined,
    clientCredentials: list(md.grant_types).includes('client_credentials') || undefined,
    purposes: list(md.purposes_of_use).map(String),
    clearance: typeof md.clearance === 'string' && isConfidentiality(md.clearance) ? md.clearance : undefined,
    sensitivity: list(md.sensitivity).map(String),
    organizationId: typeof md.organization_id === 'string' ? md.organization_id : undefined,
    organizationName: typeof md.organization_name === 'string' ? md.organization_name : undefined,
  };
}

/** A problem with privileges an administrator names (CLI flags), or undefined. */
export function invalidPrivileges(p: Privileges): string | undefined {
  const { scopes, invalid } = parseScopes(p.systemScope ?? '');
  if (invalid.length || scopes.some((s) => !isSystem(s))) return '--scope takes system/ scopes only (a SMART app needs no initial access token)';
  if (p.clearance !== undefined && !isConfidentiality(p.clearance)) return '--clearance is one of U L M N R V';
  const unknown = (p.sensitivity ?? []).filter((s) => s !== ALL_SENSITIVITIES && !knownSensitivities().includes(s));
  if (unknown.length) return `--sensitivity takes ${knownSensitivities().join(', ')} or '*': ${unknown.join(', ')}`;
  return undefined;
}

/** A problem with an organization an administrator binds a client to (`--organization-id`, `--organization`), or undefined. */
export function organizationProblem(id: string | undefined, name: string | undefined): string | undefined {
  if (id !== undefined && !URL.canParse(id)) return '--organization-id must be a URI, e.g. urn:oid:1.2.3.4';
  if (name !== undefined && id === undefined) return '--organization needs --organization-id';
  return undefined;
}

// An initial access token's privileges live beside it, with the same expiry (oidc-provider's token holds no extra data).
const MODEL = 'InitialAccessTokenPrivileges';

/** A new initial access token carrying `privileges`; returns the token. */
export async function issueInitialAccessToken(db: Db, provider: Provider, ttl: number, privileges: Privileges): Promise<string> {
  const token = await new provider.InitialAccessToken({ expiresIn: ttl }).save();
  if (Object.values(privileges).some((v) => v !== undefined && !(Array.isArray(v) && !v.length))) {
    await db('oidc_payloads').insert({ model: MODEL, id: token, payload: JSON.stringify(privileges), expires_at: nowSeconds() + ttl });
  }
  return token;
}

/** The privileges of a live initial access token (none beyond a SMART app when it carries none); undefined when it is not one. */
export async function privilegesOfToken(db: Db, provider: Provider, token: string | undefined): Promise<Privileges | undefined> {
  if (!token || !(await provider.InitialAccessToken.find(token))) return undefined;
  const row: { payload: string } | undefined = await db('oidc_payloads')
    .where({ model: MODEL, id: token }).andWhere('expires_at', '>', nowSeconds()).first('payload');
  return row ? (JSON.parse(row.payload) as Privileges) : NO_PRIVILEGES;
}
