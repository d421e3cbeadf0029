// /authorize: an app may ask for a purpose of use up front (a purpose_of_use parameter or scope token);
// the consent step decides whether the user may have it. An emergency purpose only the person can choose.
import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import { requestedPurpose } from '../../hcs/purpose-choice.ts';
import { isEmergency } from '../../hcs/policy.ts';
import { isAuthorizationRoute, type RuleDeps } from './rules.ts';

/** The `purpose_of_use` validator (extraParams). */
export function purposeRule({ config }: RuleDeps) {
  return async function purpose(ctx: KoaContextWithOIDC, value: string | undefined) {
    if (!isAuthorizationRoute(ctx)) return;
    const requested = requestedPurpose(String(ctx.oidc.params?.scope ?? ''), value);
    if (requested.error) throw new errors.InvalidRequest(requested.error);
    if (requested.code && isEmergency(config.policy, requested.code)) {
      throw new errors.InvalidRequest(`an app cannot ask for ${requested.code}: only the person can choose an emergency access`);
    }
  };
}
