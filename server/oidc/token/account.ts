// oidc-provider's findAccount: the user a sign-in, code or refresh token is for. At /token it is also where a
// token of a user's grant is refused once the user may no longer hold what the grant carries: the patient
// and the purpose of use were checked at consent, but a refresh token lives for months and the user's
// attributes (--patients, purposes, roles) or the client's registered purposes may have narrowed since.
// An online_access refresh token (SMART: usable while the user is online) also ends with the sign-in
// session it came from, and a refresh for a FHIR server the token was not issued for, or that is no longer
// served here, is refused here. oidc-provider asks before it consumes a refresh token, so a refusal changes nothing.
import { errors, type Account, type KoaContextWithOIDC } from 'oidc-provider';
import type { HcsPolicy } from '../../hcs/policy.ts';
import { purposeChoice } from '../../hcs/purpose-choice.ts';
import { clientPurposesOf } from '../clients.ts';
import type { GrantContext } from '../launch-store.ts';
import { mayAccessPatient, subjectOf, type User } from '../users.ts';
import { signInSessionLive } from '../../auth/sessions.ts';
import type { Db } from '../../db.ts';
import type { Config } from '../../config.ts';
import { grantAudience } from './audience.ts';
import { factsOf } from './request.ts';
import type { RuleDeps } from './rules.ts';

/** Why `user` may no longer have tokens of a grant with this context, or undefined while they may. Pure. */
export function grantNoLongerHeld(policy: HcsPolicy, user: User, clientPurposes: readonly string[] | undefined, context: GrantContext): string | undefined {
  const { patient } = context.launch;
  if (patient && !mayAccessPatient(user, patient)) return 'the user may no longer open the patient of this grant';
  const purpose = context.purposeOfUse;
  if (purpose && !purposeChoice({ policy, subject: subjectOf(user), clientPurposes }).options.includes(purpose)) {
    return `purpose of use ${purpose} is no longer permitted for this user and app`;
  }
  return undefined;
}

/** The token (code or refresh token) oidc-provider names when it asks for the account at /token. */
export type GrantSource = {
  kind?: string; grantId?: string; scope?: string; sessionUid?: string; resource?: string | string[]; resourceIndicators?: ReadonlySet<string | undefined>;
} | undefined;

/**
 * Why a refresh gives no token for its FHIR server: it names a resource (RFC 8707) the refresh token was not
 * issued for, or the grant's server is no longer FHIR_BASE_URL or in ADDITIONAL_FHIR_BASES. oidc-provider
 * refuses both too, but only after it has used the refresh token up, so the app's next refresh would end the
 * grant: refused here, the token still works once an operator serves the server again.
 */
function refreshTargetRefusal(config: Pick<Config, 'fhirBase' | 'fhirAudiences'>, token: GrantSource, resource: unknown): string | undefined {
  if (token?.kind !== 'RefreshToken') return undefined;
  if (resource !== undefined && [resource].flat().some((r) => typeof r !== 'string' || !token.resourceIndicators?.has(r))) {
    return 'the refresh token was not issued for this resource';
  }
  return grantAudience(config, token.resource) ? undefined : 'the FHIR server of this grant is no longer served here';
}

/** A refresh token for online_access only lives as long as its sign-in session (offline_access outlives it). */
const isOnlineOnly = (scope: string | undefined) => {
  const scopes = new Set(scope?.split(' '));
  return scopes.has('online_access') && !scopes.has('offline_access');
};

async function sessionEnded(db: Db, userId: string, token: GrantSource): Promise<boolean> {
  if (token?.kind !== 'RefreshToken' || !isOnlineOnly(token.scope)) return false;
  return !token.sessionUid || !(await signInSessionLive(db, userId, token.sessionUid));
}

/**
 * Why no more tokens may come from `token` (a code or refresh token of the user's grant), or undefined:
 * what findAccount refuses at /token, and what makes introspection call a refresh token inactive.
 */
export async function grantSourceRefusal(
  db: Db, policy: HcsPolicy, user: User, client: object | undefined, context: GrantContext | undefined, token: GrantSource,
): Promise<string | undefined> {
  const problem = context && grantNoLongerHeld(policy, user, client && clientPurposesOf(client), context);
  if (problem) return problem;
  if (await sessionEnded(db, user.id, token)) return 'the sign-in session of this online_access grant has ended';
  return undefined;
}

/** The claims each OpenID Connect scope releases (oidc-provider's `claims`): in id tokens and at /userinfo. */
export const SCOPE_CLAIMS: Record<string, string[]> = { openid: ['sub', 'acr', 'amr'], fhirUser: ['fhirUser'], profile: ['name'] };

/**
 * The user's fhirUser: their own record, an absolute URL on this server's FHIR base (FHIR_BASE_URL), whatever
 * server a token is for. SMART lets it name a resource on another server than aud; a URL on aud (or one relative
 * to it) could name another person there, since only patient ids are matched across servers.
 */
export const fhirUserUrl = (fhirBase: string, user: Pick<User, 'fhirUser'>): string | undefined =>
  user.fhirUser ? `${fhirBase}/${user.fhirUser}` : undefined;

/** What a user's id token and userinfo answer may say of them, before the scopes pick from it. Pure. */
export function accountClaims(fhirBase: string, user: User): { sub: string; name?: string; fhirUser?: string } {
  return { sub: user.id, name: user.name ?? undefined, fhirUser: fhirUserUrl(fhirBase, user) };
}

const isGrantSource = (token: GrantSource): token is { grantId: string } =>
  (token?.kind === 'RefreshToken' || token?.kind === 'AuthorizationCode') && typeof token.grantId === 'string';

export function accountRule({ config, db }: RuleDeps) {
  return async function findAccount(ctx: KoaContextWithOIDC, id: string, token?: GrantSource): Promise<Account | undefined> {
    const facts = factsOf(db, ctx);
    const user = await facts.user(id);
    if (!user || user.disabled) return undefined;
    if (ctx.oidc?.route === 'token' && isGrantSource(token)) {
      const target = refreshTargetRefusal(config, token, ctx.oidc.params?.resource);
      if (target) throw new errors.InvalidTarget(target);
      const refusal = await grantSourceRefusal(db, config.policy, user, ctx.oidc.client, await facts.grantContext(token.grantId), token);
      if (refusal) throw new errors.InvalidGrant(refusal);
    }
    return { accountId: user.id, claims: async () => accountClaims(config.fhirBase, user) };
  };
}
