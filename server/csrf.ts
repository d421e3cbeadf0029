// CSRF protection for the server's own forms: a double-submit token in a signed,
// HttpOnly, SameSite=Lax cookie (__Host- over https), compared in constant time.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Context } from 'koa';
import { hostCookie } from './net/host-cookie.ts';

const COOKIE = 'smart_auth.csrf';

export function csrfToken(ctx: Context): string {
  const { name, options } = hostCookie(ctx, COOKIE);
  const existing = ctx.cookies.get(name, { signed: true });
  if (existing) return existing;
  const token = randomBytes(24).toString('base64url');
  ctx.cookies.set(name, token, options);
  return token;
}

export function validCsrf(ctx: Context, submitted: unknown): boolean {
  const expected = ctx.cookies.get(hostCookie(ctx, COOKIE).name, { signed: true });
  if (!expected || typeof submitted !== 'string') return false;
  const a = Buffer.from(expected);
  const b = Buffer.from(submitted);
  return a.length === b.length && timingSafeEqual(a, b);
}
