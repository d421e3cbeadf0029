// The bundled demo FHIR server at /fhir: a small store behind token and scope checks.
// The full resource-server guard (labels, consent, audit, upstream proxy) replaces the
// access rules here; until then this enforces the token, its scopes and its patient.
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import type { Context, Next } from 'koa';
import type { Config } from '../config.ts';
import { allows, parseScopes, type Interaction, type ResourceScope } from '../smart/scopes.ts';
import { bearerToken, InvalidTokenError, type AccessTokenClaims } from '../resource-server/verify-token.ts';
import { capabilityStatement, FhirStoreError, operationOutcome, SearchParameterError, searchBundle, type DemoStore } from './demo-store.ts';
import { isInPatientCompartment, patientCompartmentParams } from './compartment.ts';
import type { FhirResource } from './types.ts';

export interface FhirRouteDeps {
  config: Config;
  store: DemoStore;
  verifyAccessToken(token: string): Promise<AccessTokenClaims>;
  oauthUrls: Parameters<typeof capabilityStatement>[1];
}

/** One way a token may see data: optionally only one patient's compartment, optionally only matching a query. */
interface View {
  patient?: string;
  query: readonly (readonly [string, string])[];
}

const TYPE = /^[A-Z][A-Za-z]+$/;
const ID = /^[A-Za-z0-9\-.]{1,64}$/;
const fhirJson = 'application/fhir+json; charset=utf-8';

function reply(ctx: Context, status: number, body: unknown, headers: Record<string, string> = {}) {
  ctx.status = status;
  ctx.type = fhirJson;
  ctx.set(headers);
  ctx.body = body;
}

function unauthorized(ctx: Context, description: string) {
  const error = bearerToken(ctx.get('authorization')) ? ', error="invalid_token"' : '';
  reply(ctx, 401, operationOutcome('error', 'login', description), {
    'WWW-Authenticate': `Bearer realm="${ctx.state.realm}"${error}, error_description="${description}"`,
  });
}

function views(token: AccessTokenClaims, type: string, interaction: Interaction): View[] {
  const scopes = parseScopes(token.scope).scopes.filter((s): s is ResourceScope => s.kind === 'resource');
  const userPatient = token.fhirUser?.match(/\/Patient\/([^/]+)$/)?.[1];
  return allows(scopes, { type, interaction }).flatMap((scope): View[] => {
    if (scope.level === 'patient') return token.patient ? [{ patient: token.patient, query: scope.query }] : [];
    if (scope.level === 'user' && userPatient) return [{ patient: userPatient, query: scope.query }];
    return [{ query: scope.query }];
  });
}

/** Whether a view admits a resource: inside the patient's compartment (types outside it are not about a patient) and matching the query. */
function admits(store: DemoStore, view: View, resource: FhirResource): boolean {
  if (view.patient && patientCompartmentParams(resource.resourceType) && !isInPatientCompartment(resource, view.patient)) return false;
  if (!view.query.length) return true;
  const params = new URLSearchParams([...view.query, ['_id', String(resource.id)]] as [string, string][]);
  try {
    return store.search(resource.resourceType, params).length > 0;
  } catch (err) {
    // A restriction the store cannot evaluate admits nothing: fail closed.
    if (err instanceof SearchParameterError) return false;
    throw err;
  }
}

/** Client errors become OperationOutcomes: a bad search parameter, a taken id, a body that does not parse or is too large. */
async function fhirErrors(ctx: Context, next: Next) {
  try {
    await next();
  } catch (err) {
    if (err instanceof SearchParameterError) return reply(ctx, 400, operationOutcome('error', err.code, err.message));
    if (err instanceof FhirStoreError) return reply(ctx, err.status, operationOutcome('error', err.code, err.message));
    const status = (err as { status?: number }).status;
    if (status === 413) return reply(ctx, 413, operationOutcome('error', 'too-costly', 'the request body is too large'));
    if (status && status >= 400 && status < 500) return reply(ctx, status, operationOutcome('error', 'invalid', 'the request body is not valid JSON or form data'));
    throw err;
  }
}

export function fhirFallback(deps: Pick<FhirRouteDeps, 'config' | 'verifyAccessToken'>) {
  return async (ctx: Context, next: Next) => {
    if (ctx.path !== '/fhir' && !ctx.path.startsWith('/fhir/')) return next();
    await next();
    if (ctx.body !== undefined || ctx.status !== 404) return;
    ctx.state.realm = deps.config.fhirBase;
    const token = bearerToken(ctx.get('authorization'));
    if (!token) return unauthorized(ctx, 'an access token is required');
    try {
      await deps.verifyAccessToken(token);
    } catch (err) {
      if (err instanceof InvalidTokenError) return unauthorized(ctx, err.message);
      throw err;
    }
    reply(ctx, 405, operationOutcome('error', 'not-supported', `${ctx.method} ${ctx.path} is not supported by the demo store`));
  };
}

export function fhirRoutes({ config, store, verifyAccessToken, oauthUrls }: FhirRouteDeps): Router {
  const router = new Router({ prefix: '/fhir' });
  router.use(fhirErrors);
  const jsonBody = bodyParser({ enableTypes: ['json', 'form'], extendTypes: { json: ['application/fhir+json'] }, jsonLimit: '1mb', formLimit: '1mb' });

  router.get('/metadata', (ctx) => {
    ctx.set('Access-Control-Allow-Origin', '*');
    reply(ctx, 200, capabilityStatement(config.fhirBase, oauthUrls, store));
  });

  async function authenticate(ctx: Context, next: Next) {
    ctx.state.realm = config.fhirBase;
    const token = bearerToken(ctx.get('authorization'));
    if (!token) return unauthorized(ctx, 'an access token is required');
    try {
      ctx.state.token = await verifyAccessToken(token);
    } catch (err) {
      if (err instanceof InvalidTokenError) return unauthorized(ctx, err.message);
      throw err;
    }
    return next();
  }

  function permitted(ctx: Context, type: string, interaction: Interaction): View[] | undefined {
    if (!TYPE.test(type)) {
      reply(ctx, 404, operationOutcome('error', 'not-supported', `unknown resource type ${type}`));
      return undefined;
    }
    const found = views(ctx.state.token, type, interaction);
    if (!found.length) {
      reply(ctx, 403, operationOutcome('error', 'forbidden', `the token's scopes do not allow ${interaction} on ${type}`), {
        'WWW-Authenticate': `Bearer realm="${config.fhirBase}", error="insufficient_scope", error_description="the token's scopes do not allow ${interaction} on ${type}"`,
      });
      return undefined;
    }
    return found;
  }

  const notFound = (ctx: Context, type: string, id: string) =>
    reply(ctx, 404, operationOutcome('error', 'not-found', `${type}/${id} is not known`));

  router.get('/:type/:id', authenticate, (ctx) => {
    const { type, id } = ctx.params;
    const allowed = permitted(ctx, type, 'read');
    if (!allowed) return;
    const resource = ID.test(id) ? store.read(type, id) : undefined;
    if (!resource || !allowed.some((view) => admits(store, view, resource))) return notFound(ctx, type, id);
    reply(ctx, 200, resource, { ETag: `W/"${resource.meta?.versionId ?? '1'}"` });
  });

  async function search(ctx: Context, params: URLSearchParams) {
    const { type } = ctx.params;
    const allowed = permitted(ctx, type, 'search-type');
    if (!allowed) return;
    const found = new Map<string, FhirResource>();
    for (const view of allowed) {
      const restricted = new URLSearchParams(params);
      for (const [name, value] of view.query) restricted.append(name, value);
      for (const resource of store.search(type, restricted)) {
        if (admits(store, { patient: view.patient, query: [] }, resource)) found.set(String(resource.id), resource);
      }
    }
    reply(ctx, 200, searchBundle(config.fhirBase, type, [...found.values()], `${config.fhirBase}${ctx.path.slice('/fhir'.length)}?${params}`));
  }

  router.get('/:type', authenticate, (ctx) => search(ctx, new URLSearchParams(ctx.querystring)));
  router.post('/:type/_search', authenticate, jsonBody, (ctx) =>
    search(ctx, new URLSearchParams({ ...(ctx.request.body as Record<string, string>), ...Object.fromEntries(new URLSearchParams(ctx.querystring)) })));

  function resourceFromBody(ctx: Context, type: string): FhirResource | undefined {
    const body = ctx.request.body as FhirResource | undefined;
    if (!body || typeof body !== 'object' || body.resourceType !== type) {
      reply(ctx, 400, operationOutcome('error', 'invalid', `the body must be a ${type} resource`));
      return undefined;
    }
    return body;
  }

  router.post('/:type', authenticate, jsonBody, (ctx) => {
    const { type } = ctx.params;
    const allowed = permitted(ctx, type, 'create');
    const resource = allowed && resourceFromBody(ctx, type);
    if (!allowed || !resource) return;
    if (!allowed.some((view) => admits(store, { patient: view.patient, query: [] }, resource))) {
      return reply(ctx, 403, operationOutcome('error', 'forbidden', 'the resource is outside the patient the token is for'));
    }
    const created = store.create({ ...resource, id: undefined });
    reply(ctx, 201, created, { Location: `${config.fhirBase}/${type}/${created.id}/_history/${created.meta?.versionId}` });
  });

  router.put('/:type/:id', authenticate, jsonBody, (ctx) => {
    const { type, id } = ctx.params;
    const allowed = permitted(ctx, type, 'update');
    const resource = allowed && resourceFromBody(ctx, type);
    if (!allowed || !resource) return;
    if (!ID.test(id) || (resource.id !== undefined && resource.id !== id)) {
      return reply(ctx, 400, operationOutcome('error', 'invalid', 'the resource id must match the URL'));
    }
    const existing = store.read(type, id);
    const inside = (r: FhirResource) => allowed.some((view) => admits(store, { patient: view.patient, query: [] }, r));
    if (existing && !inside(existing)) return notFound(ctx, type, id);
    if (!inside(resource)) return reply(ctx, 403, operationOutcome('error', 'forbidden', 'the resource is outside the patient the token is for'));
    const { resource: saved, created } = store.update(type, id, { ...resource, id });
    reply(ctx, created ? 201 : 200, saved);
  });

  return router;
}
