// FHIR R4 Consent enforcement (the IHE PCF model): which privacy consents of a
// patient apply now, and whether one of them permits or denies a request for one resource. Pure, except
// createConsentCache, which memoizes consent lookups per patient.
//
// Policy choices (product decisions, documented here because PCF leaves them open or suggests otherwise):
// - Several applicable consents: the MOST RECENT one (by Consent.dateTime) decides alone, whatever it says.
//   PCF suggests deny-overrides; the product decided that a patient's newest instruction replaces the older
//   ones, so an older consent never fills a gap the newest leaves open (that gap is 'no-consent': the
//   organization's default policy applies). A consent counts as given at its dateTime, but never later than
//   its meta.lastUpdated (set by the FHIR server when it was stored): whoever writes a Consent chooses its
//   dateTime, and one dated in the future would outrank every consent recorded after it. Ties fall to
//   meta.lastUpdated, then to the later position in the input list. A consent without dateTime counts as the oldest.
// - Within a consent the most specific matching provision wins: a matching nested exception decides;
//   otherwise the root decides if it matches; otherwise the consent does not cover the request.
//   When several nested exceptions match, deny overrides permit (they are equally specific).
// - Nested provisions are evaluated one level deep only (PCF); deeper provisions are ignored.
import { ACT_REASON, CONFIDENTIALITY, confidentialityRank, isConfidentiality, purposeIsA, type ConfidentialityCode } from '../hcs/codes.ts';
import { sensitivityClosure, type LabelVocabulary } from '../hcs/label-vocabulary.ts';
import type { FhirResource } from '../resource-server/types.ts';

export const CONSENT_SCOPE = 'http://terminology.hl7.org/CodeSystem/consentscope';
const ACT_REASON_OID = 'urn:oid:2.16.840.1.113883.5.8';
const CONFIDENTIALITY_OID = 'urn:oid:2.16.840.1.113883.5.25';

interface Reference {
  reference?: string;
}
interface Period {
  start?: string;
  end?: string;
}
interface LabelCoding {
  system?: string;
  code?: string;
}

export interface ConsentProvision {
  type?: 'deny' | 'permit' | string;
  period?: Period;
  actor?: { role?: unknown; reference?: Reference }[];
  purpose?: LabelCoding[];
  securityLabel?: LabelCoding[];
  dataPeriod?: Period;
  data?: { meaning?: 'instance' | 'related' | 'dependents' | 'authoredby' | string; reference?: Reference }[];
  provision?: ConsentProvision[];
  [element: string]: unknown;
}

export interface Consent extends FhirResource {
  resourceType: 'Consent';
  status?: string;
  scope?: { coding?: LabelCoding[] };
  patient?: Reference;
  dateTime?: string;
  provision?: ConsentProvision;
}

export interface ConsentRequest {
  /** References of who asks: "Practitioner/dr-smith", "Organization/example-hospital", "Group/…" when known. */
  actors: readonly string[];
  /** The v3-ActReason purpose-of-use code of the token. */
  purpose?: string;
  /** The data asked for. */
  resource: FhirResource;
  now: Date;
}

export interface ConsentOptions {
  /** The confidentiality of unlabelled data (default N, reference §3). */
  defaultConfidentiality?: ConfidentialityCode;
  /** When given, only consents about this patient count (otherwise the caller passes one patient's consents). */
  patientId?: string;
  /** What each sensitivity code subsumes (default: the bundled policy's vocabulary). */
  vocabulary?: LabelVocabulary;
}

export type ConsentDecision = { decision: 'permit' | 'deny' | 'no-consent'; consentId?: string };

// ---------------------------------------------------------------------------------------------- dates

/**
 * The instants a FHIR date/dateTime/instant covers, as [earliest, latest] epoch ms: "2004" covers the
 * whole year, "2004-12-31" the whole day (UTC when no offset is given), a dateTime with time one instant.
 */
function instantRange(value: unknown): [number, number] | undefined {
  if (typeof value !== 'string') return undefined;
  const partial = /^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$/.exec(value);
  if (partial) {
    const year = Number(partial[1]);
    const month = partial[2] ? Number(partial[2]) - 1 : undefined;
    const day = partial[3] ? Number(partial[3]) : undefined;
    const start = Date.UTC(year, month ?? 0, day ?? 1);
    const end =
      month === undefined ? Date.UTC(year + 1, 0, 1) : day === undefined ? Date.UTC(year, month + 1, 1) : Date.UTC(year, month, day + 1);
    return Number.isNaN(start) ? undefined : [start, end - 1];
  }
  if (!/^\d{4}-\d{2}-\d{2}T/.test(value)) return undefined;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : [at, at];
}

/** Whether an instant lies within a Period (bounds inclusive at their precision; a missing bound is open). */
function inPeriod(at: number, period: Period | undefined): boolean {
  if (!period || typeof period !== 'object') return true;
  if (period.start !== undefined) {
    const start = instantRange(period.start);
    if (!start || at < start[0]) return false;
  }
  if (period.end !== undefined) {
    const end = instantRange(period.end);
    if (!end || at > end[1]) return false;
  }
  return true;
}

/** The clinical date of the data (the first of the usual date elements present), as its earliest instant. */
export function clinicalDate(resource: FhirResource): number | undefined {
  const periodStart = (v: unknown) => (v && typeof v === 'object' ? (v as Period).start : undefined);
  const candidates = [
    resource.effectiveDateTime,
    periodStart(resource.effectivePeriod),
    resource.effectiveInstant,
    resource.recordedDate,
    resource.onsetDateTime,
    periodStart(resource.onsetPeriod),
    resource.authoredOn,
    resource.occurrenceDateTime,
    periodStart(resource.occurrencePeriod),
    periodStart(resource.period),
  ];
  for (const candidate of candidates) {
    const range = instantRange(candidate);
    if (range) return range[0];
  }
  return undefined;
}

// --------------------------------------------------------------------------------------- references

/** "Type/id" of a relative or absolute reference (history suffix dropped); undefined for anything else. */
function relativeReference(ref: unknown): string | undefined {
  if (typeof ref !== 'string' || ref === '') return undefined;
  const segments = ref.split('?')[0].split('/').filter(Boolean);
  const history = segments.lastIndexOf('_history');
  const trimmed = history >= 2 ? segments.slice(0, history) : segments;
  if (trimmed.length < 2) return undefined;
  return `${trimmed[trimmed.length - 2]}/${trimmed[trimmed.length - 1]}`;
}

/** Whether any `reference` string anywhere inside the value points to the target ("Type/id"). */
function refersTo(value: unknown, target: string, depth = 0): boolean {
  if (depth > 64 || value === null || typeof value !== 'object') return false;
  if (Array.isArray(value)) return value.some((v) => refersTo(v, target, depth + 1));
  for (const [key, v] of Object.entries(value)) {
    if (key === 'reference' && typeof v === 'string' && relativeReference(v) === target) return true;
    if (typeof v === 'object' && refersTo(v, target, depth + 1)) return true;
  }
  return false;
}

// ------------------------------------------------------------------------------------- applicability

const asArray = <T>(value: T[] | undefined): T[] => (Array.isArray(value) ? value : []);

function isPatientPrivacy(consent: Consent): boolean {
  return asArray(consent.scope?.coding).some((c) => c?.code === 'patient-privacy' && (c.system === undefined || c.system === CONSENT_SCOPE));
}

/** Active patient-privacy Consents whose root period covers now, optionally about one patient only. */
function inForce(consents: readonly FhirResource[], patientId: string | undefined, now: Date): Consent[] {
  return consents.filter((r): r is Consent => {
    if (r?.resourceType !== 'Consent') return false;
    const consent = r as Consent;
    if (consent.status !== 'active' || !isPatientPrivacy(consent)) return false;
    if (patientId !== undefined && relativeReference(consent.patient?.reference) !== `Patient/${patientId}`) return false;
    return inPeriod(now.getTime(), consent.provision?.period);
  });
}

const updatedTime = (c: Consent) => instantRange(c.meta?.lastUpdated)?.[0] ?? Number.NEGATIVE_INFINITY;
/** When the consent was given: its dateTime, no later than when it was stored (see the policy choices above). */
const consentTime = (c: Consent) => {
  const given = instantRange(c.dateTime)?.[0] ?? Number.NEGATIVE_INFINITY;
  const stored = instantRange(c.meta?.lastUpdated)?.[0];
  return stored === undefined ? given : Math.min(given, stored);
};

/** Newest first (when given, then meta.lastUpdated, then the later position in the input). */
function newestFirst(consents: Consent[]): Consent[] {
  return consents
    .map((consent, index) => ({ consent, index }))
    .sort((a, b) => consentTime(b.consent) - consentTime(a.consent) || updatedTime(b.consent) - updatedTime(a.consent) || b.index - a.index)
    .map((e) => e.consent);
}

/**
 * The consents that apply to a patient now: status active, scope patient-privacy, about `Patient/<id>`
 * and a root provision period covering now (absent = always). Newest first: the first one decides.
 */
export function applicableConsents(consents: FhirResource[], patientId: string, now: Date): Consent[] {
  return newestFirst(inForce(consents, patientId, now));
}

// ------------------------------------------------------------------------------------------ matching

function isPurposeSystem(system: string | undefined): boolean {
  return system === undefined || system === ACT_REASON || system === ACT_REASON_OID;
}

function isConfidentialityLabel(label: LabelCoding): label is { system?: string; code: ConfidentialityCode } {
  return (
    typeof label.code === 'string' &&
    isConfidentiality(label.code) &&
    (label.system === undefined || label.system === CONFIDENTIALITY || label.system === CONFIDENTIALITY_OID)
  );
}

/** The data's confidentiality: the highest confidentiality label, or the default when it has none. */
function dataConfidentiality(resource: FhirResource, fallback: ConfidentialityCode): number {
  const ranks = asArray(resource.meta?.security)
    .filter(isConfidentialityLabel)
    .map((l) => confidentialityRank(l.code));
  return ranks.length ? Math.max(...ranks) : confidentialityRank(fallback);
}

function labelMatches(label: LabelCoding, resource: FhirResource, fallback: ConfidentialityCode, vocabulary?: LabelVocabulary): boolean {
  if (!label || typeof label.code !== 'string') return false;
  // Confidentiality is a ceiling: "R" covers everything labelled R or lower (high-water mark).
  if (isConfidentialityLabel(label)) return dataConfidentiality(resource, fallback) <= confidentialityRank(label.code);
  // Other labels (sensitivity, compartment …): the data carries the code or one it subsumes.
  const covered = sensitivityClosure(label.code, vocabulary);
  return asArray(resource.meta?.security).some(
    (l) =>
      typeof l?.code === 'string' &&
      covered.has(l.code) &&
      !isConfidentialityLabel(l) &&
      (label.system === undefined || l.system === undefined || l.system === label.system),
  );
}

function dataMatches(entry: NonNullable<ConsentProvision['data']>[number], resource: FhirResource): boolean {
  const target = relativeReference(entry?.reference?.reference);
  if (!target) return false;
  const self = resource.id !== undefined ? `${resource.resourceType}/${resource.id}` : undefined;
  switch (entry.meaning) {
    case 'instance':
      return self === target;
    case 'related':
    case 'dependents':
    case 'authoredby':
      // Simplification: the resource itself, or any resource that refers to the data reference somewhere.
      return self === target || refersTo(resource, target);
    default:
      return false;
  }
}

/** Whether a provision matches the request: every element present matches (AND), repeats within one OR. */
export function provisionMatches(provision: ConsentProvision, request: ConsentRequest, options: ConsentOptions = {}): boolean {
  if (!provision || typeof provision !== 'object') return false;
  const fallback = options.defaultConfidentiality ?? 'N';
  const { resource } = request;

  if (provision.period !== undefined && !inPeriod(request.now.getTime(), provision.period)) return false;

  if (provision.actor !== undefined) {
    const actors = new Set(request.actors.map(relativeReference).filter((a): a is string => a !== undefined));
    if (!asArray(provision.actor).some((a) => actors.has(relativeReference(a?.reference?.reference) ?? '\0'))) return false;
  }

  if (provision.purpose !== undefined) {
    const purpose = request.purpose;
    if (!purpose) return false;
    if (!asArray(provision.purpose).some((p) => typeof p?.code === 'string' && isPurposeSystem(p.system) && purposeIsA(purpose, p.code!)))
      return false;
  }

  if (provision.securityLabel !== undefined) {
    if (!asArray(provision.securityLabel).some((l) => labelMatches(l, resource, fallback, options.vocabulary))) return false;
  }

  if (provision.dataPeriod !== undefined) {
    const at = clinicalDate(resource);
    if (at === undefined || !inPeriod(at, provision.dataPeriod)) return false;
  }

  if (provision.data !== undefined) {
    if (!asArray(provision.data).some((d) => dataMatches(d, resource))) return false;
  }

  return true;
}

/** A provision's effect: type missing or permit ⇒ permit; deny, or any unknown value, ⇒ deny (fail closed). */
const effect = (provision: ConsentProvision): 'permit' | 'deny' =>
  provision.type === undefined || provision.type === 'permit' ? 'permit' : 'deny';

/** One consent's answer: the most specific matching provision, or 'no-consent' when the root does not cover the request. */
function evaluate(consent: Consent, request: ConsentRequest, options: ConsentOptions): 'permit' | 'deny' | 'no-consent' {
  const root = consent.provision;
  // No provision at all: the consent grants nothing specific and restricts nothing (root type missing ⇒ permit).
  if (!root || typeof root !== 'object') return 'permit';
  const exceptions = asArray(root.provision).filter((p) => provisionMatches(p, request, options));
  if (exceptions.length) return exceptions.some((p) => effect(p) === 'deny') ? 'deny' : 'permit';
  if (provisionMatches(root, request, options)) return effect(root);
  return 'no-consent';
}

/**
 * The consent decision for one request on one resource. Only active patient-privacy consents in force now
 * count (and only those about options.patientId when given); the most recent decides (see the header).
 */
export function consentDecision(consents: readonly FhirResource[], request: ConsentRequest, options: ConsentOptions = {}): ConsentDecision {
  const [newest] = newestFirst(inForce(consents, options.patientId, request.now));
  if (!newest) return { decision: 'no-consent' };
  const decision = evaluate(newest, request, options);
  return newest.id !== undefined ? { decision, consentId: newest.id } : { decision };
}

// ---------------------------------------------------------------------------------------------- cache

export interface ConsentCache {
  forPatient(patientId: string): Promise<FhirResource[]>;
  /** Drops one patient's entry, or every entry. The guard calls it on Consent writes. */
  invalidate(patientId?: string): void;
}

/**
 * Caches consent lookups per patient for ttlMs (default 60 s). Concurrent lookups share one load; a failed
 * load is not cached; a load that was in flight when invalidated is not kept for later callers.
 */
export function createConsentCache(
  load: (patientId: string) => Promise<FhirResource[]>,
  options: { ttlMs?: number; maxEntries?: number; clock?: () => number } = {},
): ConsentCache {
  const ttl = options.ttlMs ?? 60_000;
  const maxEntries = options.maxEntries ?? 10_000;
  const clock = options.clock ?? Date.now;
  const entries = new Map<string, { at: number; value: Promise<FhirResource[]> }>();

  return {
    forPatient(patientId) {
      const hit = entries.get(patientId);
      if (hit && clock() - hit.at < ttl) return hit.value;
      entries.delete(patientId);
      const value = Promise.resolve().then(() => load(patientId));
      const entry = { at: clock(), value };
      entries.set(patientId, entry);
      value.catch(() => {
        if (entries.get(patientId) === entry) entries.delete(patientId);
      });
      while (entries.size > maxEntries) entries.delete(entries.keys().next().value!);
      return value;
    },
    invalidate(patientId) {
      if (patientId === undefined) entries.clear();
      else entries.delete(patientId);
    },
  };
}
