// The sandbox launcher page (demo mode only; app.ts mounts it then): register or pick an app, find a
// patient, choose encounter and user, set the sandbox options (server/sandbox.ts), get a launch link.
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import type { Context } from 'koa';
import { csrfToken, validCsrf } from './csrf.ts';
import { sendPage } from './views.ts';
import { checkLaunchRequest, launchUserProblem, mintRecordedLaunch, type LaunchRequest, type LauncherDeps } from './launcher.ts';
import { findUserByUsername, listUsers, patientOf } from './oidc/users.ts';
import { addClient, ClientError, listClients } from './oidc/clients.ts';
import { pickablePatients } from './interactions/picker.ts';
import { isSandboxFailure, SANDBOX_FAILURES, saveSandboxLaunch } from './sandbox.ts';
import { databaseAuditSink } from './audit/store.ts';
import { clientRegistrationChanged, ehrLaunchCreated } from './audit/balp.ts';
import { DEMO_ACCOUNTS } from './demo-accounts.ts';
import { AuditWriteError } from './audit/audit-store.ts';
import { sendAuditUnavailablePage } from './audit/unavailable.ts';

interface LauncherApp { clientId: string; name: string; launchUri: string; redirectUri: string }

// Their passwords are published; any other account (added with the CLI) must not be signed in without its own.
const isDemoAccount = (username: string) => DEMO_ACCOUNTS.some((account) => account.username === username);

const REGISTRATION_NEEDS_TOKEN = 'This server registers apps with an initial access token: register the app at /apps, then choose it here.';

/** The form state the page keeps between its steps. */
interface LauncherState { clientId: string; query: string; patient: string }

const stateOf = (input: Record<string, unknown>): LauncherState => ({
  clientId: typeof input.client_id === 'string' ? input.client_id : '',
  query: typeof input.q === 'string' ? input.q.slice(0, 100) : '',
  patient: typeof input.patient === 'string' ? input.patient : '',
});

export function sandboxLauncherRoutes(deps: Omit<LauncherDeps, 'audit' | 'guard'>): Router {
  const { config, db, host, patients } = deps;
  const router = new Router();
  const body = bodyParser({ enableTypes: ['form'], formLimit: '16kb' });
  const clientExists = async (clientId: string) => Boolean(await host.provider.Client.find(clientId));
  const audit = databaseAuditSink(db);

  async function launchableApps(): Promise<LauncherApp[]> {
    return (await listClients(db))
      .filter((c) => typeof c.launch_uri === 'string' && Array.isArray(c.redirect_uris) && c.redirect_uris.length)
      .map((c) => ({
        clientId: String(c.client_id), name: String(c.client_name ?? c.client_id), launchUri: String(c.launch_uri), redirectUri: String((c.redirect_uris as string[])[0]),
      }));
  }

  async function sandboxUsers() {
    return (await listUsers(db)).filter((u) => !u.disabled).map((u) => ({
      username: u.username, name: u.name ?? u.username, patient: patientOf(u), label: patientOf(u) ? `patient ${patientOf(u)}` : u.attributes.auditor ? 'auditor' : 'provider',
    }));
  }

  async function showLauncher(ctx: Context, state: LauncherState, extra: Record<string, unknown> = {}, status = 200) {
    const apps = await launchableApps();
    const app = apps.find((a) => a.clientId === state.clientId) ?? apps[0];
    const list = pickablePatients(await patients.list(), { mayOpen: () => true, mayOpenTestData: true, query: state.query });
    const patient = list.find((p) => p.id === state.patient) ?? list[0];
    const encounters = patient ? (await patients.encounters()).filter((e) => e.patient === patient.id) : [];
    const standalone = app && `${app.launchUri}${app.launchUri.includes('?') ? '&' : '?'}iss=${encodeURIComponent(config.fhirBase)}`;
    await sendPage(ctx, 'launcher', {
      title: 'Sandbox launcher', demo: true, csrf: csrfToken(ctx), fhirBase: config.fhirBase, issuer: config.issuer,
      apps, app, query: state.query, patients: list, patient, encounters, users: await sandboxUsers(),
      failures: Object.entries(SANDBOX_FAILURES).map(([code, label]) => ({ code, label })), standalone, ...extra,
    }, status);
  }

  router.get('/launcher', (ctx) => showLauncher(ctx, stateOf(ctx.query)));

  // Registers an app on the fly from its launch URL and redirect URI, as a public or a confidential client.
  router.post('/launcher/register', body, async (ctx) => {
    const input = ctx.request.body as Record<string, unknown>;
    const state = stateOf(input);
    if (!validCsrf(ctx, input.csrf)) return showLauncher(ctx, state, { message: 'The form expired; try again.' }, 403);
    // With REGISTRATION=token every registration needs an initial access token: this form takes none.
    if (config.registration === 'token') return showLauncher(ctx, state, { message: REGISTRATION_NEEDS_TOKEN }, 403);
    const launchUri = typeof input.launch_uri === 'string' ? input.launch_uri.trim() : '';
    const redirectUri = typeof input.redirect_uri === 'string' ? input.redirect_uri.trim() : '';
    const confidential = input.client_type === 'confidential';
    const name = typeof input.client_name === 'string' && input.client_name.trim() ? input.client_name.trim().slice(0, 100) : `Sandbox app ${URL.parse(launchUri)?.host ?? ''}`.trim();
    try {
      const metadata = await addClient(db, host.provider, { name, launchUri, redirectUris: [redirectUri], auth: { kind: confidential ? 'secret' : 'public' } });
      const clientId = String(metadata.client_id);
      await audit.append(clientRegistrationChanged({ recorded: new Date(), issuer: config.issuer, address: ctx.ip, change: 'create', clientId, by: { clientId }, fields: Object.keys(metadata) }));
      return showLauncher(ctx, { ...state, clientId }, { registered: { clientId, clientSecret: metadata.client_secret } }, 201);
    } catch (err) {
      if (!(err instanceof ClientError)) throw err;
      return showLauncher(ctx, state, { message: `The app cannot be registered: ${err.message}`, form: { launchUri, redirectUri, confidential } }, 400);
    }
  });

  // Mints an EHR launch with its sandbox options and shows the link that opens the app.
  router.post('/launcher', body, async (ctx) => {
    const input = ctx.request.body as Record<string, unknown>;
    const state = stateOf(input);
    if (!validCsrf(ctx, input.csrf)) return showLauncher(ctx, state, { message: 'The form expired; try again.' }, 403);
    const app = (await launchableApps()).find((a) => a.clientId === state.clientId);
    const username = typeof input.user === 'string' && input.user ? input.user : undefined;
    const user = username ? await findUserByUsername(db, username) : undefined;
    // The launch is the chosen user's (as a backend's naming a user at /api/launch); with nobody chosen, whoever signs in may use it.
    const request: LaunchRequest = {
      patient: state.patient, encounter: typeof input.encounter === 'string' && input.encounter ? input.encounter : undefined, clientId: state.clientId, userId: user?.id,
    };
    const failure = input.failure ? input.failure : undefined;
    const problem = !app ? 'choose a registered app with a launch URL, or register one'
      : (await checkLaunchRequest({ patients, clientExists }, request))
        ?? (username ? launchUserProblem(username, user, request.patient) : undefined)
        ?? (failure !== undefined && !isSandboxFailure(failure) ? `unknown simulated failure ${String(failure)}` : undefined)
        ?? (input.skip_login && !user ? 'skipping the login needs a user to sign in as' : undefined)
        ?? (input.skip_login && user && !isDemoAccount(user.username) ? `skipping the login signs in a demo account only (${user.username} signs in with their password)` : undefined);
    if (problem || !app) return showLauncher(ctx, state, { message: problem }, 400);
    let launch: string;
    try {
      launch = await mintRecordedLaunch(db, config, request, (id) => audit.append(ehrLaunchCreated({ recorded: new Date(), issuer: config.issuer, address: ctx.ip, launch: id, ...request, by: {} })));
    } catch (err) {
      // As the launch API: a launch the trail cannot record is not created (fail closed).
      if (!(err instanceof AuditWriteError)) throw err;
      return sendAuditUnavailablePage(ctx, 'launch', true);
    }
    await saveSandboxLaunch(db, launch, {
      username: user?.username, skipLogin: Boolean(input.skip_login), skipConsent: Boolean(input.skip_consent), failure: isSandboxFailure(failure) ? failure : undefined,
    }, config.launchTtl);
    const target = new URL(app.launchUri);
    target.searchParams.set('iss', config.fhirBase);
    target.searchParams.set('launch', launch);
    return showLauncher(ctx, state, { launchLink: target.href, launchTtl: config.launchTtl }, 201);
  });

  return router;
}
