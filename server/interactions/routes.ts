// The pages a person sees during authorization: login, patient picker, consent.
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import type { Context } from 'koa';
import { errors } from 'oidc-provider';
import type { Config } from '../config.ts';
import type { ProviderHost } from '../oidc/provider-host.ts';
import type { Db } from '../db.ts';
import { csrfToken, validCsrf } from '../csrf.ts';
import { sendPage } from '../views.ts';
import { authenticate, findUser, mayAccessPatient, patientOf, type User } from '../oidc/users.ts';
import { consumeEhrLaunch, findEhrLaunch, saveGrantContext, type EhrLaunch } from '../oidc/launch-store.ts';
import { buildLaunchContext } from '../smart/launch-context.ts';
import { consentChoices, grantedContext, grantedFromForm, needsPatient, type ConsentChoices } from '../smart/consent.ts';
import { grantableScope, OIDC_SCOPES } from '../smart/client-scopes.ts';
import type { PatientDirectory } from '../fhir/patient-directory.ts';
import { DEMO_ACCOUNTS } from '../demo-accounts.ts';
import { subjectOf } from '../oidc/users.ts';
import { checkPurposeSubmission, purposeChoice, requestedPurpose, type PurposeChoice } from '../hcs/purpose-choice.ts';
import { purposeCoding, purposeDisplay } from '../hcs/codes.ts';
import { databaseAuditSink } from '../audit/store.ts';
import { consentDecision, loginFailed } from '../audit/balp.ts';
import { tooManyAttempts, type LoginThrottle } from '../limits/login-throttle.ts';
import { auditUserOf, recordLogin } from '../audit/security-events.ts';
import { clientPurposesOf } from '../oidc/clients.ts';
import { allowedScopeOf } from '../oidc/clients.ts';
import { acrOf, amrOf, requestedAcr, type SignInMethod } from '../auth/acr.ts';
import { checkCode, confirmEnrolment, stepAfterPassword } from '../auth/second-factor.ts';
import { hasSecondFactor } from '../auth/factors.ts';
import { authenticationOptions, registerPasskey, registrationOptions, relyingPartyOf, verifyPasskey } from '../auth/passkeys.ts';
import { enrolmentPage } from '../auth/enrolment-page.ts';
import { recordSecondFactor, recordSecurityChange } from '../audit/security-events.ts';
import { allowOwnScripts } from '../views.ts';

export interface InteractionDeps {
  config: Config;
  db: Db;
  host: ProviderHost;
  patients: PatientDirectory;
  /** Login throttling shared by every instance; undefined: none. */
  loginThrottle?: LoginThrottle;
}

type Details = Awaited<ReturnType<ProviderHost['provider']['interactionDetails']>>;

/**
 * A sign-in between the password and the second factor, kept in the interaction: whose, what was
 * shown so far, and what comes next (prove a factor, enrol one, or read the recovery codes).
 */
interface PendingLogin {
  accountId: string;
  methods: SignInMethod[];
  step: 'verify' | 'enrol' | 'codes';
  at: number;
}

/** A second factor shown again during this interaction, for break-the-glass at consent. */
interface StepUp {
  amr: string[];
  at: number;
}

/** How long the second step may wait after the password, and a step-up stays fresh for break-the-glass. */
const PENDING_SECONDS = 600;
const STEP_UP_SECONDS = 300;
const now = () => Math.floor(Date.now() / 1000);
const interactionState = (details: Details) => (details.result ?? {}) as { pendingLogin?: PendingLogin; stepUp?: StepUp };

const formBody = bodyParser({ enableTypes: ['form'], formLimit: '64kb' });
const LOGIN_FAILED = 'The username or password is not correct.';
const PASSKEY_FAILED = 'That passkey could not be used. Try again, or use your password.';
const BTG_STEP_UP = 'Emergency access needs you to confirm it is you: type a fresh code from your authenticator app, or use your passkey.';
const OIDC = new Set<string>(OIDC_SCOPES);

export function interactionRoutes({ config, db, host, patients, loginThrottle }: InteractionDeps): Router {
  const router = new Router();
  const audit = databaseAuditSink(db);
  const rp = relyingPartyOf(config.issuer);
  const factorDeps = { config, db, audit, loginThrottle };

  const page = (ctx: Context, view: string, data: Record<string, unknown>, status = 200) =>
    sendPage(ctx, view, { demo: config.demo, ...data }, status);

  async function clientName(details: Details): Promise<string> {
    const client = await host.provider.Client.find(String(details.params.client_id));
    return client?.clientName ?? String(details.params.client_id);
  }

  /** The EHR launch of this authorization, if it is one; undefined when the id is no longer usable. */
  async function ehrLaunchOf(details: Details): Promise<EhrLaunch | undefined> {
    return details.params.launch ? findEhrLaunch(db, String(details.params.launch)) : undefined;
  }

  async function choicesFor(details: Details, user: User): Promise<{ scopes: ConsentChoices; purpose: PurposeChoice; stepUp: { totp: boolean; passkey: boolean } }> {
    const client = await host.provider.Client.find(String(details.params.client_id));
    const scope = grantableScope({
      requested: [String(details.params.scope ?? '')],
      allowed: client && allowedScopeOf(client),
      backend: false,
    });
    const requested = requestedPurpose(String(details.params.scope ?? ''), details.params.purpose_of_use);
    const subject = subjectOf(user);
    // BTG_REQUIRE_MFA: break-the-glass only for users who can be stepped up with a second factor.
    const factors = await hasSecondFactor(db, user.id);
    const canStepUp = factors.totp || factors.passkey;
    if (config.btgRequireMfa && !canStepUp) subject.breakGlass = false;
    return {
      scopes: consentChoices(scope, { patientIsUser: Boolean(patientOf(user)) }),
      purpose: purposeChoice({ policy: config.policy, subject, clientPurposes: client && clientPurposesOf(client), requested }),
      stepUp: { totp: factors.totp, passkey: factors.passkey },
    };
  }

  /** Ends the authorization with an error for the app (RFC 6749 4.1.2.1), e.g. a purpose of use it may not have. */
  async function refuse(ctx: Context, error: string, description: string) {
    await host.provider.interactionFinished(ctx.req, ctx.res, { error, error_description: description }, { mergeWithLastSubmission: false });
  }

  const passkeyForm = (details: Details, mode: 'login' | 'register') =>
    ({ action: `/interaction/${details.uid}/passkey`, options: `/interaction/${details.uid}/passkey/options`, mode });

  async function renderLogin(ctx: Context, details: Details, extra: Record<string, unknown> = {}, status = 200) {
    allowOwnScripts(ctx);
    await page(ctx, 'login', {
      title: 'Sign in',
      uid: details.uid,
      csrf: csrfToken(ctx),
      clientName: await clientName(details),
      demoAccounts: config.demo ? DEMO_ACCOUNTS : [],
      passkey: passkeyForm(details, 'login'),
      ...extra,
    }, status);
  }

  /** The sign-in in progress in this interaction, if its second step has not timed out. */
  function pendingLogin(details: Details): PendingLogin | undefined {
    const pending = interactionState(details).pendingLogin;
    return pending && pending.at + PENDING_SECONDS > now() ? pending : undefined;
  }

  async function savePending(details: Details, pending: PendingLogin | undefined, stepUp?: StepUp) {
    details.result = { ...(pending && { pendingLogin: pending }), ...(stepUp && { stepUp }) };
    await details.save(details.exp - now());
  }

  /** Ends the login step: the session remembers how the person signed in (amr, acr). */
  async function finishLogin(ctx: Context, accountId: string, methods: SignInMethod[]) {
    const amr = amrOf(methods);
    await host.provider.interactionFinished(ctx.req, ctx.res, { login: { accountId, amr, acr: acrOf(amr) } }, { mergeWithLastSubmission: false });
  }

  /** The second step of a sign-in: prove a factor, set one up, or (after set-up) the recovery codes. */
  async function renderPending(ctx: Context, details: Details, pending: PendingLogin, user: User, extra: { message?: string; codes?: string[] } = {}, status = 200) {
    allowOwnScripts(ctx);
    const csrf = csrfToken(ctx);
    if (pending.step === 'codes') {
      return page(ctx, 'recovery-codes', { title: 'Recovery codes', csrf, codes: extra.codes ?? [], action: `/interaction/${details.uid}/continue` }, status);
    }
    if (pending.step === 'enrol') {
      return page(ctx, 'enrol-totp', {
        title: 'Set up a second factor', csrf, required: true, message: extra.message, action: `/interaction/${details.uid}/enrol`,
        cancel: `/interaction/${details.uid}/abort`, passkey: passkeyForm(details, 'register'),
        ...(await enrolmentPage(db, config, user)),
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
  async function pendingStep(ctx: Context, steps: PendingLogin['step'][]) {
    const details = await host.provider.interactionDetails(ctx.req, ctx.res);
    const body = ctx.request.body as Record<string, unknown>;
    if (details.prompt.name !== 'login') throw new errors.InvalidRequest('this step is not a login');
    if (!validCsrf(ctx, body.csrf)) {
      await page(ctx, 'error', { title: 'Form expired', description: 'Reload the page and try again.' }, 403);
      return undefined;
    }
    const pending = pendingLogin(details);
    const user = pending && steps.includes(pending.step) ? await findUser(db, pending.accountId) : undefined;
    if (!pending || !user || user.disabled) {
      await savePending(details, undefined);
      await renderLogin(ctx, details, { message: 'The sign-in took too long. Sign in again.' });
      return undefined;
    }
    return { details, body, pending, user };
  }

  /**
   * The patient this authorization is about: from the EHR launch, the patient user's own
   * record, or the picker's choice; `undefined` when it still has to be picked.
   */
  async function resolvePatient(details: Details, user: User, picked: unknown): Promise<{ patient?: string; encounter?: string; pick: boolean; error?: string }> {
    if (details.params.launch) {
      const launch = await ehrLaunchOf(details);
      if (!launch) return { pick: false, error: 'This launch has expired or was already used. Launch the app again from the EHR.' };
      if (!mayAccessPatient(user, launch.patient)) return { pick: false, error: 'You may not open the record of the patient in this launch.' };
      return { patient: launch.patient, encounter: launch.encounter ?? undefined, pick: false };
    }
    const own = patientOf(user);
    if (own) return { patient: own, pick: false };
    if (typeof picked === 'string' && picked) {
      if (!mayAccessPatient(user, picked) || !(await patients.get(picked))) return { pick: true, error: 'Choose one of the patients listed.' };
      return { patient: picked, pick: false };
    }
    return { pick: true };
  }

  async function renderConsent(ctx: Context, details: Details, user: User, choices: Awaited<ReturnType<typeof choicesFor>>, patient: string | undefined, message?: string) {
    const patientName = patient ? (await patients.get(patient))?.name : undefined;
    const purpose = choices.purpose;
    const steppedUp = Boolean(interactionState(details).stepUp);
    if (choices.stepUp.passkey) allowOwnScripts(ctx);
    return page(ctx, 'consent', {
      stepUp: purpose.emergency.length ? { ...choices.stepUp, done: steppedUp } : undefined,
      passkey: choices.stepUp.passkey && purpose.emergency.length
        ? { ...passkeyForm(details, 'login'), action: `/interaction/${details.uid}/passkey${patient ? `?patient=${encodeURIComponent(patient)}` : ''}` }
        : undefined,
      notice: ctx.query.stepped_up === '1' ? 'Passkey confirmed. You can now choose emergency access.' : undefined,
      message: message ?? (ctx.query.stepped_up === '0' ? 'That passkey could not be used.' : undefined),
      title: 'Allow access?',
      uid: details.uid,
      csrf: csrfToken(ctx),
      clientName: await clientName(details),
      patient: details.params.launch || patientOf(user) ? undefined : patient,
      patientName,
      ...choices.scopes,
      purpose: { ...purpose, labels: Object.fromEntries(purpose.options.map((code) => [code, `${purposeDisplay(code)} (${code})`])) },
    }, message ? 400 : 200);
  }

  router.get('/interaction/:uid', async (ctx) => {
    const details = await host.provider.interactionDetails(ctx.req, ctx.res);
    if (details.prompt.name === 'login') {
      const pending = pendingLogin(details);
      const pendingUser = pending && (await findUser(db, pending.accountId));
      if (pending && pendingUser && !pendingUser.disabled) return renderPending(ctx, details, pending, pendingUser);
      return renderLogin(ctx, details);
    }

    const user = await findUser(db, String(details.session?.accountId));
    if (!user || user.disabled) return renderLogin(ctx, details);
    const choices = await choicesFor(details, user);
    if (choices.purpose.error) return refuse(ctx, choices.purpose.error.code, choices.purpose.error.description);
    const context = needsPatient(choices.scopes) ? await resolvePatient(details, user, ctx.query.patient) : { pick: false };
    if (context.error && !context.pick) return page(ctx, 'error', { title: 'Cannot continue', description: context.error }, 400);
    if (context.pick) {
      const list = (await patients.list()).filter((p) => mayAccessPatient(user, p.id));
      return page(ctx, 'picker', { title: 'Choose a patient', uid: details.uid, clientName: await clientName(details), patients: list, message: context.error });
    }
    return renderConsent(ctx, details, user, choices, 'patient' in context ? context.patient : undefined);
  });

  router.post('/interaction/:uid/login', formBody, async (ctx) => {
    const details = await host.provider.interactionDetails(ctx.req, ctx.res);
    const body = ctx.request.body as Record<string, unknown>;
    if (details.prompt.name !== 'login') throw new errors.InvalidRequest('this step is not a login');
    if (!validCsrf(ctx, body.csrf)) return page(ctx, 'error', { title: 'Form expired', description: 'Reload the page and try again.' }, 403);
    const username = typeof body.username === 'string' ? body.username : '';
    const password = typeof body.password === 'string' ? body.password : '';
    const clientId = String(details.params.client_id);
    // Throttling (server/limits/login-throttle.ts): an address over its limit gets 429; a locked user the
    // same message as a wrong password, without the password being checked.
    const throttle = username && password ? await loginThrottle?.check(username, ctx.ip) : undefined;
    if (throttle?.retryAfter !== undefined) {
      await audit.append(loginFailed({ recorded: new Date(), issuer: config.issuer, address: ctx.ip, clientId, username: username.slice(0, 128), reason: 'too many failed logins from this address' }));
      ctx.set('Retry-After', String(throttle.retryAfter));
      return renderLogin(ctx, details, { message: tooManyAttempts(throttle.retryAfter), username }, 429);
    }
    if (throttle?.locked) {
      await loginThrottle!.failed(username, ctx.ip);
      await audit.append(loginFailed({ recorded: new Date(), issuer: config.issuer, address: ctx.ip, clientId, username: username.slice(0, 128), reason: 'account locked after repeated failed logins' }));
      return renderLogin(ctx, details, { message: LOGIN_FAILED, username }, 200);
    }
    const user = username && password ? await authenticate(db, username, password) : undefined;
    if (username && password) await (user ? loginThrottle?.succeeded(username, ctx.ip) : loginThrottle?.failed(username, ctx.ip));
    await recordLogin(audit, { issuer: config.issuer, address: ctx.ip, clientId, username, user });
    if (!user) return renderLogin(ctx, details, { message: LOGIN_FAILED, username }, 200);
    const next = await stepAfterPassword(factorDeps, user, requestedAcr(details.params));
    if (next === 'done') return finishLogin(ctx, user.id, ['pwd']);
    const pending: PendingLogin = { accountId: user.id, methods: ['pwd'], step: next, at: now() };
    await savePending(details, pending);
    return renderPending(ctx, details, pending, user);
  });

  router.post('/interaction/:uid/second-factor', formBody, async (ctx) => {
    const step = await pendingStep(ctx, ['verify']);
    if (!step) return;
    const { details, body, pending, user } = step;
    const result = await checkCode(factorDeps, user, typeof body.otp === 'string' ? body.otp : '', { address: ctx.ip, clientId: String(details.params.client_id) });
    if (!result.ok) {
      if (result.retryAfter !== undefined) ctx.set('Retry-After', String(result.retryAfter));
      return renderPending(ctx, details, pending, user, { message: result.message }, result.retryAfter !== undefined ? 429 : 200);
    }
    return finishLogin(ctx, user.id, [...pending.methods, result.method]);
  });

  router.post('/interaction/:uid/enrol', formBody, async (ctx) => {
    const step = await pendingStep(ctx, ['enrol']);
    if (!step) return;
    const { details, body, pending, user } = step;
    const result = await confirmEnrolment(factorDeps, user, typeof body.code === 'string' ? body.code : '', { address: ctx.ip, clientId: String(details.params.client_id) });
    if ('message' in result) return renderPending(ctx, details, pending, user, { message: result.message });
    const next: PendingLogin = { ...pending, methods: [...pending.methods, 'otp'], step: 'codes', at: now() };
    await savePending(details, next);
    return renderPending(ctx, details, next, user, { codes: result.recoveryCodes });
  });

  router.post('/interaction/:uid/continue', formBody, async (ctx) => {
    const step = await pendingStep(ctx, ['codes']);
    if (step) await finishLogin(ctx, step.user.id, step.pending.methods);
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
    const pending = details.prompt.name === 'login' ? pendingLogin(details) : undefined;
    const accountId = details.prompt.name === 'login' ? pending?.accountId : details.session?.accountId;
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
    const pending = pendingLogin(details);
    const pendingUser = pending && (await findUser(db, pending.accountId));
    if (pending?.step === 'enrol' && pendingUser) {
      const id = await registerPasskey(db, rp, pendingUser, credential);
      if (!id) return renderPending(ctx, details, pending, pendingUser, { message: PASSKEY_FAILED });
      await recordSecurityChange(audit, { issuer: config.issuer, address: ctx.ip, user: pendingUser, change: 'create', what: 'passkey' });
      return finishLogin(ctx, pendingUser.id, [...pending.methods, 'hwk']);
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
    return finishLogin(ctx, user.id, [...(pending?.methods ?? []), proved.method]);
  });

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

  router.post('/interaction/:uid/consent', formBody, async (ctx) => {
    const details = await host.provider.interactionDetails(ctx.req, ctx.res);
    const body = ctx.request.body as Record<string, unknown>;
    if (details.prompt.name !== 'consent') throw new errors.InvalidRequest('this step is not a consent');
    if (!validCsrf(ctx, body.csrf)) return page(ctx, 'error', { title: 'Form expired', description: 'Reload the page and try again.' }, 403);

    const user = await findUser(db, String(details.session?.accountId));
    if (!user || user.disabled) throw new errors.AccessDenied('the account is not active');
    const decision = (allowed: boolean, extra: { patient?: string; purpose?: string; granted?: string[]; reason?: string } = {}) => audit.append(consentDecision({
      recorded: new Date(), issuer: config.issuer, address: ctx.ip, allowed, clientId: String(details.params.client_id), user: auditUserOf(user),
      patient: extra.patient, purposeOfUse: extra.purpose ? [purposeCoding(extra.purpose)] : undefined,
      requestedScope: String(details.params.scope ?? ''), grantedScope: extra.granted?.join(' '), reason: extra.reason,
    }));

    if (body.decision !== 'allow') {
      await decision(false, { reason: 'the user denied the request' });
      await host.provider.interactionFinished(ctx.req, ctx.res,
        { error: 'access_denied', error_description: 'The user denied the authorization request' },
        { mergeWithLastSubmission: false });
      return;
    }

    const choices = await choicesFor(details, user);
    if (choices.purpose.error) return refuse(ctx, choices.purpose.error.code, choices.purpose.error.description);
    const granted = grantedFromForm(choices.scopes, body.scope);
    if (granted.length === 0) {
      await decision(false, { reason: 'the user granted none of the requested access' });
      return refuse(ctx, 'access_denied', 'The user granted none of the requested access');
    }
    let context: Awaited<ReturnType<typeof resolvePatient>> = { pick: false };
    if (needsPatient(choices.scopes)) {
      context = await resolvePatient(details, user, body.patient);
      if (context.error || context.pick) return page(ctx, 'error', { title: 'Cannot continue', description: context.error ?? 'No patient was chosen.' }, 400);
    }
    const purpose = typeof body.purpose_of_use === 'string' ? body.purpose_of_use : choices.purpose.preselected ?? '';
    const reason = typeof body.btg_reason === 'string' ? body.btg_reason : '';
    const purposeProblem = checkPurposeSubmission(choices.purpose, purpose, reason);
    if (purposeProblem) return renderConsent(ctx, details, user, choices, context.patient, purposeProblem);
    const emergency = choices.purpose.emergency.includes(purpose);
    // Break-the-glass needs a second factor shown in this interaction, however the session signed in.
    let stepUpAmr: string[] | undefined;
    if (emergency && (choices.stepUp.totp || choices.stepUp.passkey)) {
      const stepUp = await btgStepUp(ctx, details, user, body);
      if ('message' in stepUp) return renderConsent(ctx, details, user, choices, context.patient, stepUp.message);
      stepUpAmr = stepUp.amr;
    }

    const ehrLaunch = details.params.launch ? await consumeEhrLaunch(db, String(details.params.launch)) : undefined;
    if (details.params.launch && !ehrLaunch) {
      return page(ctx, 'error', { title: 'Cannot continue', description: 'This launch has expired or was already used.' }, 400);
    }

    // The consent may swap a scope for a narrower one the app did not ask for; the request
    // is rewritten to what was granted so oidc-provider issues exactly that.
    details.params.scope = granted.join(' ');
    await details.save(details.exp - Math.floor(Date.now() / 1000));

    const aud = String(details.params.resource ?? details.params.aud);
    const grant = new host.provider.Grant({ accountId: user.id, clientId: String(details.params.client_id) });
    const oidcScopes = granted.filter((s) => OIDC.has(s));
    if (oidcScopes.length) grant.addOIDCScope(oidcScopes.join(' '));
    if (granted.length) grant.addResourceScope(aud, granted.join(' '));
    const grantId = await grant.save();

    const carries = grantedContext(granted);
    await saveGrantContext(db, grantId, {
      launch: buildLaunchContext({
        patient: carries.patient ? context.patient : undefined,
        encounter: carries.encounter ? context.encounter : undefined,
        fhirContext: ehrLaunch?.fhirContext,
        ehrLaunch: Boolean(details.params.launch),
        styleUrl: `${config.issuer}/smart-style/v1.json`,
        tenant: config.tenant,
      }),
      purposeOfUse: purpose,
      emergencyReason: emergency ? reason.trim() : undefined,
      stepUpAmr,
    }, emergency ? config.btgTokenTtl + 120 : config.refreshTokenTtl);

    await decision(true, { patient: carries.patient ? context.patient : undefined, purpose, granted });
    await host.provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  });

  router.get('/interaction/:uid/abort', async (ctx) => {
    await host.provider.interactionDetails(ctx.req, ctx.res);
    await host.provider.interactionFinished(ctx.req, ctx.res,
      { error: 'access_denied', error_description: 'The user cancelled the authorization request' },
      { mergeWithLastSubmission: false });
  });

  return router;
}
