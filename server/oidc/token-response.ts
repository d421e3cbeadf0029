// Post-processing of token endpoint responses: the SMART launch context, the caching headers,
// invalid_client for every assertion failure, and the security alert of an emergency access.
import type { KoaContextWithOIDC } from 'oidc-provider';
import { decodeJwt } from 'jose';
import type { Db } from '../db.ts';
import { findGrantContext } from './launch-store.ts';
import { findUser } from './users.ts';
import type { AuditSink } from '../audit/store.ts';
import { emergencyOverrideStarted } from '../audit/events.ts';

export function smartTokenResponse(db: Db, issuer: string, audit: AuditSink) {
  return async function smartTokenEndpoint(ctx: KoaContextWithOIDC, next: () => Promise<void>) {
    await next();
    if (ctx.oidc?.route !== 'token') return;
    // SMART requires both; oidc-provider sends only Cache-Control: no-store.
    ctx.set('Cache-Control', 'no-store');
    ctx.set('Pragma', 'no-cache');
    // SMART: every client assertion failure is invalid_client, also one that is not a JWT at all.
    const error = ctx.body as { error?: string; error_description?: string } | undefined;
    if (ctx.status === 400 && error?.error === 'invalid_request' && error.error_description === 'invalid client_assertion format') {
      ctx.status = 401;
      ctx.body = { error: 'invalid_client', error_description: 'the client assertion is not a valid JWT' };
      return;
    }
    const grant = ctx.oidc.entities.Grant;
    if (ctx.status !== 200 || !grant?.jti) return;
    const context = await findGrantContext(db, grant.jti);
    const body = ctx.body as { access_token: string };
    if (context?.emergencyReason && context.purposeOfUse) {
      // The alert is part of issuing the token: if it cannot be recorded, the token is not handed out.
      const user = grant.accountId ? await findUser(db, grant.accountId) : undefined;
      await audit.append(emergencyOverrideStarted({
        issuer,
        recorded: new Date(),
        user: { sub: String(grant.accountId), name: user?.name, roles: user?.attributes.roles ?? [] },
        clientId: String(grant.clientId),
        purpose: context.purposeOfUse,
        reason: context.emergencyReason,
        jti: String(decodeJwt(body.access_token).jti),
        patient: context.launch.patient,
        address: ctx.ip,
      }));
    }
    // Standard members win: the context never overwrites a token field.
    if (context) ctx.body = { ...context.launch, ...body };
  };
}
