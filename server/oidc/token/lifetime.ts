// How long an access token lives and whether it may be refreshed: the one place for the emergency
// (break-the-glass) rule. Pure.
import type { Config } from '../../config.ts';
import type { GrantContext } from '../launch-store.ts';

export type LifetimeConfig = Pick<Config, 'accessTokenTtl' | 'backendTokenTtl' | 'btgTokenTtl'>;

const isEmergencyGrant = (grant: GrantContext | undefined) => Boolean(grant?.emergencyReason);

/** Seconds: a backend service's token, an emergency access's token, or an app's token. */
export function accessTokenLifetime(config: LifetimeConfig, token: { backend: boolean; grant?: GrantContext }): number {
  if (token.backend) return config.backendTokenTtl;
  return isEmergencyGrant(token.grant) ? config.btgTokenTtl : config.accessTokenTtl;
}

/** Emergency access is never refreshed: it ends with its short-lived access token. */
export function mayRefresh(grant: GrantContext | undefined): boolean {
  return !isEmergencyGrant(grant);
}
