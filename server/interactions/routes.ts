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
import { authenticate, findUser, findUserByUsername, mayAccessPatient, patientOf, type User } from '../oidc/users.ts';
import { consumeEhrLaunch, findEhrLaunchFor, saveGrantContext, type EhrLaunch } from '../oidc/launch-store.ts';
import { buildLaunchContext } from '../smart/launch-context.ts';
import { consentChoices, grantedContext, grantedFromForm, needsPatient, type ConsentChoices } from '../smart/consent.ts';
import { grantableScope, OIDC_SCOPES } from '../smart/client-scopes.ts';
import type { PatientDirectory, PatientSummary } from '../fhir/patient-directory.ts';
import type { UserPatients } from '../fhir/user-patients.ts';
import { DEMO_ACCOUNTS } from '../demo-accounts.ts';
import { subjectOf } from '../oidc/users.ts';
import { SCOPE_CLAIMS } from '../oidc/token/account.ts';
import { checkPurposeSubmission, mayOpenTestData, purposeChoice, purposeForPatient, requestedPurpose, type PurposeChoice } from '../hcs/purpose-choice.ts';
import { isTestPurpose, plainPurpose, purposeCoding, purposeDisplay } from '../hcs/codes.ts';
import { pickablePatients } from './picker.ts';
import { findSandboxLaunch, type SandboxOptions } from '../sandbox.ts';
import { databaseAuditSink } from '../audit/store.ts';
import { consentDecision, loginFailed } from '../audit/balp.ts';
import { tooManyAttempts, type LoginThrottle } from '../limits/login-throttle.ts';
import { auditUserOf, recordLogin } from '../audit/security-events.ts';
import { clientPurposesOf } from '../oidc/clients.ts';
import { allowedScopeOf } from '../oidc/clients.ts';
import { hasSecondFactor } from '../auth/factors.ts';
import { allowOwnScripts } from '../views.ts';
import { passkeyForm, signInSteps, steppedUp } from './sign-in-steps.ts';

export interface InteractionDeps {
  config: Config;
  db: Db;
  host: ProviderHost;
  patients: PatientDirectory;
  /** The patients the picker lists: those of the FHIR server in `aud` the user may see; default: every patient of `patients`. */
  patientsAt?: UserPatients;
  /** Login throttling shared by every instance; undefined: none. */
  loginThrottle?: LoginThrottle;
}

type Details = Awaited<ReturnType<ProviderHost['provider']['interactionDetails']>>;
type Grant = InstanceType<ProviderHost['provider']['Grant']>;

const formBody = bodyParser({ enableTypes: ['form'], formLimit: '64kb' });
const LOGIN_FAILED = 'The username or password is not correct.';
const OIDC = new Set<string>(OIDC_SCOPES);

export function interactionRoutes({ config, db, host, patients, patientsAt, loginThrottle }: InteractionDeps): Router {
  const router = new Router();
  const audit = databaseAuditSink(db);

  const page = (ctx: Context, view: string, data: Record<string, unknown>, status = 200) =>
    sendPage(ctx, view, { demo: config.demo, ...data }, status);

  async function clientName(details: Details): Promise<string> {
    const client = await host.provider.Client.find(String(details.params.client_id));
    return client?.clientName ?? String(details.params.client_id);
  }

  /** The app's name and where the code goes: the host of this request's redirect URI, so a look-alike name cannot hide it. */
  async function appIdentity(details: Details): Promise<{ clientName: string; redirectHost: string }> {
    return { clientName: await clientName(details), redirectHost: URL.parse(String(details.params.redirect_uri))?.host ?? '' };
  }

  /**
   * The patients of the FHIR server the app named in `aud`, as the user may see them there (test patients
   * too, read under a test purpose, when the user may assert one).
   */
  async function patientsOfAud(details: Details, user: User, purpose: PurposeChoice): Promise<PatientSummary[]> {
    if (!patientsAt) return patients.list();
    const aud = String(details.params.aud ?? config.fhirBase);
    const everyday = purpose.preselected && !isTestPurpose(purpose.preselected) ? purpose.preselected : purpose.options.find((code) => !purpose.emergency.includes(code) && !isTestPurpose(code));
    const test = mayOpenTestData(purpose) ? purpose.options.find(isTestPurpose) : undefined;
    const lists = await Promise.all([everyday, ...(test ? [test] : [])].map((code) => patientsAt(user, aud, code)));
    return [...new Map(lists.flat().map((p) => [p.id, p])).values()];
  }

  /** The patients the user may pick for this authorization, narrowed by the picker's rules and search. */
  async function pickable(details: Details, user: User, purpose: PurposeChoice, query = ''): Promise<PatientSummary[]> {
    return pickablePatients(await patientsOfAud(details, user, purpose), { mayOpen: (id) => mayAccessPatient(user, id), mayOpenTestData: mayOpenTestData(purpose), query });
  }

  /** One patient as the server in `aud` has them: the same id may be another person on another server. */
  async function patientSummary(details: Details, user: User, purpose: PurposeChoice, id: string): Promise<PatientSummary | undefined> {
    if (!patientsAt || String(details.params.aud ?? config.fhirBase) === config.fhirBase) return patients.get(id);
    return (await patientsOfAud(details, user, purpose)).find((p) => p.id === id);
  }

  /** The EHR launch of this authorization, if it is one; undefined when the id is no longer usable (by this user). */
  async function ehrLaunchOf(details: Details, user: User): Promise<EhrLaunch | undefined> {
    return details.params.launch ? findEhrLaunchFor(db, String(details.params.launch), user.id) : undefined;
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

  /** The sandbox options of this authorization's launch (demo mode only; see server/sandbox.ts). */
  async function sandboxOf(details: Details): Promise<SandboxOptions | undefined> {
    return config.demo && details.params.launch ? findSandboxLaunch(db, String(details.params.launch)) : undefined;
  }

  /** Ends the authorization with an error for the app (RFC 6749 4.1.2.1), e.g. a purpose of use it may not have. */
  async function refuse(ctx: Context, error: string, description: string) {
    await host.provider.interactionFinished(ctx.req, ctx.res, { error, error_description: description }, { mergeWithLastSubmission: false });
  }

  async function renderLogin(ctx: Context, details: Details, extra: Record<string, unknown> = {}, status = 200) {
    allowOwnScripts(ctx);
    await page(ctx, 'login', {
      title: 'Sign in',
      uid: details.uid,
      csrf: csrfToken(ctx),
      ...(await appIdentity(details)),
      demoAccounts: config.demo ? DEMO_ACCOUNTS : [],
      passkey: passkeyForm(details, 'login'),
      ...extra,
    }, status);
  }

  /** Second factors, passkeys and the break-the-glass step-up (sign-in-steps.ts). */
  const steps = signInSteps({ config, db, host, audit, loginThrottle, page, renderLogin });

  /**
   * The patient this authorization is about: from the EHR launch, the patient user's own
   * record, or the picker's choice; `undefined` when it still has to be picked.
   */
  async function resolvePatient(details: Details, user: User, picked: unknown, purpose: PurposeChoice): Promise<{ patient?: string; encounter?: string; pick: boolean; error?: string }> {
    if (details.params.launch) {
      const launch = await ehrLaunchOf(details, user);
      if (!launch) return { pick: false, error: 'This launch has expired or was already used. Launch the app again from the EHR.' };
      if (!mayAccessPatient(user, launch.patient)) return { pick: false, error: 'You may not open the record of the patient in this launch.' };
      return { patient: launch.patient, encounter: launch.encounter ?? undefined, pick: false };
    }
    const own = patientOf(user);
    if (own) return { patient: own, pick: false };
    if (typeof picked === 'string' && picked) {
      if (!(await pickable(details, user, purpose)).some((p) => p.id === picked)) return { pick: true, error: 'Choose one of the patients listed.' };
      return { patient: picked, pick: false };
    }
    return { pick: true };
  }

  /** The purpose to preselect: one under which the patient's record is visible (test data needs a test purpose). */
  const purposeFor = (choice: PurposeChoice, summary: PatientSummary | undefined) =>
    (summary ? purposeForPatient(choice, summary) : { preselected: choice.preselected, visible: true });

  async function renderConsent(ctx: Context, details: Details, user: User, choices: Awaited<ReturnType<typeof choicesFor>>, patient: string | undefined, message?: string) {
    const summary = patient ? await patientSummary(details, user, choices.purpose, patient) : undefined;
    const ownRecord = Boolean(patientOf(user));
    const forPatient = purposeFor(choices.purpose, summary);
    const purpose = { ...choices.purpose, preselected: forPatient.preselected };
    const label = (code: string) => (ownRecord ? plainPurpose(code) : `${purposeDisplay(code)} (${code})`);
    if (choices.stepUp.passkey) allowOwnScripts(ctx);
    return page(ctx, 'consent', {
      stepUp: purpose.emergency.length ? { ...choices.stepUp, done: steppedUp(details) } : undefined,
      passkey: choices.stepUp.passkey && purpose.emergency.length
        ? { ...passkeyForm(details, 'login'), action: `/interaction/${details.uid}/passkey${patient ? `?patient=${encodeURIComponent(patient)}` : ''}` }
        : undefined,
      notice: ctx.query.stepped_up === '1' ? 'Passkey confirmed. You can now choose emergency access.' : undefined,
      message: message ?? (ctx.query.stepped_up === '0' ? 'That passkey could not be used.' : undefined),
      title: 'Allow access?',
      uid: details.uid,
      csrf: csrfToken(ctx),
      ...(await appIdentity(details)),
      patient: details.params.launch || ownRecord ? undefined : patient,
      patientName: summary?.name,
      ownRecord,
      testPatient: Boolean(summary?.test),
      notVisible: summary && purpose.options.length && !forPatient.visible ? summary.name : undefined,
      ...choices.scopes,
      purpose: { ...purpose, labels: Object.fromEntries(purpose.options.map((code) => [code, label(code)])) },
    }, message ? 400 : 200);
  }

  router.get('/interaction/:uid', async (ctx) => {
    const details = await host.provider.interactionDetails(ctx.req, ctx.res);
    const sandbox = await sandboxOf(details);
    if (sandbox?.failure === 'auth_denied') return refuse(ctx, 'access_denied', 'sandbox: the user denied access (simulated failure)');
    if (sandbox?.failure === 'auth_invalid_scope') return refuse(ctx, 'invalid_scope', 'sandbox: the requested scope is refused (simulated failure)');
    if (details.prompt.name === 'login') {
      const skipTo = sandbox?.skipLogin && sandbox.username ? await findUserByUsername(db, sandbox.username) : undefined;
      if (skipTo && !skipTo.disabled) {
        await recordLogin(audit, { issuer: config.issuer, address: ctx.ip, clientId: String(details.params.client_id), username: skipTo.username, user: skipTo });
        return host.provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: skipTo.id } }, { mergeWithLastSubmission: false });
      }
      if (await steps.showPending(ctx, details)) return;
      return renderLogin(ctx, details);
    }

    const user = await findUser(db, String(details.session?.accountId));
    if (!user || user.disabled) return renderLogin(ctx, details);
    const choices = await choicesFor(details, user);
    if (choices.purpose.error) return refuse(ctx, choices.purpose.error.code, choices.purpose.error.description);
    const context = needsPatient(choices.scopes, { ehrLaunch: Boolean(details.params.launch) }) ? await resolvePatient(details, user, ctx.query.patient, choices.purpose) : { pick: false };
    if (context.error && !context.pick) return page(ctx, 'error', { title: 'Cannot continue', description: context.error }, 400);
    if (context.pick) {
      const query = typeof ctx.query.q === 'string' ? ctx.query.q.slice(0, 100) : '';
      const list = await pickable(details, user, choices.purpose, query);
      return page(ctx, 'picker', { title: 'Choose a patient', uid: details.uid, csrf: csrfToken(ctx), clientName: await clientName(details), patients: list, query, message: context.error });
    }
    const patient = 'patient' in context ? context.patient : undefined;
    if (sandbox?.skipConsent) {
      // Grant what was asked, under the purpose the page would preselect.
      const purpose = purposeFor(choices.purpose, patient ? await patients.get(patient) : undefined).preselected;
      const asked = choices.scopes.groups.flatMap((g) => g.items.filter((i) => i.checked).map((i) => i.scope));
      return decide(ctx, details, user, { decision: 'allow', scope: asked, purpose_of_use: purpose, patient });
    }
    return renderConsent(ctx, details, user, choices, patient);
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
    if (username && password) await (user ? loginThrottle?.passed(username, ctx.ip) : loginThrottle?.failed(username, ctx.ip));
    await recordLogin(audit, { issuer: config.issuer, address: ctx.ip, clientId, username, user });
    if (!user) return renderLogin(ctx, details, { message: LOGIN_FAILED, username }, 200);
    return steps.afterPassword(ctx, details, user);
  });
  steps.addRoutes(router);

  router.post('/interaction/:uid/consent', formBody, async (ctx) => {
    const details = await host.provider.interactionDetails(ctx.req, ctx.res);
    const body = ctx.request.body as Record<string, unknown>;
    if (details.prompt.name !== 'consent') throw new errors.InvalidRequest('this step is not a consent');
    if (!validCsrf(ctx, body.csrf)) return page(ctx, 'error', { title: 'Form expired', description: 'Reload the page and try again.' }, 403);

    const user = await findUser(db, String(details.session?.accountId));
    if (!user || user.disabled) throw new errors.AccessDenied('the account is not active');
    return decide(ctx, details, user, body);
  });

  /** Carries out a consent decision (submitted, or the sandbox's skip-consent): grant and finish, or deny. */
  async function decide(ctx: Context, details: Details, user: User, body: Record<string, unknown>) {
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
    if (needsPatient(choices.scopes, { ehrLaunch: Boolean(details.params.launch) })) {
      context = await resolvePatient(details, user, body.patient, choices.purpose);
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
      const stepUp = await steps.btgStepUp(ctx, details, user, body);
      if ('message' in stepUp) return renderConsent(ctx, details, user, choices, context.patient, stepUp.message);
      stepUpAmr = stepUp.amr;
    }

    const ehrLaunch = details.params.launch ? await consumeEhrLaunch(db, String(details.params.launch), user.id) : undefined;
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
    decideClaims(grant, oidcScopes, details.prompt.details.missingOIDCClaims);
    if (granted.length) grant.addResourceScope(aud, granted.join(' '));
    const grantId = await grant.save();

    const carries = grantedContext(granted);
    await saveGrantContext(db, grantId, {
      launch: buildLaunchContext({
        patient: carries.patient ? context.patient : undefined,
        encounter: carries.encounter ? context.encounter : undefined,
        fhirContext: carries.fhirContext ? ehrLaunch?.fhirContext : undefined,
        ehrLaunch: Boolean(details.params.launch),
        styleUrl: `${config.issuer}/smart-style/v1.json`,
        tenant: config.tenant,
      }),
      purposeOfUse: purpose,
      emergencyReason: emergency ? reason.trim() : undefined,
      stepUpAmr,
      sandboxFailure: (await sandboxOf(details))?.failure,
    }, emergency ? config.btgTokenTtl + 120 : config.refreshTokenTtl);

    await decision(true, { patient: carries.patient ? context.patient : undefined, purpose, granted });
    await host.provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  // A form with the CSRF token (Cancel on the login, picker and second-factor pages): a link cannot cancel.
  router.post('/interaction/:uid/abort', formBody, async (ctx) => {
    await host.provider.interactionDetails(ctx.req, ctx.res);
    if (!validCsrf(ctx, (ctx.request.body as Record<string, unknown>).csrf)) return page(ctx, 'error', { title: 'Form expired', description: 'Reload the page and try again.' }, 403);
    await host.provider.interactionFinished(ctx.req, ctx.res,
      { error: 'access_denied', error_description: 'The user cancelled the authorization request' },
      { mergeWithLastSubmission: false });
  });

  return router;
}

/**
 * Claims the app asked for in the `claims` parameter (OIDC Core 5.5): granted when a scope the person granted
 * releases them, rejected otherwise (left out of the id token and userinfo, essential or not, as 5.5.1 allows).
 * Every one must be decided, or oidc-provider would ask for consent again, and again.
 */
function decideClaims(grant: Grant, oidcScopes: string[], asked: unknown) {
  const claims = Array.isArray(asked) ? asked.map(String) : [];
  const released = new Set(oidcScopes.flatMap((scope) => SCOPE_CLAIMS[scope] ?? []));
  grant.addOIDCClaims(claims.filter((claim) => released.has(claim)));
  grant.rejectOIDCClaims(claims.filter((claim) => !released.has(claim)));
}
