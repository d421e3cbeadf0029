// How long an access token lives and whether it may be refreshed: the one place for the emergency
// (break-the-glass) rule. Pure.
import type { Config } from '../../config.ts';
import type { GrantContext } from '../launch-store.ts';
import { SHORT_ACCESS_TOKEN_TTL } from '../../sandbox.ts';

export type LifetimeConfig = Pick<Config, 'accessTokenTtl' | 'backendTokenTtl' | 'btgTokenTtl' | 'demo'>;

const isEmergencyGrant = (grant: GrantContext | undefined) => Boolean(grant?.emergencyReason);

/** Seconds: a backend service's token, an emergency access's token, or an app's token. */
export function accessTokenLifetime(config: LifetimeConfig, token: { backend: boolean; grant?: GrantContext }): number {
  if (token.backend) return config.backendTokenTtl;
  if (isEmergencyGrant(token.grant)) return config.btgTokenTtl;
  // The sandbox (demo mode only) can launch an app whose token expires in seconds, for the app to handle.
  return config.demo && token.grant?.sandboxFailure === 'token_expires' ? SHORT_ACCESS_TOKEN_TTL : config.accessTokenTtl;
}

/** Emergency access is never refreshed: it ends with its short-lived access token. */
export function mayRefresh(grant: GrantContext | undefined): boolean {
  return !isEmergencyGrant(grant);
}
