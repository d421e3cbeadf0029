// Token introspection (RFC 7662, SMART 2.2) for JWT access tokens and refresh tokens, and
// revocation (RFC 7009) of JWT access tokens. oidc-provider refuses JWTs at both endpoints
// ("structured tokens cannot be introspected/revoked"), so these answers are built here, after
// oidc-provider has authenticated the calling client.
import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC, RefreshToken } from 'oidc-provider';
import type { Context } from 'koa';
import { jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { Db } from '../db.ts';
import { nowSeconds } from '../db.ts';
import { factsOf, RequestFacts } from './token/request.ts';
import { revokeAccessToken, type RevocationClaims } from './revocation.ts';
import { appTokenClaims } from './token/claims.ts';
import { grantSourceRefusal } from './token/account.ts';
import { grantAudience } from './token/audience.ts';
import type { HcsPolicy } from '../hcs/policy.ts';
import type { AuditSink } from '../audit/store.ts';
import type { AuditBacklog } from '../audit/backlog.ts';
import { refusedStructuredToken } from './token/provider-answers.ts';
import { opaqueToken, tokenIntrospected, tokenRevoked } from '../audit/balp.ts';
import { answerAuditUnavailable } from '../audit/unavailable.ts';
import { VerifiedTokens } from '../resource-server/verified-tokens.ts';
import { tokenUser, userFactsMembers } from '../resource-server/user-facts.ts';
import { findUser, isAuditor, reachablePatients, type User } from './user-records.ts';

/** The introspection and revocation endpoints' paths inside the provider (its `routes`). */
export const INTROSPECTION_PATH = '/introspect';
export const REVOCATION_PATH = '/revoke';

const tokenRef = (token: string, jti: unknown) => (looksLikeJwt(token) && typeof jti === 'string' ? { jti } : opaqueToken(token));

/** The record of an introspection: who asked, about which token, and the answer. */
export function introspectionRecord(c: Pick<TokenContext, 'issuer'>, callerId: string, token: string, result: Introspection, address?: string) {
  return tokenIntrospected({
    recorded: new Date(), issuer: c.issuer, address, callerId, active: result.active,
    token: token ? tokenRef(token, result.active ? result.jti : undefined) : undefined,
    clientId: result.active ? result.client_id : undefined,
  });
}

/**
 * Answers an introspection once its record (ITI-102) is taken: the one record that may be committed after
 * its answer. When the record cannot be taken (backlog full, store failing), 503 and no answer: fail closed.
 */
export async function sendIntrospection(ctx: Context, c: Pick<TokenContext, 'issuer' | 'introspections'>, callerId: string, token: string, answer: Introspection) {
  if (!(await c.introspections.record(introspectionRecord(c, callerId, token, answer, ctx.ip)))) {
    answerAuditUnavailable(ctx, 'introspection');
    return;
  }
  ctx.status = 200;
  ctx.body = answer;
}

export interface TokenContext {
  db: Db;
  audit: AuditSink;
  policy: HcsPolicy;
  issuer: string;
  fhirBase: string;
  /** The FHIR bases tokens are issued for (FHIR_BASE_URL and ADDITIONAL_FHIR_BASES). */
  fhirAudiences: string[];
  provider: Provider;
  /** Verifies this server's JWT access tokens (see ownTokenVerifier). */
  verifyOwn: OwnTokenVerifier;
  /** Whether an access token (its jti) was revoked: cached, see revocationCheck. */
  isRevoked(claims: RevocationClaims): Promise<boolean>;
  /** Where introspection records go: committed after the answer, within a bound. */
  introspections: AuditBacklog;
}

/** What answering for a token needs (not where it is recorded). */
type Lookup = Omit<TokenContext, 'audit' | 'introspections'>;

export const INACTIVE = Object.freeze({ active: false });

export type Introspection = { active: false } | { active: true; client_id: string; [claim: string]: unknown };

const looksLikeJwt = (token: string) => /^[\w-]+\.[\w-]+\.[\w-]+$/.test(token);

/** A JWT access token this server signed, still valid; undefined otherwise (revocation not checked). */
export type OwnTokenVerifier = (token: string) => Promise<JWTPayload | undefined>;

/**
 * Verifies this server's JWT access tokens, remembering each verified one until it expires: resource
 * servers introspect the same token again and again, and the signature check is most of that work. A
 * retired signing key stays trusted until every token it signed has expired, so a kept answer stays true.
 */
export function ownTokenVerifier(c: { issuer: string; keys: JWTVerifyGetKey }, now = () => Date.now() / 1000): OwnTokenVerifier {
  const verified = new VerifiedTokens<JWTPayload>();
  return async (token) => {
    if (!looksLikeJwt(token)) return undefined;
    const key = VerifiedTokens.keyOf(token);
    const hit = verified.get(key, now());
    if (hit) return hit;
    const payload = await verifyJwt(token, c, new Date(now() * 1000));
    if (payload) verified.set(key, payload, Number(payload.exp));
    return payload;
  };
}

async function verifyJwt(token: string, c: { issuer: string; keys: JWTVerifyGetKey }, currentDate: Date): Promise<JWTPayload | undefined> {
  try {
    const { payload } = await jwtVerify(token, c.keys, { issuer: c.issuer, typ: 'at+jwt', clockTolerance: 5, requiredClaims: ['exp'], currentDate });
    return typeof payload.jti === 'string' && typeof payload.client_id === 'string' ? payload : undefined;
  } catch {
    return undefined;
  }
}

/** Who may learn what a guard must know of a token's user (see userFacts): resource servers, and bearers of `introspect`. */
export interface Caller {
  guard: boolean;
}

/** What a guard cannot tell from the token: the user's reach with `user/` scopes and the auditor attribute. Only for guards. */
const userFacts = (caller: Caller, user: User) =>
  caller.guard ? userFactsMembers({ patients: reachablePatients(user), auditor: isAuditor(user) }) : {};

async function introspectAccessToken(token: string, c: Lookup, caller: Caller): Promise<Introspection> {
  const payload = await c.verifyOwn(token);
  if (!payload || (await c.isRevoked(payload))) return INACTIVE;
  const userId = tokenUser(payload);
  const user = userId === undefined ? undefined : await findUser(c.db, userId);
  // A user disabled or removed since: inactive at once, as their grants ended with them.
  if (userId !== undefined && (!user || user.disabled)) return INACTIVE;
  // RFC 9449 section 6.2: a bound token introspects with its cnf and token_type DPoP.
  const bound = typeof (payload.cnf as { jkt?: unknown } | undefined)?.jkt === 'string';
  return { ...payload, active: true, client_id: payload.client_id as string, token_type: bound ? 'DPoP' : 'Bearer', ...(user && userFacts(caller, user)) };
}

/**
 * A refresh token: `found` when oidc-provider's own introspection already found it valid with a live
 * grant of the same client and account (its facts then come with it, read in one statement: see
 * token/grant-source.ts); else it is looked up here.
 */
async function introspectRefreshToken(token: string, c: Lookup, caller: Caller, found?: { refreshToken: RefreshToken; facts: RequestFacts }): Promise<Introspection> {
  const refresh = found?.refreshToken ?? await c.provider.RefreshToken.find(token);
  if (!refresh || refresh.isExpired || refresh.consumed || !refresh.grantId) return INACTIVE;
  if (!found && !(await c.provider.Grant.find(refresh.grantId))) return INACTIVE;
  const facts = found?.facts ?? new RequestFacts(c.db);
  const grant = await facts.grantContext(refresh.grantId);
  const user = await facts.user(refresh.accountId);
  // Active only while a refresh would be answered with tokens.
  if (!user || user.disabled) return INACTIVE;
  if (await grantSourceRefusal(c.db, c.policy, user, await c.provider.Client.find(refresh.clientId!), grant, refresh)) return INACTIVE;
  // The FHIR server the grant is for, which its refreshes give tokens for; one no longer served here gives none.
  const aud = grantAudience(c, refresh.resource);
  if (!aud) return INACTIVE;
  return {
    active: true,
    client_id: refresh.clientId!,
    scope: refresh.scope,
    exp: refresh.exp,
    iat: refresh.iat,
    sub: refresh.accountId,
    iss: c.issuer,
    aud,
    token_type: 'refresh_token',
    ...appTokenClaims({ fhirBase: c.fhirBase, policy: c.policy }, aud, user, grant, { acr: refresh.acr, amr: refresh.amr }),
    ...userFacts(caller, user),
  };
}

export async function introspectToken(token: string, c: Lookup, caller: Caller, found?: Parameters<typeof introspectRefreshToken>[3]): Promise<Introspection> {
  if (!token) return INACTIVE;
  return looksLikeJwt(token) ? introspectAccessToken(token, c, caller) : introspectRefreshToken(token, c, caller, found);
}

/** Resource servers (registered with `resource_server`) may introspect any token; other clients only their own. */
export function mayIntrospect(caller: { clientId: string; resourceServer: boolean }, result: Introspection): boolean {
  return result.active && (caller.resourceServer || result.client_id === caller.clientId);
}

export const isResourceServer = (client: object) => (client as { resource_server?: boolean }).resource_server === true;

/**
 * Post-processing of oidc-provider's introspection and revocation routes: once the client is
 * authenticated, answer for JWT access tokens (and, for introspection, every token) here.
 */
export function jwtTokenEndpoints(c: Omit<TokenContext, 'provider'>) {
  return async function answerForJwts(ctx: KoaContextWithOIDC, next: () => Promise<void>) {
    await next();
    const route = ctx.oidc?.route;
    const client = ctx.oidc?.client;
    if (route !== 'introspection' && route !== 'revocation') return;
    if (!client) return;
    const token = String(ctx.oidc.params?.token ?? '');
    const context = { ...c, provider: ctx.oidc.provider };

    if (route === 'introspection' && (ctx.status === 200 || refusedStructuredToken(ctx))) {
      const { RefreshToken: refreshToken, Grant: grant } = ctx.oidc.entities;
      const resourceServer = isResourceServer(client);
      const result = await introspectToken(token, context, { guard: resourceServer }, refreshToken && grant ? { refreshToken, facts: factsOf(c.db, ctx) } : undefined);
      const answer = mayIntrospect({ clientId: client.clientId, resourceServer }, result) ? result : INACTIVE;
      await sendIntrospection(ctx, c, client.clientId, token, answer);
      return;
    }
    if (route === 'revocation' && refusedStructuredToken(ctx)) {
      const payload = await c.verifyOwn(token);
      // RFC 7009: a client may revoke only its own tokens, and the answer is 200 either way.
      if (payload && payload.client_id === client.clientId) {
        await revokeAccessToken(c.db, payload.jti!, payload.exp ?? nowSeconds() + 3600);
        await c.audit.append(tokenRevoked({ recorded: new Date(), issuer: c.issuer, address: ctx.ip, clientId: client.clientId, token: { jti: payload.jti! }, tokenType: 'access_token' }));
      }
      ctx.status = 200;
      ctx.body = '';
      return;
    }
    const revoked = ctx.oidc.entities.RefreshToken;
    if (route === 'revocation' && ctx.status === 200 && revoked && revoked.clientId === client.clientId) {
      await c.audit.append(tokenRevoked({ recorded: new Date(), issuer: c.issuer, address: ctx.ip, clientId: client.clientId, token: opaqueToken(token), tokenType: 'refresh_token' }));
    }
  };
}
