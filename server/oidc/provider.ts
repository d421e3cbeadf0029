// node-oidc-provider configured as a SMART App Launch 2.2 authorization server.
// ../shared/reference/oidc-provider-notes.md explains each hook and why it is needed.
import Provider, { errors, type Configuration, type KoaContextWithOIDC, type ClientMetadata } from 'oidc-provider';
import type { JWK } from 'jose';
import type { Config } from '../config.ts';
import type { Db } from '../db.ts';
import { knexAdapterFactory } from './adapter.ts';
import { findUser } from './users.ts';
import { deleteLaunchContext, findEhrLaunch, findLaunchContext } from './launch-store.ts';
import { grantableScope, isSmartScopeString, OIDC_SCOPES } from '../smart/client-scopes.ts';
import { renderPage } from '../views.ts';
import { allowedScopeOf } from './clients.ts';
import { smartTokenResponse } from './token-response.ts';

export interface ProviderDeps {
  config: Config;
  db: Db;
  jwks: { keys: JWK[] };
}

const isAuthorizationRoute = (ctx: KoaContextWithOIDC) =>
  ctx.oidc.route === 'authorization' || ctx.oidc.route === 'pushed_authorization_request';

/** The FHIR bases this server issues tokens for: the configured base, with or without a trailing slash. */
export function fhirAudience(config: Config, value: string | undefined): string | undefined {
  if (!value) return undefined;
  return value.replace(/\/$/, '') === config.fhirBase ? config.fhirBase : undefined;
}

/** Every requested scope token, as sent: oidc-provider drops offline_access unless prompt=consent (OIDC Core 11). */
function rawRequestedScope(ctx: KoaContextWithOIDC): string {
  const query = ctx.query.scope;
  const body = (ctx.oidc.body as Record<string, unknown> | undefined)?.scope;
  const raw = typeof body === 'string' ? body : typeof query === 'string' ? query : '';
  return raw;
}

export function createProvider({ config, db, jwks }: ProviderDeps): Provider {
  const configuration: Configuration = {
    adapter: knexAdapterFactory(db),
    jwks,
    cookies: {
      keys: config.cookieSecrets,
      long: { httpOnly: true, sameSite: 'lax', signed: true },
      short: { httpOnly: true, sameSite: 'lax', signed: true },
    },
    routes: {
      authorization: '/authorize',
      token: '/token',
      jwks: '/jwks',
      introspection: '/introspect',
      revocation: '/revoke',
      registration: '/register',
      userinfo: '/userinfo',
      end_session: '/logout',
    },
    scopes: [...OIDC_SCOPES],
    claims: { openid: ['sub'], fhirUser: ['fhirUser'], profile: ['name'] },
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      id_token_signed_response_alg: 'RS256',
      token_endpoint_auth_method: 'client_secret_basic',
    },
    clientAuthMethods: ['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    enabledJWA: {
      clientAuthSigningAlgValues: ['RS384', 'ES384', 'RS256', 'ES256'],
      idTokenSigningAlgValues: ['RS256'],
    },
    extraClientMetadata: {
      // SMART scopes are not OIDC scopes: oidc-provider would refuse them in `scope`,
      // so a client's allowed SMART scopes live in `smart_scope`.
      properties: ['smart_scope', 'launch_uri'],
      validator(_ctx, key, value) {
        if (value === undefined) return;
        if (key === 'smart_scope' && (typeof value !== 'string' || !isSmartScopeString(value))) {
          throw new errors.InvalidClientMetadata('scope must be a space-separated list of SMART scopes');
        }
        if (key === 'launch_uri' && (typeof value !== 'string' || !URL.canParse(value))) {
          throw new errors.InvalidClientMetadata('launch_uri must be an absolute URL');
        }
      },
    },
    responseTypes: ['code'],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // SMART apps name the FHIR server in `aud`; backend services name none and get the one this server serves.
        async defaultResource(ctx, _client, oneOf) {
          return oneOf ?? (ctx.oidc.params?.aud as string | undefined) ?? config.fhirBase;
        },
        // Needed with `openid`: otherwise the access token is issued for userinfo, not the FHIR server.
        async useGrantedResource() {
          return true;
        },
        async getResourceServerInfo(ctx, resource, client) {
          const audience = fhirAudience(config, resource);
          if (!audience) throw new errors.InvalidTarget('aud is not a FHIR server this authorization server serves');
          const backend = ctx.oidc.route === 'token' && ctx.oidc.params?.grant_type === 'client_credentials';
          return {
            scope: grantableScope({
              requested: [
                ctx.oidc.params?.scope as string | undefined,
                ctx.oidc.entities.AuthorizationCode?.scope,
                ctx.oidc.entities.RefreshToken?.scope,
              ],
              allowed: allowedScopeOf(client),
              backend,
            }),
            audience,
            accessTokenFormat: 'jwt',
            accessTokenTTL: backend ? config.backendTokenTtl : config.accessTokenTtl,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    extraParams: {
      async aud(ctx, value) {
        if (!isAuthorizationRoute(ctx)) return;
        if (!value) throw new errors.InvalidRequest('aud is required: the FHIR base URL the token is for');
        if (!fhirAudience(config, value)) throw new errors.InvalidTarget('aud is not a FHIR server this authorization server serves');
        // Re-add offline_access, which oidc-provider drops unless prompt=consent; SMART apps never send prompt.
        const requested = rawRequestedScope(ctx).split(' ');
        const params = ctx.oidc.params!;
        const current = new Set(String(params.scope ?? '').split(' ').filter(Boolean));
        if (requested.includes('offline_access') && ctx.oidc.client?.grantTypeAllowed('refresh_token')) current.add('offline_access');
        params.scope = [...current].join(' ');
      },
      async launch(ctx, value, client) {
        if (!isAuthorizationRoute(ctx) || value === undefined) return;
        const launch = await findEhrLaunch(db, String(value));
        if (!launch) throw new errors.InvalidRequest('launch is unknown, expired or already used');
        if (launch.clientId && launch.clientId !== client?.clientId) throw new errors.InvalidRequest('launch was issued for another app');
      },
    },
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    // Every authorization gets a fresh grant (its own launch context); see notes section 3.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId;
      return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
    },
    expiresWithSession: async () => false,
    async issueRefreshToken(_ctx, client, code) {
      return client.grantTypeAllowed('refresh_token') && (code.scopes.has('offline_access') || code.scopes.has('online_access'));
    },
    rotateRefreshToken: true,
    async findAccount(_ctx, id) {
      const user = await findUser(db, id);
      if (!user || user.disabled) return undefined;
      return {
        accountId: user.id,
        async claims() {
          return {
            sub: user.id,
            name: user.name ?? undefined,
            fhirUser: user.fhirUser ? `${config.fhirBase}/${user.fhirUser}` : undefined,
          };
        },
      };
    },
    async extraTokenClaims(_ctx, token) {
      const grantId = (token as { grantId?: string }).grantId;
      if (!grantId) return undefined;
      const context = await findLaunchContext(db, grantId);
      const account = (token as { accountId?: string }).accountId;
      const user = account ? await findUser(db, account) : undefined;
      const claims: Record<string, unknown> = {};
      if (context?.patient) claims.patient = context.patient;
      if (context?.encounter) claims.encounter = context.encounter;
      if (context?.fhirContext) claims.fhirContext = context.fhirContext;
      if (user?.fhirUser) claims.fhirUser = `${config.fhirBase}/${user.fhirUser}`;
      return claims;
    },
    async assertJwtClientAuthClaimsAndHeader(_ctx, claims) {
      // SMART: a client assertion expires at most five minutes after it is made.
      if (Number(claims.exp) - Math.floor(Date.now() / 1000) > 300) {
        throw new errors.InvalidClientAuth('client assertion exp must be at most 5 minutes in the future');
      }
    },
    clientBasedCORS(_ctx, origin, client) {
      return (client.redirectUris ?? []).some((uri) => URL.parse(uri)?.origin === origin);
    },
    ttl: {
      AccessToken: config.accessTokenTtl,
      AuthorizationCode: 60,
      ClientCredentials: config.backendTokenTtl,
      Grant: config.refreshTokenTtl,
      IdToken: 3600,
      Interaction: 3600,
      RefreshToken: config.refreshTokenTtl,
      Session: 14 * 86400,
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = await renderPage('error', {
        title: 'Something went wrong',
        error: out.error,
        description: out.error_description,
      });
    },
  };

  const provider = new Provider(config.issuer, configuration);
  provider.proxy = true;
  provider.use(smartTokenResponse(db));
  provider.on('grant.revoked', (_ctx, grantId: string) => {
    void deleteLaunchContext(db, grantId);
  });
  return provider;
}

export type { ClientMetadata };
