// Client registry used by the CLI: builds SMART client metadata, validates it with
// oidc-provider's own rules, and stores it where the running server reads it.
import { createHash, randomBytes } from 'node:crypto';
import type Provider from 'oidc-provider';
import type { ClientMetadata, ResponseType } from 'oidc-provider';
import type { Db } from '../db.ts';
import { endClientAccess } from './grants.ts';
import { forgetClient } from './client-cache.ts';
import { ALL_SENSITIVITIES, privilegeProblem, type Privileges } from './registration-privileges.ts';
import { isConfidentiality } from '../hcs/codes.ts';
import { knownSensitivities } from '../hcs/label-vocabulary.ts';
import type { Clearance } from '../hcs/policy.ts';

export type ClientAuth =
  | { kind: 'public' }
  | { kind: 'secret' }
  | { kind: 'jwks-uri'; jwksUri: string }
  | { kind: 'jwks'; jwks: { keys: object[] } };

export interface NewClient {
  name: string;
  redirectUris: string[];
  /** Where the app may send the browser back after RP-initiated logout. */
  postLogoutRedirectUris?: string[];
  launchUri?: string;
  auth: ClientAuth;
  /** The SMART scopes the client may be granted (patterns); undefined: the server default. */
  scope?: string;
  grantTypes?: string[];
  /** May introspect any token (a FHIR resource server). */
  resourceServer?: boolean;
  /** Purposes of use (v3-ActReason codes) the client may request. */
  purposes?: string[];
  /** A backend's v3-Confidentiality clearance (its tokens' residual; default N). */
  clearance?: string;
  /** Sensitivity codes a backend is cleared for, or ['*']. */
  sensitivity?: string[];
  /** The organization (a URI) the client acts for, and its name: then no hl7-b2b assertion may name another. */
  organizationId?: string;
  organizationName?: string;
}

/** The SMART scopes a client may be granted, as registered (oidc-provider keeps custom metadata under its own name). */
export function allowedScopeOf(client: object): string | undefined {
  const { smart_scope: scope, resource_server: resourceServer } = client as { smart_scope?: string; resource_server?: boolean };
  // A resource server may always ask for a token to introspect with.
  return resourceServer ? [scope, 'introspect'].filter(Boolean).join(' ') : scope;
}

/** The purposes of use a client is registered for (none: no limit from the client). */
export function clientPurposesOf(client: object): string[] | undefined {
  return (client as { purposes_of_use?: string[] }).purposes_of_use;
}

/** A backend's clearance as registered: N and no sensitivity unless an administrator cleared it for more. */
export function clientClearanceOf(client: object): Clearance {
  const { clearance, sensitivity } = client as { clearance?: string; sensitivity?: string[] };
  return {
    ceiling: clearance && isConfidentiality(clearance) ? clearance : 'N',
    sensitivities: sensitivity?.includes(ALL_SENSITIVITIES) ? knownSensitivities() : sensitivity ?? [],
  };
}

/** The organization a client is bound to (IUA subject_organization_id and subject_organization), if any. */
export function clientOrganizationOf(client: object): { id: string; name?: string } | undefined {
  const { organization_id: id, organization_name: name } = client as { organization_id?: string; organization_name?: string };
  return id ? { id, name } : undefined;
}

export class ClientError extends Error {
  override name = 'ClientError';
}

const AUTH_METHODS = { public: 'none', secret: 'client_secret_basic', 'jwks-uri': 'private_key_jwt', jwks: 'private_key_jwt' } as const;

const newClientSecret = () => randomBytes(32).toString('base64url');

/** Whether a client authenticates with a client secret (oidc-provider's default method is client_secret_basic). */
export function usesClientSecret(md: ClientMetadata): boolean {
  return ['client_secret_basic', 'client_secret_post'].includes(String(md.token_endpoint_auth_method ?? 'client_secret_basic'));
}

const slug = (name: string) => name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40) || 'client';

/** Grant types that send the browser back to a redirect URI. */
const REDIRECT_GRANTS = ['authorization_code', 'implicit'];

/**
 * The response types of a client that names none (RFC 7591 section 2): ["code"] when its grant types use a
 * redirect, none otherwise (a backend service's client_credentials), which then needs no redirect_uris either.
 */
export const defaultResponseTypes = (grantTypes: unknown): ResponseType[] =>
  (Array.isArray(grantTypes) && grantTypes.some((g) => REDIRECT_GRANTS.includes(g)) ? ['code'] : []);

/** A redirect URI means an app; a resource server or a key-only client means client_credentials. */
function defaultGrantTypes(input: NewClient): string[] {
  if (input.redirectUris.length) return ['authorization_code'];
  if (input.resourceServer) return input.auth.kind === 'public' ? [] : ['client_credentials'];
  return input.auth.kind === 'public' || input.auth.kind === 'secret' ? ['authorization_code'] : ['client_credentials'];
}

export function clientMetadata(input: NewClient): ClientMetadata {
  const grantTypes = new Set(input.grantTypes?.length ? input.grantTypes : defaultGrantTypes(input));
  for (const type of grantTypes) {
    if (!['authorization_code', 'client_credentials', 'refresh_token'].includes(type)) throw new ClientError(`grant type ${type} is not supported`);
  }
  if (grantTypes.has('authorization_code')) grantTypes.add('refresh_token');
  if (grantTypes.has('client_credentials') && input.auth.kind === 'public') throw new ClientError('a public client cannot use client_credentials');
  if (grantTypes.has('authorization_code') && !input.redirectUris.length) throw new ClientError('an authorization_code client needs a redirect URI');

  const metadata: ClientMetadata = {
    client_id: `${slug(input.name)}-${randomBytes(4).toString('hex')}`,
    client_name: input.name,
    redirect_uris: input.redirectUris,
    grant_types: [...grantTypes],
    response_types: defaultResponseTypes([...grantTypes]),
    token_endpoint_auth_method: AUTH_METHODS[input.auth.kind],
  };
  if (input.auth.kind === 'secret') metadata.client_secret = newClientSecret();
  if (input.auth.kind === 'jwks-uri') metadata.jwks_uri = input.auth.jwksUri;
  if (input.auth.kind === 'jwks') metadata.jwks = input.auth.jwks as ClientMetadata['jwks'];
  if (input.postLogoutRedirectUris?.length) metadata.post_logout_redirect_uris = input.postLogoutRedirectUris;
  if (input.launchUri) metadata.launch_uri = input.launchUri;
  if (input.scope !== undefined) metadata.smart_scope = input.scope;
  if (input.resourceServer) metadata.resource_server = true;
  if (input.purposes?.length) metadata.purposes_of_use = input.purposes;
  if (input.clearance !== undefined) metadata.clearance = input.clearance;
  if (input.sensitivity?.length) metadata.sensitivity = input.sensitivity;
  if (input.organizationId !== undefined) metadata.organization_id = input.organizationId;
  if (input.organizationName !== undefined) metadata.organization_name = input.organizationName;
  return metadata;
}

/** Adds a client; `ceiling` limits its privileges when someone other than an administrator registers it (the /apps page). */
export async function addClient(db: Db, provider: Provider, input: NewClient, ceiling?: Privileges): Promise<ClientMetadata> {
  const metadata = clientMetadata(input);
  for (const key of Object.keys(metadata)) if (metadata[key] === undefined) delete metadata[key];
  const problem = ceiling && privilegeProblem(metadata, ceiling);
  if (problem) throw new ClientError(problem);
  try {
    await provider.Client.validate(metadata);
  } catch (err) {
    const e = err as { error_description?: string; message: string };
    throw new ClientError(e.error_description ?? e.message);
  }
  await insertClient(db, metadata);
  return metadata;
}

const insertClient = (db: Db, metadata: ClientMetadata) =>
  db('oidc_payloads').insert({ model: 'Client', id: metadata.client_id, payload: JSON.stringify(metadata), expires_at: null });

export async function clientExists(db: Db, clientId: string): Promise<boolean> {
  return Boolean(await db('oidc_payloads').where({ model: 'Client', id: clientId }).first('id'));
}

export async function listClients(db: Db): Promise<ClientMetadata[]> {
  const rows: { payload: string }[] = await db('oidc_payloads').where('model', 'Client').orderBy('id').select('payload');
  return rows.map((r) => JSON.parse(r.payload) as ClientMetadata);
}

/** Removes a client and ends every grant it holds: its refresh tokens, codes and access tokens stop working. */
export async function removeClient(db: Db, clientId: string): Promise<boolean> {
  const removed = (await db('oidc_payloads').where({ model: 'Client', id: clientId }).delete()) > 0;
  forgetClient(db, clientId);
  await endClientAccess(db, clientId);
  return removed;
}

/** What updateClient may change; `undefined` (or '') removes an optional field. */
export interface ClientChanges {
  redirect_uris?: string[];
  post_logout_redirect_uris?: string[] | undefined;
  launch_uri?: string | undefined;
  jwks_uri?: string | undefined;
  [key: string]: unknown;
}

/**
 * Binds a client to another organization (`organization` undefined: to none), replacing the whole old
 * binding. When the binding changes, the client's grants end and so do the access tokens issued up to
 * `issuedUpTo` (seconds: until every instance has reread the client), so that no access made after the
 * change is credited to the old organization. The binding it already has is no change: nothing is stored
 * or ended. `changed`: whether it was.
 */
export async function rebindClient(db: Db, provider: Provider, clientId: string, organization: { id: string; name?: string } | undefined, issuedUpTo: number): Promise<{ metadata: ClientMetadata; changed: boolean }> {
  const before = await findClientMetadata(db, clientId);
  if (!before) throw new ClientError(`client ${clientId} is not registered`);
  const wanted = organization && { id: organization.id, name: organization.name };
  if (JSON.stringify(clientOrganizationOf(before)) === JSON.stringify(wanted)) return { metadata: before, changed: false };
  const metadata = await updateClient(db, provider, clientId, { organization_id: organization?.id, organization_name: organization?.name });
  await endClientAccess(db, clientId, issuedUpTo);
  return { metadata, changed: true };
}

/** The stored metadata of one client, or undefined. */
export async function findClientMetadata(db: Db, clientId: string): Promise<ClientMetadata | undefined> {
  return (await readClient(db, clientId))?.metadata;
}

/** A client's metadata and the text it was read from, which a change must still find when it stores (storeClient). */
async function readClient(db: Db, clientId: string): Promise<{ stored: string; metadata: ClientMetadata } | undefined> {
  const row: { payload: string } | undefined = await db('oidc_payloads').where({ model: 'Client', id: clientId }).first('payload');
  return row ? { stored: row.payload, metadata: JSON.parse(row.payload) as ClientMetadata } : undefined;
}

/** How reports name each app: "client_name (client_id)", or the client id when it has no other name (or is gone). */
export async function clientNames(db: Db, clientIds: Iterable<string>): Promise<Record<string, string>> {
  const names: Record<string, string> = {};
  for (const clientId of new Set(clientIds)) {
    if (!clientId) continue;
    const name = (await findClientMetadata(db, clientId))?.client_name;
    names[clientId] = typeof name === 'string' && name && name !== clientId ? `${name} (${clientId})` : clientId;
  }
  return names;
}

/**
 * Changes some of a client's metadata and keeps everything else (client_secret included), after
 * checking the result with oidc-provider's own validation and the SMART rules. A running server
 * uses the new metadata at once when the change is made through it; otherwise (the CLI, another instance)
 * within CLIENT_CACHE_MS.
 */
export async function updateClient(db: Db, provider: Provider, clientId: string, changes: ClientChanges): Promise<ClientMetadata> {
  const read = await readClient(db, clientId);
  if (!read) throw new ClientError(`client ${clientId} is not registered`);
  const next: Record<string, unknown> = { ...read.metadata };
  for (const [key, value] of Object.entries(changes)) {
    if (key === 'client_id' || key === 'client_secret') continue; // never changed here
    if (value === undefined || value === '') delete next[key];
    else next[key] = value;
  }
  try {
    await provider.Client.validate(next as ClientMetadata);
  } catch (err) {
    const e = err as { error_description?: string; message: string };
    throw new ClientError(e.error_description ?? e.message);
  }
  await storeClient(db, clientId, read.stored, next);
  return next as ClientMetadata;
}

/**
 * What a rotation form names as the secret it replaces: a digest of it, never the secret. Once that
 * secret is rotated, the form names one that is gone: sent again (a reload of its answer), it rotates nothing.
 */
export const rotationOf = (md: ClientMetadata): string => createHash('sha256').update(`client secret rotation:${String(md.client_secret)}`).digest('base64url');

export class SecretAlreadyRotated extends ClientError {}

/**
 * Gives a client that authenticates with a client secret a new one, stored as secrets are. The process that
 * rotates it refuses the old one at once; other processes (the server, after the CLI rotated it) within
 * CLIENT_CACHE_MS. The client's grants and tokens stay. `replacing` (a form's rotationOf): only while the
 * secret is still the one it names. Returns the new secret.
 */
export async function rotateClientSecret(db: Db, clientId: string, replacing?: string): Promise<string> {
  const read = await readClient(db, clientId);
  if (!read) throw new ClientError(`client ${clientId} is not registered`);
  if (!usesClientSecret(read.metadata)) {
    throw new ClientError(`client ${clientId} has no client secret to rotate: it authenticates with ${String(read.metadata.token_endpoint_auth_method)}`);
  }
  if (replacing !== undefined && replacing !== rotationOf(read.metadata)) {
    throw new SecretAlreadyRotated('The client secret was already rotated since this page was shown: nothing was changed.');
  }
  const secret = newClientSecret();
  await storeClient(db, clientId, read.stored, { ...read.metadata, client_secret: secret });
  return secret;
}

/**
 * Replaces a client's stored metadata while it is still as read (`stored`): what was read before a change
 * made meanwhile (a secret rotated while an edit was checked) never overwrites it. Forgets what this process
 * had cached of the client.
 */
async function storeClient(db: Db, clientId: string, stored: string, metadata: object): Promise<void> {
  const updated = await db('oidc_payloads').where({ model: 'Client', id: clientId, payload: stored }).update({ payload: JSON.stringify(metadata) });
  forgetClient(db, clientId);
  if (updated) return;
  throw new ClientError(await clientExists(db, clientId) ? changedMeanwhile(clientId) : `client ${clientId} is not registered`);
}

const changedMeanwhile = (clientId: string) => `client ${clientId} was changed meanwhile: nothing was stored; try again`;

/**
 * Stores a client oidc-provider registered (RFC 7591) or updated (RFC 7592). An update keeps the client
 * secret as stored: one that carries another (it read the client before a rotation, here, in the CLI or on
 * another instance) is refused and nothing stored. A client without a secret may be given its first. An
 * update of a client removed meanwhile is refused: it does not bring the client back.
 */
export async function storeRegisteredClient(db: Db, clientId: string, metadata: ClientMetadata, { update }: { update: boolean }): Promise<void> {
  const read = await readClient(db, clientId);
  if (!read && update) throw new ClientError(`client ${clientId} is not registered`);
  if (!read) {
    await insertClient(db, { ...metadata, client_id: clientId });
    forgetClient(db, clientId);
    return;
  }
  const secret = read.metadata.client_secret;
  if (secret !== undefined && metadata.client_secret !== secret) {
    forgetClient(db, clientId);
    throw new ClientError(changedMeanwhile(clientId));
  }
  await storeClient(db, clientId, read.stored, metadata);
}

/**
 * Revokes every grant issued to a client (its refresh tokens, codes, and, through the grant, its
 * access tokens at introspection and the bundled FHIR server). For a client being removed.
 * Returns the number of grants revoked.
 */
