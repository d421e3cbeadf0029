// The demo FHIR store's contract and the pieces every implementation shares:
//  - FhirStore, the async store (store-db.ts keeps it in SQLite/PostgreSQL);
//  - the write rules (ids, versionId, lastUpdated, meta kept as sent) and
//    FhirStoreError;
//  - searchPage (paging, _include, _revinclude over any FhirStore) and the
//    CapabilityStatement, searchset Bundle and OperationOutcome builders.
// No HTTP here: server.ts serves a FhirStore over FHIR REST.

import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { valuesAt } from './compartment.ts';
import {
  SEARCH_PARAM_NAMES,
  parseResultControls,
  referenceTargets,
  searchParamKind,
  searchParamPaths,
  type SearchInput,
  type SearchParamKind,
} from './search.ts';
import type { FhirBundle, FhirBundleEntry, FhirResource } from './types.ts';

export type { Coding, FhirBundle, FhirBundleEntry, FhirMeta, FhirResource } from './types.ts';
export { SearchParameterError, matchesSearch, type SearchInput } from './search.ts';

export interface SearchParamInfo {
  name: string;
  type: SearchParamKind;
}

export interface WriteOptions {
  /** A Provenance without its target (server/fhir/provenance.ts): stored for the written version, in the same transaction. */
  provenance?: FhirResource;
}

export interface UpdateOptions extends WriteOptions {
  /** Optimistic locking: the versionId the client last saw (from `If-Match: W/"n"`); FhirStoreError 'conflict' (412) when it is not the current one. */
  ifMatch?: string;
}

/** What a CapabilityStatement needs to know about a store. */
export interface StoreDescription {
  /** Resource types present, sorted. */
  types(): string[];
  /** Search parameters meaningful for `type` in this store. */
  searchParams(type: string): SearchParamInfo[];
}

/** The demo FHIR store. Every method returns copies: mutating them changes nothing stored. */
export interface FhirStore {
  /** `type/id`, or undefined. */
  read(type: string, id: string): Promise<FhirResource | undefined>;
  /**
   * The resources of `type` matching every parameter, ordered by id, no paging
   * and no includes (searchPage adds those). Rejects with SearchParameterError
   * for unsupported modifiers, chains and malformed dates; unknown parameters
   * are ignored.
   */
  search(type: string, params?: SearchInput): Promise<FhirResource[]>;
  /**
   * Stores a new resource: id kept when given (FhirStoreError 'duplicate' if
   * taken), else a UUID; meta.versionId '1', meta.lastUpdated now; the rest of
   * meta (security, tag, profile) kept as sent.
   */
  create(resource: FhirResource, options?: WriteOptions): Promise<FhirResource>;
  /**
   * Replaces (or creates, `created: true`) `type/id`. versionId is the previous
   * one + 1 (or '1'); lastUpdated now; meta.security is what was sent (labels
   * not sent are dropped). resourceType/id must agree with `type`/`id`.
   */
  update(type: string, id: string, resource: FhirResource, options?: UpdateOptions): Promise<{ resource: FhirResource; created: boolean }>;
  /** Resource types present, sorted. */
  types(): Promise<string[]>;
  /** Search parameters meaningful for `type` in this store (see capabilityStatement). */
  searchParams(type: string): Promise<SearchParamInfo[]>;
}

export interface StoreOptions {
  /** Clock for meta.lastUpdated (tests). */
  now?: () => Date;
}

/** FHIR IssueType of the rejection; `status` is the HTTP status a server answers. */
export type FhirStoreErrorCode = 'invalid' | 'processing' | 'duplicate' | 'conflict' | 'transient';

const STORE_ERROR_STATUS: Record<FhirStoreErrorCode, number> = {
  invalid: 400, processing: 422, duplicate: 409, conflict: 412, transient: 503,
};

/**
 * A rejected write: 'invalid' (400: bad type or id), 'processing' (422: a
 * resource the store will not keep, e.g. malformed meta or a Bundle),
 * 'duplicate' (409: id taken), 'conflict' (412: If-Match is not the current
 * version), 'transient' (503: lost too many concurrent-update races).
 */
export class FhirStoreError extends Error {
  readonly code: FhirStoreErrorCode;
  readonly status: number;
  constructor(code: FhirStoreErrorCode, message: string) {
    super(message);
    this.name = 'FhirStoreError';
    this.code = code;
    this.status = STORE_ERROR_STATUS[code];
  }
}

const DEMO_DATA_URL = new URL('./demo-data.json', import.meta.url);
let demoData: FhirBundle | undefined;

/** A fresh deep copy of the bundled demo data set. */
export function loadDemoBundle(): FhirBundle {
  demoData ??= JSON.parse(readFileSync(DEMO_DATA_URL, 'utf8')) as FhirBundle;
  return structuredClone(demoData);
}

// ---- write rules, shared by the stores ----

const TYPE = /^[A-Z][A-Za-z]{1,63}$/;
const ID = /^[A-Za-z0-9\-.]{1,64}$/;

export function checkType(type: unknown): asserts type is string {
  if (typeof type !== 'string' || !TYPE.test(type)) {
    throw new FhirStoreError('invalid', `Invalid resourceType: ${String(type)}`);
  }
  if (type === 'Bundle') throw new FhirStoreError('processing', 'The demo store does not keep Bundles');
}

export function checkId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || !ID.test(id)) throw new FhirStoreError('invalid', `Invalid resource id: ${String(id)}`);
}

function checkMeta(resource: FhirResource): void {
  const meta: unknown = resource.meta;
  if (meta === undefined) return;
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) throw new FhirStoreError('processing', 'meta must be an object');
  for (const list of ['security', 'tag', 'profile'] as const) {
    const value = (meta as Record<string, unknown>)[list];
    if (value !== undefined && !Array.isArray(value)) throw new FhirStoreError('processing', `meta.${list} must be an array`);
  }
}

/** A validated copy of a resource to create, with its id and version 1 (the input is not changed). */
export function prepareCreate(input: FhirResource, now: Date): FhirResource {
  checkType(input?.resourceType);
  const resource = structuredClone(input);
  resource.id ??= randomUUID();
  checkId(resource.id);
  checkMeta(resource);
  resource.meta = { ...resource.meta, versionId: '1', lastUpdated: now.toISOString() };
  return resource;
}

/** Throws FhirStoreError unless `input` may replace `type/id`. */
export function checkUpdate(type: string, id: string, input: FhirResource): void {
  checkType(type);
  checkId(id);
  if (input?.resourceType !== type) {
    throw new FhirStoreError('invalid', `resourceType ${String(input?.resourceType)} does not match ${type}`);
  }
  if (input.id !== undefined && input.id !== id) {
    throw new FhirStoreError('invalid', `Resource id ${String(input.id)} does not match ${id}`);
  }
  checkMeta(input);
}

/** A validated copy of a resource replacing `type/id` whose current version is `previousVersion` (undefined: new). */
export function prepareUpdate(type: string, id: string, input: FhirResource, previousVersion: number | undefined, now: Date): FhirResource {
  checkUpdate(type, id, input);
  const resource = structuredClone(input);
  resource.id = id;
  const versionId = String((previousVersion ?? 0) + 1);
  resource.meta = { ...resource.meta, versionId, lastUpdated: now.toISOString() };
  return resource;
}

/** versionId as a number (0 when missing or not a number). */
export function versionOf(resource: FhirResource | undefined): number {
  const n = Number.parseInt(resource?.meta?.versionId ?? '0', 10);
  return Number.isFinite(n) && n > 0 ? n : 0;
}

/** Search parameters meaningful for `type`, given the stored resources of that type. */
export function searchParamsOf(type: string, stored: readonly FhirResource[]): SearchParamInfo[] {
  const result: SearchParamInfo[] = [];
  for (const name of SEARCH_PARAM_NAMES) {
    const paths = searchParamPaths(type, name);
    if (!paths || paths.length === 0) continue;
    // Parameters defined per type (patient, subject, date, …) are listed as
    // such; generic ones only when some stored resource has the element.
    const perType = name === '_id' || ['patient', 'subject', 'date', 'birthdate'].includes(name);
    if (perType || stored.some((r) => paths.some((p) => valuesAt(r, p).length > 0))) {
      result.push({ name, type: searchParamKind(name)! });
    }
  }
  return result;
}

// ---- search with paging and includes ----

/**
 * A searchset Bundle for `GET {base}/{type}?{params}`: the page of matches
 * (`_count`, default 50, max 200; `_getpagesoffset`) with `search.mode:
 * 'match'`, then what `_include` and `_revinclude` add for that page with
 * `search.mode: 'include'` (each resource once). `total` counts matches only;
 * `link` has self, and next/previous when there are more pages, on `base`.
 * Throws SearchParameterError (400) for what it cannot evaluate.
 */
export async function searchPage(store: FhirStore, type: string, params: SearchInput, options: { base: string }): Promise<FhirBundle> {
  const query = new URLSearchParams(typeof params === 'string' ? params : [...params] as [string, string][]);
  const controls = parseResultControls(type, query);
  const matches = await store.search(type, query);
  const page = matches.slice(controls.offset, controls.offset + controls.count);

  const seen = new Set(page.map((r) => `${r.resourceType}/${r.id}`));
  const included: FhirResource[] = [];
  const add = (resource: FhirResource | undefined) => {
    const key = resource && `${resource.resourceType}/${resource.id}`;
    if (!resource || !key || seen.has(key)) return;
    seen.add(key);
    included.push(resource);
  };
  for (const spec of controls.include) {
    for (const match of page) {
      for (const target of referenceTargets(match, spec.param, spec.target)) {
        if (!seen.has(`${target.type}/${target.id}`)) add(await store.read(target.type, target.id));
      }
    }
  }
  if (page.length > 0) {
    for (const spec of controls.revinclude) {
      if (spec.target !== undefined && spec.target !== type) continue;
      // One reference search: the page's ids ORed (ids never contain commas).
      const referencing = await store.search(spec.source, [[spec.param, page.map((r) => `${type}/${r.id}`).join(',')]]);
      for (const resource of referencing) add(resource);
    }
  }

  const base = trimBase(options.base);
  const link = (offset: number) => {
    const p = new URLSearchParams(query);
    p.delete('_getpagesoffset');
    p.set('_count', String(controls.count));
    if (offset > 0) p.set('_getpagesoffset', String(offset));
    return `${base}/${type}?${p}`;
  };
  const selfQuery = query.toString();
  return searchBundle(base, type, page, `${base}/${type}${selfQuery ? `?${selfQuery}` : ''}`, {
    total: matches.length,
    included,
    next: controls.count > 0 && controls.offset + controls.count < matches.length ? link(controls.offset + controls.count) : undefined,
    previous: controls.count > 0 && controls.offset > 0 ? link(Math.max(0, controls.offset - controls.count)) : undefined,
  });
}

// ---- CapabilityStatement ----

export interface OAuthUris {
  authorize: string;
  token: string;
  revoke?: string;
  introspect?: string;
  register?: string;
  manage?: string;
}

const OAUTH_URIS_EXTENSION = 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris';
const RESTFUL_SECURITY_SERVICE = 'http://terminology.hl7.org/CodeSystem/restful-security-service';
const OAUTH_URI_ORDER = ['authorize', 'token', 'revoke', 'introspect', 'register', 'manage'] as const;
const CAPABILITY_DATE = '2026-03-15';
const DEFAULT_INTERACTIONS = ['read', 'search-type', 'create', 'update'] as const;

export interface CapabilityOptions {
  /** Type-level interactions listed for every type (default read, search-type, create, update). */
  interactions?: readonly string[];
  /** System-level interactions (default none), e.g. ['batch']. */
  systemInteractions?: readonly string[];
}

/** A synchronous snapshot of an async store's types and search parameters, for capabilityStatement. */
export async function describeStore(store: Pick<FhirStore, 'types' | 'searchParams'>): Promise<StoreDescription> {
  const types = await store.types();
  const params = new Map(await Promise.all(types.map(async (type) => [type, await store.searchParams(type)] as const)));
  return { types: () => [...types], searchParams: (type) => [...(params.get(type) ?? [])] };
}

/**
 * R4 CapabilityStatement for the demo server: one `resource` entry per type in
 * `store` (a DemoStore, or describeStore(fhirStore)) and, when `oauth` is
 * given, the SMART-on-FHIR security service with the `oauth-uris` extension
 * (only the URIs given). Without `oauth` (the unsecured upstream) there is no
 * security element.
 */
export function capabilityStatement(
  fhirBase: string,
  oauth: OAuthUris | undefined,
  store: StoreDescription,
  options: CapabilityOptions = {},
): object {
  const interactions = options.interactions ?? DEFAULT_INTERACTIONS;
  const security = oauth && {
    extension: [{
      url: OAUTH_URIS_EXTENSION,
      extension: OAUTH_URI_ORDER
        .filter((name) => typeof oauth[name] === 'string' && oauth[name] !== '')
        .map((name) => ({ url: name, valueUri: oauth[name] as string })),
    }],
    service: [{
      coding: [{ system: RESTFUL_SECURITY_SERVICE, code: 'SMART-on-FHIR', display: 'SMART-on-FHIR' }],
      text: 'OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)',
    }],
  };
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: CAPABILITY_DATE,
    publisher: 'smart-auth',
    kind: 'instance',
    software: { name: 'smart-auth demo FHIR store' },
    implementation: { description: 'smart-auth bundled demo FHIR server', url: trimBase(fhirBase) },
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [{
      mode: 'server',
      ...(security ? { security } : {}),
      resource: store.types().map((type) => ({
        type,
        interaction: interactions.map((code) => ({ code })),
        searchParam: store.searchParams(type).map(({ name, type: kind }) => ({ name, type: kind })),
      })),
      ...(options.systemInteractions?.length ? { interaction: options.systemInteractions.map((code) => ({ code })) } : {}),
    }],
  };
}

// ---- Bundle / OperationOutcome ----

export interface SearchBundleExtras {
  /** Number of matches over all pages (default: matches.length). */
  total?: number;
  /** Added by _include/_revinclude: entries with search.mode 'include', after the matches. */
  included?: readonly FhirResource[];
  next?: string;
  previous?: string;
}

/** A `searchset` Bundle of `matches` (one page when `extras` says so). */
export function searchBundle(
  fhirBase: string,
  type: string,
  matches: readonly FhirResource[],
  selfUrl: string,
  extras: SearchBundleExtras = {},
): FhirBundle {
  const base = trimBase(fhirBase);
  const entry = (resource: FhirResource, mode: 'match' | 'include'): FhirBundleEntry => ({
    fullUrl: `${base}/${resource.resourceType || type}/${resource.id}`,
    resource,
    search: { mode },
  });
  return {
    resourceType: 'Bundle',
    type: 'searchset',
    total: extras.total ?? matches.length,
    link: [
      { relation: 'self', url: selfUrl },
      ...(extras.next ? [{ relation: 'next', url: extras.next }] : []),
      ...(extras.previous ? [{ relation: 'previous', url: extras.previous }] : []),
    ],
    entry: [
      ...matches.map((r) => entry(r, 'match')),
      ...(extras.included ?? []).map((r) => entry(r, 'include')),
    ],
  };
}

export type IssueSeverity = 'fatal' | 'error' | 'warning' | 'information';

/** `code` is an R4 IssueType (invalid, not-found, forbidden, not-supported, …). */
export function operationOutcome(severity: IssueSeverity, code: string, diagnostics?: string): object {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity, code, ...(diagnostics !== undefined ? { diagnostics } : {}) }],
  };
}

function trimBase(base: string): string {
  return base.replace(/\/+$/, '');
}
