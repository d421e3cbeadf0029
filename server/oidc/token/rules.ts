// What every token rule is given: the configuration and the database (facts and writes go through
// RequestFacts, one per request).
import type { Config } from '../../config.ts';
import type { Db } from '../../db.ts';
import type { KoaContextWithOIDC } from 'oidc-provider';

export interface RuleDeps {
  config: Config;
  db: Db;
}

/** The routes where an app asks for authorization (the extraParams validators run there, and at /token too). */
export const isAuthorizationRoute = (ctx: KoaContextWithOIDC) =>
  ctx.oidc.route === 'authorization' || ctx.oidc.route === 'pushed_authorization_request';
