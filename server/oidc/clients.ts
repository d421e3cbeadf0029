// Client registry used by the CLI: builds SMART client metadata, validates it with
// oidc-provider's own rules, and stores it where the running server reads it.
import { randomBytes } from 'node:crypto';
import type Provider from 'oidc-provider';
import type { ClientMetadata } from 'oidc-provider';
import type { Db } from '../db.ts';

export type ClientAuth =
  | { kind: 'public' }
  | { kind: 'secret' }
  | { kind: 'jwks-uri'; jwksUri: string }
  | { kind: 'jwks'; jwks: { keys: object[] } };

export interface NewClient {
  name: string;
  redirectUris: string[];
  launchUri?: string;
  auth: ClientAuth;
  /** The SMART scopes the client may be granted (patterns); undefined: the server default. */
  scope?: string;
  grantTypes?: string[];
}

/** The SMART scopes a client may be granted, as registered (oidc-provider keeps custom metadata under its own name). */
export function allowedScopeOf(client: object): string | undefined {
  return (client as { smart_scope?: string }).smart_scope;
}

export class ClientError extends Error {
  override name = 'ClientError';
}

const AUTH_METHODS = { public: 'none', secret: 'client_secret_basic', 'jwks-uri': 'private_key_jwt', jwks: 'private_key_jwt' } as const;

const slug = (name: string) => name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40) || 'client';

export function clientMetadata(input: NewClient): ClientMetadata {
  const grantTypes = new Set(input.grantTypes?.length
    ? input.grantTypes
    : input.redirectUris.length || input.auth.kind === 'public' || input.auth.kind === 'secret' ? ['authorization_code'] : ['client_credentials']);
  for (const type of grantTypes) {
    if (!['authorization_code', 'client_credentials', 'refresh_token'].includes(type)) throw new ClientError(`grant type ${type} is not supported`);
  }
  if (grantTypes.has('authorization_code')) grantTypes.add('refresh_token');
  if (grantTypes.has('client_credentials') && input.auth.kind === 'public') throw new ClientError('a public client cannot use client_credentials');
  if (grantTypes.has('authorization_code') && !input.redirectUris.length) throw new ClientError('an authorization_code client needs --redirect-uri');

  const metadata: ClientMetadata = {
    client_id: `${slug(input.name)}-${randomBytes(4).toString('hex')}`,
    client_name: input.name,
    redirect_uris: input.redirectUris,
    grant_types: [...grantTypes],
    response_types: grantTypes.has('authorization_code') ? ['code'] : [],
    token_endpoint_auth_method: AUTH_METHODS[input.auth.kind],
  };
  if (input.auth.kind === 'secret') metadata.client_secret = randomBytes(32).toString('base64url');
  if (input.auth.kind === 'jwks-uri') metadata.jwks_uri = input.auth.jwksUri;
  if (input.auth.kind === 'jwks') metadata.jwks = input.auth.jwks as ClientMetadata['jwks'];
  if (input.launchUri) metadata.launch_uri = input.launchUri;
  if (input.scope !== undefined) metadata.smart_scope = input.scope;
  return metadata;
}

export async function addClient(db: Db, provider: Provider, input: NewClient): Promise<ClientMetadata> {
  const metadata = clientMetadata(input);
  for (const key of Object.keys(metadata)) if (metadata[key] === undefined) delete metadata[key];
  try {
    await provider.Client.validate(metadata);
  } catch (err) {
    const e = err as { error_description?: string; message: string };
    throw new ClientError(e.error_description ?? e.message);
  }
  await db('oidc_payloads').insert({ model: 'Client', id: metadata.client_id, payload: JSON.stringify(metadata), expires_at: null });
  return metadata;
}

export async function listClients(db: Db): Promise<ClientMetadata[]> {
  const rows: { payload: string }[] = await db('oidc_payloads').where('model', 'Client').orderBy('id').select('payload');
  return rows.map((r) => JSON.parse(r.payload) as ClientMetadata);
}

export async function removeClient(db: Db, clientId: string): Promise<boolean> {
  // Its codes and refresh tokens stop working with it: oidc-provider finds no client for them.
  return (await db('oidc_payloads').where({ model: 'Client', id: clientId }).delete()) > 0;
}
