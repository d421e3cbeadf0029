// This server's cookies. Over https their names carry the __Host- prefix (RFC 6265bis): a browser keeps
// such a cookie only when this host set it Secure, with Path=/ and no Domain, so a sibling subdomain
// cannot plant one (its own session or CSRF token: session fixation, login CSRF).
import type { Context } from 'koa';

export const hostCookieName = (name: string, secure: boolean) => (secure ? `__Host-${name}` : name);

/** The name and attributes of one of this server's signed, HttpOnly, SameSite=Lax cookies for this request. */
export function hostCookie(ctx: Context, name: string) {
  return {
    name: hostCookieName(name, ctx.secure),
    options: { signed: true, httpOnly: true, sameSite: 'lax', secure: ctx.secure, path: '/', overwrite: true } as const,
  };
}
