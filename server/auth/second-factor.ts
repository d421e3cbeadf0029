// The step after the password: who must show a second factor, checking a typed code (TOTP or
// recovery code) against the lockout, and confirming a new authenticator. Shared by the sign-in
// of an authorization (/interaction) and of the account pages (/account).
import type { Db } from '../db.ts';
import type { Config } from '../config.ts';
import type { User } from '../oidc/users.ts';
import type { AuditSink } from '../audit/store.ts';
import { recordSecondFactor, recordSecurityChange } from '../audit/security-events.ts';
import { tooManyAttempts, type LoginThrottle } from '../limits/login-throttle.ts';
import { rolesRequireSecondFactor } from '../hcs/policy.ts';
import { ACR, acrSatisfies, type AcrLevel, type SignInMethod } from './acr.ts';
import { confirmTotp, hasSecondFactor, useRecoveryCode, useTotp } from './factors.ts';

export interface SecondFactorDeps {
  config: Config;
  db: Db;
  audit: AuditSink;
  loginThrottle?: LoginThrottle;
}

/** Where a request came from, for the lockout and the audit. */
export interface Origin {
  address?: string;
  clientId?: string;
}

export const CODE_FAILED = 'That code is not correct, or it was already used.';

/** Whether the user must sign in with a second factor: set on the user, by one of their roles, or asked for by the app. */
export function mustUseSecondFactor(config: Pick<Config, 'policy'>, user: User, wanted?: AcrLevel): boolean {
  return Boolean(user.attributes.requireMfa) || rolesRequireSecondFactor(config.policy, user.attributes.roles ?? []) || (wanted !== undefined && wanted !== ACR.pwd);
}

/**
 * The acr a sign-in of this user must reach: what the app asks for, and at least mfa when the user has a second
 * factor or must use one (what a new sign-in would ask for), so an older password-only session is not enough.
 */
export async function acrNeeded(deps: { config: Pick<Config, 'policy'>; db: Db }, user: User, requested?: AcrLevel): Promise<AcrLevel | undefined> {
  const has = await hasSecondFactor(deps.db, user.id);
  const secondFactor = has.totp || has.passkey || mustUseSecondFactor(deps.config, user);
  return secondFactor && !acrSatisfies(requested, ACR.mfa) ? ACR.mfa : requested;
}

/**
 * After a correct password: `verify` a factor the user has (anyone with one is always asked),
 * `enrol` one first when they must have one and have none, or `done`. An enrolment shows a secret of its own
 * sign-in (auth/enrolment-page.ts): one another sign-in was shown (perhaps someone else's who knew the password) is never adopted.
 */
export async function stepAfterPassword(deps: Pick<SecondFactorDeps, 'config' | 'db'>, user: User, wanted?: AcrLevel): Promise<'done' | 'verify' | 'enrol'> {
  const has = await hasSecondFactor(deps.db, user.id);
  if (has.totp || has.passkey) return 'verify';
  return mustUseSecondFactor(deps.config, user, wanted) ? 'enrol' : 'done';
}

export type CodeCheck = { ok: true; method: Extract<SignInMethod, 'otp' | 'recovery'> } | { ok: false; message: string; retryAfter?: number };

/**
 * Checks a code typed as a second factor: a TOTP code (±1 step, never twice) or an unused recovery
 * code. Attempts count toward the user's lockout like passwords; a locked user is refused unchecked.
 */
export async function checkCode(deps: SecondFactorDeps, user: User, code: string, origin: Origin): Promise<CodeCheck> {
  const { config, db, audit, loginThrottle } = deps;
  const fail = (failure: string, amr: string[] = ['otp']) => recordSecondFactor(audit, { issuer: config.issuer, ...origin, user, amr, failure });
  const throttle = await loginThrottle?.check(user.username, origin.address);
  if (throttle?.retryAfter !== undefined) {
    await fail('too many failed logins from this address');
    return { ok: false, message: tooManyAttempts(throttle.retryAfter), retryAfter: throttle.retryAfter };
  }
  if (throttle?.locked) {
    await loginThrottle!.failed(user.username, origin.address);
    await fail('account locked after repeated failed logins');
    return { ok: false, message: CODE_FAILED };
  }
  const trimmed = code.trim();
  const method = /^\d{6}$/.test(trimmed)
    ? ((await useTotp(db, user.id, trimmed, config.keyEncryptionSecret)) ? 'otp' : undefined)
    : trimmed && (await useRecoveryCode(db, user.id, trimmed)) ? 'recovery' : undefined;
  if (!method) {
    await loginThrottle?.failed(user.username, origin.address);
    await fail('wrong or reused second-factor code');
    return { ok: false, message: CODE_FAILED };
  }
  await loginThrottle?.succeeded(user.username, origin.address);
  await recordSecondFactor(audit, { issuer: config.issuer, ...origin, user, amr: ['otp'] });
  return { ok: true, method };
}

/** Confirms the TOTP set-up of a session (`sessionId`) with its first code; the recovery codes to show once, or a message. */
export async function confirmEnrolment(deps: SecondFactorDeps, user: User, sessionId: string, code: string, origin: Origin): Promise<{ recoveryCodes: string[] } | { message: string }> {
  const { config, db, audit, loginThrottle } = deps;
  const throttle = await loginThrottle?.check(user.username, origin.address);
  if (throttle?.retryAfter !== undefined || throttle?.locked) {
    await loginThrottle?.failed(user.username, origin.address);
    return { message: throttle.retryAfter !== undefined ? tooManyAttempts(throttle.retryAfter) : CODE_FAILED };
  }
  const recoveryCodes = await confirmTotp(db, user.id, sessionId, code, config.keyEncryptionSecret);
  if (!recoveryCodes) {
    await loginThrottle?.failed(user.username, origin.address);
    await recordSecondFactor(audit, { issuer: config.issuer, ...origin, user, amr: ['otp'], failure: 'wrong first code of a new authenticator' });
    return { message: CODE_FAILED };
  }
  await loginThrottle?.succeeded(user.username, origin.address);
  await recordSecurityChange(audit, { issuer: config.issuer, address: origin.address, user, change: 'create', what: 'totp' });
  return { recoveryCodes };
}
