// /authorize: an app may ask for a purpose of use up front (a purpose_of_use parameter or scope token);
// the consent step decides whether the user may have it. An emergency purpose only the person can choose.
import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import { requestedPurpose, requestedPurposeError } from '../../hcs/purpose-choice.ts';
import type { HcsPolicy } from '../../hcs/policy.ts';
import { isAuthorizationRoute, type RuleDeps } from './rules.ts';

/** The purpose an app asks for up front (scope tokens and the parameter), if any; throws invalid_request when it may not. */
export function checkRequestedPurpose(policy: HcsPolicy, scope: string, parameter: unknown): string | undefined {
  const requested = requestedPurpose(scope, parameter);
  const error = requestedPurposeError(policy, requested);
  if (error) throw new errors.InvalidRequest(error);
  return requested.code;
}

/** The `purpose_of_use` validator (extraParams). */
export function purposeRule({ config }: RuleDeps) {
  return async function purpose(ctx: KoaContextWithOIDC, value: string | undefined) {
    if (!isAuthorizationRoute(ctx)) return;
    checkRequestedPurpose(config.policy, String(ctx.oidc.params?.scope ?? ''), value);
  };
}
