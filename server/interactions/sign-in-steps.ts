// The steps of a sign-in after the password, within an authorization's interaction: a second factor
// (TOTP or recovery code, or a passkey), setting one up when it is required, signing in with a passkey
// alone, and the break-the-glass step-up at consent. The pending sign-in is a row of user_sessions
// (auth/sessions.ts) whose token the interaction keeps.
import type Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import type { Context } from 'koa';
import { errors } from 'oidc-provider';
import type { Config } from '../config.ts';
import type { Db } from '../db.ts';
import type { ProviderHost } from '../oidc/provider-host.ts';
import type { AuditSink } from '../audit/store.ts';
import type { LoginThrottle } from '../limits/login-throttle.ts';
import { csrfToken, validCsrf } from '../csrf.ts';
import { allowOwnScripts } from '../views.ts';
import { findUser, type User } from '../oidc/users.ts';
import { acrOf, amrOf, requestedAcr, type SignInMethod } from '../auth/acr.ts';
import { checkCode, confirmEnrolment, stepAfterPassword } from '../auth/second-factor.ts';
import { hasSecondFactor } from '../auth/factors.ts';
import { authenticationOptions, registerPasskey, registrationOptions, relyingPartyOf, verifyPasskey } from '../auth/passkeys.ts';
import { enrolmentPage } from '../auth/enrolment-page.ts';
import { advancePendingSignIn, endSession, findPendingSignIn, startPendingSignIn, type PendingSignIn, type PendingStep } from '../auth/sessions.ts';
import { recordSecondFactor, recordSecurityChange } from '../audit/security-events.ts';

type Details = Awaited<ReturnType<ProviderHost['provider']['interactionDetails']>>;

/** A second factor shown again during this interaction, for break-the-glass at consent. */
interface StepUp {
  amr: string[];
  at: number;
}

/** How long a step-up stays fresh for break-the-glass. */
const STEP_UP_SECONDS = 300;
const now = () => Math.floor(Date.now() / 1000);
/**
 * What the interaction keeps: the token of its sign-in between the password and the second factor (whose,
 * what was shown so far, what comes next: a pending row of user_sessions, which ends after ten minutes and
 * with the user's other sessions when their password is changed or they are disabled), and a step-up.
 */
const interactionState = (details: Details) => (details.result ?? {}) as { pendingLogin?: unknown; stepUp?: StepUp };

const formBody = bodyParser({ enableTypes: ['form'], formLimit: '64kb' });
const PASSKEY_FAILED = 'That passkey could not be used. Try again, or use your password.';
const BTG_STEP_UP = 'Emergency access needs you to confirm it is you: type a fresh code from your authenticator app, or use your passkey.';

/** The passkey form of an interaction page (see views/passkey-form.ejs and static/passkey.js). */
export const passkeyForm = (details: Details, mode: 'login' | 'register') =>
  ({ action: `/interaction/${details.uid}/passkey`, options: `/interaction/${details.uid}/passkey/options`, mode });

/** Whether a passkey step-up for break-the-glass was made in this interaction. */
export const steppedUp = (details: Details) => Boolean(interactionState(details).stepUp);

export interface SignInStepDeps {
  config: Config;
  db: Db;
  host: ProviderHost;
  audit: AuditSink;
  loginThrottle?: LoginThrottle;
  page: (ctx: Context, view: string, data: Record<string, unknown>, status?: number) => Promise<void>;
  renderLogin: (ctx: Context, details: Details, extra?: Record<string, unknown>) => Promise<void>;
}

export function signInSteps({ config, db, host, audit, loginThrottle, page, renderLogin }: SignInStepDeps) {
  const rp = relyingPartyOf(config.issuer);
  const factorDeps = { config, db, audit, loginThrottle };

  /** The sign-in in progress in this interaction, while its row lives. */
  async function pendingLogin(details: Details): Promise<PendingSignIn | undefined> {
    const token = interactionState(details).pendingLogin;
    return typeof token === 'string' ? findPendingSignIn(db, token) : undefined;
  }

  async function savePending(details: Details, token: string | undefined, stepUp?: StepUp) {
    details.result = { ...(token && { pendingLogin: token }), ...(stepUp && { stepUp }) };
    await details.save(details.exp - now());
  }

  /** Ends the login step (and the pending sign-in it finishes): the session remembers how the person signed in (amr, acr). */
  async function finishLogin(ctx: Context, accountId: string, methods: readonly string[], pending?: PendingSignIn) {
    if (pending) await endSession(db, pending.userId, pending.id);
    const amr = amrOf(methods as SignInMethod[]);
    await host.provider.interactionFinished(ctx.req, ctx.res, { login: { accountId, amr, acr: acrOf(amr) } }, { mergeWithLastSubmission: false });
  }

  /** The second step of a sign-in: prove a factor, set one up, or (after set-up) the recovery codes. */
  async function renderPending(ctx: Context, details: Details, pending: Pick<PendingSignIn, 'id' | 'step'>, user: User, extra: { message?: string; codes?: string[] } = {}, status = 200) {
    allowOwnScripts(ctx);
    const csrf = csrfToken(ctx);
    if (pending.step === 'codes') {
      return page(ctx, 'recovery-codes', { title: 'Recovery codes', csrf, codes: extra.codes ?? [], action: `/interaction/${details.uid}/continue` }, status);
    }
    if (pending.step === 'enrol') {
      return page(ctx, 'enrol-totp', {
        title: 'Set up a second factor', csrf, required: true, message: extra.message, action: `/interaction/${details.uid}/enrol`,
        cancel: `/interaction/${details.uid}/abort`, passkey: passkeyForm(details, 'register'),
        ...(await enrolmentPage(db, config, user, pending.id)),
      }, status);
    }
    const factors = await hasSecondFactor(db, user.id);
    return page(ctx, 'second-factor', {
      title: 'Second factor', heading: 'Confirm it is you', csrf, message: extra.message,
      intro: factors.totp ? 'Type the code your authenticator app shows now.' : 'Use your passkey to finish signing in.',
      totp: factors.totp, passkey: factors.passkey ? passkeyForm(details, 'login') : undefined,
      action: `/interaction/${details.uid}/second-factor`, cancel: `/interaction/${details.uid}/abort`,
    }, status);
  }

  /** The interaction and the user of its pending sign-in, or an error page already sent. */
  async function pendingStep(ctx: Context, steps: PendingStep[]) {
    const details = await host.provider.interactionDetails(ctx.req, ctx.res);
    const body = ctx.request.body as Record<string, unknown>;
    if (details.prompt.name !== 'login') throw new errors.InvalidRequest('this step is not a login');
    if (!validCsrf(ctx, body.csrf)) {
      await page(ctx, 'error', { title: 'Form expired', description: 'Reload the page and try again.' }, 403);
      return undefined;
    }
    const pending = await pendingLogin(details);
    const user = pending && steps.includes(pending.step) ? await findUser(db, pending.userId) : undefined;
    if (!pending || !user || user.disabled) {
      await savePending(details, undefined);
      await renderLogin(ctx, details, { message: 'The sign-in took too long. Sign in again.' });
      return undefined;
    }
    return { details, body, pending, user };
  }

  /** After a correct password: done, or the second step (prove a factor, or set one up) shown next. */
  async function afterPassword(ctx: Context, details: Details, user: User) {
    const next = await stepAfterPassword(factorDeps, user, requestedAcr(details.params));
    if (next === 'done') {
      await loginThrottle?.succeeded(user.username, ctx.ip);
      return finishLogin(ctx, user.id, ['pwd']);
    }
    const pending = await startPendingSignIn(db, user.id, { address: ctx.ip, userAgent: ctx.get('user-agent'), amr: ['pwd'] }, next);
    await savePending(details, pending.token);
    return renderPending(ctx, details, { id: pending.id, step: next }, user);
  }

  /** The second step to show again when the interaction page is opened, if one is pending. */
  async function showPending(ctx: Context, details: Details): Promise<boolean> {
    const pending = await pendingLogin(details);
    const user = pending && (await findUser(db, pending.userId));
    if (!pending || !user || user.disabled) return false;
    await renderPending(ctx, details, pending, user);
    return true;
  }

  function addRoutes(router: Router) {
    router.post('/interaction/:uid/second-factor', formBody, async (ctx) => {
      const step = await pendingStep(ctx, ['verify']);
      if (!step) return;
      const { details, body, pending, user } = step;
      const result = await checkCode(factorDeps, user, typeof body.otp === 'string' ? body.otp : '', { address: ctx.ip, clientId: String(details.params.client_id) });
      if (!result.ok) {
        if (result.retryAfter !== undefined) ctx.set('Retry-After', String(result.retryAfter));
        return renderPending(ctx, details, pending, user, { message: result.message }, result.retryAfter !== undefined ? 429 : 200);
      }
      return finishLogin(ctx, user.id, [...pending.methods, result.method], pending);
    });

    router.post('/interaction/:uid/enrol', formBody, async (ctx) => {
      const step = await pendingStep(ctx, ['enrol']);
      if (!step) return;
      const { details, body, pending, user } = step;
      const result = await confirmEnrolment(factorDeps, user, pending.id, typeof body.code === 'string' ? body.code : '', { address: ctx.ip, clientId: String(details.params.client_id) });
      if ('message' in result) return renderPending(ctx, details, pending, user, { message: result.message });
      await advancePendingSignIn(db, pending.id, 'codes', [...pending.methods, 'otp']);
      return renderPending(ctx, details, { ...pending, step: 'codes' }, user, { codes: result.recoveryCodes });
    });

    router.post('/interaction/:uid/continue', formBody, async (ctx) => {
      const step = await pendingStep(ctx, ['codes']);
      if (step) await finishLogin(ctx, step.user.id, step.pending.methods, step.pending);
    });

    // Passkeys: at login (instead of password and code, or as the second step), to set one up when one is
    // required, and at consent to step up for break-the-glass. The options are JSON for passkey.js.
    router.post('/interaction/:uid/passkey/options', formBody, async (ctx) => {
      const details = await host.provider.interactionDetails(ctx.req, ctx.res);
      ctx.set('Cache-Control', 'no-store');
      if (!validCsrf(ctx, (ctx.request.body as Record<string, unknown>).csrf)) {
        ctx.status = 403;
        ctx.body = { error: 'invalid_request', error_description: 'The form expired. Reload the page and try again.' };
        return;
      }
      const pending = details.prompt.name === 'login' ? await pendingLogin(details) : undefined;
      const accountId = details.prompt.name === 'login' ? pending?.userId : details.session?.accountId;
      const user = accountId ? await findUser(db, String(accountId)) : undefined;
      ctx.body = pending?.step === 'enrol' && user
        ? await registrationOptions(db, rp, user)
        : await authenticationOptions(db, rp, user);
    });

    router.post('/interaction/:uid/passkey', formBody, async (ctx) => {
      const details = await host.provider.interactionDetails(ctx.req, ctx.res);
      const body = ctx.request.body as Record<string, unknown>;
      if (!validCsrf(ctx, body.csrf)) return page(ctx, 'error', { title: 'Form expired', description: 'Reload the page and try again.' }, 403);
      let credential: unknown;
      try {
        credential = JSON.parse(typeof body.credential === 'string' ? body.credential : '');
      } catch {
        credential = undefined;
      }
      const origin = { address: ctx.ip, clientId: String(details.params.client_id) };
      if (details.prompt.name === 'consent') return stepUpWithPasskey(ctx, details, credential);
      const pending = await pendingLogin(details);
      const pendingUser = pending && (await findUser(db, pending.userId));
      if (pending?.step === 'enrol' && pendingUser) {
        const id = await registerPasskey(db, rp, pendingUser, credential, pending.id);
        if (!id) return renderPending(ctx, details, pending, pendingUser, { message: PASSKEY_FAILED });
        await recordSecurityChange(audit, { issuer: config.issuer, address: ctx.ip, user: pendingUser, change: 'create', what: 'passkey' });
        return finishLogin(ctx, pendingUser.id, [...pending.methods, 'hwk'], pending);
      }
      const proved = await verifyPasskey(db, rp, credential, pending ? pendingUser : undefined);
      const user = proved && (await findUser(db, proved.userId));
      if (!proved || !user || user.disabled) {
        if (pendingUser) {
          await recordSecondFactor(audit, { issuer: config.issuer, ...origin, user: pendingUser, amr: ['hwk'], failure: 'passkey not valid' });
          return renderPending(ctx, details, pending!, pendingUser, { message: PASSKEY_FAILED });
        }
        return renderLogin(ctx, details, { message: PASSKEY_FAILED });
      }
      await recordSecondFactor(audit, { issuer: config.issuer, ...origin, user, amr: [proved.method] });
      return finishLogin(ctx, user.id, [...(pending?.methods ?? []), proved.method], pending);
    });
  }

  /**
   * The step-up for break-the-glass: a fresh code typed with the consent (TOTP or recovery code), or a
   * passkey used on the consent page within the last minutes (used up here). Its amr, or why not.
   */
  async function btgStepUp(ctx: Context, details: Details, user: User, body: Record<string, unknown>): Promise<{ amr: string[] } | { message: string }> {
    const code = typeof body.btg_otp === 'string' ? body.btg_otp.trim() : '';
    if (code) {
      const result = await checkCode(factorDeps, user, code, { address: ctx.ip, clientId: String(details.params.client_id) });
      return result.ok ? { amr: ['otp'] } : { message: result.message };
    }
    const stepUp = interactionState(details).stepUp;
    if (!stepUp || stepUp.at + STEP_UP_SECONDS <= now()) return { message: BTG_STEP_UP };
    await savePending(details, undefined);
    return { amr: stepUp.amr };
  }

  /** A passkey assertion at consent: remembered in the interaction as a fresh step-up for break-the-glass. */
  async function stepUpWithPasskey(ctx: Context, details: Details, credential: unknown) {
    const user = await findUser(db, String(details.session?.accountId));
    if (!user || user.disabled) throw new errors.AccessDenied('the account is not active');
    const proved = await verifyPasskey(db, rp, credential, user);
    const origin = { address: ctx.ip, clientId: String(details.params.client_id) };
    await recordSecondFactor(audit, { issuer: config.issuer, ...origin, user, amr: [proved?.method ?? 'hwk'], failure: proved ? undefined : 'passkey not valid' });
    if (proved) await savePending(details, undefined, { amr: [proved.method], at: now() });
    ctx.status = 303;
    const patient = typeof ctx.query.patient === 'string' ? `&patient=${encodeURIComponent(ctx.query.patient)}` : '';
    ctx.redirect(`/interaction/${details.uid}?stepped_up=${proved ? 1 : 0}${patient}`);
  }

  return { addRoutes, afterPassword, showPending, btgStepUp };
}
