// oidc-provider's side of sign-in: the login prompt asks again when the session has ended (logout,
// password change, disabled user, ended from /account) or is weaker than needed (acr: what the app asks for,
// and the second factor the user has or must use), and
// every authorization-server session is recorded in user_sessions when it starts and ends.
import { interactionPolicy, type KoaContextWithOIDC } from 'oidc-provider';
import type { Db } from '../db.ts';
import type { Config } from '../config.ts';
import { acrSatisfies, requestedAcr } from './acr.ts';
import { acrNeeded } from './second-factor.ts';
import { endSignInSession, recordSignInSession, signInSessionLive } from './sessions.ts';
import { findUser } from '../oidc/users.ts';
import type { AuditSink } from '../audit/store.ts';
import { recordSessionEnded } from '../audit/security-events.ts';

const { base, Check } = interactionPolicy;

/** The interaction policy: oidc-provider's, with the login prompt's acr checks replaced by ours. */
export function signInPolicy(db: Db, config: Pick<Config, 'policy'>) {
  const policy = base();
  const login = policy.get('login')!;
  // An essential acr is one of several levels here (a stronger one satisfies it), not an exact value.
  login.checks.remove('essential_acr');
  login.checks.remove('essential_acrs');
  login.checks.add(new Check('session_ended', 'the sign-in session has ended', async (ctx) => {
    const { session, result } = ctx.oidc;
    if (!session?.accountId || result?.login) return Check.NO_NEED_TO_PROMPT;
    return (await signInSessionLive(db, session.accountId, session.uid)) ? Check.NO_NEED_TO_PROMPT : Check.REQUEST_PROMPT;
  }));
  // Stronger than the session: asked for by the app, or a second factor the user has or must use (acrNeeded).
  login.checks.add(new Check('acr_too_weak', 'a stronger sign-in is needed', async (ctx) => {
    const { session, result, params } = ctx.oidc;
    if (!session?.accountId || result?.login) return Check.NO_NEED_TO_PROMPT;
    const user = await findUser(db, session.accountId);
    const enough = user && acrSatisfies(session.acr, await acrNeeded({ config, db }, user, requestedAcr(params ?? {})));
    return enough ? Check.NO_NEED_TO_PROMPT : Check.REQUEST_PROMPT;
  }));
  return policy;
}

/** Provider middleware: records a session when a sign-in finishes, and ends (and audits) it when the person signs out at RP-initiated logout. */
export function trackSignInSessions(db: Db, audit: AuditSink, issuer: string, ttlSeconds: number) {
  return async function trackSignInSessions(ctx: KoaContextWithOIDC, next: () => Promise<void>) {
    await next();
    const route = ctx.oidc?.route;
    if (route === 'resume' && ctx.oidc.result?.login && ctx.oidc.session?.accountId) {
      const { session } = ctx.oidc;
      await recordSignInSession(db, String(session.accountId), session.uid, {
        address: ctx.ip, userAgent: ctx.get('user-agent'), amr: (session.amr as string[] | undefined) ?? [],
      }, ttlSeconds);
    }
    // Only when oidc-provider ended its session: "Yes, sign me out" with a valid xsrf token. "No, stay signed
    // in" ends just the app's part in it, and a refused confirmation (answered as a page, not thrown) nothing.
    const destroyed = (ctx.oidc?.session as { destroyed?: boolean } | undefined)?.destroyed; // set by oidc-provider, not in its types
    if (route === 'end_session_confirm' && destroyed && ctx.oidc.session?.uid) {
      const userId = await endSignInSession(db, ctx.oidc.session.uid);
      const user = userId && (await findUser(db, userId));
      if (user) await recordSessionEnded(audit, { issuer, address: ctx.ip, user, kind: 'sign-in', reason: 'signed out at /logout' });
    }
  };
}
