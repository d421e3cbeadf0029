// node-oidc-provider configured as a SMART App Launch 2.2 authorization server.
// ../shared/reference/oidc-provider-notes.md explains each hook and why it is needed.
import Provider, { errors, type Configuration, type KoaContextWithOIDC, type ClientMetadata } from 'oidc-provider';
import { createLocalJWKSet, decodeJwt, type JWK } from 'jose';
import type { Config } from '../config.ts';
import type { Db } from '../db.ts';
import { knexAdapterFactory } from './adapter.ts';
import { findUser } from './users.ts';
import { deleteLaunchContext, findEhrLaunch, findLaunchContext } from './launch-store.ts';
import { grantableScope, isSmartScopeString, OIDC_SCOPES } from '../smart/client-scopes.ts';
import { renderPage } from '../views.ts';
import { allowedScopeOf } from './clients.ts';
import { checkSmartClientMetadata, CUSTOM_CLIENT_METADATA } from './client-metadata.ts';
import { isResourceServer, jwtTokenEndpoints } from './introspection.ts';
import { recordTokenGrant } from './revocation.ts';
import { endClientGrants } from './grants.ts';
import { publicJwk } from './keys.ts';
import { B2bError, iuaFromHl7B2b } from '../smart/hl7-b2b.ts';
import { createClientJwksPolicy } from './client-jwks.ts';
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

/** IHE IUA attributes of a backend service, from the hl7-b2b extension of its (verified) client assertion. */
function backendServiceClaims(ctx: KoaContextWithOIDC): Record<string, unknown> | undefined {
  const assertion = ctx.oidc.params?.client_assertion;
  if (ctx.oidc.params?.grant_type !== 'client_credentials' || typeof assertion !== 'string') return undefined;
  const b2b = (decodeJwt(assertion).extensions as Record<string, unknown> | undefined)?.['hl7-b2b'];
  return b2b === undefined ? undefined : { extensions: { ihe_iua: iuaFromHl7B2b(b2b) } };
}

const REGISTRATION_ROUTES = new Set(['registration', 'client', 'client_update']);

/** RFC 7591 says `scope`; the client keeps its SMART scopes as `smart_scope` (see extraClientMetadata). */
async function scopeInRegistrationResponses(ctx: KoaContextWithOIDC, next: () => Promise<void>) {
  await next();
  const body = ctx.body as Record<string, unknown> | undefined;
  if (!REGISTRATION_ROUTES.has(ctx.oidc?.route ?? '') || !body || typeof body !== 'object' || !('smart_scope' in body)) return;
  const { smart_scope: scope, ...rest } = body;
  ctx.body = { ...rest, scope };
}

export function createProvider({ config, db, jwks }: ProviderDeps): Provider {
  // Outside production, apps and backend services on this machine may publish their keys on http://localhost.
  const clientJwks = createClientJwksPolicy({ allowLoopback: !config.production });
  const configuration: Configuration = {
    fetch: clientJwks.fetch as Configuration['fetch'],
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
      properties: [...CUSTOM_CLIENT_METADATA],
      validator(_ctx, key, _value, metadata) {
        // Called once per custom property; the checks span the whole metadata, so run them once.
        if (key === CUSTOM_CLIENT_METADATA[0]) checkSmartClientMetadata(metadata as Record<string, unknown>, config.production);
      },
    },
    responseTypes: ['code'],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // Who may see which token is decided after authentication, in introspection.ts.
      introspection: { enabled: true, allowedPolicy: async () => true },
      revocation: { enabled: true, allowedPolicy: async (_ctx, client, token) => client.clientId === token.clientId },
      registration: {
        enabled: true,
        initialAccessToken: config.registration === 'token',
        issueRegistrationAccessToken: true,
      },
      registrationManagement: { enabled: true, rotateRegistrationAccessToken: true },
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
          const scope = grantableScope({
            requested: [
              ctx.oidc.params?.scope as string | undefined,
              ctx.oidc.entities.AuthorizationCode?.scope,
              ctx.oidc.entities.RefreshToken?.scope,
            ],
            allowed: allowedScopeOf(client),
            backend,
          });
          if (backend && !scope) throw new errors.InvalidScope('none of the requested scopes is allowed for this client', String(ctx.oidc.params?.scope ?? ''));
          return {
            scope,
            audience,
            accessTokenFormat: 'jwt',
            accessTokenTTL: backend ? config.backendTokenTtl : config.accessTokenTtl,
            jwt: { sign: { alg: config.accessTokenAlg } },
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
    async extraTokenClaims(ctx, token) {
      const grantId = (token as { grantId?: string }).grantId;
      if (!grantId) return backendServiceClaims(ctx);
      await recordTokenGrant(db, token.jti, grantId, Math.floor(Date.now() / 1000) + config.accessTokenTtl);
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
    // SMART's rules for client assertions beyond RFC 7523 (oidc-provider has checked signature, iss, exp, jti).
    async assertJwtClientAuthClaimsAndHeader(ctx, claims, header, client) {
      const fail = (message: string) => {
        throw new errors.InvalidClientAuth(message);
      };
      if (header.typ !== 'JWT') fail('the client assertion header must have typ "JWT"');
      if (!header.kid) fail('the client assertion header must have a kid');
      if (claims.sub !== client.clientId) fail('the client assertion sub must equal iss, the client_id');
      const tokenEndpoint = `${config.issuer}/token`;
      const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
      if (aud.length !== 1 || (aud[0] !== tokenEndpoint && aud[0] !== (ctx.oidc.urlFor as (name: string) => string)('token'))) {
        fail(`the client assertion aud must be the token endpoint ${tokenEndpoint}`);
      }
      if (header.jku !== undefined && header.jku !== client.jwksUri) fail('the client assertion jku must equal the registered jwks_uri');
      if (Number(claims.exp) - Math.floor(Date.now() / 1000) > 300) fail('client assertion exp must be at most 5 minutes in the future');
      const b2b = (claims.extensions as Record<string, unknown> | undefined)?.['hl7-b2b'];
      if (b2b !== undefined) {
        try {
          iuaFromHl7B2b(b2b);
        } catch (err) {
          if (err instanceof B2bError) fail(err.message);
          throw err;
        }
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
  clientJwks.install(provider);
  provider.use(smartTokenResponse(db));
  provider.use(jwtTokenEndpoints({
    db, issuer: config.issuer, fhirBase: config.fhirBase, keys: createLocalJWKSet({ keys: jwks.keys.map(publicJwk) }),
  }));
  provider.use(scopeInRegistrationResponses);
  provider.on('grant.revoked', (_ctx, grantId: string) => {
    void deleteLaunchContext(db, grantId);
  });
  // A client deleted through RFC 7592 takes its grants along, as `client remove` and the portal do.
  provider.on('registration_delete.success', (_ctx, client: { clientId: string }) => {
    endClientGrants(db, client.clientId).catch((err) => console.error('smart-auth: ending the grants of a deleted client failed:', err));
  });
  return provider;
}

export type { ClientMetadata };
