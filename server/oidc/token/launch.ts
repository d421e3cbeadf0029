// /authorize: an EHR launch id must be known, unexpired, unused and issued for this app (the interaction
// consumes it at consent).
import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import { findEhrLaunch, type EhrLaunch } from '../launch-store.ts';
import { isAuthorizationRoute, type RuleDeps } from './rules.ts';

/** An EHR launch as found (undefined: unknown, expired or used) may serve `clientId`; throws invalid_request otherwise. */
export function checkEhrLaunch(found: Pick<EhrLaunch, 'clientId'> | undefined, clientId: string | undefined): void {
  if (!found) throw new errors.InvalidRequest('launch is unknown, expired or already used');
  if (found.clientId && found.clientId !== clientId) throw new errors.InvalidRequest('launch was issued for another app');
}

/** The `launch` validator (extraParams). */
export function launchRule({ db }: RuleDeps) {
  return async function launch(ctx: KoaContextWithOIDC, value: string | undefined, client?: { clientId: string }) {
    if (!isAuthorizationRoute(ctx) || value === undefined) return;
    checkEhrLaunch(await findEhrLaunch(db, String(value)), client?.clientId);
  };
}
