// The sandbox of the demo launcher (demo mode only): options an app developer sets on an EHR launch,
// stored with the launch id, and what they do. Skipping login signs the chosen user in; skipping consent
// grants what was asked; a simulated failure gives the real protocol answer at the step where it happens.
import type { KoaContextWithOIDC } from 'oidc-provider';
import { decodeJwt } from 'jose';
import type { Db } from './db.ts';
import { nowSeconds } from './db.ts';
import { factsOf } from './oidc/token/request.ts';
import { revokeAccessToken } from './oidc/revocation.ts';

/** Each failure an app must handle, and where it shows. */
export const SANDBOX_FAILURES = {
  auth_denied: 'Authorization denied: the redirect URI gets error=access_denied',
  auth_invalid_scope: 'Invalid scope: the redirect URI gets error=invalid_scope',
  token_error: 'Token endpoint error: the code exchange gets 400 invalid_grant',
  token_expires: 'Short-lived access token: it expires after 10 seconds',
  token_revoked: 'Revoked access token: /fhir answers 401 invalid_token',
  refresh_refused: 'Refresh token refused: the refresh gets 400 invalid_grant',
} as const;

export type SandboxFailure = keyof typeof SANDBOX_FAILURES;

export const isSandboxFailure = (value: unknown): value is SandboxFailure => typeof value === 'string' && Object.hasOwn(SANDBOX_FAILURES, value);

/** The lifetime of the short-lived access token (token_expires). */
export const SHORT_ACCESS_TOKEN_TTL = 10;

export interface SandboxOptions {
  /** Who is signed in when login is skipped. */
  username?: string;
  skipLogin: boolean;
  skipConsent: boolean;
  failure?: SandboxFailure;
}

export async function saveSandboxLaunch(db: Db, launchId: string, options: SandboxOptions, ttlSeconds: number): Promise<void> {
  await db('sandbox_launches').insert({
    launch_id: launchId, username: options.username ?? null, skip_login: options.skipLogin, skip_consent: options.skipConsent,
    failure: options.failure ?? null, expires_at: nowSeconds() + ttlSeconds,
  });
}

/** The sandbox options of a launch; undefined when it has none (or they expired). */
export async function findSandboxLaunch(db: Db, launchId: string): Promise<SandboxOptions | undefined> {
  const row = await db('sandbox_launches').where('launch_id', launchId).andWhere('expires_at', '>', nowSeconds()).first();
  if (!row) return undefined;
  return {
    username: row.username ?? undefined, skipLogin: Boolean(row.skip_login), skipConsent: Boolean(row.skip_consent),
    failure: isSandboxFailure(row.failure) ? row.failure : undefined,
  };
}

/** Removes sandbox options past their expiry: their launch can no longer be used. */
export async function purgeExpiredSandboxLaunches(db: Db): Promise<number> {
  return db('sandbox_launches').where('expires_at', '<', nowSeconds()).delete();
}

/** The invalid_grant description when the grant of a token request simulates a failure at the token endpoint. */
export function tokenEndpointFailure(failure: string | undefined, grantType: unknown): string | undefined {
  if (failure === 'token_error' && grantType === 'authorization_code') return 'sandbox: the token endpoint refuses this code (simulated failure)';
  if (failure === 'refresh_refused' && grantType === 'refresh_token') return 'sandbox: the refresh token is refused (simulated failure)';
  return undefined;
}

/** Token endpoint middleware: the access token of a token_revoked grant is revoked as soon as it is issued. */
export function sandboxRevocation(db: Db) {
  return async function revokeSandboxTokens(ctx: KoaContextWithOIDC, next: () => Promise<void>) {
    await next();
    if (ctx.oidc?.route !== 'token' || ctx.status !== 200) return;
    const context = await factsOf(db, ctx).grantContext(ctx.oidc.entities.Grant?.jti);
    if (context?.sandboxFailure !== 'token_revoked') return;
    const claims = decodeJwt((ctx.body as { access_token: string }).access_token);
    await revokeAccessToken(db, String(claims.jti), Number(claims.exp));
  };
}
