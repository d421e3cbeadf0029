// POST /introspect with a bearer token instead of client authentication (SMART 2.2: an
// appropriately scoped access token, here one carrying `introspect`, may introspect any token).
// Requests with client credentials go on to oidc-provider, which authenticates the client.
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import type { Context } from 'koa';
import type { Config } from '../config.ts';
import type { Db } from '../db.ts';
import type { ProviderHost } from './provider-host.ts';
import { introspectToken, INTROSPECTION_PATH, sendIntrospection, ownTokenVerifier, type TokenContext } from './introspection.ts';
import { bearerToken } from '../resource-server/verify-token.ts';
import { boundKey } from '../resource-server/dpop.ts';
import { parseScopes } from '../smart/scopes.ts';

const form = bodyParser({ enableTypes: ['form'], formLimit: '64kb' });

function refuse(ctx: Context, status: 401 | 403, error: string, description: string) {
  ctx.status = status;
  ctx.set('WWW-Authenticate', `Bearer error="${error}", error_description="${description}"`);
  ctx.set('Cache-Control', 'no-store');
  ctx.body = { error, error_description: description };
}

export function bearerIntrospection({ config, db, host, isRevoked, introspections }: { config: Config; db: Db; host: ProviderHost } & Pick<TokenContext, 'isRevoked' | 'introspections'>): Router {
  const router = new Router();
  const verifyOwn = ownTokenVerifier({ issuer: config.issuer, keys: host.verificationKeys });
  router.post(INTROSPECTION_PATH, async (ctx, next) => {
    const bearer = bearerToken(ctx.get('authorization'));
    if (!bearer) return next();
    const caller = await verifyOwn(bearer);
    // A DPoP-bound token is good only with a proof, which this endpoint does not take (RFC 9449).
    if (!caller || boundKey(caller) || (await isRevoked(caller))) {
      return refuse(ctx, 401, 'invalid_token', 'the bearer token is not a valid access token of this server');
    }
    const scopes = parseScopes(String(caller.scope ?? '')).scopes;
    if (!scopes.some((s) => s.kind === 'other' && s.value === 'introspect')) {
      return refuse(ctx, 403, 'insufficient_scope', 'the bearer token lacks the introspect scope');
    }
    await form(ctx, async () => {});
    const sent = (ctx.request.body as Record<string, unknown>).token;
    const token = typeof sent === 'string' ? sent : '';
    const context = { db, policy: config.policy, issuer: config.issuer, fhirBase: config.fhirBase, fhirAudiences: config.fhirAudiences, provider: host.provider, verifyOwn, isRevoked, introspections };
    ctx.set('Cache-Control', 'no-store');
    await sendIntrospection(ctx, context, String(caller.client_id), token, await introspectToken(token, context, { guard: true }));
  });
  return router;
}
