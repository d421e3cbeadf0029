// The audit trail's shared shapes: FHIR R4 AuditEvents, what the store answers, and what an access is.
import type { Coding } from '../hcs/codes.ts';

export interface AuditEvent {
  resourceType: 'AuditEvent';
  id: string;
  [element: string]: unknown;
}

/** Search over stored AuditEvents (FHIR AuditEvent search parameters; every given one must match). */
/** What a purge removed, and how many older records it kept (privacy holds). */
export interface PurgeResult { removed: number; kept: number }

export interface AuditSearch {
  /** The AuditEvent's own id. */
  id?: string;
  /** Patient id, or any of several: the event's patient entity (BALP "Patient" profiles: one event per patient). */
  patient?: string | readonly string[];
  /** Inclusive bounds on `recorded`. */
  from?: Date;
  to?: Date;
  /** `agent.who.identifier.value` or `agent.who.reference` of any agent. */
  agent?: string | readonly string[];
  /** `entity.what.reference` of any entity ("Observation/obs-1"). */
  entity?: string | readonly string[];
  /** `type.code` ("rest", "110113", "110114"), or any of several. */
  type?: string | readonly string[];
  /** `subtype[].code` ("read", "search-type", "110127", "ITI-71"), or any of several. */
  subtype?: string | readonly string[];
  /** `outcome` ("0", "4", "8", "12"), or any of several. */
  outcome?: string | readonly string[];
  /** Skip this many matches first (a search page's offset). */
  offset?: number;
  limit?: number;
}

/** The patient's disclosures (successful accesses to their data, test data left out), as the database selects them. */
export interface DisclosureQuery {
  patient: string;
  /** Inclusive bounds on `recorded`. */
  from?: Date;
  to?: Date;
  /** Only disclosures to this app (client id). */
  app?: string;
  /** Leave out disclosures to these apps (the patient's own visits to their report). */
  exceptApps?: readonly string[];
}

/** One page, newest first; `older` / `newer` are the cursors (seq) of the pages beside it, when there are any. */
export interface DisclosurePage {
  events: AuditEvent[];
  older?: number;
  newer?: number;
}

export interface DisclosureSummaryRow {
  /** Client id ('' when none was recorded). */
  app: string;
  count: number;
  first: Date;
  last: Date;
}

export type AuditVerification =
  | { ok: true; records: number; checkpoints: number }
  | { ok: false; records: number; seq: number; eventId: string; problem: string };

export interface AuditStore {
  /** Resolves once every event is durably stored in the chain, in order; rejects when they cannot be (callers fail closed). */
  append(events: AuditEvent[]): Promise<void>;
  search(filter: AuditSearch): Promise<AuditEvent[]>;
  /** How many events match the filter (its limit and offset aside). */
  count(filter: AuditSearch): Promise<number>;
  /** A page of the patient's disclosures, newest first: below `before`, or the page just above `after`. */
  disclosurePage(query: DisclosureQuery & { before?: number; after?: number; limit: number }): Promise<DisclosurePage>;
  /** Disclosures per app: how many, first and last; counted in the database. */
  disclosureSummary(query: DisclosureQuery): Promise<DisclosureSummaryRow[]>;
  /** Every disclosure, oldest first, read in batches (for downloads of any size). */
  disclosureEvents(query: DisclosureQuery): AsyncIterable<AuditEvent>;
  /**
   * Checks the whole chain, every record's search columns and index rows, and every checkpoint; names the
   * first record that does not match. `signedHead`: a checkpoint JWS kept outside the database, which the
   * chain must reach with the same hash.
   */
  verify(signedHead?: string): Promise<AuditVerification>;
  /** Signs a checkpoint over the chain as it is now. */
  checkpoint(): Promise<void>;
  /**
   * Removes records recorded before `before`, except those of patients under a privacy hold; the chain stays verifiable.
   * `records` (of the purge) are appended in the purge's transaction: both or neither (AuditWriteError).
   */
  purge(before: Date, records?: (result: PurgeResult) => AuditEvent[]): Promise<PurgeResult>;
  hold(patient: string, reason: string): Promise<void>;
  release(patient: string): Promise<boolean>;
  holds(): Promise<{ patient: string; reason: string; since: Date }[]>;
  /** Writes what is queued, then stops accepting events. */
  close(): Promise<void>;
}

/** A security label as a resource carries it (`meta.security`): its system may be missing. */
export type SecurityLabel = Omit<Coding, 'system'> & { system?: string };

/** One guarded FHIR access, as the audit builders need it (from the guard's AccessRecord and the token). */
export interface AccessAudit {
  recorded: Date;
  requestId: string;
  /** The HTTP status of the answer. */
  status: number;
  method: string;
  /** The request URL below the FHIR base, with its query string, as sent. */
  url: string;
  /** The FHIR interaction (restful-interaction code), when the request got that far. */
  interaction?: string;
  /** The resource type the interaction is about. */
  type?: string;
  /** Resources returned or written, "Type/id". */
  resources: string[];
  /** Every patient whose data was returned or written (one AuditEvent each). */
  patients: string[];
  /** The patients of each resource that names some: a patient's event lists only theirs and those of no patient. */
  resourcePatients?: Readonly<Record<string, readonly string[]>>;
  /** The FHIR base: the observer and the server agent. */
  server: { base: string };
  /**
   * The app; `issuer` identifies the authorization server that registered it. A backend service's token
   * (no user) names the organization it acts for here (IUA subject_organization, subject_organization_id).
   */
  client: { id?: string; address?: string; issuer?: string; organization?: string; organizationId?: string };
  /** The person, when a user token; undefined for backend services and for requests without a valid token. */
  user?: {
    issuer: string;
    sub: string;
    name?: string;
    roles: Coding[];
    organization?: string;
    organizationId?: string;
  };
  /** Purpose of use of the token (IUA), when there is one. */
  purposeOfUse: Coding[];
  /** The access token's jti, when the token was valid. */
  jti?: string;
  /** How the data went out (PSEUDED when de-identified): on every data and query entity. */
  securityLabels?: Coding[];
  /** The labels (`meta.security`) each resource carried, "Type/id" => codings: on its own entity. */
  resourceLabels?: Readonly<Record<string, readonly SecurityLabel[]>>;
}
