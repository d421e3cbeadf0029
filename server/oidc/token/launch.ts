// /authorize: an EHR launch id must be known, unexpired, unused, issued for this app and used with the FHIR
// base it was made for (the interaction consumes it at consent).
import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import { findEhrLaunch, type EhrLaunch } from '../launch-store.ts';
import { fhirAudience } from './audience.ts';
import { isAuthorizationRoute, type RuleDeps } from './rules.ts';

/** An EHR launch as found (undefined: unknown, expired or used) may serve `clientId`; throws invalid_request otherwise. */
export function checkEhrLaunch(found: Pick<EhrLaunch, 'clientId'> | undefined, clientId: string | undefined): void {
  if (!found) throw new errors.InvalidRequest('launch is unknown, expired or already used');
  if (found.clientId && found.clientId !== clientId) throw new errors.InvalidRequest('launch was issued for another app');
}

/** The `launch` validator (extraParams); runs after the `aud` validator, which leaves the checked aud in the params. */
export function launchRule({ config, db }: RuleDeps) {
  return async function launch(ctx: KoaContextWithOIDC, value: string | undefined, client?: { clientId: string }) {
    if (!isAuthorizationRoute(ctx) || value === undefined) return;
    checkEhrLaunch(await findEhrLaunch(db, String(value)), client?.clientId);
    // A launch's patient, encounter and fhirContext were checked on this server's FHIR base: elsewhere the same ids may be other people.
    if (fhirAudience(config, ctx.oidc.params?.aud as string | undefined) !== config.fhirBase) {
      throw new errors.InvalidRequest(`launch was made for the FHIR server ${config.fhirBase}: aud must name it`);
    }
  };
}
