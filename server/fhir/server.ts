// A plain FHIR R4 REST server for a FhirStore, with NO authorization: the
// "upstream" the resource-server guard sits in front of. One dispatcher
// (request in, response out) and two front ends for it:
//  - fhirServerRoutes: a Koa Router (scripts/demo-fhir-server.ts runs it alone);
//  - storeUpstream: an Upstream for the guard that calls the dispatcher in
//    process, without HTTP.
//
// Interactions: capabilities (GET metadata), search-type (GET Type, POST
// Type/_search), read (GET Type/id, with ETag and If-None-Match → 304), vread
// and history-instance of the current version only (only that version is
// kept: another vid is 404), create (POST Type: 201 + Location + ETag; a
// client id is ignored), update (PUT Type/id: 200, or 201 when it creates;
// If-Match: W/"n" → 412 when not current), batch (POST / with a `batch`
// Bundle: entries processed in order, each on its own, into a batch-response).
// Not supported: transaction (400 not-supported: the store has no atomic
// multi-resource write, and a transaction without atomicity would lie),
// delete/patch (405), type/system history, system search and operations (400).
// Errors are OperationOutcomes: 400 bad request, search or resource (not valid
// FHIR R4: each problem with its FHIRPath location), 404, 405, 409 id
// taken, 412 version conflict, 413 body over 1 MiB, 422 resource the store
// will not keep.

import { STATUS_CODES } from 'node:http';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import type { Context } from 'koa';

import {
  FhirStoreError,
  SearchParameterError,
  capabilityStatement,
  describeStore,
  operationOutcome,
  searchPage,
  type FhirStore,
} from './demo-store.ts';
import type { FhirBundle, FhirBundleEntry, FhirResource } from './types.ts';
import { validationIssues } from './validate.ts';
import { FORWARDED_HEADERS, inProcessUpstream, type Upstream } from '../resource-server/upstream.ts';

export const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const BODY_LIMIT = '1mb';

const TYPE = /^[A-Z][A-Za-z]{1,63}$/;
const ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** One FHIR REST request, relative to the base. */
export interface FhirServerRequest {
  method: string;
  /** Below the base, no leading slash, no query: '', 'metadata', 'Patient', 'Patient/_search', 'Patient/1', 'Patient/1/_history/2'. */
  path: string;
  query: URLSearchParams;
  /** Lower-case names; only if-match, if-none-match and prefer are read. */
  headers?: Readonly<Record<string, string | string[] | undefined>>;
  /** Parsed JSON (a resource or a Bundle); for POST Type/_search the form (URLSearchParams, a string or a name ⇒ value record). */
  body?: unknown;
  /** For a create or update: its Provenance without the target, stored with the change in one transaction. */
  provenance?: FhirResource;
}

export interface FhirServerResponse {
  status: number;
  /** Lower-case names. */
  headers: Record<string, string>;
  body?: unknown;
}

export type FhirDispatcher = (request: FhirServerRequest) => Promise<FhirServerResponse>;

export interface FhirServerOptions {
  /** Absolute base URL of this server (fullUrl, Location, Bundle links). */
  base: string;
}

const outcome = (status: number, code: string, message: string, headers: Record<string, string> = {}): FhirServerResponse =>
  ({ status, headers: { 'content-type': FHIR_JSON, ...headers }, body: operationOutcome('error', code, message) });

const etagOf = (resource: FhirResource) => `W/"${resource.meta?.versionId ?? '1'}"`;

/** The version in `W/"3"`, `"3"` or `3`; undefined when malformed. */
function versionFromETag(value: string): string | undefined {
  return /^(?:W\/)?"?([A-Za-z0-9\-.]{1,64})"?$/.exec(value.trim())?.[1];
}

function header(request: FhirServerRequest, name: string): string | undefined {
  const value = request.headers?.[name];
  return Array.isArray(value) ? value[0] : value;
}

function resourceHeaders(resource: FhirResource): Record<string, string> {
  const headers: Record<string, string> = { 'content-type': FHIR_JSON, etag: etagOf(resource) };
  const modified = resource.meta?.lastUpdated ? new Date(resource.meta.lastUpdated) : undefined;
  if (modified && !Number.isNaN(modified.getTime())) headers['last-modified'] = modified.toUTCString();
  return headers;
}

const isObject = (value: unknown): value is Record<string, unknown> => value !== null && typeof value === 'object' && !Array.isArray(value);

function formParams(body: unknown): URLSearchParams {
  if (body instanceof URLSearchParams) return new URLSearchParams(body);
  if (typeof body === 'string') return new URLSearchParams(body);
  const params = new URLSearchParams();
  if (isObject(body)) {
    for (const [name, value] of Object.entries(body)) {
      for (const v of Array.isArray(value) ? value : [value]) if (v !== undefined && v !== null) params.append(name, String(v));
    }
  }
  return params;
}

/** The dispatcher shared by both front ends. Never throws for a bad request: unexpected failures are a 500 OperationOutcome. */
export function fhirDispatcher(store: FhirStore, options: FhirServerOptions): FhirDispatcher {
  const base = options.base.replace(/\/+$/, '');

  async function dispatch(request: FhirServerRequest, inBatch: boolean): Promise<FhirServerResponse> {
    try {
      return await route(request, inBatch);
    } catch (err) {
      if (err instanceof SearchParameterError) return outcome(400, err.code, err.message);
      if (err instanceof FhirStoreError) return outcome(err.status, err.code, err.message);
      console.error(`[${new Date().toISOString()}] FHIR ${request.method} ${request.path}:`, err);
      return outcome(500, 'exception', 'the FHIR server failed to process the request');
    }
  }

  const notAllowed = (request: FhirServerRequest, allow: string) =>
    outcome(405, 'not-supported', `${request.method} is not supported on ${request.path || 'the base'}`, { allow });

  async function route(request: FhirServerRequest, inBatch: boolean): Promise<FhirServerResponse> {
    const method = request.method.toUpperCase();
    const segments = request.path === '' ? [] : request.path.split('/');
    if (segments.some((s) => s.startsWith('$'))) return outcome(400, 'not-supported', `operations are not supported: ${request.path}`);
    const [type, id, history, vid] = segments;

    if (segments.length === 0) {
      if (method !== 'POST') return notAllowed(request, 'POST');
      if (inBatch) return outcome(400, 'not-supported', 'a batch cannot contain a batch');
      return batch(request);
    }
    if (segments.length === 1 && type === 'metadata') {
      if (method !== 'GET') return notAllowed(request, 'GET');
      const description = await describeStore(store);
      const statement = capabilityStatement(base, undefined, description, {
        interactions: ['read', 'vread', 'history-instance', 'search-type', 'create', 'update'],
        systemInteractions: ['batch'],
      });
      return { status: 200, headers: { 'content-type': FHIR_JSON }, body: statement };
    }
    if (!TYPE.test(type)) return outcome(404, 'not-found', `unknown resource type ${type}`);
    if (segments.length === 1) {
      if (method === 'GET') return search(type, request.query);
      if (method === 'POST') return create(type, request);
      return notAllowed(request, 'GET, POST');
    }
    if (id === '_search' && segments.length === 2) {
      if (method !== 'POST') return notAllowed(request, 'POST');
      const params = formParams(request.body);
      for (const [name, value] of request.query) params.append(name, value);
      return search(type, params);
    }
    if (id === '_history') return outcome(400, 'not-supported', 'type-level history is not supported');
    if (segments.length > 4 || (segments.length >= 3 && history !== '_history')) return outcome(404, 'not-found', `unknown path ${request.path}`);
    if (segments.length === 2) {
      if (method === 'GET') return read(request, type, id);
      if (method === 'PUT') return update(request, type, id);
      return notAllowed(request, 'GET, PUT');
    }
    if (method !== 'GET') return notAllowed(request, 'GET');
    return segments.length === 3 ? historyInstance(type, id) : read(request, type, id, vid);
  }

  async function search(type: string, params: URLSearchParams): Promise<FhirServerResponse> {
    return { status: 200, headers: { 'content-type': FHIR_JSON }, body: await searchPage(store, type, params, { base }) };
  }

  async function current(type: string, id: string): Promise<FhirResource | undefined> {
    return ID.test(id) ? store.read(type, id) : undefined;
  }

  async function read(request: FhirServerRequest, type: string, id: string, vid?: string): Promise<FhirServerResponse> {
    const resource = await current(type, id);
    if (!resource) return outcome(404, 'not-found', `${type}/${id} is not known`);
    if (vid !== undefined && vid !== resource.meta?.versionId) {
      return outcome(404, 'not-found', `${type}/${id}/_history/${vid} is not known: only the current version (${resource.meta?.versionId}) is kept`);
    }
    const headers = resourceHeaders(resource);
    const ifNoneMatch = header(request, 'if-none-match');
    if (ifNoneMatch && ifNoneMatch.split(',').some((tag) => versionFromETag(tag) === resource.meta?.versionId)) {
      const { 'content-type': _, ...rest } = headers;
      return { status: 304, headers: rest };
    }
    return { status: 200, headers, body: resource };
  }

  async function historyInstance(type: string, id: string): Promise<FhirServerResponse> {
    const resource = await current(type, id);
    if (!resource) return outcome(404, 'not-found', `${type}/${id} is not known`);
    const first = resource.meta?.versionId === '1';
    const bundle: FhirBundle = {
      resourceType: 'Bundle',
      type: 'history',
      total: 1,
      link: [{ relation: 'self', url: `${base}/${type}/${id}/_history` }],
      entry: [{
        fullUrl: `${base}/${type}/${id}`,
        resource,
        request: { method: first ? 'POST' : 'PUT', url: first ? type : `${type}/${id}` },
        response: { status: first ? '201 Created' : '200 OK', etag: etagOf(resource), lastModified: resource.meta?.lastUpdated },
      }],
    };
    return { status: 200, headers: { 'content-type': FHIR_JSON }, body: bundle };
  }

  function resourceBody(request: FhirServerRequest, type: string): FhirResource | FhirServerResponse {
    const body = request.body;
    if (!isObject(body) || typeof body.resourceType !== 'string') return outcome(400, 'invalid', `the body must be a ${type} resource`);
    if (body.resourceType !== type) return outcome(400, 'invalid', `the body is a ${body.resourceType}, not a ${type}`);
    const issues = validationIssues(body);
    if (issues.length) return { status: 400, headers: { 'content-type': FHIR_JSON }, body: { resourceType: 'OperationOutcome', issue: issues } };
    return body as FhirResource;
  }

  /** The answer to a write, shaped by `Prefer: return=minimal | representation | OperationOutcome`. */
  function written(request: FhirServerRequest, status: number, resource: FhirResource): FhirServerResponse {
    const headers = resourceHeaders(resource);
    if (status === 201) headers.location = `${base}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId}`;
    const prefer = /return=([A-Za-z]+)/.exec(header(request, 'prefer') ?? '')?.[1];
    if (prefer === 'minimal') {
      delete headers['content-type'];
      return { status, headers };
    }
    if (prefer === 'OperationOutcome') {
      const message = `${resource.resourceType}/${resource.id} ${status === 201 ? 'created' : 'updated'} (version ${resource.meta?.versionId})`;
      return { status, headers, body: operationOutcome('information', 'informational', message) };
    }
    return { status, headers, body: resource };
  }

  async function create(type: string, request: FhirServerRequest): Promise<FhirServerResponse> {
    const resource = resourceBody(request, type);
    if (!('resourceType' in resource)) return resource;
    // FHIR create: the server assigns the id.
    return written(request, 201, await store.create({ ...resource, id: undefined }, { provenance: request.provenance }));
  }

  async function update(request: FhirServerRequest, type: string, id: string): Promise<FhirServerResponse> {
    const resource = resourceBody(request, type);
    if (!('resourceType' in resource)) return resource;
    const ifMatchHeader = header(request, 'if-match');
    const ifMatch = ifMatchHeader === undefined ? undefined : versionFromETag(ifMatchHeader);
    if (ifMatchHeader !== undefined && ifMatch === undefined) return outcome(400, 'invalid', `malformed If-Match: ${ifMatchHeader}`);
    const result = await store.update(type, id, resource, { ifMatch, provenance: request.provenance });
    return written(request, result.created ? 201 : 200, result.resource);
  }

  async function batch(request: FhirServerRequest): Promise<FhirServerResponse> {
    const bundle = request.body;
    if (!isObject(bundle) || bundle.resourceType !== 'Bundle') return outcome(400, 'invalid', 'POST to the base takes a batch Bundle');
    if (bundle.type === 'transaction') return outcome(400, 'not-supported', 'transactions are not supported (the store cannot write atomically): send a batch');
    if (bundle.type !== 'batch') return outcome(400, 'invalid', `Bundle.type must be batch, not ${String(bundle.type)}`);
    const entries = Array.isArray(bundle.entry) ? bundle.entry : [];
    const responses: FhirBundleEntry[] = [];
    for (const entry of entries) responses.push(await batchEntry(request, entry));
    return { status: 200, headers: { 'content-type': FHIR_JSON }, body: { resourceType: 'Bundle', type: 'batch-response', entry: responses } };
  }

  async function batchEntry(batchRequest: FhirServerRequest, entry: unknown): Promise<FhirBundleEntry> {
    const request = isObject(entry) && isObject(entry.request) ? entry.request : undefined;
    let response: FhirServerResponse;
    if (!request || typeof request.method !== 'string' || typeof request.url !== 'string') {
      response = outcome(400, 'invalid', 'a batch entry needs request.method and request.url');
    } else {
      let url = request.url;
      if (url.startsWith(`${base}/`)) url = url.slice(base.length + 1);
      if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(url)) {
        response = outcome(400, 'invalid', `entry url is not on this server: ${request.url}`);
      } else {
        const [path, query = ''] = splitOnce(url.replace(/^\/+/, ''), '?');
        const headers: Record<string, string | undefined> = {
          'if-match': typeof request.ifMatch === 'string' ? request.ifMatch : undefined,
          'if-none-match': typeof request.ifNoneMatch === 'string' ? request.ifNoneMatch : undefined,
          prefer: header(batchRequest, 'prefer'),
        };
        response = await dispatch({ method: request.method, path: path.replace(/\/+$/, ''), query: new URLSearchParams(query), headers, body: (entry as { resource?: unknown }).resource }, true);
      }
    }
    const body = response.body as FhirResource | undefined;
    const failed = response.status >= 400;
    const single = body && !failed && body.resourceType !== 'Bundle' && typeof body.id === 'string';
    return {
      ...(single ? { fullUrl: `${base}/${body.resourceType}/${body.id}` } : {}),
      ...(body && !failed ? { resource: body } : {}),
      response: {
        status: `${response.status} ${STATUS_CODES[response.status] ?? ''}`.trim(),
        ...(response.headers.location ? { location: response.headers.location } : {}),
        ...(response.headers.etag ? { etag: response.headers.etag } : {}),
        ...(single && body.meta?.lastUpdated ? { lastModified: body.meta.lastUpdated } : {}),
        ...(failed && body ? { outcome: body } : {}),
      },
    };
  }

  return (request) => dispatch(request, false);
}

function splitOnce(value: string, separator: string): [string, string?] {
  const i = value.indexOf(separator);
  return i < 0 ? [value] : [value.slice(0, i), value.slice(i + 1)];
}

/**
 * The Koa front end: every path below where the router is mounted goes to the
 * dispatcher. JSON (application/fhir+json or application/json) and form bodies
 * up to 1 MiB.
 */
export function fhirServerRoutes(store: FhirStore, options: FhirServerOptions): Router {
  const dispatch = fhirDispatcher(store, options);
  const parse = bodyParser({
    enableTypes: ['json', 'form'], extendTypes: { json: ['application/fhir+json'] }, jsonLimit: BODY_LIMIT, formLimit: BODY_LIMIT,
  });
  const reply = (ctx: Context, response: FhirServerResponse) => {
    ctx.status = response.status;
    if (response.body !== undefined) {
      ctx.body = response.body;
    } else if (response.status !== 304) {
      ctx.body = ''; // no body (Prefer: return=minimal), not Koa's status text
      ctx.remove('Content-Type');
    }
    ctx.set(response.headers);
  };

  async function handle(ctx: Context) {
    try {
      await parse(ctx, async () => {});
    } catch (err) {
      const status = (err as { status?: number }).status === 413 ? 413 : 400;
      return reply(ctx, outcome(status, status === 413 ? 'too-costly' : 'invalid',
        status === 413 ? 'the request body is larger than 1 MiB' : 'the request body is not valid JSON or form data'));
    }
    // An encoded slash would be decoded into the path: no FHIR type or id has one.
    if (/%2f/i.test(ctx.path)) return reply(ctx, outcome(404, 'not-found', 'unknown path'));
    const path = String(ctx.params.rest ?? '').replace(/\/+$/, '');
    const isForm = ctx.request.is('application/x-www-form-urlencoded');
    const raw = ctx.request.rawBody;
    reply(ctx, await dispatch({
      method: ctx.method === 'HEAD' ? 'GET' : ctx.method,
      path,
      query: new URLSearchParams(ctx.querystring),
      headers: ctx.headers,
      body: raw === undefined ? undefined : isForm ? new URLSearchParams(raw) : ctx.request.body,
    }));
  }

  const router = new Router();
  router.all('/', handle);
  router.all('/{*rest}', handle);
  return router;
}

/**
 * An Upstream that answers from `store` in process, through the same
 * dispatcher as fhirServerRoutes (for the bundled store: no network). Only the
 * headers httpUpstream would forward reach it.
 */
export function storeUpstream(store: FhirStore, base: string): Upstream {
  const dispatch = fhirDispatcher(store, { base });
  return inProcessUpstream(async (request) => {
    const [path, query = ''] = splitOnce(request.path.replace(/^\/+/, ''), '?');
    const headers = Object.fromEntries(Object.entries(request.headers ?? {})
      .map(([name, value]) => [name.toLowerCase(), value] as const)
      .filter(([name]) => FORWARDED_HEADERS.includes(name)));
    const response = await dispatch({ method: request.method, path: path.replace(/\/+$/, ''), query: new URLSearchParams(query), headers, body: request.body, provenance: request.provenance });
    return { status: response.status, headers: new Headers(response.headers), body: response.body };
  });
}
