// What a FHIR REST request asks for: method + path ⇒ one interaction, or a refusal.
// Pure; the path is relative to the FHIR base (see FhirRequest).
import { knownOperation } from './operations.ts';
import type { FhirBundle, FhirInteraction, FhirRequest, FhirResource, InteractionKind, Refusal } from './types.ts';

const TYPE = /^[A-Z][A-Za-z]+$/;
const ID = /^[A-Za-z0-9\-.]{1,64}$/;
const OPERATION = /^\$[A-Za-z][A-Za-z0-9\-_]*$/;
const METHODS = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']);
/** Query parameters that shape the response format only; anything else on a write makes it conditional. */
const FORMAT_PARAMS = new Set(['_format', '_pretty']);
/** The `_format` values of FHIR JSON (R4 and the STU3 media type): the guard reads and answers nothing else. */
const JSON_FORMATS = new Set(['json', 'application/json', 'application/fhir+json', 'application/json+fhir']);

const refuse = (status: Refusal['status'], code: string, message: string): Refusal => ({ status, code, message });
const notAllowed = (method: string, path: string) => refuse(405, 'not-supported', `${method} is not supported on /${path}`);

export function classify(request: FhirRequest): FhirInteraction | Refusal {
  const method = request.method.toUpperCase();
  // HEAD answers what GET answers, without the body: the same decision applies.
  const verb = method === 'HEAD' ? 'GET' : method;
  if (!METHODS.has(verb)) return notAllowed(method, request.path);
  const unreadable = formatRefusal(new URLSearchParams(request.query));
  if (unreadable) return unreadable;
  const segments = request.path === '' ? [] : request.path.split('/');
  if (segments.includes('')) return refuse(404, 'not-found', `unknown path /${request.path}`);
  const at = segments.findIndex((s) => s.startsWith('$'));
  if (at >= 0) return operation(verb, segments, at, request);

  const [head, ...rest] = segments;
  const query = new URLSearchParams(request.query);
  const only = (kind: InteractionKind, wanted: string, extra: Partial<FhirInteraction> = {}): FhirInteraction | Refusal =>
    verb === wanted ? { kind, params: query, ...extra } : notAllowed(method, request.path);

  if (head === undefined) {
    if (verb === 'GET') return { kind: 'search-system', params: query };
    if (verb === 'POST') return batch(request.body, query);
    return notAllowed(method, request.path);
  }
  if (rest.length === 0 && head === 'metadata') return only('capabilities', 'GET');
  if (rest.length === 0 && head === '_history') return only('history-system', 'GET');
  if (rest.length === 0 && head === '_search') return verb === 'POST' ? withForm('search-system', request) : notAllowed(method, request.path);
  if (!TYPE.test(head)) return refuse(404, 'not-supported', `unknown resource type ${head}`);
  const type = head;

  if (rest.length === 0) {
    switch (verb) {
      case 'GET': return { kind: 'search-type', type, params: query };
      case 'POST':
        // Conditional create (the If-None-Exist header; entryRequests puts a batch entry's in the query) answers
        // differently when a hidden resource matches, so it is refused like conditional update and delete.
        if (isConditional(query) || request.headers?.['if-none-exist'] !== undefined) return refuse(400, 'not-supported', 'conditional create is not supported');
        return isResourceOf(request.body, type)
          ? { kind: 'create', type, params: query, resource: request.body }
          : refuse(400, 'invalid', `the body of a create must be a ${type} resource`);
      default:
        // Conditional update/patch/delete choose their target by search: they could touch hidden data.
        return isConditional(query)
          ? refuse(400, 'not-supported', `conditional ${verb === 'PUT' ? 'update' : verb.toLowerCase()} is not supported`)
          : notAllowed(method, request.path);
    }
  }
  if (rest.length === 1 && rest[0] === '_search') {
    return verb === 'POST' ? withForm('search-type', request, type) : notAllowed(method, request.path);
  }
  if (rest.length === 1 && rest[0] === '_history') return only('history-type', 'GET', { type });

  const id = rest[0];
  if (!ID.test(id)) return refuse(404, 'not-found', `${type}/${id} is not known`);
  if (rest.length === 1) {
    switch (verb) {
      case 'GET': return { kind: 'read', type, id, params: query };
      case 'PUT': {
        const body = request.body;
        if (!isResourceOf(body, type)) return refuse(400, 'invalid', `the body of an update must be a ${type} resource`);
        if (body.id !== undefined && body.id !== id) return refuse(400, 'invalid', `the resource id ${String(body.id)} does not match ${type}/${id}`);
        return { kind: 'update', type, id, params: query, resource: body };
      }
      case 'PATCH': return { kind: 'patch', type, id, params: query };
      case 'DELETE': return { kind: 'delete', type, id, params: query };
      default: return notAllowed(method, request.path);
    }
  }
  if (rest[1] === '_history' && rest.length === 2) return only('history-instance', 'GET', { type, id });
  if (rest[1] === '_history' && rest.length === 3) {
    const versionId = rest[2];
    if (!ID.test(versionId)) return refuse(404, 'not-found', `${type}/${id}/_history/${versionId} is not known`);
    return only('vread', 'GET', { type, id, versionId });
  }
  return refuse(404, 'not-found', `unknown path /${request.path}`);
}

/** `$name` at system (`$op`), type (`Type/$op`) or instance (`Type/id/$op`) level. */
function operation(verb: string, segments: string[], at: number, request: FhirRequest): FhirInteraction | Refusal {
  const name = segments[at];
  if (at !== segments.length - 1 || at > 2 || !OPERATION.test(name)) {
    return refuse(404, 'not-supported', `unknown operation path /${request.path}`);
  }
  if (verb !== 'GET' && verb !== 'POST') return notAllowed(request.method.toUpperCase(), request.path);
  // What is known of the operation: the levels it is defined at, and GET only for one that changes nothing.
  const known = knownOperation(name.slice(1));
  const level = (['system', 'type', 'instance'] as const)[at];
  if (known && !known.levels.includes(level)) return refuse(400, 'not-supported', `${name} is not an operation at the ${level} level`);
  if (known?.effect === 'write' && verb !== 'POST') return notAllowed(request.method.toUpperCase(), request.path);
  const interaction: FhirInteraction = { kind: 'operation', operation: name.slice(1), params: new URLSearchParams(request.query) };
  if (at >= 1) {
    if (!TYPE.test(segments[0])) return refuse(404, 'not-supported', `unknown resource type ${segments[0]}`);
    interaction.type = segments[0];
  }
  if (at === 2) {
    if (!ID.test(segments[1])) return refuse(404, 'not-found', `${segments[0]}/${segments[1]} is not known`);
    interaction.id = segments[1];
  }
  const body = request.body;
  if (verb === 'POST' && body !== undefined) {
    if (body instanceof URLSearchParams) for (const [k, v] of body) interaction.params.append(k, v);
    else if (isResource(body)) interaction.resource = body;
    else return refuse(400, 'invalid', 'the body of an operation must be a resource (usually Parameters)');
  }
  return interaction;
}

/** A FHIR server honours `_format` over Accept: an answer in another format than JSON, which the guard could not filter, is refused before it is asked. */
function formatRefusal(params: URLSearchParams): Refusal | undefined {
  const format = params.get('_format')?.split(';')[0].trim().toLowerCase();
  return format === undefined || JSON_FORMATS.has(format) ? undefined : refuse(406, 'not-supported', 'the FHIR server here answers FHIR JSON only (_format=json)');
}

/** `POST [type]/_search`: the form body's parameters join the query's. */
function withForm(kind: 'search-type' | 'search-system', request: FhirRequest, type?: string): FhirInteraction | Refusal {
  const params = new URLSearchParams(request.query);
  if (request.body instanceof URLSearchParams) for (const [k, v] of request.body) params.append(k, v);
  else if (request.body !== undefined) return refuse(400, 'invalid', '_search needs an application/x-www-form-urlencoded body');
  const unreadable = formatRefusal(params);
  if (unreadable) return unreadable;
  return type === undefined ? { kind, params } : { kind, type, params };
}

function batch(body: unknown, params: URLSearchParams): FhirInteraction | Refusal {
  if (isResourceOf(body, 'Bundle') && (body.type === 'batch' || body.type === 'transaction')
    && (body.entry === undefined || Array.isArray(body.entry))) {
    return { kind: body.type, params, resource: body };
  }
  return refuse(400, 'invalid', 'a POST to the base needs a batch or transaction Bundle');
}

const isConditional = (query: URLSearchParams) => [...query.keys()].some((k) => !FORMAT_PARAMS.has(k));

function isResource(body: unknown): body is FhirResource {
  return typeof body === 'object' && body !== null && !Array.isArray(body) && typeof (body as { resourceType?: unknown }).resourceType === 'string';
}

function isResourceOf(body: unknown, type: string): body is FhirResource {
  return isResource(body) && body.resourceType === type;
}

/**
 * The entries of a batch or transaction as requests, for classify. The url is relative to the
 * base ("Patient/1?x=y"); an absolute url does not classify (unknown resource type), which fails
 * closed. A conditional create's `ifNoneExist` becomes the query, so classify refuses it; the entry's
 * ifMatch, ifNoneMatch and ifModifiedSince become its headers.
 */
export function entryRequests(bundle: FhirBundle): FhirRequest[] {
  return (Array.isArray(bundle.entry) ? bundle.entry : []).map((entry) => {
    const method = typeof entry?.request?.method === 'string' ? entry.request.method.toUpperCase() : '';
    const url = typeof entry?.request?.url === 'string' ? entry.request.url : '';
    const q = url.indexOf('?');
    const path = (q < 0 ? url : url.slice(0, q)).replace(/^\//, '');
    const query = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
    const ifNoneExist = entry?.request?.ifNoneExist;
    if (typeof ifNoneExist === 'string') for (const [k, v] of new URLSearchParams(ifNoneExist)) query.append(k, v);
    const request: FhirRequest = { method, path, query, headers: entryConditions(entry?.request) };
    if (entry?.resource !== undefined) request.body = entry.resource;
    return request;
  });
}

const ENTRY_CONDITIONS = { ifMatch: 'if-match', ifNoneMatch: 'if-none-match', ifModifiedSince: 'if-modified-since' } as const;

function entryConditions(request: Record<string, unknown> | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(ENTRY_CONDITIONS).flatMap(([field, header]) =>
    (typeof request?.[field] === 'string' ? [[header, request[field] as string]] : [])));
}
