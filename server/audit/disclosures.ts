// The patient's accounting of disclosures (and access report), read from the BALP AuditEvents of
// guarded FHIR accesses: who (role, organization, app) saw what (resource types and ids, never
// content), when, from where, and why (FHIR Security and Privacy module, accounting of disclosures;
// HIPAA 45 CFR 164.528). Pure.
import type { AuditEvent, DisclosureSummaryRow } from './types.ts';
import { hiddenType, restrictedRecord, type LabelsReadable } from '../privacy/audit-agents.ts';

/**
 * The report's columns, in order (DESIGN "Audit": CSV columns and `--format json` keys), then where the
 * request came from, whether data was disclosed, and whether it went out de-identified.
 */
export const DISCLOSURE_COLUMNS = [
  'date', 'recipient_role', 'recipient_organization', 'app', 'purpose_of_use', 'action', 'resources', 'break_glass', 'request_id',
  'network_address', 'outcome', 'deidentified',
] as const;

export type DisclosureColumn = (typeof DISCLOSURE_COLUMNS)[number];

/** One access to the patient's data: one line per request. */
export interface DisclosureLine {
  /** ISO date-time of the (first) event of the request. */
  date: string;
  /** The recipient's role(s) (display, else code); "system" for a backend service; "patient (self)". */
  recipient_role: string;
  recipient_organization: string;
  /** The client id, or its name when `appNames` gives one. */
  app: string;
  /** Purpose of use codes (v3-ActReason), space-separated. */
  purpose_of_use: string;
  /** read, search, create, update, delete, history, operation, … */
  action: string;
  /** "Type/id" of each resource, space-separated; the type alone when a search returned none; "Type(restricted)" for one the reader may not read. */
  resources: string;
  break_glass: boolean;
  /** X-Request-Id, else the AuditEvent id. */
  request_id: string;
  /** Where: the client's network address, '' when not recorded. */
  network_address: string;
  /** "disclosed"; for the privacy office's report of attempts also "refused" (outcome 4) or "failed" (8, 12). */
  outcome: 'disclosed' | 'refused' | 'failed';
  /** The data went out de-identified (pseudonymized: an entity labelled v3-ObservationValue PSEUDED), e.g. for research. */
  deidentified: boolean;
  /** The staff member's name: only with `names: true` (not a CSV column). */
  recipient_name?: string;
}

export interface DisclosureOptions {
  /** Include the staff member's name (`recipient_name`). Default false: role and organization only. */
  names?: boolean;
  /** User ids (agent `who.identifier.value`) that are the patient themself. */
  selfUserIds?: readonly string[];
  /** Client id -> what to show as the app. */
  appNames?: Readonly<Record<string, string>>;
  /** Keep only events whose patient entity is this patient (the store is normally queried by patient already). */
  patient?: string;
  /** Also refused and failed accesses that named the patient (the privacy office's access report). Default: disclosures only. */
  attempts?: boolean;
  /** Access token ids issued under break-the-glass (from the alerts), when the alerts are not among the events. */
  breakGlassJtis?: ReadonlySet<string>;
  /**
   * Whether the reader (the patient) may read a resource that carried these labels: others are listed by type
   * only, as "Observation(restricted)". Default: every resource is named (the privacy office's export).
   */
  readable?: LabelsReadable;
}

// ---- reading AuditEvents -------------------------------------------------------------------

interface Coding { system?: string; code?: string; display?: string }
interface CodeableConcept { coding?: Coding[]; text?: string }
interface Agent {
  type?: CodeableConcept;
  role?: CodeableConcept[];
  who?: { reference?: string; display?: string; identifier?: { system?: string; value?: string } };
  name?: string;
  requestor?: boolean;
  policy?: string[];
  network?: { address?: string; type?: string };
  purposeOfUse?: CodeableConcept[];
}
interface Entity {
  what?: { reference?: string; identifier?: { value?: string } };
  type?: Coding;
  role?: Coding;
  description?: string;
  securityLabel?: Coding[];
}

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const PARTICIPATION = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
const ROLE_CLASS = 'http://terminology.hl7.org/CodeSystem/v3-RoleClass';
const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const OBSERVATION_VALUE = 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue';
const JTI_POLICY = 'urn:ietf:params:oauth:jti:';
const BREAK_GLASS_PURPOSES = new Set(['BTG', 'ETREAT']);

const agentsOf = (e: AuditEvent) => (Array.isArray(e.agent) ? (e.agent as Agent[]) : []);
const entitiesOf = (e: AuditEvent) => (Array.isArray(e.entity) ? (e.entity as Entity[]) : []);
const codeOf = (value: unknown) => (value as Coding | undefined)?.code;
const hasCoding = (cc: CodeableConcept | undefined, system: string, code: string) =>
  Boolean(cc?.coding?.some((c) => c.code === code && (c.system === undefined || c.system === system)));

const isUserAgent = (a: Agent) => hasCoding(a.type, PARTICIPATION, 'IRCP');
const isAppAgent = (a: Agent) => hasCoding(a.type, DCM, '110150');
const isOrganizationAgent = (a: Agent) => hasCoding(a.type, ROLE_CLASS, 'PROV');

const purposeCodes = (ccs: CodeableConcept[] | undefined) =>
  (ccs ?? []).flatMap((cc) => (cc.coding ?? []).filter((c) => c.code && (c.system === undefined || c.system === ACT_REASON)).map((c) => c.code!));

/** Every purpose of use in the event: each agent's and the event's own. */
function allPurposes(e: AuditEvent): string[] {
  return [...agentsOf(e).flatMap((a) => purposeCodes(a.purposeOfUse)), ...purposeCodes(e.purposeOfEvent as CodeableConcept[] | undefined)];
}

const jtisOf = (e: AuditEvent) => agentsOf(e).flatMap((a) => (a.policy ?? []).filter((p) => p.startsWith(JTI_POLICY)).map((p) => p.slice(JTI_POLICY.length)));

const labelled = (e: AuditEvent, system: string, code: string) =>
  entitiesOf(e).some((x) => (x.securityLabel ?? []).some((l) => l.code === code && (l.system === undefined || l.system === system)));

/** Test data: a purpose of use HTEST, or an entity labelled HTEST. */
function isTestData(e: AuditEvent): boolean {
  return allPurposes(e).includes('HTEST') || labelled(e, ACT_REASON, 'HTEST');
}

const patientEntityOf = (e: AuditEvent) =>
  entitiesOf(e).find((x) => codeOf(x.role) === '1' && x.what?.reference?.startsWith('Patient/'))?.what?.reference?.slice('Patient/'.length);

/** The access token ids the break-the-glass alerts among `events` name. */
export const breakGlassJtisOf = (events: readonly AuditEvent[]) => new Set(events.filter(isBreakGlassAlert).flatMap(jtisOf));

/** A break-the-glass security alert (DICOM 110113 / 110127): the authorization server issued a BTG token. */
export function isBreakGlassAlert(e: AuditEvent): boolean {
  return codeOf(e.type) === '110113' && Array.isArray(e.subtype) && (e.subtype as Coding[]).some((s) => s.code === '110127');
}

/** A successful guarded FHIR access about a patient (with `attempts`, any outcome), not test data: what the report lists. */
export function isDisclosure(e: AuditEvent, patient?: string, attempts = false): boolean {
  if (codeOf(e.type) !== 'rest' || (e.outcome !== '0' && !attempts)) return false;
  const about = patientEntityOf(e);
  if (!about || (patient !== undefined && about !== patient)) return false;
  return !isTestData(e);
}

/** The client id of the app a disclosure went to ('' when none is recorded); null when the event is not a disclosure. */
export function disclosureApp(e: AuditEvent): string | null {
  if (!isDisclosure(e)) return null;
  return agentsOf(e).find(isAppAgent)?.who?.identifier?.value ?? '';
}

/** The AuditEvents the report lines come from (for `--format fhir`: a Bundle of the same accesses). */
export function disclosureEvents(events: readonly AuditEvent[], options: Pick<DisclosureOptions, 'patient' | 'attempts'> = {}): AuditEvent[] {
  return events.filter((e) => isDisclosure(e, options.patient, options.attempts));
}

const ACTIONS: Record<string, string> = {
  read: 'read', vread: 'read', 'search-type': 'search', 'search-system': 'search', search: 'search', 'search-compartment': 'search',
  'history-instance': 'history', 'history-type': 'history', 'history-system': 'history', history: 'history',
  create: 'create', update: 'update', patch: 'update', delete: 'delete', operation: 'operation', batch: 'transaction', transaction: 'transaction',
};
const ACTION_LETTERS: Record<string, string> = { C: 'create', R: 'read', U: 'update', D: 'delete', E: 'execute' };

function actionOf(e: AuditEvent): string {
  const sub = Array.isArray(e.subtype) ? codeOf((e.subtype as Coding[])[0]) : undefined;
  if (sub) return ACTIONS[sub] ?? sub;
  return ACTION_LETTERS[String(e.action)] ?? 'access';
}

/** "Type/id" without a version; only the resource's identity, never its content. */
function resourceRef(reference: string): string | undefined {
  const m = /^(?:.*\/)?([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]*)?$/.exec(reference);
  return m ? `${m[1]}/${m[2]}` : undefined;
}

/** The resource type a query was about, from its description ("GET https://…/r4/Observation?…"). */
function queryType(description: string | undefined): string | undefined {
  if (!description) return undefined;
  const path = description.replace(/^[A-Z]+\s+/, '').split(/[?#]/)[0];
  const last = path.split('/').filter(Boolean).pop();
  return last && /^[A-Z][A-Za-z]+$/.test(last) ? last : undefined;
}

function resourcesOf(e: AuditEvent, readable: LabelsReadable): string[] {
  const entities = entitiesOf(e);
  const data = entities.filter((x) => ['4', '3', '20'].includes(codeOf(x.role) ?? '') && x.what?.reference)
    .flatMap((x) => {
      const hidden = hiddenType(x, readable);
      return hidden ? restrictedRecord(hidden) : resourceRef(x.what!.reference!) ?? [];
    });
  if (data.length) return data;
  const type = queryType(entities.find((x) => codeOf(x.role) === '24')?.description);
  return type ? [type] : [];
}

const requestIdOf = (e: AuditEvent) =>
  entitiesOf(e).find((x) => codeOf(x.type) === 'XrequestId' && x.what?.identifier?.value)?.what?.identifier?.value;

/**
 * What makes events one request: its X-Request-Id together with who sent it (token, app, user) and when it
 * was recorded (every event of one access has the access's time). The client chooses the request id, so the
 * id alone would let one recipient's accesses merge into another's line, and the id and token alone would
 * let an app fold all its accesses under one token into one line.
 */
const requestKeyOf = (e: AuditEvent) => {
  const agents = agentsOf(e);
  const senders = [jtisOf(e), agents.filter(isAppAgent), agents.filter(isUserAgent)].flat()
    .map((x) => (typeof x === 'string' ? x : x.who?.identifier?.value ?? ''));
  return JSON.stringify([requestIdOf(e) ?? e.id, String(e.recorded), ...senders]);
};

function roleOf(agent: Agent): string {
  const roles = (agent.role ?? []).map((cc) => cc.coding?.find((c) => c.display || c.code)).flatMap((c) => (c ? [c.display || c.code!] : []));
  const texts = (agent.role ?? []).filter((cc) => !cc.coding?.length && cc.text).map((cc) => cc.text!);
  return [...new Set([...roles, ...texts])].join(', ');
}

function addressOf(agents: Agent[]): string | undefined {
  // The client's address: not the server's (a URI, type 5, or a Device).
  const client = agents.find((a) => a.network?.address && a.network.type !== '5' && !a.who?.reference?.startsWith('Device/'));
  return client?.network?.address;
}

function lineOf(e: AuditEvent, options: DisclosureOptions, breakGlassJtis: ReadonlySet<string>): DisclosureLine {
  const agents = agentsOf(e);
  const user = agents.find(isUserAgent) ?? agents.find((a) => a.requestor === true && !isAppAgent(a) && !isOrganizationAgent(a) && a.who?.identifier?.value);
  const app = agents.find(isAppAgent);
  const organization = agents.find(isOrganizationAgent);
  const userId = user?.who?.identifier?.value;
  const clientId = app?.who?.identifier?.value;

  const recipient_role = !user ? 'system'
    : userId !== undefined && options.selfUserIds?.includes(userId) ? 'patient (self)'
      : roleOf(user) || 'user';
  const purposes = [...new Set(user ? purposeCodes(user.purposeOfUse) : [])];
  const purpose = purposes.length ? purposes : [...new Set(allPurposes(e))];
  const break_glass = allPurposes(e).some((p) => BREAK_GLASS_PURPOSES.has(p)) || jtisOf(e).some((j) => breakGlassJtis.has(j));
  return {
    date: new Date(String(e.recorded)).toISOString(),
    recipient_role,
    recipient_organization: organization?.who?.display ?? organization?.name ?? '',
    app: clientId ? (options.appNames && Object.hasOwn(options.appNames, clientId) ? options.appNames[clientId] : clientId) : '',
    purpose_of_use: purpose.join(' '),
    action: actionOf(e),
    resources: [...new Set(resourcesOf(e, options.readable ?? (() => true)))].join(' '),
    break_glass,
    request_id: requestIdOf(e) ?? e.id,
    network_address: addressOf(agents) ?? '',
    outcome: e.outcome === '0' ? 'disclosed' : e.outcome === '4' ? 'refused' : 'failed',
    deidentified: labelled(e, OBSERVATION_VALUE, 'PSEUDED'),
    ...(options.names && user?.name && { recipient_name: user.name }),
  };
}

const validDate = (e: AuditEvent) => typeof e.recorded === 'string' && !Number.isNaN(Date.parse(e.recorded));

/**
 * One line per request (X-Request-Id and sender: the copies of one access, and the events of one request
 * for several resources, merge), for successful guarded accesses about the patient; test data and
 * refused or failed accesses are left out. Chronological.
 */
export function disclosureLines(events: readonly AuditEvent[], options: DisclosureOptions = {}): DisclosureLine[] {
  const breakGlassJtis = new Set([...events.filter(isBreakGlassAlert).flatMap(jtisOf), ...(options.breakGlassJtis ?? [])]);
  const byRequest = new Map<string, DisclosureLine>();
  for (const event of events) {
    if (!validDate(event) || !isDisclosure(event, options.patient, options.attempts)) continue;
    const line = lineOf(event, options, breakGlassJtis);
    const key = requestKeyOf(event);
    const seen = byRequest.get(key);
    if (!seen) {
      byRequest.set(key, line);
      continue;
    }
    const resources = [...new Set([...seen.resources.split(' '), ...line.resources.split(' ')].filter(Boolean))];
    const earlier = line.date < seen.date ? line : seen;
    byRequest.set(key, {
      ...earlier,
      resources: resources.join(' '),
      break_glass: seen.break_glass || line.break_glass,
      deidentified: seen.deidentified || line.deidentified,
      purpose_of_use: [...new Set([...seen.purpose_of_use.split(' '), ...line.purpose_of_use.split(' ')].filter(Boolean))].join(' '),
      network_address: seen.network_address || line.network_address,
    });
  }
  return [...byRequest.values()].sort((a, b) => (a.date < b.date ? -1 : a.date > b.date ? 1 : a.request_id < b.request_id ? -1 : 1));
}

/** The summary per app, ordered by app: the same counts the store makes in the database (disclosureSummary). */
export function summaryOf(lines: readonly DisclosureLine[]): DisclosureSummaryRow[] {
  const byApp = new Map<string, DisclosureSummaryRow>();
  for (const line of lines) {
    const date = new Date(line.date);
    const s = byApp.get(line.app);
    if (!s) byApp.set(line.app, { app: line.app, count: 1, first: date, last: date });
    else Object.assign(s, { count: s.count + 1, first: date < s.first ? date : s.first, last: date > s.last ? date : s.last });
  }
  return [...byApp.values()].sort((a, b) => a.app.localeCompare(b.app));
}

/**
 * Report lines from a stream of disclosures in chain order (a database cursor): the events of one
 * request come together, so each request is merged as soon as the next one starts.
 */
export async function* streamLines(events: AsyncIterable<AuditEvent>, options: DisclosureOptions = {}): AsyncIterable<DisclosureLine> {
  let group: AuditEvent[] = [];
  let groupId: string | undefined;
  for await (const event of events) {
    const id = requestKeyOf(event);
    if (group.length && id !== groupId) {
      yield* disclosureLines(group, options);
      group = [];
    }
    group.push(event);
    groupId = id;
  }
  yield* disclosureLines(group, options);
}
