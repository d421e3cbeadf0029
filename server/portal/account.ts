// A person's own pages: sign in, see the apps they granted access to, and revoke them
// (/account/apps is the SMART management_endpoint).
import Router from '@koa/router';
import type { Context } from 'koa';
import type { Config } from '../config.ts';
import type { Db } from '../db.ts';
import type { ProviderHost } from '../oidc/provider-host.ts';
import type { PatientDirectory } from '../fhir/patient-directory.ts';
import { csrfToken, validCsrf } from '../csrf.ts';
import { authenticate, findUser, patientOf, type User } from '../oidc/users.ts';
import { grantsOf, revokeGrantOf } from '../oidc/grants.ts';
import { describeScope, parseScopes } from '../smart/scopes.ts';
import { DEMO_ACCOUNTS } from '../demo-accounts.ts';
import { databaseAuditSink } from '../audit/store.ts';
import { recordLogin, recordLogout } from '../audit/security-events.ts';
import { loginFailed } from '../audit/balp.ts';
import { tooManyAttempts, type LoginThrottle } from '../limits/login-throttle.ts';
import {
  clearAccountSession, completeAccountSignIn, field, FORM_EXPIRED, formBody, pendingAccountSignIn, safeReturnPath, sendPage, setAccountSession,
  signedInUser as sessionUser, startPendingAccountSignIn,
} from './session.ts';
import { amrOf, type SignInMethod } from '../auth/acr.ts';
import { checkCode, confirmEnrolment, stepAfterPassword } from '../auth/second-factor.ts';
import { hasSecondFactor } from '../auth/factors.ts';
import { advancePendingSignIn, type PendingSignIn } from '../auth/sessions.ts';
import { enrolmentPage } from '../auth/enrolment-page.ts';
import { authenticationOptions, registerPasskey, registrationOptions, relyingPartyOf, verifyPasskey } from '../auth/passkeys.ts';
import { recordSecondFactor, recordSecurityChange } from '../audit/security-events.ts';
import { allowOwnScripts } from '../views.ts';

export interface AccountDeps {
  config: Config;
  db: Db;
  host: ProviderHost;
  patients?: PatientDirectory;
  /** Login throttling shared by every instance; undefined: none. */
  loginThrottle?: LoginThrottle;
}

const LOGIN_FAILED = 'The username or password is not correct.';
const PASSKEY_FAILED = 'That passkey could not be used. Try again, or use your password.';
const PASSKEY_FORM = { action: '/account/passkey', options: '/account/passkey/options' };
const NOT_FOUND = 'That access was not found. It may have been revoked already.';

const when = (epochSeconds: number) => (epochSeconds ? new Date(epochSeconds * 1000).toISOString().replace('T', ' ').slice(0, 16) + ' UTC' : 'unknown');

/** Plain-language lines for a granted scope string, without repeats. */
function scopeWords(scope: string, patientIsUser: boolean): string[] {
  const { scopes, invalid } = parseScopes(scope);
  return [...new Set([...scopes.map((s) => describeScope(s, { patientIsUser })), ...invalid])];
}

export function accountRoutes({ config, db, host, patients, loginThrottle }: AccountDeps): Router {
  const router = new Router();
  const audit = databaseAuditSink(db);
  const factorDeps = { config, db, audit, loginThrottle };
  const rp = relyingPartyOf(config.issuer);

  const signedInUser = async (ctx: Context): Promise<User | undefined> => (await sessionUser(ctx, db))?.user;

  function toLogin(ctx: Context, returnTo: string) {
    ctx.status = 303;
    ctx.redirect(`/account/login?return_to=${encodeURIComponent(returnTo)}`);
  }

  function showLogin(ctx: Context, returnTo: string, extra: Record<string, unknown> = {}, status = 200) {
    allowOwnScripts(ctx);
    return sendPage(ctx, 'account-login', {
      title: 'Sign in to your account', demo: config.demo, csrf: csrfToken(ctx), returnTo,
      demoAccounts: config.demo ? DEMO_ACCOUNTS : [], passkey: { ...PASSKEY_FORM, mode: 'login' }, ...extra,
    }, status);
  }

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
        passkey: { ...PASSKEY_FORM, mode: 'register' }, ...(await enrolmentPage(db, config, user)),
      }, status);
    }
    const factors = await hasSecondFactor(db, user.id);
    return sendPage(ctx, 'second-factor', {
      ...common, title: 'Second factor', heading: 'Confirm it is you',
      intro: factors.totp ? 'Type the code your authenticator app shows now.' : 'Use your passkey to finish signing in.',
      totp: factors.totp, passkey: factors.passkey ? { ...PASSKEY_FORM, mode: 'login' } : undefined, action: `/account/login/second-factor${back}`,
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


  async function showApps(ctx: Context, user: User, extra: { message?: string; notice?: string } = {}, status = 200) {
    const patientIsUser = Boolean(patientOf(user));
    const grants = await Promise.all((await grantsOf(db, host.provider, user.id)).map(async (g) => ({
      grantId: g.grantId,
      clientName: g.clientName,
      scopes: scopeWords(g.scope, patientIsUser),
      patient: g.patient,
      patientName: g.patient && patients ? (await patients.get(g.patient))?.name : undefined,
      grantedAt: when(g.grantedAt),
      expiresAt: g.expiresAt ? when(g.expiresAt) : undefined,
    })));
    return sendPage(ctx, 'account-apps', {
      title: 'Your apps', demo: config.demo, csrf: csrfToken(ctx), user: { name: user.name ?? user.username }, isPatient: Boolean(patientOf(user)), grants, ...extra,
    }, status);
  }

  router.get('/account', (ctx) => {
    ctx.status = 303;
    ctx.redirect('/account/apps');
  });

  router.get('/account/login', async (ctx) => {
    const returnTo = safeReturnPath(ctx.query.return_to);
    if (await signedInUser(ctx)) {
      ctx.status = 303;
      return ctx.redirect(returnTo);
    }
    return showLogin(ctx, returnTo);
  });

  router.post('/account/login', formBody, async (ctx) => {
    const body = ctx.request.body;
    if (!validCsrf(ctx, field(body, 'csrf'))) return sendPage(ctx, 'error', { demo: config.demo, ...FORM_EXPIRED }, 403);
    const returnTo = safeReturnPath(field(body, 'return_to'));
    const username = field(body, 'username');
    const password = field(body, 'password');
    // Throttling (server/limits/login-throttle.ts): an address over its limit gets 429; a locked user the
    // same message as a wrong password, without the password being checked.
    const throttle = username && password ? await loginThrottle?.check(username, ctx.ip) : undefined;
    if (throttle?.retryAfter !== undefined) {
      await audit.append(loginFailed({ recorded: new Date(), issuer: config.issuer, address: ctx.ip, username: username.slice(0, 128), reason: 'too many failed logins from this address' }));
      ctx.set('Retry-After', String(throttle.retryAfter));
      return showLogin(ctx, returnTo, { message: tooManyAttempts(throttle.retryAfter), username }, 429);
    }
    if (throttle?.locked) {
      await loginThrottle!.failed(username, ctx.ip);
      await audit.append(loginFailed({ recorded: new Date(), issuer: config.issuer, address: ctx.ip, username: username.slice(0, 128), reason: 'account locked after repeated failed logins' }));
      return showLogin(ctx, returnTo, { message: LOGIN_FAILED, username });
    }
    const user = username && password ? await authenticate(db, username, password) : undefined;
    if (username && password) await (user ? loginThrottle?.succeeded(username, ctx.ip) : loginThrottle?.failed(username, ctx.ip));
    await recordLogin(audit, { issuer: config.issuer, address: ctx.ip, username, user });
    if (!user) return showLogin(ctx, returnTo, { message: LOGIN_FAILED, username });
    const next = await stepAfterPassword(factorDeps, user);
    ctx.status = 303;
    if (next === 'done') {
      await setAccountSession(ctx, db, user.id, ['pwd']);
      return ctx.redirect(returnTo);
    }
    await startPendingAccountSignIn(ctx, db, user.id, next);
    ctx.redirect(`/account/login/next?return_to=${encodeURIComponent(returnTo)}`);
  });

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
    const result = await confirmEnrolment(factorDeps, step.user, field(ctx.request.body, 'code'), { address: ctx.ip });
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
    const signedIn = await signedInUser(ctx);
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
    const signedIn = await signedInUser(ctx);
    if (signedIn) {
      const id = await registerPasskey(db, rp, signedIn, credential);
      if (id) await recordSecurityChange(audit, { issuer: config.issuer, address: ctx.ip, user: signedIn, change: 'create', what: 'passkey' });
      ctx.status = 303;
      return ctx.redirect(`/account/security?${id ? 'added=passkey' : 'failed=passkey'}`);
    }
    const pending = await pendingAccountSignIn(ctx, db);
    const pendingUser = pending && (await findUser(db, pending.userId));
    if (pending?.step === 'enrol' && pendingUser) {
      const id = await registerPasskey(db, rp, pendingUser, credential);
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

  router.post('/account/logout', formBody, async (ctx) => {
    if (!validCsrf(ctx, field(ctx.request.body, 'csrf'))) return sendPage(ctx, 'error', { demo: config.demo, ...FORM_EXPIRED }, 403);
    const user = await signedInUser(ctx);
    if (user) await recordLogout(audit, { issuer: config.issuer, address: ctx.ip, user });
    await clearAccountSession(ctx, db);
    ctx.status = 303;
    ctx.redirect('/account/login');
  });

  router.get('/account/apps', async (ctx) => {
    const user = await signedInUser(ctx);
    if (!user) return toLogin(ctx, '/account/apps');
    return showApps(ctx, user, ctx.query.revoked === '1' ? { notice: 'Access revoked. The app can no longer use what you shared.' } : {});
  });

  router.post('/account/apps/revoke', formBody, async (ctx) => {
    const user = await signedInUser(ctx);
    if (!user) return toLogin(ctx, '/account/apps');
    const body = ctx.request.body;
    if (!validCsrf(ctx, field(body, 'csrf'))) return sendPage(ctx, 'error', { demo: config.demo, ...FORM_EXPIRED }, 403);
    const grantId = field(body, 'grant_id');
    const revoked = grantId ? await revokeGrantOf(db, host.provider, user.id, grantId) : false;
    if (!revoked) return showApps(ctx, user, { message: NOT_FOUND }, 404);
    ctx.status = 303;
    ctx.redirect('/account/apps?revoked=1');
  });

  return router;
}
