// FHIR search evaluation for the demo store: a small table of parameter ⇒
// element paths and one generic matcher per parameter kind (token, reference,
// date, string). Pure; works on any resource type.
//
// Semantics:
//  - different parameters (and repeated occurrences of one) are ANDed; the
//    comma-separated values of one occurrence are ORed (`\,` escapes a comma);
//  - a known parameter whose element the resource lacks matches nothing (so a
//    restriction such as `patient=` never widens a result);
//  - unknown parameters are ignored (FHIR lenient handling), and so are the
//    result-control parameters in CONTROL_PARAMS: matching never looks at
//    them. `_count`, `_getpagesoffset`, `_include` and `_revinclude` are read
//    by parseResultControls (paging and includes, applied by the store's
//    searchPage); `_sort`, `_elements`, `_summary`, `_total` are not
//    implemented and stay ignored;
//  - modifiers (`code:text`) and chains (`patient.name`) on known parameters
//    are not supported and raise SearchParameterError rather than being
//    silently dropped, which would widen the result.

import { SELF, compartmentParamPaths, parseReference, valuesAt, type ReferenceTarget } from './compartment.ts';
import type { FhirResource } from './types.ts';

export type SearchParamKind = 'token' | 'reference' | 'date' | 'string';

export type SearchInput = URLSearchParams | string | Iterable<readonly [string, string]>;

interface ParamDef {
  kind: SearchParamKind;
  /** Dotted element paths (relative to the resource); per-type when a function (undefined ⇒ not defined for the type). */
  paths: readonly string[] | ((type: string) => readonly string[] | undefined);
  /** Reference parameters: the target type of a bare id, and the only type accepted. */
  target?: string;
}

/** Raised for a search the store cannot evaluate faithfully (maps to HTTP 400). */
export class SearchParameterError extends Error {
  readonly code: 'not-supported' | 'invalid';
  constructor(code: 'not-supported' | 'invalid', message: string) {
    super(message);
    this.name = 'SearchParameterError';
    this.code = code;
  }
}

/** Never criteria: result shaping (paging and includes: see parseResultControls; the rest is not implemented). */
export const CONTROL_PARAMS: ReadonlySet<string> = new Set([
  '_count', '_getpagesoffset', '_format', '_sort', '_elements', '_include', '_revinclude', '_summary', '_total',
]);

const DATE_PATHS: Readonly<Record<string, readonly string[]>> = {
  Observation: ['effectiveDateTime', 'effectivePeriod.start', 'effectiveInstant'],
  Encounter: ['period.start'],
  Condition: ['recordedDate', 'onsetDateTime'],
  MedicationRequest: ['authoredOn'],
  Immunization: ['occurrenceDateTime'],
  AllergyIntolerance: ['recordedDate'],
  Procedure: ['performedDateTime', 'performedPeriod.start'],
  DiagnosticReport: ['effectiveDateTime', 'effectivePeriod.start'],
};

/** `performer` where the reference sits in a backbone element. */
const PERFORMER_PATHS: Readonly<Record<string, readonly string[]>> = {
  Immunization: ['performer.actor'],
  Procedure: ['performer.actor'],
  MedicationAdministration: ['performer.actor'],
};

const MEDICATION_TYPES: ReadonlySet<string> = new Set(['MedicationRequest', 'MedicationStatement', 'MedicationAdministration', 'MedicationDispense']);

/** A parameter defined on one type only. */
const onType = (only: string, paths: readonly string[]) => (type: string) => (type === only ? paths : undefined);

const SEARCH_PARAMS: Readonly<Record<string, ParamDef>> = {
  _id: { kind: 'token', paths: ['id'] },
  // The compartment paths of the type's `patient` parameter (else `subject`);
  // a Patient is its own patient.
  patient: {
    kind: 'reference',
    target: 'Patient',
    paths: (type) => type === 'Patient'
      ? [SELF]
      : compartmentParamPaths(type, 'patient') ?? compartmentParamPaths(type, 'subject'),
  },
  subject: {
    kind: 'reference',
    paths: (type) => compartmentParamPaths(type, 'subject') ?? compartmentParamPaths(type, 'patient'),
  },
  encounter: { kind: 'reference', target: 'Encounter', paths: ['encounter'] },
  category: { kind: 'token', paths: ['category'] },
  code: { kind: 'token', paths: ['code', 'medicationCodeableConcept'] },
  'vaccine-code': { kind: 'token', paths: ['vaccineCode'] },
  status: { kind: 'token', paths: ['status'] },
  'clinical-status': { kind: 'token', paths: ['clinicalStatus'] },
  identifier: { kind: 'token', paths: ['identifier'] },
  gender: { kind: 'token', paths: ['gender'] },
  date: { kind: 'date', paths: (type) => ownValue(DATE_PATHS, type) },
  birthdate: { kind: 'date', paths: (type) => (type === 'Patient' ? ['birthDate'] : undefined) },
  'death-date': { kind: 'date', paths: onType('Patient', ['deceasedDateTime']) },
  'onset-date': { kind: 'date', paths: onType('Condition', ['onsetDateTime', 'onsetPeriod.start']) },
  'recorded-date': { kind: 'date', paths: onType('Condition', ['recordedDate']) },
  _lastUpdated: { kind: 'date', paths: ['meta.lastUpdated'] },
  name: { kind: 'string', paths: ['name.family', 'name.given', 'name.text', 'name.prefix', 'name.suffix'] },
  family: { kind: 'string', paths: ['name.family'] },
  given: { kind: 'string', paths: ['name.given'] },
  // More reference parameters: what `_include` / `_revinclude` can follow.
  performer: { kind: 'reference', paths: (type) => ownValue(PERFORMER_PATHS, type) ?? ['performer'] },
  requester: { kind: 'reference', paths: ['requester'] },
  asserter: { kind: 'reference', paths: ['asserter'] },
  recorder: { kind: 'reference', paths: ['recorder'] },
  participant: { kind: 'reference', paths: onType('Encounter', ['participant.individual']) },
  'service-provider': { kind: 'reference', target: 'Organization', paths: onType('Encounter', ['serviceProvider']) },
  'general-practitioner': { kind: 'reference', paths: onType('Patient', ['generalPractitioner']) },
  organization: { kind: 'reference', target: 'Organization', paths: onType('Patient', ['managingOrganization']) },
  medication: { kind: 'reference', target: 'Medication', paths: (type) => (MEDICATION_TYPES.has(type) ? ['medicationReference'] : undefined) },
  target: { kind: 'reference', paths: onType('Provenance', ['target']) },
  agent: { kind: 'reference', paths: onType('Provenance', ['agent.who']) },
};

/** Names of the search parameters the store understands. */
export const SEARCH_PARAM_NAMES: readonly string[] = Object.keys(SEARCH_PARAMS);

export function searchParamKind(name: string): SearchParamKind | undefined {
  return ownValue(SEARCH_PARAMS, name)?.kind;
}

/** Element paths parameter `name` reads on `type`; undefined when unknown or not defined for the type. */
export function searchParamPaths(type: string, name: string): readonly string[] | undefined {
  const def = ownValue(SEARCH_PARAMS, name);
  if (!def) return undefined;
  return typeof def.paths === 'function' ? def.paths(type) : def.paths;
}

export interface SearchCriterion {
  name: string;
  def: ParamDef;
  values: string[];
}

/** Validates and normalises a query into criteria (throws SearchParameterError). */
export function parseSearch(params: SearchInput): SearchCriterion[] {
  const pairs: Iterable<readonly [string, string]> = typeof params === 'string' ? new URLSearchParams(params) : params;
  const criteria: SearchCriterion[] = [];
  for (const [rawName, rawValue] of pairs) {
    if (CONTROL_PARAMS.has(rawName)) continue;
    const base = rawName.split(/[:.]/, 1)[0];
    const def = ownValue(SEARCH_PARAMS, base);
    if (!def) continue; // unknown parameter: ignored (lenient handling)
    if (base !== rawName) {
      throw new SearchParameterError('not-supported', `Search modifier or chain not supported: ${rawName}`);
    }
    const values = splitEscaped(rawValue, ',').filter((v) => v !== '');
    if (values.length === 0) continue; // empty parameter: ignored
    if (def.kind === 'date') for (const v of values) parseDateValue(v);
    criteria.push({ name: base, def, values });
  }
  return criteria;
}

/** True when `resource` satisfies every parameter of the query. */
export function matchesSearch(resource: FhirResource, params: SearchInput): boolean {
  return matchesCriteria(resource, parseSearch(params));
}

export function matchesCriteria(resource: FhirResource, criteria: readonly SearchCriterion[]): boolean {
  return criteria.every((c) => {
    const paths = typeof c.def.paths === 'function' ? c.def.paths(resource.resourceType) : c.def.paths;
    if (!paths || paths.length === 0) return false;
    return c.values.some((value) => matchesValue(resource, c.def, paths, value));
  });
}

function matchesValue(resource: FhirResource, def: ParamDef, paths: readonly string[], value: string): boolean {
  switch (def.kind) {
    case 'token': {
      const token = parseToken(value);
      return paths.some((p) => valuesAt(resource, p).some((v) => tokenMatches(v, token)));
    }
    case 'reference': {
      const want = parseReferenceValue(value, def.target);
      if (!want) return false;
      return paths.some((p) => targetsAt(resource, p).some((t) =>
        t.id === want.id && (want.type === undefined || t.type === want.type)));
    }
    case 'date': {
      const { prefix, date } = parseDateValue(value);
      return paths.some((p) => valuesAt(resource, p).some((v) => typeof v === 'string' && dateMatches(v, prefix, date)));
    }
    case 'string': {
      const needle = fold(unescape(value));
      return paths.some((p) => valuesAt(resource, p).some((v) => typeof v === 'string' && fold(v).startsWith(needle)));
    }
  }
}

// ---- token ----

interface Token {
  /** undefined: any system; '': no system (`|code`). */
  system?: string;
  /** undefined: any code (`system|`). */
  code?: string;
}

function parseToken(value: string): Token {
  const parts = splitEscaped(value, '|');
  if (parts.length === 1) return { code: unescape(parts[0]) };
  const system = unescape(parts[0]);
  const code = unescape(parts.slice(1).join('|'));
  return { system, code: code === '' ? undefined : code };
}

function tokenMatches(value: unknown, token: Token): boolean {
  if (typeof value === 'string' || typeof value === 'boolean' || typeof value === 'number') {
    // A primitive code has no system: `system|code` and `system|` never match it.
    return (token.system === undefined || token.system === '') && token.code === String(value);
  }
  if (value === null || typeof value !== 'object') return false;
  const v = value as { coding?: unknown; system?: unknown; code?: unknown; value?: unknown };
  if (Array.isArray(v.coding)) return v.coding.some((c) => tokenMatches(c, token)); // CodeableConcept
  const code = typeof v.code === 'string' ? v.code : typeof v.value === 'string' ? v.value : undefined; // Coding | Identifier
  const system = typeof v.system === 'string' ? v.system : undefined;
  if (token.system !== undefined) {
    if (token.system === '' ? system !== undefined : system !== token.system) return false;
  }
  return token.code === undefined || token.code === code;
}

// ---- reference ----

function parseReferenceValue(value: string, target: string | undefined): { type?: string; id: string } | undefined {
  const v = unescape(value);
  if (!v.includes('/')) return { type: target, id: v };
  const parsed = parseReference(v);
  if (!parsed || (target !== undefined && parsed.type !== target)) return undefined;
  return parsed;
}

function targetsAt(resource: FhirResource, path: string): ReferenceTarget[] {
  if (path === SELF) return typeof resource.id === 'string' ? [{ type: resource.resourceType, id: resource.id }] : [];
  const targets: ReferenceTarget[] = [];
  for (const v of valuesAt(resource, path)) {
    const reference = v !== null && typeof v === 'object' ? (v as { reference?: unknown }).reference : undefined;
    const t = typeof reference === 'string' ? parseReference(reference) : undefined;
    if (t) targets.push(t);
  }
  return targets;
}

// ---- date (day precision) ----

type DatePrefix = 'eq' | 'ne' | 'gt' | 'lt' | 'ge' | 'le';
const DATE_VALUE = /^(eq|ne|gt|lt|ge|le)?(\d{4}(?:-\d{2}(?:-\d{2})?)?)(?:T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?$/;

function parseDateValue(value: string): { prefix: DatePrefix; date: string } {
  const m = DATE_VALUE.exec(value);
  if (!m) throw new SearchParameterError('invalid', `Unsupported date search value: ${value}`);
  return { prefix: (m[1] ?? 'eq') as DatePrefix, date: m[2] };
}

/**
 * Compares the calendar date as written (time and zone dropped) at the coarser
 * of the two precisions, so `ge2025-09` includes all of September and
 * `gt2025-09` starts in October.
 */
function dateMatches(resourceValue: string, prefix: DatePrefix, date: string): boolean {
  const m = /^\d{4}(?:-\d{2}(?:-\d{2})?)?/.exec(resourceValue);
  if (!m) return false;
  const n = Math.min(m[0].length, date.length);
  const a = m[0].slice(0, n);
  const b = date.slice(0, n);
  switch (prefix) {
    case 'eq': return a === b;
    case 'ne': return a !== b;
    case 'gt': return a > b;
    case 'lt': return a < b;
    case 'ge': return a >= b;
    case 'le': return a <= b;
  }
}

// ---- result controls: paging and includes ----

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 200;

/**
 * `_include=<Source>:<param>[:<Target>]`: follow the references of reference
 * parameter `param` of the matches (Source is the searched type).
 * `_revinclude=<Source>:<param>[:<Target>]`: add the Source resources whose
 * `param` references a match.
 */
export interface IncludeSpec {
  source: string;
  param: string;
  /** Only references to this type. */
  target?: string;
}

export interface ResultControls {
  /** Page size: `_count`, default 50, at most 200 (larger values are lowered); 0 asks for the total only. */
  count: number;
  /** `_getpagesoffset`: matches skipped before the page. */
  offset: number;
  include: IncludeSpec[];
  revinclude: IncludeSpec[];
}

const TYPE_NAME = /^[A-Z][A-Za-z]{1,63}$/;

/**
 * Reads the paging and include parameters of a search on `type` (throws
 * SearchParameterError): `_include=*`, `:iterate`, non-reference parameters and
 * a `_include` from another type are refused rather than silently dropped.
 */
export function parseResultControls(type: string, params: SearchInput): ResultControls {
  const pairs: Iterable<readonly [string, string]> = typeof params === 'string' ? new URLSearchParams(params) : params;
  const controls: ResultControls = { count: DEFAULT_PAGE_SIZE, offset: 0, include: [], revinclude: [] };
  const seen = new Set<string>();
  for (const [name, value] of pairs) {
    if (name === '_count' || name === '_getpagesoffset') {
      if (seen.has(name)) continue; // the first occurrence wins
      seen.add(name);
      if (!/^\d{1,9}$/.test(value)) throw new SearchParameterError('invalid', `${name} must be a non-negative integer: ${value}`);
      if (name === '_count') controls.count = Math.min(Number(value), MAX_PAGE_SIZE);
      else controls.offset = Number(value);
    } else if (name === '_include' || name === '_revinclude') {
      const spec = parseInclude(name, value);
      if (name === '_include' && spec.source !== type) {
        throw new SearchParameterError('invalid', `_include=${value} does not start from ${type}`);
      }
      (name === '_include' ? controls.include : controls.revinclude).push(spec);
    } else if (name.startsWith('_include:') || name.startsWith('_revinclude:')) {
      throw new SearchParameterError('not-supported', `${name} is not supported`);
    }
  }
  return controls;
}

function parseInclude(name: string, value: string): IncludeSpec {
  const parts = value.split(':');
  if (value === '*' || parts[1] === '*') throw new SearchParameterError('not-supported', `${name}=${value}: wildcard includes are not supported`);
  const [source, param, target] = parts;
  if (parts.length < 2 || parts.length > 3 || !TYPE_NAME.test(source) || (target !== undefined && !TYPE_NAME.test(target))) {
    throw new SearchParameterError('invalid', `${name} must be <Type>:<parameter>[:<TargetType>]: ${value}`);
  }
  const paths = searchParamPaths(source, param);
  if (searchParamKind(param) !== 'reference' || !paths || paths.length === 0) {
    throw new SearchParameterError('not-supported', `${name}=${value}: ${param} is not a reference parameter of ${source} here`);
  }
  return { source, param, ...(target !== undefined ? { target } : {}) };
}

/**
 * The `Type/id` targets of reference parameter `param` on `resource` (same
 * reference forms as matching: relative, versioned or absolute), restricted to
 * the parameter's target type and to `onlyType` when given.
 */
export function referenceTargets(resource: FhirResource, param: string, onlyType?: string): ReferenceTarget[] {
  const def = ownValue(SEARCH_PARAMS, param);
  if (!def || def.kind !== 'reference') return [];
  const paths = typeof def.paths === 'function' ? def.paths(resource.resourceType) : def.paths;
  return (paths ?? []).flatMap((p) => targetsAt(resource, p))
    .filter((t) => (def.target === undefined || t.type === def.target) && (onlyType === undefined || t.type === onlyType));
}

// ---- helpers ----

/** Case- and accent-insensitive form for string search. */
function fold(s: string): string {
  return s.normalize('NFD').replace(/\p{M}/gu, '').toLowerCase();
}

/** Splits on `sep` not preceded by a backslash; escapes are kept (see unescape). */
function splitEscaped(s: string, sep: string): string[] {
  const parts: string[] = [];
  let current = '';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (ch === '\\' && i + 1 < s.length) {
      current += ch + s[i + 1];
      i++;
    } else if (ch === sep) {
      parts.push(current);
      current = '';
    } else {
      current += ch;
    }
  }
  parts.push(current);
  return parts;
}

function unescape(s: string): string {
  return s.replace(/\\([\\,|$])/g, '$1');
}

export function ownValue<T>(record: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}
