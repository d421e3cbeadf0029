// A person's sign-in and security page (/account/security): their second factors (set up an
// authenticator app, register a passkey, remove either), the sessions where they are signed in
// (end any of them), and changing their password. Every change is audited.
import Router from '@koa/router';
import type { Context } from 'koa';
import type { Config } from '../config.ts';
import type { Db } from '../db.ts';
import { csrfToken, validCsrf } from '../csrf.ts';
import { authenticate, setPassword, UserError, type User } from '../oidc/users.ts';
import { databaseAuditSink } from '../audit/store.ts';
import { recordSecurityChange, recordSessionEnded } from '../audit/security-events.ts';
import { tooManyAttempts, type LoginThrottle } from '../limits/login-throttle.ts';
import { confirmEnrolment, mustUseSecondFactor } from '../auth/second-factor.ts';
import { factorsOf, removeFactor, startTotp } from '../auth/factors.ts';
import { endSession, sessionsOf } from '../auth/sessions.ts';
import { enrolmentPage } from '../auth/enrolment-page.ts';
import { MIN_PASSWORD_LENGTH } from '../auth/password-policy.ts';
import { allowOwnScripts } from '../views.ts';
import { clearAccountSession, field, FORM_EXPIRED, formBody, sendPage, signedInRecently, signedInUser } from './session.ts';

export interface SecurityDeps {
  config: Config;
  db: Db;
  loginThrottle?: LoginThrottle;
}

const PAGE = '/account/security';
const when = (epochSeconds: number | null) => (epochSeconds ? new Date(epochSeconds * 1000).toISOString().replace('T', ' ').slice(0, 16) + ' UTC' : 'never');
const FACTOR_NAMES = { totp: 'Authenticator app', passkey: 'Passkey' } as const;
const NOTICES: Record<string, string> = {
  totp: 'Your authenticator app is set up.',
  passkey: 'Your passkey is registered.',
  removed: 'The second factor was removed.',
  ended: 'The session was ended.',
  password: 'Your password was changed. You were signed out everywhere else, and apps you allowed must be allowed again.',
};

/** A short description of a browser from its User-Agent, for the session list. */
export function deviceOf(userAgent: string | null): string {
  if (!userAgent) return 'unknown device';
  const browser = /Edg\//.test(userAgent) ? 'Edge' : /Firefox\//.test(userAgent) ? 'Firefox' : /Chrom(e|ium)\//.test(userAgent) ? 'Chrome'
    : /Safari\//.test(userAgent) ? 'Safari' : undefined;
  const system = /Windows/.test(userAgent) ? 'Windows' : /Android/.test(userAgent) ? 'Android' : /iPhone|iPad/.test(userAgent) ? 'iOS'
    : /Mac OS X/.test(userAgent) ? 'macOS' : /Linux/.test(userAgent) ? 'Linux' : undefined;
  return browser && system ? `${browser} on ${system}` : userAgent.slice(0, 60);
}

export function securityRoutes({ config, db, loginThrottle }: SecurityDeps): Router {
  const router = new Router();
  const audit = databaseAuditSink(db);

  /** The signed-in user and their session, or undefined after sending them to the login. */
  async function signedIn(ctx: Context, checkCsrf: boolean) {
    const found = await signedInUser(ctx, db, config);
    if (!found) {
      ctx.status = 303;
      ctx.redirect(`/account/login?return_to=${encodeURIComponent(PAGE)}`);
      return undefined;
    }
    if (checkCsrf && !validCsrf(ctx, field(ctx.request.body, 'csrf'))) {
      await sendPage(ctx, 'error', { demo: config.demo, ...FORM_EXPIRED }, 403);
      return undefined;
    }
    return found;
  }

  /**
   * The signed-in user, allowed to change their second factors: only within a while of signing in. An
   * older session is ended and the person asked to sign in again (a copied cookie cannot swap a factor).
   */
  async function mayChangeFactors(ctx: Context, checkCsrf: boolean) {
    const found = await signedIn(ctx, checkCsrf);
    if (!found || (await signedInRecently(db, found))) return found;
    await clearAccountSession(ctx, db);
    ctx.status = 303;
    ctx.redirect(`/account/login?reauth=1&return_to=${encodeURIComponent(PAGE)}`);
    return undefined;
  }

  async function showPage(ctx: Context, user: User, sessionId: string, extra: { message?: string; notice?: string } = {}, status = 200) {
    allowOwnScripts(ctx);
    const factors = await factorsOf(db, user.id);
    const sessions = await sessionsOf(db, user.id);
    return sendPage(ctx, 'account-security', {
      title: 'Sign-in and security', demo: config.demo, csrf: csrfToken(ctx), user: { name: user.name ?? user.username },
      factors: factors.filter((f) => f.kind !== 'recovery').map((f) => ({ id: f.id, name: FACTOR_NAMES[f.kind as 'totp' | 'passkey'], added: when(f.createdAt), used: when(f.usedAt) })),
      recoveryCodes: factors.filter((f) => f.kind === 'recovery').length,
      hasTotp: factors.some((f) => f.kind === 'totp'),
      required: mustUseSecondFactor(config, user),
      sessions: sessions.map((s) => ({
        id: s.id, current: s.id === sessionId, where: s.kind === 'account' ? 'this account page' : 'signing in to apps',
        device: deviceOf(s.userAgent), address: s.address ?? 'unknown', started: when(s.createdAt), method: s.amr.join(' ') || 'unknown',
      })),
      passkey: { action: '/account/passkey', options: '/account/passkey/options', mode: 'register' },
      minLength: MIN_PASSWORD_LENGTH,
      ...extra,
    }, status);
  }

  const done = (ctx: Context, notice: string) => {
    ctx.status = 303;
    ctx.redirect(`${PAGE}?done=${notice}`);
  };

  router.get(PAGE, async (ctx) => {
    const found = await signedIn(ctx, false);
    if (!found) return;
    const notice = typeof ctx.query.done === 'string' ? NOTICES[ctx.query.done] : ctx.query.added === 'passkey' ? NOTICES.passkey : undefined;
    await showPage(ctx, found.user, found.sessionId, { notice, message: ctx.query.failed === 'passkey' ? 'The passkey could not be registered.' : undefined });
  });

  /** The set-up page of this session's authenticator set-up (its secret again after a wrong code). */
  async function showSetUp(ctx: Context, found: { user: User; sessionId: string }, message?: string) {
    await sendPage(ctx, 'enrol-totp', {
      title: 'Set up an authenticator app', demo: config.demo, csrf: csrfToken(ctx), action: `${PAGE}/totp`, back: PAGE, message,
      ...(await enrolmentPage(db, config, found.user, found.sessionId)),
    }, message ? 400 : 200);
  }

  // A set-up starts by the page's button (a form): a link opened elsewhere starts nothing and signs no one out.
  router.get(`${PAGE}/totp`, (ctx) => {
    ctx.status = 303;
    ctx.redirect(PAGE);
  });

  router.post(`${PAGE}/totp/new`, formBody, async (ctx) => {
    const found = await mayChangeFactors(ctx, true);
    if (!found) return;
    // A set-up starts with a new secret of this session's: another session's set-up neither shows nor confirms it.
    await startTotp(db, found.user.id, found.sessionId, config.keyEncryptionSecret);
    await showSetUp(ctx, found);
  });

  router.post(`${PAGE}/totp`, formBody, async (ctx) => {
    const found = await mayChangeFactors(ctx, true);
    if (!found) return;
    const result = await confirmEnrolment({ config, db, audit, loginThrottle }, found.user, found.sessionId, field(ctx.request.body, 'code'), { address: ctx.ip });
    if ('message' in result) return showSetUp(ctx, found, result.message);
    await sendPage(ctx, 'recovery-codes', { title: 'Recovery codes', demo: config.demo, csrf: csrfToken(ctx), codes: result.recoveryCodes, action: PAGE, method: 'get' });
  });

  router.post(`${PAGE}/remove`, formBody, async (ctx) => {
    const found = await mayChangeFactors(ctx, true);
    if (!found) return;
    const { user } = found;
    const factors = (await factorsOf(db, user.id)).filter((f) => f.kind !== 'recovery');
    const id = field(ctx.request.body, 'factor_id');
    if (!factors.some((f) => f.id === id)) return showPage(ctx, user, found.sessionId, { message: 'That second factor was not found.' }, 404);
    if (factors.length === 1 && mustUseSecondFactor(config, user)) {
      return showPage(ctx, user, found.sessionId, { message: 'Your account must keep a second factor. Set up another one before removing this one.' }, 400);
    }
    const kind = await removeFactor(db, user.id, id);
    if (kind) await recordSecurityChange(audit, { issuer: config.issuer, address: ctx.ip, user, change: 'delete', what: kind });
    done(ctx, 'removed');
  });

  router.post('/account/sessions/end', formBody, async (ctx) => {
    const found = await signedIn(ctx, true);
    if (!found) return;
    const id = field(ctx.request.body, 'session_id');
    const kind = (await sessionsOf(db, found.user.id)).find((s) => s.id === id)?.kind;
    if (!kind || !(await endSession(db, found.user.id, id))) return showPage(ctx, found.user, found.sessionId, { message: 'That session was not found. It may have ended already.' }, 404);
    await recordSessionEnded(audit, { issuer: config.issuer, address: ctx.ip, user: found.user, kind, reason: 'ended by the user from the session list' });
    if (id !== found.sessionId) return done(ctx, 'ended');
    await clearAccountSession(ctx, db);
    ctx.status = 303;
    ctx.redirect('/account/login');
  });

  router.post('/account/password', formBody, async (ctx) => {
    const found = await signedIn(ctx, true);
    if (!found) return;
    const { user, sessionId } = found;
    const body = ctx.request.body;
    const current = field(body, 'current_password');
    const next = field(body, 'new_password');
    if (next !== field(body, 'confirm_password')) return showPage(ctx, user, sessionId, { message: 'The new password and its confirmation differ.' }, 400);
    // The current password is checked like a login: it counts toward the lockout.
    const throttle = await loginThrottle?.check(user.username, ctx.ip);
    if (throttle?.retryAfter !== undefined) {
      ctx.set('Retry-After', String(throttle.retryAfter));
      return showPage(ctx, user, sessionId, { message: tooManyAttempts(throttle.retryAfter) }, 429);
    }
    if (throttle?.locked || !current || !(await authenticate(db, user.username, current))) {
      await loginThrottle?.failed(user.username, ctx.ip);
      return showPage(ctx, user, sessionId, { message: 'Your current password is not correct.' }, 400);
    }
    await loginThrottle?.succeeded(user.username, ctx.ip);
    try {
      await setPassword(db, user, next, sessionId);
    } catch (err) {
      if (err instanceof UserError) return showPage(ctx, user, sessionId, { message: err.message }, 400);
      throw err;
    }
    await recordSecurityChange(audit, { issuer: config.issuer, address: ctx.ip, user, change: 'update', what: 'password' });
    await recordSessionEnded(audit, { issuer: config.issuer, address: ctx.ip, user, kind: 'all other sessions and grants', reason: 'password changed' });
    done(ctx, 'password');
  });

  return router;
}
