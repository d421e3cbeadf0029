// Shared pieces of the developer portal (/apps) and the account pages (/account/*): form parsing
// and the signed session cookie of a person signed in at /account/login.
import { bodyParser } from '@koa/bodyparser';
import type { Context } from 'koa';

export const formBody = bodyParser({ enableTypes: ['form'], formLimit: '64kb' });

/** One form field as a string; arrays (repeated names) and missing fields become ''. */
export function field(body: unknown, name: string): string {
  const value = (body as Record<string, unknown> | undefined)?.[name];
  return typeof value === 'string' ? value : '';
}

export { sendPage } from '../views.ts';

export const FORM_EXPIRED = { title: 'Form expired', description: 'The form expired. Reload the page and try again.', hint: 'Go back, reload the page and try again.' };

const SESSION_COOKIE = 'smart_auth.account';
const SESSION_PATH = '/account';
export const SESSION_TTL_SECONDS = 8 * 3600;

/** Starts a session for a user: a signed, HttpOnly cookie holding the user id and its expiry. */
export function setAccountSession(ctx: Context, userId: string): void {
  const expires = Math.floor(Date.now() / 1000) + SESSION_TTL_SECONDS;
  ctx.cookies.set(SESSION_COOKIE, `${userId}.${expires}`, {
    signed: true, httpOnly: true, sameSite: 'lax', secure: ctx.secure, maxAge: SESSION_TTL_SECONDS * 1000, path: SESSION_PATH, overwrite: true,
  });
}

/** The user id of the signed-in person, or undefined (no cookie, bad signature, expired). */
export function accountSession(ctx: Context): string | undefined {
  const value = ctx.cookies.get(SESSION_COOKIE, { signed: true });
  if (!value) return undefined;
  const dot = value.lastIndexOf('.');
  if (dot <= 0) return undefined;
  const expires = Number(value.slice(dot + 1));
  if (!Number.isInteger(expires) || expires <= Math.floor(Date.now() / 1000)) return undefined;
  return value.slice(0, dot);
}

export function clearAccountSession(ctx: Context): void {
  ctx.cookies.set(SESSION_COOKIE, '', { signed: true, httpOnly: true, sameSite: 'lax', secure: ctx.secure, path: SESSION_PATH, overwrite: true });
}

/** Where to go after login: a local path under /account/ only; anything else goes to the default. */
export function safeReturnPath(value: unknown, fallback = '/account/apps'): string {
  if (typeof value !== 'string') return fallback;
  if (!/^\/account\/[A-Za-z0-9\-._~/]*$/.test(value)) return fallback;
  if (value.includes('//') || value.split('/').some((segment) => segment === '..' || segment === '.')) return fallback;
  return value;
}
