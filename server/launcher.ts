// EHR launch: the rules of a launch request and the HTTP API that mints launch ids.
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import type { Config } from './config.ts';
import type { ProviderHost } from './oidc/provider-host.ts';
import type { Db } from './db.ts';
import { createEhrLaunch, deleteEhrLaunch } from './oidc/launch-store.ts';
import { checkFhirContextReference } from './smart/launch-context.ts';
import { allows, parseScopes, type ResourceScope } from './smart/scopes.ts';
import { bearerToken, InvalidTokenError, type AccessTokenClaims } from './resource-server/verify-token.ts';
import type { PatientDirectory } from './fhir/patient-directory.ts';
import { patientsOfResourceAs } from './fhir/caller-reads.ts';
import type { Guard } from './resource-server/guard.ts';
import { findUser, findUserByUsername, mayAccessPatient, patientOf, type User } from './oidc/users.ts';
import type { AuditSink } from './audit/store.ts';
import { ehrLaunchCreated } from './audit/balp.ts';
import { auditUserOf } from './audit/security-events.ts';
import { AuditWriteError } from './audit/audit-store.ts';
import { answerAuditUnavailable } from './audit/unavailable.ts';

export interface LauncherDeps {
  config: Config;
  db: Db;
  host: ProviderHost;
  patients: PatientDirectory;
  /** The bundled /fhir guard: the launch API reads fhirContext resources through it, as the caller. */
  guard: Guard;
  audit: AuditSink;
  verifyAccessToken(token: string): Promise<AccessTokenClaims>;
}

export interface LaunchRequest {
  patient: string;
  encounter?: string;
  clientId?: string;
  /** The user (users.id) the launch is for; none: whoever signs in and may open the patient. */
  userId?: string;
  fhirContext?: string[];
}

/** Each fhirContext reference costs a read of the FHIR server. */
const MAX_FHIR_CONTEXT = 20;

/** Checks a launch request against the data; returns an error message or undefined. */
export async function checkLaunchRequest(
  deps: { patients: Pick<PatientDirectory, 'patientsOfResource'>; clientExists(clientId: string): Promise<boolean> }, request: LaunchRequest,
): Promise<string | undefined> {
  const { patients } = deps;
  if (!request.patient || !(await patients.patientsOfResource('Patient', request.patient))?.includes(request.patient)) return `patient ${request.patient ?? ''} is not known`;
  if (request.encounter) {
    const owners = await patients.patientsOfResource('Encounter', request.encounter);
    if (!owners) return `encounter ${request.encounter} is not known`;
    if (!owners.includes(request.patient)) return `encounter ${request.encounter} is not an encounter of patient ${request.patient}`;
  }
  if (request.clientId && !(await deps.clientExists(request.clientId))) return `client ${request.clientId} is not registered`;
  if ((request.fhirContext?.length ?? 0) > MAX_FHIR_CONTEXT) return `fhirContext names at most ${MAX_FHIR_CONTEXT} resources`;
  for (const reference of request.fhirContext ?? []) {
    const problem = checkFhirContextReference(reference) ?? (await contextResourceProblem(deps.patients, reference, request.patient));
    if (problem) return problem;
  }
  return undefined;
}

/**
 * A fhirContext resource must exist and, when it belongs to patients, be the launch patient's: an app
 * must not be pointed at another patient's record under this patient's banner. Unknown and another
 * patient's answer alike, so the message does not tell which resources exist.
 */
async function contextResourceProblem(patients: Pick<PatientDirectory, 'patientsOfResource'>, reference: string, patient: string): Promise<string | undefined> {
  const [type, id] = reference.split('/');
  const owners = await patients.patientsOfResource(type, id);
  return owners && (!owners.length || owners.includes(patient)) ? undefined : `fhirContext ${reference} is not a known resource of patient ${patient}`;
}

export function mintLaunch(db: Db, config: Config, request: LaunchRequest): Promise<string> {
  return createEhrLaunch(db, {
    patient: request.patient,
    encounter: request.encounter,
    clientId: request.clientId,
    userId: request.userId,
    fhirContext: request.fhirContext?.map((reference) => ({ reference })),
  }, config.launchTtl);
}

/** Mints a launch and records it; one whose record cannot be written is taken back (nobody was told of it) and the error rethrown. */
export async function mintRecordedLaunch(db: Db, config: Config, request: LaunchRequest, record: (launch: string) => Promise<void>): Promise<string> {
  const launch = await mintLaunch(db, config, request);
  try {
    await record(launch);
  } catch (err) {
    await deleteEhrLaunch(db, launch);
    throw err;
  }
  return launch;
}

/** Whether `user` (found by `username`) may be the one a launch on `patient` is for; a message when not. */
export function launchUserProblem(username: string, user: User | undefined, patient: string): string | undefined {
  if (!user || user.disabled) return `user ${username} is not known`;
  const own = patientOf(user);
  if (own && own !== patient) return `${user.username} is a patient user: launch their own record (${own})`;
  if (!mayAccessPatient(user, patient)) return `${user.username} may not open patient ${patient}`;
  return undefined;
}

/**
 * Whom a launch is for. A user's launch is their own (`user` may name only them); a backend may name a
 * user by username, or nobody: then anyone who signs in and may open the patient can use it.
 */
async function launchUser(db: Db, launcher: { user?: User }, named: unknown, patient: string): Promise<{ user?: User } | { problem: string }> {
  if (named === undefined || named === '') return { user: launcher.user };
  if (typeof named !== 'string') return { problem: 'user must be a username' };
  if (launcher.user) return named === launcher.user.username ? { user: launcher.user } : { problem: 'a user launches for themselves only: leave out user' };
  const user = await findUserByUsername(db, named);
  const problem = launchUserProblem(named, user, patient);
  return problem ? { problem } : { user };
}

/**
 * Whoever may read a patient may launch an app on that patient. Who that is: the user of a user-level
 * token (none for a backend's system-level one); undefined when the token may not launch on the patient.
 */
async function launcherFor(db: Db, token: AccessTokenClaims, patient: string): Promise<{ user?: User } | undefined> {
  const scopes = parseScopes(token.scope).scopes.filter((s): s is ResourceScope => s.kind === 'resource');
  const readers = allows(scopes, { type: 'Patient', interaction: 'read' }).filter((s) => s.query.length === 0);
  if (readers.some((s) => s.level === 'system')) return {};
  if (!readers.some((s) => s.level === 'user')) return undefined;
  const user = token.sub ? await findUser(db, token.sub) : undefined;
  return user && !user.disabled && mayAccessPatient(user, patient) ? { user } : undefined;
}

export function launcherRoutes(deps: LauncherDeps): Router {
  const { config, db, host, patients, guard, audit } = deps;
  const clientExists = async (clientId: string) => Boolean(await host.provider.Client.find(clientId));
  const router = new Router();
  const body = bodyParser({ enableTypes: ['json', 'form'], jsonLimit: '16kb', formLimit: '16kb' });

  // POST /api/launch {patient, encounter?, client_id?, user?, fhirContext?: ["Type/id"]} -> 201 {launch, expires_in}
  router.post('/api/launch', body, async (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    const token = bearerToken(ctx.get('authorization'));
    let claims: AccessTokenClaims | undefined;
    try {
      claims = token ? await deps.verifyAccessToken(token) : undefined;
    } catch (err) {
      if (!(err instanceof InvalidTokenError)) throw err;
    }
    if (!token || !claims) {
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
    // Who may launch comes first: the checks below tell which patients, encounters and resources exist.
    const launcher = await launcherFor(db, claims, request.patient);
    if (!launcher) {
      ctx.status = 403;
      ctx.set('WWW-Authenticate', `Bearer realm="${config.issuer}", error="insufficient_scope", scope="system/Patient.r"`);
      ctx.body = { error: 'insufficient_scope', error_description: 'the token may not read this patient' };
      return;
    }
    // The resources are read as the caller: one its token may not read is refused as an unknown one.
    const asCaller = { ...patients, patientsOfResource: patientsOfResourceAs(guard, token, ctx.ip) };
    let launch: string;
    try {
      const problem = await checkLaunchRequest({ patients: asCaller, clientExists }, request);
      const forUser = problem === undefined ? await launchUser(db, launcher, input.user, request.patient) : { problem };
      if ('problem' in forUser) {
        ctx.status = 400;
        ctx.body = { error: 'invalid_request', error_description: forUser.problem };
        return;
      }
      request.userId = forUser.user?.id;
      launch = await mintRecordedLaunch(db, config, request, (id) => audit.append(ehrLaunchCreated({
        recorded: new Date(), issuer: config.issuer, address: ctx.ip, launch: id, ...request,
        by: { user: launcher.user && auditUserOf(launcher.user), clientId: claims.client_id, jti: claims.jti },
      })));
    } catch (err) {
      // The trail cannot take the record of the launch or of the caller's reads: nothing is created (fail closed).
      if (!(err instanceof AuditWriteError)) throw err;
      return answerAuditUnavailable(ctx, 'launch');
    }
    ctx.status = 201;
    ctx.body = { launch, expires_in: config.launchTtl };
  });

  return router;
}
