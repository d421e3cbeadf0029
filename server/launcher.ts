// EHR launch: the HTTP API that mints launch ids, and the sandbox launcher page (demo mode only).
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import type { Context } from 'koa';
import type { Config } from './config.ts';
import type { ProviderHost } from './oidc/provider-host.ts';
import type { Db } from './db.ts';
import { csrfToken, validCsrf } from './csrf.ts';
import { sendPage } from './views.ts';
import { createEhrLaunch } from './oidc/launch-store.ts';
import { checkFhirContextReference } from './smart/launch-context.ts';
import { allows, parseScopes, type ResourceScope } from './smart/scopes.ts';
import { bearerToken, InvalidTokenError, type AccessTokenClaims } from './resource-server/verify-token.ts';
import type { PatientDirectory } from './fhir/patient-directory.ts';
import { findUser, findUserByUsername, listUsers, mayAccessPatient, patientOf } from './oidc/users.ts';
import { addClient, ClientError, listClients } from './oidc/clients.ts';
import { pickablePatients } from './interactions/picker.ts';
import { isSandboxFailure, SANDBOX_FAILURES, saveSandboxLaunch } from './sandbox.ts';
import { databaseAuditSink } from './audit/store.ts';
import { clientRegistrationChanged } from './audit/balp.ts';

export interface LauncherDeps {
  config: Config;
  db: Db;
  host: ProviderHost;
  patients: PatientDirectory;
  verifyAccessToken(token: string): Promise<AccessTokenClaims>;
}

export interface LaunchRequest {
  patient: string;
  encounter?: string;
  clientId?: string;
  fhirContext?: string[];
}

/** Checks a launch request against the data; returns an error message or undefined. */
export async function checkLaunchRequest(deps: Pick<LauncherDeps, 'patients'> & { clientExists(clientId: string): Promise<boolean> }, request: LaunchRequest): Promise<string | undefined> {
  if (!request.patient || !(await deps.patients.get(request.patient))) return `patient ${request.patient ?? ''} is not known`;
  if (request.encounter) {
    const encounter = await deps.patients.encounter(request.encounter);
    if (!encounter) return `encounter ${request.encounter} is not known`;
    if (encounter.patient !== request.patient) return `encounter ${request.encounter} is not an encounter of patient ${request.patient}`;
  }
  if (request.clientId && !(await deps.clientExists(request.clientId))) return `client ${request.clientId} is not registered`;
  for (const reference of request.fhirContext ?? []) {
    const problem = checkFhirContextReference(reference);
    if (problem) return problem;
  }
  return undefined;
}

export function mintLaunch(db: Db, config: Config, request: LaunchRequest): Promise<string> {
  return createEhrLaunch(db, {
    patient: request.patient,
    encounter: request.encounter,
    clientId: request.clientId,
    fhirContext: request.fhirContext?.map((reference) => ({ reference })),
  }, config.launchTtl);
}

/** Whoever may read a patient may launch an app on that patient. */
async function mayLaunchFor(db: Db, token: AccessTokenClaims, patient: string): Promise<boolean> {
  const scopes = parseScopes(token.scope).scopes.filter((s): s is ResourceScope => s.kind === 'resource');
  const readers = allows(scopes, { type: 'Patient', interaction: 'read' }).filter((s) => s.query.length === 0);
  if (readers.some((s) => s.level === 'system')) return true;
  if (!readers.some((s) => s.level === 'user')) return false;
  const user = token.sub ? await findUser(db, token.sub) : undefined;
  return Boolean(user && !user.disabled && mayAccessPatient(user, patient));
}

export function launcherRoutes(deps: LauncherDeps): Router {
  const { config, db, host, patients } = deps;
  const clientExists = async (clientId: string) => Boolean(await host.provider.Client.find(clientId));
  const router = new Router();
  const body = bodyParser({ enableTypes: ['json', 'form'], jsonLimit: '16kb', formLimit: '16kb' });

  // POST /api/launch {patient, encounter?, client_id?, fhirContext?: ["Type/id"]} -> 201 {launch, expires_in}
  router.post('/api/launch', body, async (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    const token = bearerToken(ctx.get('authorization'));
    let claims: AccessTokenClaims | undefined;
    try {
      claims = token ? await deps.verifyAccessToken(token) : undefined;
    } catch (err) {
      if (!(err instanceof InvalidTokenError)) throw err;
    }
    if (!claims) {
      ctx.status = 401;
      ctx.set('WWW-Authenticate', `Bearer realm="${config.issuer}"${token ? ', error="invalid_token"' : ''}`);
      ctx.body = { error: 'invalid_token', error_description: 'a valid access token of this server is required' };
      return;
    }
    const input = ctx.request.body as Record<string, unknown>;
    const request: LaunchRequest = {
      patient: typeof input.patient === 'string' ? input.patient : '',
      encounter: typeof input.encounter === 'string' && input.encounter ? input.encounter : undefined,
      clientId: typeof input.client_id === 'string' && input.client_id ? input.client_id : undefined,
      fhirContext: Array.isArray(input.fhirContext) ? input.fhirContext.map(String) : undefined,
    };
    const problem = await checkLaunchRequest({ patients, clientExists }, request);
    if (problem) {
      ctx.status = 400;
      ctx.body = { error: 'invalid_request', error_description: problem };
      return;
    }
    if (!(await mayLaunchFor(db, claims, request.patient))) {
      ctx.status = 403;
      ctx.set('WWW-Authenticate', `Bearer realm="${config.issuer}", error="insufficient_scope", scope="system/Patient.r"`);
      ctx.body = { error: 'insufficient_scope', error_description: 'the token may not read this patient' };
      return;
    }
    ctx.status = 201;
    ctx.body = { launch: await mintLaunch(db, config, request), expires_in: config.launchTtl };
  });

  if (!config.demo) return router;
  registerSandbox(router, deps, body);
  return router;
}

// ---- The sandbox launcher page (demo mode only) ----

interface LauncherApp { clientId: string; name: string; launchUri: string; redirectUri: string }

/** The form state the page keeps between its steps. */
interface LauncherState { clientId: string; query: string; patient: string }

const stateOf = (input: Record<string, unknown>): LauncherState => ({
  clientId: typeof input.client_id === 'string' ? input.client_id : '',
  query: typeof input.q === 'string' ? input.q.slice(0, 100) : '',
  patient: typeof input.patient === 'string' ? input.patient : '',
});

function registerSandbox(router: Router, deps: LauncherDeps, body: ReturnType<typeof bodyParser>) {
  const { config, db, host, patients } = deps;
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
    const request: LaunchRequest = { patient: state.patient, encounter: typeof input.encounter === 'string' && input.encounter ? input.encounter : undefined, clientId: state.clientId };
    const username = typeof input.user === 'string' && input.user ? input.user : undefined;
    const user = username ? await findUserByUsername(db, username) : undefined;
    const failure = input.failure ? input.failure : undefined;
    const problem = !app ? 'choose a registered app with a launch URL, or register one'
      : (await checkLaunchRequest({ patients, clientExists }, request))
        ?? (username && (!user || user.disabled) ? `user ${username} is not known` : undefined)
        ?? (user && patientOf(user) && patientOf(user) !== request.patient ? `${user.username} is a patient user: launch their own record (${patientOf(user)})` : undefined)
        ?? (user && !mayAccessPatient(user, request.patient) ? `${user.username} may not open patient ${request.patient}` : undefined)
        ?? (failure !== undefined && !isSandboxFailure(failure) ? `unknown simulated failure ${String(failure)}` : undefined)
        ?? (input.skip_login && !user ? 'skipping the login needs a user to sign in as' : undefined);
    if (problem || !app) return showLauncher(ctx, state, { message: problem }, 400);
    const launch = await mintLaunch(db, config, request);
    await saveSandboxLaunch(db, launch, {
      username: user?.username, skipLogin: Boolean(input.skip_login), skipConsent: Boolean(input.skip_consent), failure: isSandboxFailure(failure) ? failure : undefined,
    }, config.launchTtl);
    const target = new URL(app.launchUri);
    target.searchParams.set('iss', config.fhirBase);
    target.searchParams.set('launch', launch);
    return showLauncher(ctx, state, { launchLink: target.href, launchTtl: config.launchTtl }, 201);
  });

}
