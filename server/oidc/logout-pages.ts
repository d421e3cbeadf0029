// RP-initiated logout's pages (OpenID Connect RP-Initiated Logout 1.0) in the product's own views, under
// the pages' Content-Security-Policy. oidc-provider checks its xsrf token at /logout/confirm; a submitted
// `logout` ends the session, none ("No, stay signed in") ends only the app's authorization in it.
import type { KoaContextWithOIDC } from 'oidc-provider';
import { allowOwnScripts, sendPage } from '../views.ts';

const appName = (ctx: KoaContextWithOIDC) => ctx.oidc.client?.clientName ?? ctx.oidc.client?.clientId;

async function logoutPage(ctx: KoaContextWithOIDC, signedIn: boolean) {
  const { secret } = ctx.oidc.session!.state as { secret: string };
  await sendPage(ctx, 'logout', { title: 'Sign out', signedIn, app: appName(ctx), action: ctx.oidc.urlFor('end_session_confirm'), xsrf: secret });
}

/** oidc-provider's features.rpInitiatedLogout hooks: the question to a signed-in person, and the page after. */
export const logoutSources = {
  logoutSource: (ctx: KoaContextWithOIDC) => logoutPage(ctx, true),
  postLogoutSuccessSource: (ctx: KoaContextWithOIDC) => sendPage(ctx, 'signed-out', { title: 'Signed out', app: appName(ctx) }),
};

/**
 * Provider middleware: without a session there is nothing to ask, and oidc-provider answers with a page
 * of its own that goes on by an inline script. This answers with the product's page, which goes on by a
 * script from /static (or its Continue button).
 */
export async function logoutWithoutSession(ctx: KoaContextWithOIDC, next: () => Promise<void>) {
  await next();
  if (ctx.oidc?.route !== 'end_session' || ctx.status !== 200 || ctx.oidc.session?.accountId) return;
  allowOwnScripts(ctx);
  await logoutPage(ctx, false);
}
