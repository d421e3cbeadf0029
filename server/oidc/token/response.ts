// The token endpoint's last rule, around oidc-provider's answer: the request's writes held until the answer
// and committed in one group-commit wait with its ITI-71 record (and the security alert of an emergency
// access); the SMART launch context in the answer, the caching headers.
import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import { decodeJwt, type JWTPayload } from 'jose';
import type { Db } from '../../db.ts';
import { factsOf } from './request.ts';
import type { AuditSink } from '../../audit/store.ts';
import { accessTokenIssued, emergencyOverrideStarted } from '../../audit/balp.ts';
import type { AuditEvent } from '../../audit/types.ts';
import type { GrantContext } from '../launch-store.ts';
import type { LaunchContext } from '../../smart/launch-context.ts';
import type { User } from '../users.ts';
import { codingList } from '../../hcs/codes.ts';
import { routedPath } from '../../net/routed-path.ts';
import { proofForAnotherUrl } from '../../resource-server/dpop.ts';

/** The token endpoint's path inside the provider (its `routes.token`). */
export const TOKEN_PATH = '/token';

export function smartTokenResponse(db: Db, issuer: string, audit: AuditSink, onIssued?: (grantType: string) => void) {
  return async function smartTokenEndpoint(ctx: KoaContextWithOIDC, next: () => Promise<void>) {
    // The token endpoint's writes wait for its answer (see RequestFacts.commit).
    const facts = ctx.method === 'POST' && routedPath(ctx.path) === TOKEN_PATH ? factsOf(db, ctx) : undefined;
    const proof = ctx.get('dpop');
    if (facts && proof && proofForAnotherUrl(proof, `${issuer}${TOKEN_PATH}`)) {
      ctx.status = 400;
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { error: 'invalid_dpop_proof', error_description: `the DPoP proof htu must be the token endpoint ${issuer}${TOKEN_PATH}` };
      return;
    }
    facts?.holdWrites();
    try {
      await next();
    } catch (err) {
      // What the request wrote before it failed (a consumed code) is still committed.
      await facts?.commit();
      throw err;
    }
    if (ctx.oidc?.route !== 'token' || !facts) return facts?.commit();
    // A client assertion used before, or a code or refresh token another request used first, is found only
    // now (they are stored with the answer's other writes): the token made meanwhile is not handed out, and
    // nothing of it was written.
    const commit = async (also?: () => Promise<unknown>[]) => {
      try {
        await facts.commit(also);
        return true;
      } catch (err) {
        const refused = refusedAtCommit(err);
        if (!refused) throw err;
        ctx.status = refused.status;
        ctx.body = refused.body;
        return false;
      }
    };
    // SMART requires both; oidc-provider sends only Cache-Control: no-store.
    ctx.set('Cache-Control', 'no-store');
    ctx.set('Pragma', 'no-cache');
    if (ctx.status !== 200) return void (await commit());
    const body = ctx.body as { access_token: string; scope?: string; expires_in?: number };
    const claims = decodeJwt(body.access_token);
    const grant = ctx.oidc.entities.Grant;
    const context = await facts.grantContext(grant?.jti);
    const user = await facts.user(grant?.accountId);
    // Issuing a token is recorded before it is handed out (IHE IUA ITI-71), and so is the security alert
    // of an emergency access, in the same commit as the request's other writes (the consumed code, the
    // token's grant link); if that fails, the token is not handed out.
    const records = issuanceRecords({
      issuer, address: ctx.ip, recorded: new Date(), clientId: String(ctx.oidc.client?.clientId), grantType: String(ctx.oidc.params?.grant_type),
      answer: body, claims, grant, context, user,
    });
    if (!(await commit(() => records.map((record) => audit.append(record))))) return;
    onIssued?.(String(ctx.oidc.params?.grant_type));
    if (context) ctx.body = withLaunchContext(body, context.launch);
  };
}

/**
 * The answer when the request's writes were refused at commit: its client assertion was used before
 * (invalid_client) or its code or refresh token was used first by another request (invalid_grant);
 * undefined for any other failure (the store's), which is not the client's to hear about.
 */
export function refusedAtCommit(err: unknown): { status: number; body: { error: string; error_description: string } } | undefined {
  if (!(err instanceof errors.InvalidClientAuth || err instanceof errors.InvalidGrant)) return undefined;
  return { status: err.status, body: { error: err.error, error_description: err.error_description! } };
}

/** The token answer with the SMART launch context; standard members win: the context never overwrites a token field. */
export function withLaunchContext<T extends object>(body: T, launch: LaunchContext): LaunchContext & T {
  return { ...launch, ...body };
}

export interface Issuance {
  issuer: string;
  address: string;
  recorded: Date;
  clientId: string;
  grantType: string;
  answer: { scope?: string; expires_in?: number };
  /** The access token's claims. */
  claims: JWTPayload;
  grant?: { accountId?: string; clientId?: string };
  context?: GrantContext;
  user?: User;
}

/** The records of issuing a token: IHE IUA ITI-71, and the security alert of an emergency access (break-the-glass). */
export function issuanceRecords(i: Issuance): AuditEvent[] {
  const { user, context, grant, claims } = i;
  const auditUser = user && { sub: user.id, name: user.name, roles: user.attributes.roles ?? [], organization: user.attributes.organization, organizationId: user.attributes.organizationId };
  const iua = (claims.extensions as { ihe_iua?: { purpose_of_use?: unknown } } | undefined)?.ihe_iua;
  const records = [accessTokenIssued({
    recorded: i.recorded, issuer: i.issuer, address: i.address,
    clientId: i.clientId, grantType: i.grantType, scope: i.answer.scope ?? '',
    jti: String(claims.jti), user: auditUser, patient: context?.launch.patient, purposeOfUse: codingList(iua?.purpose_of_use), expiresIn: i.answer.expires_in,
  })];
  if (context?.emergencyReason && context.purposeOfUse && grant) {
    records.push(emergencyOverrideStarted({
      issuer: i.issuer,
      recorded: i.recorded,
      user: { sub: String(grant.accountId), name: user?.name, roles: user?.attributes.roles ?? [] },
      clientId: String(grant.clientId),
      purpose: context.purposeOfUse,
      reason: context.emergencyReason,
      jti: String(claims.jti),
      patient: context.launch.patient,
      address: i.address,
      amr: Array.isArray(claims.amr) ? (claims.amr as string[]) : undefined,
      stepUpAmr: context.stepUpAmr,
    }));
  }
  return records;
}
