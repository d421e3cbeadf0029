// The resource-server guard's shared types: what a request asks for, who asks, and what they may see.
// Nothing here imports the authorization server: a FHIR server can use the guard on its own.
import type { ResourceScope } from '../smart/scopes.ts';

export interface FhirResource {
  resourceType: string;
  id?: string;
  meta?: { versionId?: string; lastUpdated?: string; security?: { system?: string; code?: string }[]; [k: string]: unknown };
  [element: string]: unknown;
}

export interface FhirBundle extends FhirResource {
  resourceType: 'Bundle';
  type?: string;
  total?: number;
  link?: { relation: string; url: string }[];
  entry?: FhirBundleEntry[];
}

export interface FhirBundleEntry {
  fullUrl?: string;
  resource?: FhirResource;
  search?: { mode?: 'match' | 'include' | 'outcome'; score?: number };
  request?: { method: string; url: string; ifMatch?: string; ifNoneExist?: string };
  response?: { status: string; location?: string; etag?: string; lastModified?: string; outcome?: FhirResource };
}

/** A FHIR REST request, relative to the FHIR base. */
export interface FhirRequest {
  method: string;
  /** Path below the FHIR base without leading slash: "", "metadata", "Patient", "Patient/1", "Patient/1/_history/2", "Patient/$everything", "Patient/_search". */
  path: string;
  query: URLSearchParams;
  /** The parsed JSON body of POST/PUT/PATCH (a resource, a Bundle, Parameters or a JSON Patch array). */
  body?: unknown;
  /** Request headers, lower-case names. */
  headers?: Readonly<Record<string, string | undefined>>;
}

export type InteractionKind =
  | 'capabilities'
  | 'read' | 'vread' | 'history-instance' | 'history-type' | 'history-system'
  | 'search-type' | 'search-system'
  | 'create' | 'update' | 'patch' | 'delete'
  | 'batch' | 'transaction'
  | 'operation';

/** What one FHIR request asks for. */
export interface FhirInteraction {
  kind: InteractionKind;
  /** The resource type, when the interaction has one. */
  type?: string;
  id?: string;
  versionId?: string;
  /** The operation name without `$`, for `operation`. */
  operation?: string;
  /** Search parameters (query string, or the form body of `_search`). */
  params: URLSearchParams;
  /** The resource sent with create and update. */
  resource?: FhirResource;
  /** A page the guard linked: the upstream position its `_page` names, fetched instead of a new search. */
  page?: PagePosition;
}

/** Where a page of the guard's starts: an upstream page (its link below the upstream base), less its first `skip` matches. */
export interface PagePosition {
  link: string;
  skip: number;
  /** The search parameters the client sent for the first page, which the rules check each page's matches against. */
  search?: string;
}

/** The token as the guard sees it, after verification. */
export interface TokenContext {
  clientId: string;
  /** The user (or, for backend services, the client): `sub` of the token. */
  sub?: string;
  issuer: string;
  jti: string;
  exp: number;
  scopes: ResourceScope[];
  /** The `patient` launch context: what `patient/` scopes are about. */
  patient?: string;
  /** The user's FHIR record as a relative reference ("Patient/pat-1", "Practitioner/dr-smith"). */
  fhirUser?: string;
  /** For `user/` scopes of a user who is not a patient: the patients they may reach; undefined means all. */
  userPatients?: readonly string[];
  /** Whether the token's user holds the auditor attribute, as the authorization server told the verifier. */
  auditor?: boolean;
  /** Every claim of the token (or introspection response), for policy hooks and audit. */
  claims: Record<string, unknown>;
}

/**
 * One way a token may see data of one type: optionally only the compartments of some patients,
 * optionally only resources matching search restrictions (a query-restricted scope). A request
 * may use several views; their union is what it may see.
 */
export interface View {
  /** Patient ids whose compartment bounds the view; undefined means no patient bound. */
  patients?: readonly string[];
  /** `name=value` restrictions a resource must match (from `?…` in a scope); empty means none. */
  query: readonly (readonly [string, string])[];
}

/** How the guard refuses, as FHIR and RFC 6750 want it. */
export interface Refusal {
  status: 400 | 401 | 403 | 404 | 405 | 406 | 412 | 413 | 415 | 422 | 500 | 502 | 503;
  /** OperationOutcome issue code (FHIR IssueType): invalid, login, forbidden, not-found, conflict, not-supported, too-costly, exception. */
  code: string;
  message: string;
  /** For 401/403: the RFC 6750 error code for WWW-Authenticate. */
  bearerError?: 'invalid_token' | 'insufficient_scope';
}

export type Decision =
  | { effect: 'deny'; refusal: Refusal }
  | { effect: 'allow'; views: View[] };
