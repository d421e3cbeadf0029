// Shared pieces of the developer portal (/apps) and the account pages (/account/*): form parsing
// and the session of a person signed in at /account/login.
import { bodyParser } from '@koa/bodyparser';
import type { Context } from 'koa';
import { hostCookie } from '../net/host-cookie.ts';
import { nowSeconds, type Db } from '../db.ts';
import { findUser, type User } from '../oidc/users.ts';
import type { Config } from '../config.ts';
import { mustUseSecondFactor } from '../auth/second-factor.ts';
import {
  completePendingSignIn, endSession, findAccountSession, sessionsOf, findPendingSignIn, startAccountSession, startPendingSignIn, type PendingSignIn, type PendingStep,
} from '../auth/sessions.ts';

export const formBody = bodyParser({ enableTypes: ['form'], formLimit: '64kb' });

/** One form field as a string; arrays (repeated names) and missing fields become ''. */
export function field(body: unknown, name: string): string {
  const value = (body as Record<string, unknown> | undefined)?.[name];
  return typeof value === 'string' ? value : '';
}

export { sendPage } from '../views.ts';

export const FORM_EXPIRED = { title: 'Form expired', description: 'The form expired. Reload the page and try again.', hint: 'Go back, reload the page and try again.' };

const SESSION_COOKIE = 'smart_auth.account';
export const SESSION_TTL_SECONDS = 8 * 3600;

/** Sets (or, with '', clears) one of the account cookies. */
function setCookie(ctx: Context, cookie: string, value: string, maxAge?: number) {
  const { name, options } = hostCookie(ctx, cookie);
  ctx.cookies.set(name, value, { ...options, maxAge });
}

const getCookie = (ctx: Context, cookie: string) => ctx.cookies.get(hostCookie(ctx, cookie).name, { signed: true });

/**
 * Starts a session for a user: a row in user_sessions (server/auth/sessions.ts) and a signed,
 * HttpOnly cookie holding its random token. Logging out deletes the row, so a copied cookie stops working.
 */
export async function setAccountSession(ctx: Context, db: Db, userId: string, amr: readonly string[]): Promise<void> {
  setSessionCookie(ctx, await startAccountSession(db, userId, { address: ctx.ip, userAgent: ctx.get('user-agent'), amr }, SESSION_TTL_SECONDS));
}

function setSessionCookie(ctx: Context, token: string) {
  setCookie(ctx, SESSION_COOKIE, token, SESSION_TTL_SECONDS * 1000);
}

// A sign-in between the password and the second factor: its own cookie, its own row (kind pending).
const PENDING_COOKIE = 'smart_auth.account_pending';

export async function startPendingAccountSignIn(ctx: Context, db: Db, userId: string, step: PendingStep): Promise<void> {
  const { token } = await startPendingSignIn(db, userId, { address: ctx.ip, userAgent: ctx.get('user-agent'), amr: ['pwd'] }, step);
  setCookie(ctx, PENDING_COOKIE, token, 600_000);
}

export async function pendingAccountSignIn(ctx: Context, db: Db): Promise<PendingSignIn | undefined> {
  const token = getCookie(ctx, PENDING_COOKIE);
  return token ? findPendingSignIn(db, token) : undefined;
}

/** The second step is done: the pending sign-in becomes the session (under a new cookie token). */
export async function completeAccountSignIn(ctx: Context, db: Db, pending: PendingSignIn, amr: readonly string[]): Promise<boolean> {
  const token = await completePendingSignIn(db, pending.id, amr, SESSION_TTL_SECONDS);
  setCookie(ctx, PENDING_COOKIE, '');
  if (token) setSessionCookie(ctx, token);
  return Boolean(token);
}

/** The live session of the signed-in person (its id, user id and amr), or undefined (no cookie, bad signature, ended, expired). */
export async function accountSession(ctx: Context, db: Db): Promise<{ id: string; userId: string; amr: string[] } | undefined> {
  const token = getCookie(ctx, SESSION_COOKIE);
  return token ? findAccountSession(db, token) : undefined;
}

/**
 * The signed-in, active user and their session id, or undefined. A session without a second factor does not
 * count once the user must use one (an administrator's or the policy's new requirement): they sign in again.
 */
export async function signedInUser(ctx: Context, db: Db, config: Pick<Config, 'policy'>): Promise<{ user: User; sessionId: string } | undefined> {
  const session = await accountSession(ctx, db);
  const user = session && (await findUser(db, session.userId));
  if (!user || user.disabled) return undefined;
  return mustUseSecondFactor(config, user) && !session!.amr.includes('mfa') ? undefined : { user, sessionId: session!.id };
}

/**
 * How long after signing in a person may change how they sign in (second factors): a session cookie
 * copied later cannot swap the victim's authenticator or passkey for the thief's.
 */
export const RECENT_SIGN_IN_SECONDS = 600;

/** Whether the session was started by a sign-in within RECENT_SIGN_IN_SECONDS. */
export async function signedInRecently(db: Db, found: { user: User; sessionId: string }): Promise<boolean> {
  const session = (await sessionsOf(db, found.user.id)).find((s) => s.id === found.sessionId);
  return Boolean(session && nowSeconds() - session.createdAt <= RECENT_SIGN_IN_SECONDS);
}

/** Ends the person's session (the row, not only the cookie) and clears the cookie. */
export async function clearAccountSession(ctx: Context, db: Db): Promise<void> {
  const session = await accountSession(ctx, db);
  if (session) await endSession(db, session.userId, session.id);
  setCookie(ctx, SESSION_COOKIE, '');
}

/** Where to go after login: a local path under /account/ only; anything else goes to the default. */
export function safeReturnPath(value: unknown, fallback = '/account/apps'): string {
  if (typeof value !== 'string') return fallback;
  if (!/^\/account\/[A-Za-z0-9\-._~/]*$/.test(value)) return fallback;
  if (value.includes('//') || value.split('/').some((segment) => segment === '..' || segment === '.')) return fallback;
  return value;
}
