// /authorize: an EHR launch id must be known, unexpired, unused and issued for this app (the interaction
// consumes it at consent).
import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import { findEhrLaunch } from '../launch-store.ts';
import { isAuthorizationRoute, type RuleDeps } from './rules.ts';

/** The `launch` validator (extraParams). */
export function launchRule({ db }: RuleDeps) {
  return async function launch(ctx: KoaContextWithOIDC, value: string | undefined, client?: { clientId: string }) {
    if (!isAuthorizationRoute(ctx) || value === undefined) return;
    const found = await findEhrLaunch(db, String(value));
    if (!found) throw new errors.InvalidRequest('launch is unknown, expired or already used');
    if (found.clientId && found.clientId !== client?.clientId) throw new errors.InvalidRequest('launch was issued for another app');
  };
}
