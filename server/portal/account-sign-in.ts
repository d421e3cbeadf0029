// The steps of an /account sign-in after the password: a second factor (TOTP or recovery code, or a
// passkey), setting one up when it is required, signing in with a passkey alone, and registering a
// passkey once signed in. The pending sign-in is a row of its own (auth/sessions.ts) behind its own cookie.
import type Router from '@koa/router';
import type { Context } from 'koa';
import type { Config } from '../config.ts';
import type { Db } from '../db.ts';
import type { AuditSink } from '../audit/store.ts';
import type { LoginThrottle } from '../limits/login-throttle.ts';
import { csrfToken, validCsrf } from '../csrf.ts';
import { findUser, type User } from '../oidc/users.ts';
import { amrOf, type SignInMethod } from '../auth/acr.ts';
import { checkCode, confirmEnrolment, stepAfterPassword } from '../auth/second-factor.ts';
import { hasSecondFactor } from '../auth/factors.ts';
import { advancePendingSignIn, type PendingSignIn } from '../auth/sessions.ts';
import { enrolmentPage } from '../auth/enrolment-page.ts';
import { authenticationOptions, registerPasskey, registrationOptions, relyingPartyOf, verifyPasskey } from '../auth/passkeys.ts';
import { recordSecondFactor, recordSecurityChange } from '../audit/security-events.ts';
import { allowOwnScripts } from '../views.ts';
import {
  completeAccountSignIn, field, FORM_EXPIRED, formBody, pendingAccountSignIn, safeReturnPath, sendPage, setAccountSession,
  signedInRecently, signedInUser, startPendingAccountSignIn,
} from './session.ts';

const PASSKEY_FAILED = 'That passkey could not be used. Try again, or use your password.';
export const PASSKEY_FORM = { action: '/account/passkey', options: '/account/passkey/options' };

export interface AccountSignInDeps {
  config: Config;
  db: Db;
  audit: AuditSink;
  loginThrottle?: LoginThrottle;
  showLogin: (ctx: Context, returnTo: string, extra?: Record<string, unknown>, status?: number) => Promise<void>;
}

export function accountSignInSteps({ config, db, audit, loginThrottle, showLogin }: AccountSignInDeps) {
  const factorDeps = { config, db, audit, loginThrottle };
  const rp = relyingPartyOf(config.issuer);

  /** The second step of an /account sign-in: prove a factor, set one up, or read the new recovery codes. */
  async function showPending(ctx: Context, pending: PendingSignIn, user: User, returnTo: string, extra: { message?: string; codes?: string[] } = {}, status = 200) {
    allowOwnScripts(ctx);
    const common = { demo: config.demo, csrf: csrfToken(ctx), message: extra.message };
    const back = `?return_to=${encodeURIComponent(returnTo)}`;
    if (pending.step === 'codes') {
      return sendPage(ctx, 'recovery-codes', { ...common, title: 'Recovery codes', codes: extra.codes ?? [], action: `/account/login/continue${back}` }, status);
    }
    if (pending.step === 'enrol') {
      return sendPage(ctx, 'enrol-totp', {
        ...common, title: 'Set up a second factor', required: true, action: `/account/login/enrol${back}`,
        passkey: { ...PASSKEY_FORM, action: `${PASSKEY_FORM.action}${back}`, mode: 'register' }, ...(await enrolmentPage(db, config, user, pending.id)),
      }, status);
    }
    const factors = await hasSecondFactor(db, user.id);
    return sendPage(ctx, 'second-factor', {
      ...common, title: 'Second factor', heading: 'Confirm it is you',
      intro: factors.totp ? 'Type the code your authenticator app shows now.' : 'Use your passkey to finish signing in.',
      totp: factors.totp, passkey: factors.passkey ? { ...PASSKEY_FORM, action: `${PASSKEY_FORM.action}${back}`, mode: 'login' } : undefined,
      action: `/account/login/second-factor${back}`,
    }, status);
  }

  /** The pending sign-in of this browser and its user, or undefined after sending the person back to the login. */
  async function pendingStep(ctx: Context, steps: PendingSignIn['step'][], checkCsrf = true) {
    if (checkCsrf && !validCsrf(ctx, field(ctx.request.body, 'csrf'))) {
      await sendPage(ctx, 'error', { demo: config.demo, ...FORM_EXPIRED }, 403);
      return undefined;
    }
    const returnTo = safeReturnPath(ctx.query.return_to);
    const pending = await pendingAccountSignIn(ctx, db);
    const user = pending && steps.includes(pending.step) ? await findUser(db, pending.userId) : undefined;
    if (!pending || !user || user.disabled) {
      await showLogin(ctx, returnTo, { message: 'The sign-in took too long. Sign in again.' });
      return undefined;
    }
    return { pending, user, returnTo };
  }

  async function complete(ctx: Context, pending: PendingSignIn, methods: string[], returnTo: string) {
    if (!(await completeAccountSignIn(ctx, db, pending, amrOf(methods as SignInMethod[])))) return showLogin(ctx, returnTo, { message: 'The sign-in took too long. Sign in again.' });
    ctx.status = 303;
    ctx.redirect(returnTo);
  }

  /** After a correct password: signed in, or on to the second step. */
  async function afterPassword(ctx: Context, user: User, returnTo: string) {
    const next = await stepAfterPassword(factorDeps, user);
    ctx.status = 303;
    if (next === 'done') {
      await loginThrottle?.succeeded(user.username, ctx.ip);
      await setAccountSession(ctx, db, user.id, ['pwd']);
      return ctx.redirect(returnTo);
    }
    await startPendingAccountSignIn(ctx, db, user.id, next);
    ctx.redirect(`/account/login/next?return_to=${encodeURIComponent(returnTo)}`);
  }

  function addRoutes(router: Router) {
    router.get('/account/login/next', async (ctx) => {
      const step = await pendingStep(ctx, ['verify', 'enrol', 'codes'], false);
      if (step) await showPending(ctx, step.pending, step.user, step.returnTo);
    });

    router.post('/account/login/second-factor', formBody, async (ctx) => {
      const step = await pendingStep(ctx, ['verify']);
      if (!step) return;
      const result = await checkCode(factorDeps, step.user, field(ctx.request.body, 'otp'), { address: ctx.ip });
      if (!result.ok) {
        if (result.retryAfter !== undefined) ctx.set('Retry-After', String(result.retryAfter));
        return showPending(ctx, step.pending, step.user, step.returnTo, { message: result.message }, result.retryAfter !== undefined ? 429 : 200);
      }
      return complete(ctx, step.pending, [...step.pending.methods, result.method], step.returnTo);
    });

    router.post('/account/login/enrol', formBody, async (ctx) => {
      const step = await pendingStep(ctx, ['enrol']);
      if (!step) return;
      const result = await confirmEnrolment(factorDeps, step.user, step.pending.id, field(ctx.request.body, 'code'), { address: ctx.ip });
      if ('message' in result) return showPending(ctx, step.pending, step.user, step.returnTo, { message: result.message });
      const methods = [...step.pending.methods, 'otp'];
      await advancePendingSignIn(db, step.pending.id, 'codes', methods);
      return showPending(ctx, { ...step.pending, step: 'codes', methods }, step.user, step.returnTo, { codes: result.recoveryCodes });
    });

    router.post('/account/login/continue', formBody, async (ctx) => {
      const step = await pendingStep(ctx, ['codes']);
      if (step) await complete(ctx, step.pending, step.pending.methods, step.returnTo);
    });

    // Passkeys: sign in with one, use one as the second step, or register one (signed in at
    // /account/security, or when a second factor must be set up). The options are JSON for passkey.js.
    router.post('/account/passkey/options', formBody, async (ctx) => {
      ctx.set('Cache-Control', 'no-store');
      if (!validCsrf(ctx, field(ctx.request.body, 'csrf'))) {
        ctx.status = 403;
        ctx.body = { error: 'invalid_request', error_description: 'The form expired. Reload the page and try again.' };
        return;
      }
      const session = await signedInUser(ctx, db, config);
      if (session && !(await signedInRecently(db, session))) {
        ctx.status = 401;
        ctx.body = { error: 'login_required', error_description: 'Sign in again to register a passkey.' };
        return;
      }
      const signedIn = session?.user;
      const pending = signedIn ? undefined : await pendingAccountSignIn(ctx, db);
      const pendingUser = pending && (await findUser(db, pending.userId));
      if (signedIn || (pending?.step === 'enrol' && pendingUser)) ctx.body = await registrationOptions(db, rp, (signedIn ?? pendingUser)!);
      else ctx.body = await authenticationOptions(db, rp, pendingUser);
    });

    router.post('/account/passkey', formBody, async (ctx) => {
      if (!validCsrf(ctx, field(ctx.request.body, 'csrf'))) return sendPage(ctx, 'error', { demo: config.demo, ...FORM_EXPIRED }, 403);
      let credential: unknown;
      try {
        credential = JSON.parse(field(ctx.request.body, 'credential'));
      } catch {
        credential = undefined;
      }
      const returnTo = safeReturnPath(ctx.query.return_to);
      const session = await signedInUser(ctx, db, config);
      const signedIn = session?.user;
      if (session && signedIn) {
        if (!(await signedInRecently(db, session))) {
          ctx.status = 303;
          return ctx.redirect(`/account/login?reauth=1&return_to=${encodeURIComponent('/account/security')}`);
        }
        const id = await registerPasskey(db, rp, signedIn, credential, session.sessionId);
        if (id) await recordSecurityChange(audit, { issuer: config.issuer, address: ctx.ip, user: signedIn, change: 'create', what: 'passkey' });
        ctx.status = 303;
        return ctx.redirect(`/account/security?${id ? 'added=passkey' : 'failed=passkey'}`);
      }
      const pending = await pendingAccountSignIn(ctx, db);
      const pendingUser = pending && (await findUser(db, pending.userId));
      if (pending?.step === 'enrol' && pendingUser) {
        const id = await registerPasskey(db, rp, pendingUser, credential, pending.id);
        if (!id) return showPending(ctx, pending, pendingUser, returnTo, { message: PASSKEY_FAILED });
        await recordSecurityChange(audit, { issuer: config.issuer, address: ctx.ip, user: pendingUser, change: 'create', what: 'passkey' });
        return complete(ctx, pending, [...pending.methods, 'hwk'], returnTo);
      }
      const proved = await verifyPasskey(db, rp, credential, pendingUser);
      const user = proved && (await findUser(db, proved.userId));
      if (!proved || !user || user.disabled) {
        if (pending && pendingUser) {
          await recordSecondFactor(audit, { issuer: config.issuer, address: ctx.ip, user: pendingUser, amr: ['hwk'], failure: 'passkey not valid' });
          return showPending(ctx, pending, pendingUser, returnTo, { message: PASSKEY_FAILED });
        }
        return showLogin(ctx, returnTo, { message: PASSKEY_FAILED });
      }
      await recordSecondFactor(audit, { issuer: config.issuer, address: ctx.ip, user, amr: [proved.method] });
      if (pending) return complete(ctx, pending, [...pending.methods, proved.method], returnTo);
      await setAccountSession(ctx, db, user.id, amrOf([proved.method]));
      ctx.status = 303;
      ctx.redirect(returnTo);
    });
  }

  return { afterPassword, addRoutes };
}
