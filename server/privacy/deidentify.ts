// The de-identification obligation: what the guard returns when the purpose of use carries one
// (HRESCH by default, configurable). Identifying elements are removed, dates truncated or shifted,
// ids pseudonymised under a key (stable across one response and across responses, readable by the guard only), and each
// resource labelled v3-ObservationValue#PSEUDED so that "downstream use doesn't mistake this
// Resource as representing full fidelity" (FHIR secpriv). Pure apart from node:crypto; never mutates input.
//
// Decisions (see also the comments at each rule):
// - Generic walk over every element, not a per-resource-type profile: the rules below apply wherever
//   the element occurs, so unknown or new resource types fail closed on the identifying elements.
// - PSEUDED, not ANONYED: ids and references are replaced by pseudonyms (linkable by whoever holds the
//   key, the guard), not removed; no date policy removes all dates either.
// - Removed everywhere: name, identifier (also Reference.identifier), telecom, photo, contact,
//   Address.line/text/city/district/postalCode (state and country kept), Location.position,
//   narrative (`text` objects), free text (note, comment, description, patientInstruction, conclusion,
//   diagnostics, valueString, valueMarkdown, string `text` outside a CodeableConcept such as Dosage.text),
//   Reference.display, Attachment data/url/title, signature, every `extension`, every `_element`
//   (primitive extensions, e.g. patient-birthTime on `_birthDate`), and AuditEvent's entity.query (the
//   request as sent, with whatever ids it named) and agent.altId.
// - Kept: CodeableConcept.text next to a `coding` (the human rendering of coded terminology, which the
//   research use needs; a CodeableConcept with text only is free text and is dropped) and Coding.display.
// - `modifierExtension` is kept (walked by the same rules): dropping a modifier silently changes the
//   meaning of the element, which is worse than the residual risk; plain extensions are all dropped
//   (birthPlace, mothersMaidenName, race/ethnicity text … sit there and can't be told apart by url).
// - `name` goes everywhere, also Organization.name or Group.name (conservative; note that this also
//   strips Parameters.parameter.name, so de-identify Bundles and resources, not Parameters).
// - Not done (policy left to callers): the HIPAA Safe Harbor aggregation of ages over 89, free text
//   hidden in coded elements, quasi-identifier generalisation (k-anonymity).
import { createCipheriv, createDecipheriv, createHmac, timingSafeEqual } from 'node:crypto';
import type { FhirBundle, FhirBundleEntry, FhirResource } from '../resource-server/types.ts';
import { searchParamKind } from '../fhir/search.ts';

export const OBSERVATION_VALUE = 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue';
export const PSEUDED = { system: OBSERVATION_VALUE, code: 'PSEUDED', display: 'pseudonymized' } as const;

export interface DeidPolicy {
  /** Secret for pseudonyms and date shifts (at least 16 characters; use 32+ random bytes). */
  key: string;
  dates: 'truncate-year' | 'truncate-month' | 'shift';
  /** For `shift`: each patient's dates move by the same non-zero number of days within ±shiftDays (default 180). */
  shiftDays?: number;
}

const DEFAULT_SHIFT_DAYS = 180;

function checkPolicy(policy: DeidPolicy): void {
  if (typeof policy.key !== 'string' || policy.key.length < 16) throw new Error('de-identification key must have at least 16 characters');
  if (!['truncate-year', 'truncate-month', 'shift'].includes(policy.dates)) throw new Error(`unknown date policy ${String(policy.dates)}`);
  if (policy.shiftDays !== undefined && !(Number.isInteger(policy.shiftDays) && policy.shiftDays >= 1 && policy.shiftDays <= 36_500)) {
    throw new Error('shiftDays must be an integer from 1 to 36500');
  }
}

const hmac = (key: string, data: string) => createHmac('sha256', key).update(data, 'utf8').digest();

const PSEUDONYM_TAG = 12;
/** The longest id (in UTF-8 bytes) whose pseudonym, tag included, still fits FHIR's 64 characters. */
const REVERSIBLE_ID_BYTES = 36;

/**
 * The pseudonym of an id: deterministic authenticated encryption (SIV-like: a 96-bit HMAC tag of the
 * id is the AES-256-CTR counter, then tag and ciphertext in base64url with `_` written as `.`, a valid
 * FHIR id). The same key gives the same pseudonym in every answer, and only the key's holder (the
 * guard) can turn it back into the id (realId) or make one. An id over 36 bytes gets a one-way HMAC
 * pseudonym instead, which cannot be read or searched by.
 */
export function pseudonym(key: string, id: string): string {
  const bytes = Buffer.from(id, 'utf8');
  if (bytes.length > REVERSIBLE_ID_BYTES) return hmac(key, `id|${id}`).toString('base64url').slice(0, 22).replaceAll('_', '.');
  const tag = hmac(hmac(key, 'pseudonym-mac').toString('base64url'), id).subarray(0, PSEUDONYM_TAG);
  const cipher = createCipheriv('aes-256-ctr', hmac(key, 'pseudonym-enc'), Buffer.concat([tag, Buffer.alloc(16 - PSEUDONYM_TAG)]));
  return Buffer.concat([tag, cipher.update(bytes), cipher.final()]).toString('base64url').replaceAll('_', '.');
}

/** The id a pseudonym made with this key stands for; undefined for anything else (a real id, another key's pseudonym). */
export function realId(key: string, value: string): string | undefined {
  if (!/^[A-Za-z0-9\-.]{17,64}$/.test(value)) return undefined;
  const raw = Buffer.from(value.replaceAll('.', '_'), 'base64url');
  if (raw.length <= PSEUDONYM_TAG || raw.toString('base64url').replaceAll('_', '.') !== value) return undefined;
  const tag = raw.subarray(0, PSEUDONYM_TAG);
  const decipher = createDecipheriv('aes-256-ctr', hmac(key, 'pseudonym-enc'), Buffer.concat([tag, Buffer.alloc(16 - PSEUDONYM_TAG)]));
  const id = Buffer.concat([decipher.update(raw.subarray(PSEUDONYM_TAG)), decipher.final()]).toString('utf8');
  const expected = hmac(hmac(key, 'pseudonym-mac').toString('base64url'), id).subarray(0, PSEUDONYM_TAG);
  return timingSafeEqual(tag, expected) && /^[A-Za-z0-9\-.]{1,64}$/.test(id) ? id : undefined;
}

/** A UUID-shaped pseudonym for `urn:uuid:` references and fullUrls (bundle-local ids). */
function uuidPseudonym(key: string, uuid: string): string {
  const h = hmac(key, `uuid|${uuid.toLowerCase()}`).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${((parseInt(h[16]!, 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/**
 * The date shift of one patient in days: non-zero, within ±shiftDays, derived from HMAC(key, patient id).
 * Resources tied to no patient (Practitioner, Organization, the Bundle itself) share one key-wide shift.
 */
export function dateShiftDays(policy: DeidPolicy, patientId?: string): number {
  const n = policy.shiftDays ?? DEFAULT_SHIFT_DAYS;
  const k = hmac(policy.key, `shift|${patientId === undefined ? '' : `Patient/${patientId}`}`).readUInt32BE(0) % (2 * n);
  return k < n ? -(k + 1) : k - n + 1;
}

// ---- references ----

const TYPE = '[A-Z][A-Za-z]{1,63}';
const ID = '[A-Za-z0-9\\-.]{1,64}';
/** Optional base ending in "/", Type/id, optional /_history/vid. */
const REF_RE = new RegExp(`^((?:[^?#]*/)?)(${TYPE})/(${ID})(/_history/${ID})?$`);
const UUID_RE = /^urn:uuid:([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$/;

function parseRef(ref: string): { type: string; id: string } | undefined {
  const m = REF_RE.exec(ref);
  return m ? { type: m[2]!, id: m[3]! } : undefined;
}

/**
 * A reference with its id replaced by the pseudonym: relative or absolute, with or without
 * `_history` (the version is kept). `#local` references to contained resources stay as they are.
 * Anything else (conditional references like "Patient?identifier=…", unparseable strings) gives undefined:
 * the caller drops it, as it may carry an identifier.
 */
function rewriteRef(key: string, ref: string): string | undefined {
  if (ref.startsWith('#')) return ref;
  const uuid = UUID_RE.exec(ref);
  if (uuid) return `urn:uuid:${uuidPseudonym(key, uuid[1]!)}`;
  const m = REF_RE.exec(ref);
  if (!m) return undefined;
  return `${m[1]}${m[2]}/${pseudonym(key, m[3]!)}${m[4] ?? ''}`;
}

/** The patient a resource is about: itself, its subject/patient/beneficiary, else the first Patient reference in it. */
function patientOf(resource: FhirResource): string | undefined {
  if (resource.resourceType === 'Patient') return resource.id;
  for (const k of ['subject', 'patient', 'beneficiary']) {
    const ref = (resource[k] as { reference?: unknown } | undefined)?.reference;
    const p = typeof ref === 'string' ? parseRef(ref) : undefined;
    if (p?.type === 'Patient') return p.id;
  }
  let found: string | undefined;
  const scan = (v: unknown): void => {
    if (found !== undefined || v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) return v.forEach(scan);
    for (const [k, x] of Object.entries(v)) {
      if (k === 'reference' && typeof x === 'string') {
        const p = parseRef(x);
        if (p?.type === 'Patient') found ??= p.id;
      } else scan(x);
    }
  };
  scan(resource);
  return found;
}

// ---- dates ----

const DATE_RE = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)?)?$/;
/** Elements whose value is a date, dateTime or instant: a bare year ("2005") counts as a date only here. */
const DATE_KEY_RE = /(?:Date|DateTime|Instant)$|^(?:date|start|end|issued|recorded|authoredOn|lastUpdated|timestamp|created|sent|received|lastModified|event|occurrence|whenHandedOver|whenPrepared|dateAsserted)$/;
/** Elements of type instant, which must stay full-precision instants when truncated. */
const INSTANT_KEY_RE = /Instant$|^(?:lastUpdated|issued|timestamp|recorded|lastModified)$/;
/** Strings that may look like dates but are not (codes, versions, ids, urls). */
const NOT_DATE_KEYS = new Set(['code', 'system', 'version', 'id', 'versionId', 'url', 'reference', 'profile', 'fullUrl']);

interface Ctx { policy: DeidPolicy; shift: number }

const pad = (n: number, w = 2) => String(n).padStart(w, '0');

function transformDate(ctx: Ctx, key: string, value: string): string | undefined {
  if (NOT_DATE_KEYS.has(key)) return undefined;
  const m = DATE_RE.exec(value);
  if (!m) return undefined;
  if (m[2] === undefined && !DATE_KEY_RE.test(key)) return undefined;
  const [, y, mo, d, time] = m;
  switch (ctx.policy.dates) {
    case 'truncate-year':
    case 'truncate-month': {
      const keep = ctx.policy.dates === 'truncate-year' || mo === undefined ? y! : `${y}-${mo}`;
      // An instant must keep full precision to stay valid FHIR: the first instant of the kept period.
      if (time && INSTANT_KEY_RE.test(key)) return `${keep}${keep.length === 4 ? '-01' : ''}-01T00:00:00Z`;
      return keep;
    }
    case 'shift': {
      // The precision is kept: a year moves by the shift applied to its middle, a month by the
      // shift applied to its 15th; a date (and the date part of a dateTime) moves exactly, its
      // time of day and offset unchanged.
      const base = Date.UTC(Number(y), mo === undefined ? 6 : Number(mo) - 1, d === undefined ? (mo === undefined ? 2 : 15) : Number(d));
      const t = new Date(base + ctx.shift * 86_400_000);
      const year = pad(t.getUTCFullYear(), 4);
      if (mo === undefined) return year;
      if (d === undefined) return `${year}-${pad(t.getUTCMonth() + 1)}`;
      return `${year}-${pad(t.getUTCMonth() + 1)}-${pad(t.getUTCDate())}${time ?? ''}`;
    }
  }
}

// ---- the walk ----

/** Identifying or free-text elements removed wherever they occur. */
const DROP = new Set([
  'name', 'identifier', 'telecom', 'photo', 'contact', 'position', 'signature', 'extension',
  'note', 'comment', 'description', 'patientInstruction', 'conclusion', 'diagnostics', 'valueString', 'valueMarkdown',
  // AuditEvent: the request as sent (real ids of other clients' requests), a user's alternative id.
  'query', 'altId',
]);
const ADDRESS_DROP = ['line', 'text', 'city', 'district', 'postalCode'];

/** Address (one or a list) without line, text, city, district and postal code; empty ones removed. */
function withoutAddressDetails(value: unknown): unknown {
  const strip = (a: unknown) => {
    if (!isObject(a)) return a;
    const kept = Object.fromEntries(Object.entries(a).filter(([f]) => !ADDRESS_DROP.includes(f)));
    return Object.keys(kept).length ? kept : undefined;
  };
  if (!Array.isArray(value)) return strip(value);
  const kept = value.map(strip).filter((a) => a !== undefined);
  return kept.length ? kept : undefined;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const isAttachment = (o: Record<string, unknown>) => 'contentType' in o || typeof o.data === 'string' || 'hash' in o || 'size' in o;

function dropped(k: string, v: unknown, parent: Record<string, unknown>): boolean {
  if (DROP.has(k) || k.startsWith('_')) return true;
  // Narrative (an object) always; a string `text` only outside a CodeableConcept (Dosage.text, Annotation.text …).
  if (k === 'text') return isObject(v) || !Array.isArray(parent.coding);
  // Reference.display (names people and places); Coding.display (terminology) stays.
  if (k === 'display') return !('code' in parent) && !('system' in parent);
  if ((k === 'data' || k === 'url' || k === 'title') && isAttachment(parent)) return true;
  return false;
}

/** A copy with the rules applied; an element left empty (`{}` or `[]`) is removed whole, which keeps it valid FHIR. */
function walk(ctx: Ctx, v: unknown, key: string): unknown {
  if (Array.isArray(v)) {
    const kept = v.map((x) => walk(ctx, x, key)).filter((x) => x !== undefined);
    return kept.length ? kept : undefined;
  }
  if (isObject(v)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      if (dropped(k, x, v)) continue;
      // A resource inline (a Parameters' resource parts) is one of its own, not a contained one: its id and dates are its own.
      if (k === 'resource' && isObject(x) && typeof x.resourceType === 'string') {
        out[k] = deidentifyResource(x as FhirResource, ctx.policy);
        continue;
      }
      if (k === 'reference' && typeof x === 'string') {
        const r = rewriteRef(ctx.policy.key, x);
        if (r !== undefined) out[k] = r;
        continue;
      }
      const w = walk(ctx, x, k);
      if (w === undefined) continue;
      out[k] = k === 'address' ? withoutAddressDetails(w) : w;
      if (out[k] === undefined) delete out[k];
    }
    return Object.keys(out).length ? out : undefined;
  }
  if (typeof v === 'string') return transformDate(ctx, key, v) ?? v;
  return v;
}

function addPseuded(meta: FhirResource['meta'] | undefined): NonNullable<FhirResource['meta']> {
  const security = [...(meta?.security ?? [])];
  if (!security.some((c) => c.system === OBSERVATION_VALUE && c.code === 'PSEUDED')) security.push({ ...PSEUDED });
  return { ...meta, security };
}

/**
 * A de-identified copy of one resource: identifying elements removed, dates transformed with the
 * resource's patient's shift, id and references pseudonymised, PSEUDED added to meta.security
 * (nothing else removed from it). A Bundle is handled by deidentifyBundle.
 */
export function deidentifyResource(resource: FhirResource, policy: DeidPolicy): FhirResource {
  checkPolicy(policy);
  if (resource.resourceType === 'Bundle') return deidentifyBundle(resource as FhirBundle, policy);
  return deidentify(resource, policy);
}

function deidentify(resource: FhirResource, policy: DeidPolicy): FhirResource {
  const ctx: Ctx = { policy, shift: policy.dates === 'shift' ? dateShiftDays(policy, patientOf(resource)) : 0 };
  const out = walk(ctx, resource, '') as FhirResource;
  // The resource's own id; ids of contained resources are local ("#x") and stay.
  if (typeof resource.id === 'string') out.id = pseudonym(policy.key, resource.id);
  out.meta = addPseuded(out.meta);
  return out;
}

/**
 * A de-identified copy of a Bundle: each entry's resource (labelled PSEUDED; the Bundle's own
 * meta.security, its high-water mark, is left to the guard), fullUrl, request.url and
 * response.location rewritten with the same pseudonyms as the references, so an entry and the
 * references to it stay consistent. Bundle.link is dropped: its URLs carry real ids (the guard gives its
 * own paging links, sealed, see page-links.ts).
 * Bundle.identifier and Bundle.signature go with the other identifying elements; Bundle.id (the
 * response's own id) stays; Bundle.timestamp and meta.lastUpdated follow the date policy (shift: the
 * key-wide shift of resources tied to no patient).
 */
export function deidentifyBundle(bundle: FhirBundle, policy: DeidPolicy): FhirBundle {
  checkPolicy(policy);
  const noPatient: Ctx = { policy, shift: policy.dates === 'shift' ? dateShiftDays(policy) : 0 };
  const { entry, link: _link, identifier: _identifier, signature: _signature, ...rest } = bundle;
  const out = walk(noPatient, rest, '') as FhirBundle;
  if (entry) out.entry = entry.map((e) => deidentifyEntry(e, policy));
  return out;
}

// ---- searches ----

/** Search parameters on direct identifiers: a de-identified answer to them would tie the pseudonym to the person. */
const DIRECT_IDENTIFIER_PARAMS = new Set(['name', 'given', 'family', 'phonetic', 'identifier', 'telecom', 'phone', 'email', 'address', '_text', '_content']);

/**
 * Whether a search parameter names a person directly: name, identifier, contact, address, free text.
 * Dates, the birth date among them, follow the rule of date-search.ts.
 */
export function identifiesPerson(name: string): boolean {
  const base = name.split(':')[0]!;
  return DIRECT_IDENTIFIER_PARAMS.has(base) || base.startsWith('address-');
}

/** Parameters whose values are resource ids: they carry pseudonyms in requests. */
export const carriesIds = (name: string): boolean => {
  const base = name.split(':')[0]!;
  return base === '_id' || searchParamKind(base) === 'reference';
};

/** One value of such a parameter, its ids mapped (`Type/id`, absolute, or a bare id); undefined when one does not map. */
export function mapIdValue(value: string, map: (id: string) => string | undefined): string | undefined {
  const parts = value.split(',').map((part) => {
    const m = REF_RE.exec(part);
    if (m) {
      const id = map(m[3]!);
      return id === undefined ? undefined : `${m[1]}${m[2]}/${id}${m[4] ?? ''}`;
    }
    return /^[A-Za-z0-9\-.]{1,64}$/.test(part) ? map(part) : undefined;
  });
  return parts.every((p) => p !== undefined) ? parts.join(',') : undefined;
}

function deidentifyEntry(entry: FhirBundleEntry, policy: DeidPolicy): FhirBundleEntry {
  const out: FhirBundleEntry = {};
  const key = policy.key;
  if (entry.fullUrl !== undefined) {
    const u = rewriteRef(key, entry.fullUrl);
    if (u !== undefined && !u.startsWith('#')) out.fullUrl = u;
  }
  if (entry.resource) out.resource = deidentifyResource(entry.resource, policy);
  if (entry.search) out.search = { ...entry.search };
  if (entry.request) {
    // "Type/id[/_history/v]" is rewritten; "Type", "" or "$op" keep their path without the query
    // (conditional and search queries name identifiers); anything else drops the request.
    // ifNoneExist (a search query) and the conditional headers are dropped, ifMatch (an ETag) kept.
    const path = entry.request.url.split('?')[0]!;
    const url = parseRef(path) ? rewriteRef(key, path) : /^(?:[A-Z][A-Za-z]*)?(?:\/?\$[A-Za-z-]+)?$/.test(path) ? path : undefined;
    if (url !== undefined) out.request = { method: entry.request.method, url, ...(entry.request.ifMatch !== undefined && { ifMatch: entry.request.ifMatch }) };
  }
  if (entry.response) {
    const r = entry.response;
    const ctx: Ctx = { policy, shift: policy.dates === 'shift' ? dateShiftDays(policy, entry.resource && patientOf(entry.resource)) : 0 };
    const location = r.location === undefined ? undefined : rewriteRef(key, r.location.split('?')[0]!);
    const lastModified = r.lastModified === undefined ? undefined : transformDate(ctx, 'lastModified', r.lastModified);
    out.response = {
      status: r.status,
      ...(location !== undefined && { location }),
      ...(r.etag !== undefined && { etag: r.etag }),
      ...(lastModified !== undefined && { lastModified }),
      ...(r.outcome && { outcome: deidentifyResource(r.outcome, policy) }),
    };
  }
  return out;
}
