// A person's own pages: sign in (second factors: account-sign-in.ts), see the apps they granted access
// to, and revoke them (/account/apps is the SMART management_endpoint).
import Router from '@koa/router';
import type { Context } from 'koa';
import type { Config } from '../config.ts';
import type { Db } from '../db.ts';
import type { ProviderHost } from '../oidc/provider-host.ts';
import type { PatientDirectory } from '../fhir/patient-directory.ts';
import { csrfToken, validCsrf } from '../csrf.ts';
import { authenticate, patientOf, type User } from '../oidc/users.ts';
import { grantsOf, mergeRepeatedGrants, revokeGrantOf } from '../oidc/grants.ts';
import { describeScope, parseScopes } from '../smart/scopes.ts';
import { DEMO_ACCOUNTS } from '../demo-accounts.ts';
import { databaseAuditSink } from '../audit/store.ts';
import { auditUserOf, recordLogin, recordLogout } from '../audit/security-events.ts';
import { loginFailed, opaqueToken, tokenRevoked } from '../audit/balp.ts';
import { appendToChain, AuditWriteError } from '../audit/audit-store.ts';
import { sendAuditUnavailablePage } from '../audit/unavailable.ts';
import { tooManyAttempts, type LoginThrottle } from '../limits/login-throttle.ts';
import { clearAccountSession, field, FORM_EXPIRED, formBody, safeReturnPath, sendPage, signedInUser as sessionUser } from './session.ts';
import { allowOwnScripts } from '../views.ts';
import { accountSignInSteps, PASSKEY_FORM } from './account-sign-in.ts';

export interface AccountDeps {
  config: Config;
  db: Db;
  host: ProviderHost;
  patients?: PatientDirectory;
  /** Login throttling shared by every instance; undefined: none. */
  loginThrottle?: LoginThrottle;
}

const LOGIN_FAILED = 'The username or password is not correct.';
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

  const signedInUser = async (ctx: Context): Promise<User | undefined> => (await sessionUser(ctx, db, config))?.user;

  /** The person ended an app's access (a grant, by its digest: RFC 7009's record, with the person). */
  const grantRevoked = (ctx: Context, user: User, clientId: string, grantId: string) => tokenRevoked({
    recorded: new Date(), issuer: config.issuer, address: ctx.ip, clientId, user: auditUserOf(user),
    token: opaqueToken(grantId), tokenType: 'grant', reason: 'revoked by the person at /account/apps',
  });

  function toLogin(ctx: Context, returnTo: string) {
    ctx.status = 303;
    ctx.redirect(`/account/login?return_to=${encodeURIComponent(returnTo)}`);
  }

  function showLogin(ctx: Context, returnTo: string, extra: Record<string, unknown> = {}, status = 200) {
    allowOwnScripts(ctx);
    return sendPage(ctx, 'account-login', {
      title: 'Sign in to your account', demo: config.demo, csrf: csrfToken(ctx), returnTo,
      demoAccounts: config.demo ? DEMO_ACCOUNTS : [], passkey: { ...PASSKEY_FORM, action: `${PASSKEY_FORM.action}?return_to=${encodeURIComponent(returnTo)}`, mode: 'login' }, ...extra,
    }, status);
  }

  /** Second factors and passkeys at /account sign-in (account-sign-in.ts). */
  const steps = accountSignInSteps({ config, db, audit, loginThrottle, showLogin });

  async function showApps(ctx: Context, user: User, extra: { message?: string; notice?: string } = {}, status = 200) {
    const patientIsUser = Boolean(patientOf(user));
    const grants = await Promise.all(mergeRepeatedGrants(await grantsOf(db, host.provider, user.id)).map(async (g) => ({
      grantIds: g.grantIds.join(' '),
      clientName: g.clientName,
      scopes: scopeWords(g.scope, patientIsUser),
      patient: g.patient,
      patientName: g.patient && patients ? (await patients.get(g.patient))?.name : undefined,
      count: g.count,
      grantedAt: when(g.lastGrantedAt),
      firstGrantedAt: when(g.firstGrantedAt),
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
    return showLogin(ctx, returnTo, ctx.query.reauth === '1' ? { notice: 'Sign in again to change how you sign in.' } : {});
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
    if (username && password) await (user ? loginThrottle?.passed(username, ctx.ip) : loginThrottle?.failed(username, ctx.ip));
    await recordLogin(audit, { issuer: config.issuer, address: ctx.ip, username, user });
    if (!user) return showLogin(ctx, returnTo, { message: LOGIN_FAILED, username });
    return steps.afterPassword(ctx, user, returnTo);
  });
  steps.addRoutes(router);

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
    // One card may stand for several grants (mergeRepeatedGrants): its form sends their ids, space-separated.
    const grantIds = field(body, 'grant_id').split(' ').filter(Boolean).slice(0, 100);
    const appOf = new Map((await grantsOf(db, host.provider, user.id)).map((g) => [g.grantId, g.clientId]));
    const mine = grantIds.filter((id) => appOf.has(id));
    if (!mine.length) return showApps(ctx, user, { message: NOT_FOUND }, 404);
    // Recorded before any access ends: a revocation the trail cannot take is not made (503; try again).
    try {
      await appendToChain(db, mine.map((grantId) => grantRevoked(ctx, user, appOf.get(grantId)!, grantId)));
    } catch (err) {
      if (!(err instanceof AuditWriteError)) throw err;
      return sendAuditUnavailablePage(ctx, 'revocation', config.demo);
    }
    for (const grantId of mine) await revokeGrantOf(db, host.provider, user.id, grantId);
    ctx.status = 303;
    ctx.redirect('/account/apps?revoked=1');
  });

  return router;
}
