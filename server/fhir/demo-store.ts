// The bundled demo FHIR store: an in-memory, per-instance copy of
// demo-data.json with read / search / create / update, plus builders for the
// CapabilityStatement, searchset Bundles and OperationOutcomes. No HTTP here:
// a Koa route and the resource-server guard call these methods.

import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { valuesAt } from './compartment.ts';
import {
  SEARCH_PARAM_NAMES,
  matchesCriteria,
  parseSearch,
  searchParamKind,
  searchParamPaths,
  type SearchInput,
  type SearchParamKind,
} from './search.ts';
import type { FhirBundle, FhirResource } from './types.ts';

export type { Coding, FhirBundle, FhirBundleEntry, FhirMeta, FhirResource } from './types.ts';
export { SearchParameterError, matchesSearch, type SearchInput } from './search.ts';

export interface SearchParamInfo {
  name: string;
  type: SearchParamKind;
}

export interface DemoStore {
  /** A copy of `type/id`, or undefined. */
  read(type: string, id: string): FhirResource | undefined;
  /**
   * Copies of the resources of `type` matching every parameter, in load/creation
   * order, no paging. Throws SearchParameterError for unsupported modifiers,
   * chains and malformed dates; unknown parameters are ignored.
   */
  search(type: string, params?: SearchInput): FhirResource[];
  /**
   * Stores a copy: id kept when given (FhirStoreError 'duplicate' if taken),
   * else a UUID; meta.versionId '1', meta.lastUpdated now; the rest of meta
   * (security, tag, profile) kept as sent.
   */
  create(resource: FhirResource): FhirResource;
  /**
   * Replaces (or creates, `created: true`) `type/id`. versionId is the previous
   * one + 1 (or '1'); lastUpdated now; meta.security is what was sent (labels
   * not sent are dropped). resourceType/id must agree with `type`/`id`.
   */
  update(type: string, id: string, resource: FhirResource): { resource: FhirResource; created: boolean };
  /** Resource types present, sorted. */
  types(): string[];
  /** Search parameters meaningful for `type` in this store (see capabilityStatement). */
  searchParams(type: string): SearchParamInfo[];
}

export interface DemoStoreOptions {
  /** Clock for meta.lastUpdated (tests). */
  now?: () => Date;
}

export type FhirStoreErrorCode = 'invalid' | 'duplicate';

/** Rejected write; `status` is the HTTP status a route should answer. */
export class FhirStoreError extends Error {
  readonly code: FhirStoreErrorCode;
  readonly status: number;
  constructor(code: FhirStoreErrorCode, message: string) {
    super(message);
    this.name = 'FhirStoreError';
    this.code = code;
    this.status = code === 'duplicate' ? 409 : 400;
  }
}

const DEMO_DATA_URL = new URL('./demo-data.json', import.meta.url);
let demoData: FhirBundle | undefined;

/** A fresh deep copy of the bundled demo data set. */
export function loadDemoBundle(): FhirBundle {
  demoData ??= JSON.parse(readFileSync(DEMO_DATA_URL, 'utf8')) as FhirBundle;
  return structuredClone(demoData);
}

const TYPE = /^[A-Z][A-Za-z]{1,63}$/;
const ID = /^[A-Za-z0-9\-.]{1,64}$/;

export function createDemoStore(bundle?: FhirBundle, options: DemoStoreOptions = {}): DemoStore {
  const now = options.now ?? (() => new Date());
  const source = bundle ? structuredClone(bundle) : loadDemoBundle();
  const resources = new Map<string, FhirResource>(); // `Type/id` ⇒ resource, insertion-ordered
  const key = (type: string, id: string) => `${type}/${id}`;

  for (const entry of source.entry ?? []) {
    const resource = entry.resource;
    if (!resource) continue;
    checkType(resource.resourceType);
    resource.id ??= randomUUID();
    checkId(resource.id);
    if (resources.has(key(resource.resourceType, resource.id))) {
      throw new FhirStoreError('duplicate', `Duplicate resource in bundle: ${resource.resourceType}/${resource.id}`);
    }
    resources.set(key(resource.resourceType, resource.id), resource);
  }

  function ofType(type: string): FhirResource[] {
    return [...resources.values()].filter((r) => r.resourceType === type);
  }

  return {
    read(type, id) {
      const found = resources.get(key(type, id));
      return found ? structuredClone(found) : undefined;
    },

    search(type, params = '') {
      const criteria = parseSearch(params);
      return ofType(type).filter((r) => matchesCriteria(r, criteria)).map((r) => structuredClone(r));
    },

    create(input) {
      checkType(input?.resourceType);
      const resource = structuredClone(input);
      resource.id ??= randomUUID();
      checkId(resource.id);
      if (resources.has(key(resource.resourceType, resource.id))) {
        throw new FhirStoreError('duplicate', `${resource.resourceType}/${resource.id} already exists`);
      }
      resource.meta = { ...resource.meta, versionId: '1', lastUpdated: now().toISOString() };
      resources.set(key(resource.resourceType, resource.id), resource);
      return structuredClone(resource);
    },

    update(type, id, input) {
      checkType(type);
      checkId(id);
      if (input?.resourceType !== type) {
        throw new FhirStoreError('invalid', `resourceType ${String(input?.resourceType)} does not match ${type}`);
      }
      if (input.id !== undefined && input.id !== id) {
        throw new FhirStoreError('invalid', `Resource id ${String(input.id)} does not match ${id}`);
      }
      const previous = resources.get(key(type, id));
      const resource = structuredClone(input);
      resource.id = id;
      const previousVersion = Number.parseInt(previous?.meta?.versionId ?? '0', 10);
      const versionId = String((Number.isFinite(previousVersion) ? previousVersion : 0) + 1);
      resource.meta = { ...resource.meta, versionId, lastUpdated: now().toISOString() };
      resources.set(key(type, id), resource);
      return { resource: structuredClone(resource), created: previous === undefined };
    },

    types() {
      return [...new Set([...resources.values()].map((r) => r.resourceType))].sort();
    },

    searchParams(type) {
      const stored = ofType(type);
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
    },
  };
}

function checkType(type: unknown): asserts type is string {
  if (typeof type !== 'string' || !TYPE.test(type) || type === 'Bundle') {
    throw new FhirStoreError('invalid', `Invalid or unsupported resourceType: ${String(type)}`);
  }
}

function checkId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || !ID.test(id)) throw new FhirStoreError('invalid', `Invalid resource id: ${String(id)}`);
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

/**
 * R4 CapabilityStatement for the demo server: SMART-on-FHIR security service,
 * the `oauth-uris` extension (only the URIs given) and one `resource` entry per
 * type in `store` (the bundled data set by default).
 */
export function capabilityStatement(
  fhirBase: string,
  oauth: OAuthUris,
  store: Pick<DemoStore, 'types' | 'searchParams'> = createDemoStore(),
): object {
  const uris = OAUTH_URI_ORDER
    .filter((name) => typeof oauth[name] === 'string' && oauth[name] !== '')
    .map((name) => ({ url: name, valueUri: oauth[name] as string }));
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
      security: {
        extension: [{ url: OAUTH_URIS_EXTENSION, extension: uris }],
        service: [{
          coding: [{ system: RESTFUL_SECURITY_SERVICE, code: 'SMART-on-FHIR', display: 'SMART-on-FHIR' }],
          text: 'OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)',
        }],
      },
      resource: store.types().map((type) => ({
        type,
        interaction: [{ code: 'read' }, { code: 'search-type' }, { code: 'create' }, { code: 'update' }],
        searchParam: store.searchParams(type).map(({ name, type: kind }) => ({ name, type: kind })),
      })),
    }],
  };
}

// ---- Bundle / OperationOutcome ----

/** A `searchset` Bundle of `matches` (all of them: no paging). */
export function searchBundle(fhirBase: string, type: string, matches: readonly FhirResource[], selfUrl: string): object {
  const base = trimBase(fhirBase);
  return {
    resourceType: 'Bundle',
    type: 'searchset',
    total: matches.length,
    link: [{ relation: 'self', url: selfUrl }],
    entry: matches.map((resource) => ({
      fullUrl: `${base}/${resource.resourceType || type}/${resource.id}`,
      resource,
      search: { mode: 'match' },
    })),
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
