// Post-processing of token endpoint responses: the SMART launch context and the caching headers.
import type { KoaContextWithOIDC } from 'oidc-provider';
import type { Db } from '../db.ts';
import { findLaunchContext } from './launch-store.ts';

export function smartTokenResponse(db: Db) {
  return async function addLaunchContext(ctx: KoaContextWithOIDC, next: () => Promise<void>) {
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
    const context = await findLaunchContext(db, grant.jti);
    // Standard members win: the context never overwrites a token field.
    if (context) ctx.body = { ...context, ...(ctx.body as object) };
  };
}
