// Security labels on FHIR resources (HCS / DS4P): what a resource's `meta.security` says, whether a token's
// IHE PCF residual forbids it, HTEST and purpose-of-use restrictions, the Bundle high water mark and the
// break-the-glass hint. Pure: no I/O, inputs are never mutated.
import {
  ACT_CODE, ACT_REASON, CONFIDENTIALITY, canonicalSystem, codingList, confidentialityRank, isConfidentiality, isTestPurpose, purposeIsA,
  type Coding, type ConfidentialityCode,
} from '../hcs/codes.ts';
import { DEFAULT_LABEL_VOCABULARY, isHarmless, sensitivityClosure, type LabelVocabulary } from '../hcs/label-vocabulary.ts';
import type { PcfResidual } from '../hcs/token-claims.ts';
import { nestedResources } from '../fhir/nested.ts';
import type { FhirBundle, FhirResource } from '../resource-server/types.ts';

export interface LabelOptions {
  /** The confidentiality of a resource without a v3-Confidentiality label (policy default, normally N). */
  defaultConfidentiality: ConfidentialityCode;
  /** Known sensitivities and harmless labels (default: the bundled policy's). */
  vocabulary?: LabelVocabulary;
}

export const DEFAULT_LABEL_OPTIONS: LabelOptions = { defaultConfidentiality: 'N' };

export interface ResourceLabels {
  /** The highest v3-Confidentiality code present, or the default. */
  confidentiality: ConfidentialityCode;
  /** Known sensitivity codes (v3-ActCode codes of the vocabulary), deduplicated. */
  sensitivities: string[];
  /**
   * Every other label that is not confidentiality, purpose of use or harmless, as "system|code":
   * sensitivities nobody is cleared for by name, so only a token cleared for all sensitivities sees them.
   */
  unknown: string[];
  /** v3-ActReason HTEST present: test data. */
  test: boolean;
  /** Other v3-ActReason codes: the purposes of use the resource is restricted to. */
  purposes: string[];
  /** "Type/id", for `data[].reference` in residual rules (absent without an id). */
  reference?: string;
  /** The clinical or authored time of the data, for `dataPeriod` in residual rules. */
  date?: string;
}

/** A residual rule as it may arrive: PCF's securityLabel, plus the optional dataPeriod and data of a consent provision. */
export type ResidualRule = PcfResidual & {
  dataPeriod?: { start?: string; end?: string };
  data?: { meaning?: string; reference?: { reference?: string } | string }[];
};

const DATE_PATHS: readonly (readonly string[])[] = [
  ['effectiveDateTime'], ['effectivePeriod', 'start'], ['recordedDate'], ['onsetDateTime'], ['authoredOn'],
  ['occurrenceDateTime'], ['period', 'start'], ['meta', 'lastUpdated'],
];

/** The date that places a resource's data in time (first of the DATE_PATHS present). */
export function resourceDate(resource: FhirResource): string | undefined {
  for (const path of DATE_PATHS) {
    let value: unknown = resource;
    for (const key of path) value = value && typeof value === 'object' ? (value as Record<string, unknown>)[key] : undefined;
    if (typeof value === 'string' && value) return value;
  }
  return undefined;
}

export function resourceLabels(resource: FhirResource, options: LabelOptions): ResourceLabels {
  let confidentiality: ConfidentialityCode | undefined;
  const vocabulary = options.vocabulary ?? DEFAULT_LABEL_VOCABULARY;
  const sensitivities = new Set<string>();
  const unknown = new Set<string>();
  const purposes = new Set<string>();
  let test = false;
  // A label without a system still says something: it counts (as an unknown sensitivity) instead of being dropped.
  const security = (Array.isArray(resource.meta?.security) ? resource.meta.security : [])
    .map((c: unknown) => (c && typeof c === 'object' && (c as Coding).system === undefined ? { ...c, system: '' } : c));
  for (const label of codingList(security)) {
    const { code } = label;
    const system = canonicalSystem(label.system);
    if (system === CONFIDENTIALITY) {
      if (isConfidentiality(code) && (confidentiality === undefined || confidentialityRank(code) > confidentialityRank(confidentiality))) {
        confidentiality = code;
      }
    } else if (system === ACT_REASON) {
      if (code === 'HTEST') test = true;
      else purposes.add(code);
    } else if (isHarmless({ system, code }, vocabulary)) {
      continue;
    } else if (system === ACT_CODE && vocabulary.sensitivities.has(code)) {
      sensitivities.add(code);
    } else {
      unknown.add(`${system}|${code}`);
    }
  }
  const labels: ResourceLabels = {
    confidentiality: confidentiality ?? options.defaultConfidentiality,
    sensitivities: [...sensitivities],
    unknown: [...unknown],
    test,
    purposes: [...purposes],
  };
  if (resource.id) labels.reference = `${resource.resourceType}/${resource.id}`;
  const date = resourceDate(resource);
  if (date) labels.date = date;
  return labels;
}

/** Does one security-label coding of a rule match the resource? */
function labelMatches(coding: Coding, labels: ResourceLabels, vocabulary: LabelVocabulary): boolean {
  switch (coding.system) {
    case CONFIDENTIALITY:
      // The token lists every level it may not see: a code matches a resource at exactly that level.
      return coding.code === labels.confidentiality;
    case ACT_CODE: {
      const covered = sensitivityClosure(coding.code, vocabulary);
      return labels.sensitivities.some((s) => covered.has(s)) || labels.unknown.includes(`${ACT_CODE}|${coding.code}`);
    }
    case ACT_REASON:
      return coding.code === 'HTEST' ? labels.test : labels.purposes.includes(coding.code);
    default:
      return labels.unknown.includes(`${coding.system}|${coding.code}`);
  }
}

/** [earliest, latest] instant (ms) a FHIR date, dateTime or instant of any precision may denote; undefined if unparseable. */
function dateRange(value: string): [number, number] | undefined {
  const m = /^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$/.exec(value);
  if (m) {
    const y = Number(m[1]);
    if (m[3]) {
      const lo = Date.UTC(y, Number(m[2]) - 1, Number(m[3]));
      return [lo, lo + 86_400_000 - 1];
    }
    if (m[2]) return [Date.UTC(y, Number(m[2]) - 1, 1), Date.UTC(y, Number(m[2]), 1) - 1];
    return [Date.UTC(y, 0, 1), Date.UTC(y + 1, 0, 1) - 1];
  }
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : [t, t];
}

function periodMatches(period: { start?: string; end?: string }, date: string | undefined): boolean {
  if (!date) return false;
  const range = dateRange(date);
  if (!range) return false;
  const start = period.start ? dateRange(period.start) : undefined;
  const end = period.end ? dateRange(period.end) : undefined;
  if (period.start && !start) return false;
  if (period.end && !end) return false;
  return (!start || range[1] >= start[0]) && (!end || range[0] <= end[1]);
}

/** "Type/id" of a reference: relative, absolute or versioned ("…/Type/id/_history/2"). */
export function referenceKey(reference: string): string {
  const path = reference.split(/[?#]/)[0].replace(/\/_history\/[^/]*$/, '');
  return path.split('/').filter(Boolean).slice(-2).join('/');
}

function dataMatches(data: NonNullable<ResidualRule['data']>, labels: ResourceLabels): boolean {
  if (!labels.reference) return false;
  return data.some((d) => {
    const ref = typeof d?.reference === 'string' ? d.reference : d?.reference?.reference;
    return typeof ref === 'string' && referenceKey(ref) === labels.reference;
  });
}

/** A rule matches when every element it has matches (AND); repeats within one element are OR. */
function ruleMatches(rule: ResidualRule, labels: ResourceLabels, vocabulary: LabelVocabulary): boolean {
  const securityLabel = codingList(rule.securityLabel);
  if (securityLabel.length && !securityLabel.some((c) => labelMatches(c, labels, vocabulary))) return false;
  if (rule.dataPeriod && !periodMatches(rule.dataPeriod, labels.date)) return false;
  if (Array.isArray(rule.data) && rule.data.length && !dataMatches(rule.data, labels)) return false;
  return true;
}

/**
 * PCF residual semantics: the resource is forbidden when some `forbid` rule matches it and no `permit`
 * rule does. Data no rule matches flows. `dataPeriod` and `data` need `labels.date` and `labels.reference`
 * (resourceLabels fills them): without them such a rule does not match.
 * Unknown sensitivities fail closed: a residual that forbids any sensitivity forbids each unknown one
 * too, unless a permit rule names it.
 */
export function residualForbids(
  residual: readonly (PcfResidual | ResidualRule)[],
  labels: ResourceLabels,
  vocabulary: LabelVocabulary = DEFAULT_LABEL_VOCABULARY,
): boolean {
  const rules = ((Array.isArray(residual) ? residual : []) as ResidualRule[]).filter((r) => r && typeof r === 'object');
  if (labels.unknown.length && rules.some((r) => r.type === 'forbid' && codingList(r.securityLabel).some(isSensitivityLabel))) {
    const named = new Set(rules.filter((r) => r.type === 'permit').flatMap((r) => codingList(r.securityLabel).map((c) => `${c.system}|${c.code}`)));
    if (labels.unknown.some((label) => !named.has(label))) return true;
  }
  const matching = rules.filter((r) => ruleMatches(r, labels, vocabulary));
  return matching.some((r) => r.type === 'forbid') && !matching.some((r) => r.type === 'permit');
}

const isSensitivityLabel = (coding: Coding) => coding.system !== CONFIDENTIALITY && coding.system !== ACT_REASON;

/** HTEST data only for a test token (purpose is-a HTEST), and a test token sees only HTEST data. */
export function testDataVisible(labels: ResourceLabels, purpose: string | undefined): boolean {
  return labels.test === (purpose !== undefined && isTestPurpose(purpose));
}

/** A resource restricted to purposes of use is visible only when the token's purpose is-a one of them. */
export function purposeAllows(labels: ResourceLabels, purpose: string | undefined): boolean {
  if (!labels.purposes.length) return true;
  return purpose !== undefined && labels.purposes.some((p) => purposeIsA(purpose, p));
}

/** Whether a token with this residual and purpose of use may see data with these labels: its purpose, test data, its clearance. */
export function labelsAllow(labels: ResourceLabels, residual: readonly PcfResidual[], purpose: string | undefined, vocabulary?: LabelVocabulary): boolean {
  return purposeAllows(labels, purpose) && testDataVisible(labels, purpose) && !residualForbids(residual, labels, vocabulary);
}

/**
 * Whether the reader may see a resource that carried `securityLabel` when it was accessed, as an AuditEvent
 * entity records it. An entity recorded without labels counts as unlabelled data (the default confidentiality).
 */
export function recordedLabelsAdmit(securityLabel: unknown, reader: { residual: readonly PcfResidual[]; purpose?: string }, options: LabelOptions): boolean {
  const labels = resourceLabels({ resourceType: 'AuditEvent', meta: { security: Array.isArray(securityLabel) ? securityLabel : [] } }, options);
  return labelsAllow(labels, reader.residual, reader.purpose, options.vocabulary);
}

/** Every label that restricts who sees a resource, as "system|code" (confidentiality aside). */
function restrictions(labels: ResourceLabels): string[] {
  return [
    ...labels.sensitivities.map((code) => `${ACT_CODE}|${code}`),
    ...labels.unknown,
    ...labels.purposes.map((code) => `${ACT_REASON}|${code}`),
    ...(labels.test ? [`${ACT_REASON}|HTEST`] : []),
  ];
}

/**
 * What a new version would lower of the stored one's labels: a sensitivity, purpose or HTEST label
 * left out, or a lower confidentiality (unlabelled counts as the default); undefined when nothing is.
 */
export function loweredLabel(stored: FhirResource, next: FhirResource, options: LabelOptions): string | undefined {
  const before = resourceLabels(stored, options);
  const after = resourceLabels(next, options);
  if (confidentialityRank(after.confidentiality) < confidentialityRank(before.confidentiality)) {
    return `the confidentiality ${before.confidentiality}`;
  }
  const kept = new Set(restrictions(after));
  return restrictions(before).find((label) => !kept.has(label));
}

/**
 * A copy labelled with the high water mark of its own confidentiality and that of the resources it holds
 * (nested.ts): the default when none has one. The resource itself when its label is that already.
 */
export function withConfidentiality(resource: FhirResource, options: LabelOptions): FhirResource {
  const security = resource.meta?.security ?? [];
  const code = highWaterMark([resource, ...nestedResources(resource)], options);
  const isConfidentialityLabel = (c: Coding) => canonicalSystem(c.system) === CONFIDENTIALITY;
  if (codingList(security).some((c) => isConfidentialityLabel(c) && c.code === code)) return resource;
  const kept = security.filter((c: unknown) => !codingList(c).some(isConfidentialityLabel));
  return { ...resource, meta: { ...resource.meta, security: [...kept, { system: CONFIDENTIALITY, code }] } };
}

/** The highest confidentiality among the resources (the default when there are none). */
export function highWaterMark(resources: readonly FhirResource[], options: LabelOptions): ConfidentialityCode {
  let mark: ConfidentialityCode | undefined;
  for (const resource of resources) {
    const { confidentiality } = resourceLabels(resource, options);
    if (mark === undefined || confidentialityRank(confidentiality) > confidentialityRank(mark)) mark = confidentiality;
  }
  return mark ?? options.defaultConfidentiality;
}

/**
 * A copy of the Bundle whose `meta.security` carries the high water mark of its entries' resources
 * (search-mode `outcome` entries excluded), replacing any confidentiality coding there; other codings kept.
 * Adds nothing else: no obligations or refrains that would reveal what the entries hold.
 */
export function withHighWaterMark(bundle: FhirBundle, options: LabelOptions): FhirBundle {
  const resources = (bundle.entry ?? [])
    .filter((e) => e?.resource && e.search?.mode !== 'outcome')
    .map((e) => e.resource as FhirResource);
  const code = highWaterMark(resources, options);
  const kept = (bundle.meta?.security ?? []).filter((c) => c?.system !== CONFIDENTIALITY);
  return {
    ...bundle,
    meta: { ...bundle.meta, security: [...kept, { system: CONFIDENTIALITY, code }] },
  };
}

/** R4 `operationoutcome-example-break-the-glass`: tells the client more data may be available under BTG (a policy choice: it leaks). */
export function suppressedOutcome(): FhirResource {
  return {
    resourceType: 'OperationOutcome',
    issue: [{
      severity: 'information',
      code: 'suppressed',
      details: {
        coding: [{ system: ACT_REASON, code: 'ETREAT', display: 'Emergency Treatment' }],
        text: 'Additional information may be available using the Break-The-Glass Protocol',
      },
    }],
  };
}
