// node-oidc-provider configured as a SMART App Launch 2.2 authorization server; each hook says why it is needed.
import Provider, { errors, type Configuration, type KoaContextWithOIDC, type ClientMetadata } from 'oidc-provider';
import { createLocalJWKSet, type JWK } from 'jose';
import type { Config } from '../config.ts';
import type { Db } from '../db.ts';
import { knexAdapterFactory } from './adapter.ts';
import { deleteGrantContext } from './launch-store.ts';
import { OIDC_SCOPES } from '../smart/client-scopes.ts';
import { renderPage } from '../views.ts';
import { changedMetadata, checkSmartClientMetadata, CUSTOM_CLIENT_METADATA } from './client-metadata.ts';
import { bindingChangeProblem, NO_PRIVILEGES, privilegeProblem, privilegesOf, privilegesOfToken, type Privileges } from './registration-privileges.ts';
import { INTROSPECTION_PATH, jwtTokenEndpoints, ownTokenVerifier, REVOCATION_PATH } from './introspection.ts';
import { clientAuthenticationRequired } from './token/provider-answers.ts';
import { isAccessTokenRevoked, type RevocationClaims } from './revocation.ts';
import { endClientAccess } from './grants.ts';
import { defaultResponseTypes, removeClient } from './clients.ts';
import type { Logger } from '../ops/log.ts';
import { publicJwk } from './keys.ts';
import { ID_TOKEN_TTL } from './token-lifetimes.ts';
import { clientAssertionRule } from './token/client-assertion.ts';
import { audienceRule } from './token/audience.ts';
import { purposeRule } from './token/purpose.ts';
import { launchRule } from './token/launch.ts';
import { refreshRule, scopeAndLifetimeRule } from './token/scope.ts';
import { claimsRule } from './token/claims.ts';
import { accountRule, SCOPE_CLAIMS } from './token/account.ts';
import { createClientJwksPolicy } from './client-jwks.ts';
import { isClientOrigin } from './client-origins.ts';
import { smartTokenResponse, TOKEN_PATH } from './token/response.ts';
import { USERINFO_PATH } from './userinfo.ts';
import { DPOP_ALGORITHMS } from '../resource-server/dpop.ts';
import { sandboxRevocation } from '../sandbox.ts';
import { databaseAuditSink, type AuditSink } from '../audit/store.ts';
import { auditBacklog, type AuditBacklog } from '../audit/backlog.ts';
import { clientRegistrationChanged } from '../audit/balp.ts';
import { answerAuditUnavailable } from '../audit/unavailable.ts';
import { routedPath } from '../net/routed-path.ts';
import { hostCookieName } from '../net/host-cookie.ts';
import { ACR_VALUES } from '../auth/acr.ts';
import { signInPolicy, trackSignInSessions } from '../auth/oidc-sessions.ts';
import { logoutSources, logoutWithoutSession } from './logout-pages.ts';

const SIGN_IN_SESSION_TTL = 14 * 86400;

export interface ProviderDeps {
  config: Config;
  db: Db;
  jwks: { keys: JWK[] };
  /** Told of every access token handed out (metrics). */
  onTokenIssued?: (grantType: string) => void;
  log?: Logger['log'];
  /** Where the token endpoints' records go: the app's audit store (default: the chain in `db`). */
  audit?: AuditSink;
  /** The revocation check introspection uses (default: uncached). */
  isRevoked?: (claims: RevocationClaims) => Promise<boolean>;
  /** Takes introspection records committed after the answer (default: a backlog of its own; the app shares its backlog with the refusals' records). */
  introspections?: AuditBacklog;
}

/** Where failures that cannot fail a request go when no logger is given (the CLI). */
export const defaultLog: Logger['log'] = (level, message, fields) => console.error(`smart-auth ${level}: ${message}`, fields?.err ?? '');

const REGISTRATION_PATH = '/register';
const JSON_ERROR_ROUTES = new Set(['token', 'introspection', 'revocation']);
const REGISTRATION_ROUTES = new Set(['registration', 'client', 'client_update']);

/** RFC 7591 says `scope`; the client keeps its SMART scopes as `smart_scope` (see extraClientMetadata). */
async function scopeInRegistrationResponses(ctx: KoaContextWithOIDC, next: () => Promise<void>) {
  await next();
  const body = ctx.body as Record<string, unknown> | undefined;
  if (!REGISTRATION_ROUTES.has(ctx.oidc?.route ?? '') || !body || typeof body !== 'object' || !('smart_scope' in body)) return;
  const { smart_scope: scope, ...rest } = body;
  ctx.body = { ...rest, scope };
}

/** The privileges of the initial access token each RFC 7591 registration request carries (looked up by a middleware in createProvider). */
const tokenPrivileges = new WeakMap<object, Privileges>();
/** The audit record of an RFC 7591/7592 registration change, per request, until its answer goes out. */
const pendingRegistrationRecords = new WeakMap<object, { record: Promise<void>; change: 'create' | 'update' | 'delete'; clientId: string }>();

/**
 * The most a registration or update made through this request may ask for; undefined when the metadata
 * is not being registered by a caller (the CLI validates without a request; stored clients are loaded without one).
 */
function registrationCeiling(ctx: KoaContextWithOIDC | undefined): Privileges | undefined {
  if (ctx?.oidc?.route === 'registration') return tokenPrivileges.get(ctx) ?? NO_PRIVILEGES;
  if (ctx?.oidc?.route === 'client_update') return ctx.oidc.client ? privilegesOf(ctx.oidc.client.metadata()) : NO_PRIVILEGES;
  return undefined;
}

/** What a registration or an RFC 7592 update through this request may not store, as an error description; else undefined. */
function registrationProblem(ctx: KoaContextWithOIDC | undefined, metadata: Record<string, unknown>): string | undefined {
  const ceiling = registrationCeiling(ctx);
  const problem = ceiling && privilegeProblem(metadata, ceiling);
  const stored = ctx?.oidc?.route === 'client_update' ? ctx.oidc.client?.metadata() : undefined;
  return problem ?? (stored && bindingChangeProblem(metadata, stored));
}

/** The metadata a caller sent to register or update a client (RFC 7591/7592); undefined elsewhere. */
function registrationBody(ctx: KoaContextWithOIDC | undefined): Record<string, unknown> | undefined {
  return ['registration', 'client_update'].includes(ctx?.oidc?.route ?? '') ? ctx?.oidc?.body : undefined;
}

export function createProvider(deps: ProviderDeps): Provider {
  const { config, db, jwks, onTokenIssued, log = defaultLog, audit = databaseAuditSink(db) } = deps;
  // SMART's token rules (server/oidc/token/), in the order oidc-provider consults them. Each request's
  // facts (grant context, user, emergency flag, hl7-b2b attributes) are loaded once, in its RequestFacts.
  const rules = {
    // /authorize
    audience: audienceRule({ config, db }), //          aud is a FHIR server served here; state; offline_access kept
    purpose: purposeRule({ config, db }), //            a purpose of use asked up front, never an emergency one
    launch: launchRule({ config, db }), //              an EHR launch id that is known and this app's
    // /token
    clientAssertion: clientAssertionRule({ config, db }), // SMART's assertion rules; hl7-b2b parsed once
    account: accountRule({ config, db }), //            the user, while they may still have the grant's patient and purpose
    scopeAndLifetime: scopeAndLifetimeRule({ config, db }), // granted scope, audience, lifetime (emergency rule)
    refresh: refreshRule({ config, db }), //            a refresh token for offline/online_access, never for emergencies
    claims: claimsRule({ config, db }), //              launch context, user, HCS attributes; the token's grant link
    response: smartTokenResponse(db, config.issuer, audit, onTokenIssued), // context in the answer; ITI-71; one commit
  };
  // Outside production, apps and backend services on this machine may publish their keys on http://localhost.
  const clientJwks = createClientJwksPolicy({ allowLoopback: !config.production });
  const configuration: Configuration = {
    fetch: clientJwks.fetch as Configuration['fetch'],
    adapter: knexAdapterFactory(db, { clientCacheMs: config.clientCacheMs }),
    jwks,
    cookies: {
      keys: config.cookieSecrets,
      // The session cookie is __Host- under an https ISSUER (see host-cookie.ts); the interaction cookies
      // cannot be: oidc-provider scopes them to their paths, and they name one interaction only.
      names: { session: hostCookieName('_session', new URL(config.issuer).protocol === 'https:') },
      long: { httpOnly: true, sameSite: 'lax', signed: true },
      short: { httpOnly: true, sameSite: 'lax', signed: true },
    },
    routes: {
      authorization: '/authorize',
      token: TOKEN_PATH,
      jwks: '/jwks',
      introspection: INTROSPECTION_PATH,
      revocation: REVOCATION_PATH,
      registration: REGISTRATION_PATH,
      userinfo: USERINFO_PATH,
      end_session: '/logout',
    },
    scopes: [...OIDC_SCOPES],
    // acr and amr (RFC 8176) go in every id token: how the person signed in.
    claims: SCOPE_CLAIMS,
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
      dPoPSigningAlgValues: [...DPOP_ALGORITHMS],
    },
    extraClientMetadata: {
      // SMART scopes are not OIDC scopes: oidc-provider would refuse them in `scope`,
      // so a client's allowed SMART scopes live in `smart_scope`.
      properties: [...CUSTOM_CLIENT_METADATA],
      validator(ctx, key, _value, metadata) {
        // Called once per custom property; the checks span the whole metadata, so run them once.
        if (key !== CUSTOM_CLIENT_METADATA[0]) return;
        // oidc-provider fills in its default response_types ["code"] before this runs, whatever grant_types say, and
        // then demands redirect_uris: a caller that sent none gets what its grant types call for (none for a backend).
        const sent = registrationBody(ctx as KoaContextWithOIDC | undefined);
        if (sent && sent.response_types === undefined) metadata.response_types = defaultResponseTypes(metadata.grant_types);
        checkSmartClientMetadata(metadata as Record<string, unknown>, config.production);
        const problem = registrationProblem(ctx as KoaContextWithOIDC | undefined, metadata as Record<string, unknown>);
        if (problem) throw new errors.InvalidClientMetadata(problem);
      },
    },
    responseTypes: ['code'],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      // RFC 9449: a DPoP proof at /token binds the tokens to its key (public clients' refresh tokens too); no nonce.
      dPoP: { enabled: true },
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
      // The `claims` request parameter, for apps that ask for an acr that way (OIDC Core 5.5.1.1).
      claimsParameter: { enabled: true },
      rpInitiatedLogout: { enabled: true, ...logoutSources },
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
        getResourceServerInfo: rules.scopeAndLifetime,
      },
    },
    extraParams: {
      aud: rules.audience,
      purpose_of_use: rules.purpose,
      launch: rules.launch,
    },
    interactions: {
      // oidc-provider's prompts, with sign-in sessions that can end and acr levels that can be asked for.
      policy: signInPolicy(db, config),
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    acrValues: [...ACR_VALUES],
    // Every authorization gets a fresh grant (its own launch context); see notes section 3.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId;
      return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
    },
    expiresWithSession: async () => false,
    issueRefreshToken: rules.refresh,
    rotateRefreshToken: true,
    findAccount: rules.account,
    extraTokenClaims: rules.claims,
    assertJwtClientAuthClaimsAndHeader: rules.clientAssertion,
    clientBasedCORS: (_ctx, origin, client) => isClientOrigin(client.redirectUris, origin),
    ttl: {
      // The lifetime getResourceServerInfo chose (app, backend or break-the-glass).
      AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? config.accessTokenTtl,
      AuthorizationCode: 60,
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? config.backendTokenTtl,
      Grant: config.refreshTokenTtl,
      IdToken: ID_TOKEN_TTL,
      Interaction: 3600,
      RefreshToken: config.refreshTokenTtl,
      Session: SIGN_IN_SESSION_TTL,
    },
    async renderError(ctx, out) {
      // RFC 6749 section 5.2 (and RFC 7662, RFC 7009): these endpoints' errors are JSON, whatever the caller accepts.
      if (JSON_ERROR_ROUTES.has(ctx.oidc?.route ?? '')) {
        ctx.body = out;
        return;
      }
      ctx.type = 'html';
      ctx.body = await renderPage('error', {
        title: 'Something went wrong',
        error: out.error,
        description: out.error_description,
      });
    },
  };

  const provider = new Provider(config.issuer, configuration);
  provider.proxy = config.trustProxy;
  clientJwks.install(provider);
  provider.use(rules.response);
  provider.use(clientAuthenticationRequired);
  provider.use(jwtTokenEndpoints({
    db, audit, policy: config.policy, issuer: config.issuer, fhirBase: config.fhirBase, fhirAudiences: config.fhirAudiences,
    verifyOwn: ownTokenVerifier({ issuer: config.issuer, keys: createLocalJWKSet({ keys: jwks.keys.map(publicJwk) }) }),
    isRevoked: deps.isRevoked ?? ((claims) => isAccessTokenRevoked(db, claims)),
    introspections: deps.introspections ?? auditBacklog(audit, config.introspectionAuditBacklog, (message, err) => log('error', message, { err })),
  }));
  provider.use(scopeInRegistrationResponses);
  // The validator that checks privileges is synchronous: look the initial access token's privileges up first.
  provider.use(async (ctx, next) => {
    if (ctx.method === 'POST' && routedPath(ctx.path) === REGISTRATION_PATH) {
      const token = /^Bearer (\S+)$/i.exec(ctx.get('authorization'))?.[1];
      const privileges = await privilegesOfToken(db, provider, token);
      if (privileges) tokenPrivileges.set(ctx, privileges);
    }
    await next();
  });
  provider.use(trackSignInSessions(db, audit, config.issuer, SIGN_IN_SESSION_TTL));
  provider.use(logoutWithoutSession);
  // A registration change is answered only once its record is committed; else 503, as every audited answer.
  provider.use(async function registrationRecorded(ctx, next) {
    await next();
    const pending = pendingRegistrationRecords.get(ctx);
    if (!pending) return;
    try {
      await pending.record;
    } catch (err) {
      log('error', 'recording a registration change failed', { err });
      // A client nobody was told of, and no record says exists: take it away again.
      if (pending.change === 'create') await removeClient(db, pending.clientId).catch((e) => log('error', 'removing an unrecorded client failed', { err: e }));
      answerAuditUnavailable(ctx, 'registration change');
    }
  });
  if (config.demo) provider.use(sandboxRevocation(db));
  provider.on('grant.revoked', (_ctx, grantId: string) => {
    void deleteGrantContext(db, grantId);
  });
  // A client deleted through RFC 7592 takes its grants along, as `client remove` and the portal do.
  provider.on('registration_delete.success', (ctx: KoaContextWithOIDC, client: { clientId: string }) => {
    endClientAccess(db, client.clientId).catch((err) => log('error', 'ending the grants of a deleted client failed', { err }));
    recordRegistration(ctx, 'delete', client.clientId);
  });
  // Registration changes through RFC 7591/7592: the events start the record, registrationRecorded (below) waits for it.
  const recordRegistration = (ctx: KoaContextWithOIDC, change: 'create' | 'update' | 'delete', clientId: string, fields?: string[]) => {
    const record = audit.append(clientRegistrationChanged({ recorded: new Date(), issuer: config.issuer, address: ctx.ip, change, clientId, by: { clientId }, fields }));
    record.catch(() => undefined); // awaited by registrationRecorded
    pendingRegistrationRecords.set(ctx, { record, change, clientId });
  };
  type RegisteredClient = { clientId: string; metadata(): ClientMetadata };
  provider.on('registration_create.success', (ctx: KoaContextWithOIDC, client: RegisteredClient) =>
    recordRegistration(ctx, 'create', client.clientId, Object.keys(client.metadata())));
  // The client as it was; the answer holds it as it is now.
  provider.on('registration_update.success', (ctx: KoaContextWithOIDC, client: RegisteredClient) =>
    recordRegistration(ctx, 'update', client.clientId, changedMetadata(client.metadata(), ctx.body as ClientMetadata)));
  return provider;
}

export type { ClientMetadata };
