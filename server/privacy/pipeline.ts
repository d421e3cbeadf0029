// What a token may see of each resource beyond its scopes, in this order:
// purpose-of-use restrictions, test data, the clearance (the token's IHE PCF residual: confidentiality
// ceiling and sensitivities, lifted by break-the-glass at the authorization server), consent, and
// then the obligations (de-identification; staff identities out of a patient's audit trail). Also the
// rules it adds to searches (no existence tests, de-identified requests) and writes (labels only go up).
// Used by the guard as its resource policy.
import { createHmac } from 'node:crypto';
import { patientsOf } from '../fhir/compartment.ts';
import { nestedResources } from '../fhir/nested.ts';
import { codingList, purposeIsA, type ConfidentialityCode } from '../hcs/codes.ts';
import type { PcfResidual } from '../hcs/token-claims.ts';
import type { FhirBundle, FhirInteraction, FhirResource, Refusal, TokenContext } from '../resource-server/types.ts';
import {
  labelsAllow, loweredLabel, recordedLabelsAdmit, referenceKey, resourceLabels, suppressedOutcome, withConfidentiality, withHighWaterMark,
} from './labels.ts';
import { existenceTest, mayLowerLabels, viewsFor } from '../resource-server/decide.ts';
import { auditEventForPatient, isRefusedAccess } from './audit-agents.ts';
import { consentDecision, type ConsentCache } from './consent.ts';
import type { LabelVocabulary } from '../hcs/label-vocabulary.ts';
import { carriesIds, deidentifyBundle, deidentifyResource, identifiesPerson, mapIdValue, PSEUDED, realId, type DeidPolicy } from './deidentify.ts';
import { CONTROL_PARAMS, searchParamKind } from '../fhir/search.ts';
import { dateSearchRefusal, isDateSearch } from './date-search.ts';

export interface PrivacyOptions {
  /** The confidentiality of resources without one (v3-Confidentiality; N by default). */
  defaultConfidentiality: ConfidentialityCode;
  /** The policy's label vocabulary: known sensitivities and harmless labels (default: the bundled policy's). */
  labels?: LabelVocabulary;
  /** Purposes of use (with what is-a them) whose answers are de-identified, e.g. HRESCH. */
  deidentifyPurposes: readonly string[];
  deidentification: DeidPolicy;
  /** Tell a token that hit hidden data that break-the-glass exists (off by default: it leaks existence). */
  breakGlassHint: boolean;
  /** The patients' Consent resources; undefined: consent is not evaluated. */
  consents?: ConsentCache;
  /** Without an applicable consent: the organization's default policy. */
  withoutConsent: 'permit' | 'deny';
}

/** What the privacy rules need of a token. */
interface Asker {
  residual: PcfResidual[];
  purpose?: string;
  /** Who asks, as references consent actors can name. */
  actors: string[];
}

function askerOf(token: TokenContext): Asker {
  const extensions = token.claims.extensions as { ihe_iua?: { purpose_of_use?: unknown }; ihe_pcf?: { residual?: PcfResidual[] } } | undefined;
  return {
    residual: Array.isArray(extensions?.ihe_pcf?.residual) ? extensions!.ihe_pcf!.residual! : [],
    purpose: codingList(extensions?.ihe_iua?.purpose_of_use)[0]?.code,
    actors: token.fhirUser ? [token.fhirUser] : [],
  };
}

/**
 * Why a search parameter is refused for de-identified answers: it names a person directly, sorts by
 * what de-identification changes (the order would tell), tells more of a date than the answers show,
 * or the guard cannot tell whether it carries ids it would have to read back from pseudonyms.
 */
function deidentifiedSearchRefusal(name: string, value: string, dates: DeidPolicy['dates']): string | undefined {
  const base = name.split(':')[0]!;
  if (identifiesPerson(name)) return 'it searches on a direct identifier';
  if (base === '_sort') return 'the order of the answer would follow the real values';
  if (isDateSearch(name)) return dateSearchRefusal(name, value, dates);
  if (!CONTROL_PARAMS.has(base) && base !== '_id' && searchParamKind(base) === undefined) return 'the guard does not know this parameter';
  return undefined;
}

/**
 * A patient reading the audit trail: the token reaches AuditEvents only bound to patients (a patient/
 * token, or a patient user). Auditors and backends with unbounded AuditEvent scopes see everything.
 */
const readsTrailAsPatient = (token: TokenContext) =>
  !(['read', 'search-type'] as const).some((kind) => viewsFor(token, 'AuditEvent', kind).some((view) => view.patients === undefined));

/** What the audit records of one access: the resources behind the answer and the patients named, as stored. */
export interface AuditedAccess {
  resources: FhirResource[];
  /** Patient ids the request named or the answer involved beyond its resources. */
  patients: string[];
  /** Labels of how the data went out: PSEUDED when the answers were de-identified. */
  labels: { system: string; code: string; display?: string }[];
}

export interface ResourcePolicy {
  /** The resource as the token may see it (transformed by obligations), or undefined when it is hidden. */
  admit(token: TokenContext, resource: FhirResource): Promise<FhirResource | undefined>;
  /**
   * Whether the token may see the resource: admit's decision, without the obligations. `search`: the parameters
   * of the search it matched, when it is a search's match: one that matches only through what the obligations
   * take out of the token's copy (a patient's AuditEvent naming a resource hidden from her) is not shown.
   */
  visible(token: TokenContext, resource: FhirResource, search?: URLSearchParams): Promise<boolean>;
  /**
   * A searchset or history Bundle: hidden entries (and a history's deletions) out, `total` recounted, obligations
   * and the high-water mark applied. `decided`: resources whose visibility `visible` already told (by identity),
   * not evaluated again.
   */
  bundle(token: TokenContext, bundle: FhirBundle, decided?: ReadonlyMap<FhirResource, boolean>): Promise<FhirBundle>;
  /** After a write, for the written and for the stored version: a changed Consent must be enforced from now on. */
  written(resource: FhirResource): void;
  /** The body of a 404 for hidden data: a plain not-found, or the break-the-glass hint when the policy says so. */
  hiddenOutcome(token: TokenContext): FhirResource | undefined;
  /**
   * Whether the token may learn which ids the resources this policy hides from it hold. An update to an id
   * with no current version (update-as-create) creates on a free id and is 404 on a hidden one, so the guard
   * lets it create only when this says so (and a view of the type is unbounded and unrestricted). Absent:
   * no token may, and every update-as-create is 404.
   */
  mayLearnHiddenIds?(token: TokenContext): boolean;
  /**
   * Search parameters this policy cannot let through for the token: they would test for data it
   * hides (`_has`, chains, counts), name the staff a patient's audit trail leaves out (`agent`), or,
   * for de-identified answers, link them to a person. `type`: the searched type, if one.
   */
  searchRefusal?(token: TokenContext, params: URLSearchParams, type?: string): Refusal | undefined;
  /**
   * The interaction as the upstream must see it: for de-identified answers, pseudonymous ids (of a
   * read, or in id-carrying search parameters) read back into real ones, a refusal for anything
   * else (writes, operations) or for an id that is not a pseudonym of this client and purpose.
   */
  translateRequest?(token: TokenContext, interaction: FhirInteraction): FhirInteraction | Refusal;
  /**
   * The access as the audit must record it: the stored resources behind those the obligations
   * transformed (`shown`, as admit and bundle returned them), patients read back from pseudonyms, and
   * the labels of the disclosure. A de-identified answer is still a disclosure of the real patient's
   * data, which their accounting of disclosures must show; the client never sees what is recorded here.
   * Throws when a de-identified resource was not returned by admit or bundle (its stored version is not
   * known): the guard then refuses the request, as for any access it cannot record.
   */
  audited?(token: TokenContext, access: Omit<AuditedAccess, 'labels'>): AuditedAccess;
  /**
   * Before a write: the resource to send (a create gets the default confidentiality), or a refusal
   * when it would lower the stored version's labels and the writer may not.
   */
  prepareWrite?(token: TokenContext, write: LabelledWrite): { resource?: FhirResource } | Refusal;
}

/** A write as the label rule sees it. */
export interface LabelledWrite {
  kind: 'create' | 'update' | 'patch' | 'delete';
  resource?: FhirResource;
  existing?: FhirResource;
  /** The body of a patch (JSON Patch or FHIRPath Patch Parameters). */
  patch?: unknown;
}

/** FHIRPath functions that walk into child elements without naming them (children().security is meta.security). */
const UNNAMED_NAVIGATION = /\b(?:children|descendants|repeat|select|aggregate)\s*\(/;

/**
 * Whether a patch could change labels: a JSON Patch operation on the root or under /meta; a FHIRPath
 * Patch (Parameters) that mentions meta, navigates without naming elements, or names one in a delimited
 * identifier (`` `m\u0065ta` `` spells meta) — its paths are expressions, reading them would be guessing;
 * any other body (a JSON Patch wrapped in a Binary, as batch entries carry it), which the guard cannot read.
 */
function patchTouchesLabels(patch: unknown): boolean {
  if (Array.isArray(patch)) {
    return patch.some((op) => [op?.path, op?.from].some((path) => typeof path === 'string' && (path === '' || path === '/' || path.startsWith('/meta'))));
  }
  if ((patch as { resourceType?: unknown } | undefined)?.resourceType !== 'Parameters') return true;
  const text = JSON.stringify(patch);
  return text.includes('meta') || text.includes('`') || UNNAMED_NAVIGATION.test(text);
}

export function createPrivacyPolicy(options: PrivacyOptions): ResourcePolicy {
  const labelOptions = { defaultConfidentiality: options.defaultConfidentiality, vocabulary: options.labels };
  const deidentifies = (purpose: string | undefined) => Boolean(purpose && options.deidentifyPurposes.some((p) => purposeIsA(purpose, p)));
  /** The de-identification of a token's answers: its own key per client and purpose, so pseudonyms differ across clients. */
  const deidentificationFor = (token: TokenContext, purpose: string): DeidPolicy => ({
    ...options.deidentification,
    key: createHmac('sha256', options.deidentification.key).update(`pseudonyms|${token.clientId}|${purpose}`).digest('base64url'),
  });

  /**
   * Each patient's consents looked up once however many of the resources judged together name them (a
   * container and what it holds, a page's entries), each resource still judged on its own against them.
   */
  const consentsOnce = (): ((patient: string) => Promise<FhirResource[]>) => {
    const looked = new Map<string, Promise<FhirResource[]>>();
    return (patient) => {
      if (!looked.has(patient)) looked.set(patient, options.consents!.forPatient(patient));
      return looked.get(patient)!;
    };
  };

  async function consentPermits(asker: Asker, resource: FhirResource, consentsOf: (patient: string) => Promise<FhirResource[]>): Promise<boolean> {
    if (!options.consents) return true;
    for (const patient of patientsOf(resource)) {
      const consents = await consentsOf(patient);
      const { decision } = consentDecision(consents, { actors: asker.actors, purpose: asker.purpose, resource, now: new Date() }, { ...labelOptions, patientId: patient });
      if (decision === 'deny' || (decision === 'no-consent' && options.withoutConsent === 'deny')) return false;
    }
    return true;
  }

  /** Whether one resource's own labels let the asker see it: its purpose of use, test data, its clearance. */
  const ownLabelsAdmit = (asker: Asker, resource: FhirResource): boolean =>
    labelsAllow(resourceLabels(resource, labelOptions), asker.residual, asker.purpose, options.labels);

  /**
   * A resource and what it holds (contained resources, a stored Bundle's entries, …: nested.ts) are seen whole
   * or not at all: each must pass. Hiding the held ones and showing the rest would change a document
   * someone attested, so it is the whole resource that is hidden.
   */
  const whole = (resource: FhirResource) => [resource, ...nestedResources(resource)];

  const labelsAdmit = (asker: Asker, resource: FhirResource): boolean => whole(resource).every((r) => ownLabelsAdmit(asker, r));

  async function visible(asker: Asker, resource: FhirResource, consentsOf = consentsOnce()): Promise<boolean> {
    if (!labelsAdmit(asker, resource)) return false;
    for (const r of whole(resource)) if (!(await consentPermits(asker, r, consentsOf))) return false;
    return true;
  }

  /** What a patient reading their trail may not see at all: refused accesses (audit-agents.ts). */
  const hiddenFromPatient = (token: TokenContext, resource: FhirResource) => readsTrailAsPatient(token) && isRefusedAccess(resource);

  /**
   * The stored resource behind each de-identified one this policy returned, for the audit. Kept by object
   * identity, weakly: a pseudonym cannot always be read back (ids over 36 characters), the resource can.
   */
  const storedOf = new WeakMap<FhirResource, FhirResource>();
  const deidentified = (resource: FhirResource, policy: DeidPolicy) => {
    const out = deidentifyResource(resource, policy);
    storedOf.set(out, resource);
    return out;
  };

  const unaudited = (resource: FhirResource): never => {
    throw new Error(`the stored version of a de-identified ${resource.resourceType} is not known, so its access cannot be recorded`);
  };

  /**
   * Obligations on what a token may see of one resource: staff identities out of a patient's audit trail, and
   * the resources the token may not read (by the labels each entity recorded) unnamed.
   */
  const shown = (token: TokenContext, resource: FhirResource) =>
    (resource.resourceType === 'AuditEvent' && readsTrailAsPatient(token)
      ? auditEventForPatient(resource, (labels) => recordedLabelsAdmit(labels, askerOf(token), labelOptions))
      : resource);

  /**
   * Whether a patient's copy of an AuditEvent still matches the `entity` of her search: an event that matched
   * only through a resource her copy leaves unnamed is no match (the search would test that it exists).
   */
  const matchesAsShown = (token: TokenContext, resource: FhirResource, search: URLSearchParams | undefined) => {
    const wanted = (search?.getAll('entity') ?? []).flatMap((value) => value.split(',')).map((value) => referenceKey(value.replace(/^.*\|/, '')));
    if (!wanted.length || resource.resourceType !== 'AuditEvent' || !readsTrailAsPatient(token)) return true;
    const entities = (shown(token, resource).entity ?? []) as { what?: { reference?: unknown } }[];
    return entities.some((e) => typeof e?.what?.reference === 'string' && wanted.includes(referenceKey(e.what.reference)));
  };

  return {
    async admit(token, resource) {
      const asker = askerOf(token);
      if (hiddenFromPatient(token, resource) || !(await visible(asker, resource))) return undefined;
      return deidentifies(asker.purpose) ? deidentified(shown(token, resource), deidentificationFor(token, asker.purpose!)) : shown(token, resource);
    },

    visible: async (token, resource, search) =>
      !hiddenFromPatient(token, resource) && matchesAsShown(token, resource, search) && visible(askerOf(token), resource),

    async bundle(token, bundle, decided) {
      const asker = askerOf(token);
      const consentsOf = consentsOnce();
      const entries = [];
      let hidden = 0;
      for (const entry of bundle.entry ?? []) {
        // A history's deletion has no resource to check labels or consent on: left out, it would name a hidden id.
        if (!entry.resource) continue;
        if (entry.search?.mode === 'outcome' || (decided?.get(entry.resource) ?? (await visible(asker, entry.resource, consentsOf)))) entries.push(entry);
        else hidden++;
      }
      const matches = entries.filter((e) => e.resource && (e.search?.mode ?? 'match') === 'match').length;
      const entry = entries.map((e) => (e.resource ? { ...e, resource: shown(token, e.resource) } : e));
      let result: FhirBundle = { ...bundle, entry, ...(bundle.total !== undefined && { total: matches }) };
      if (hidden && options.breakGlassHint) result.entry = [...entry, { resource: suppressedOutcome(), search: { mode: 'outcome' } }];
      if (deidentifies(asker.purpose)) {
        const out = deidentifyBundle(result, deidentificationFor(token, asker.purpose!));
        // deidentifyBundle maps the entries one to one, in order.
        out.entry?.forEach((e, i) => e.resource && storedOf.set(e.resource, result.entry![i]!.resource!));
        result = out;
      }
      return withHighWaterMark(result, labelOptions);
    },

    audited(token, { resources, patients }) {
      const purpose = askerOf(token).purpose;
      if (!deidentifies(purpose)) return { resources, patients, labels: [] };
      const { key } = deidentificationFor(token, purpose!);
      return {
        // A de-identified resource recorded as shown would put a pseudonym in the real patient's place: refuse instead.
        resources: resources.map((r) => storedOf.get(r) ?? unaudited(r)),
        // A named id that is no pseudonym (a guessed real id) names that patient.
        patients: patients.map((id) => realId(key, id) ?? id),
        labels: [PSEUDED],
      };
    },

    written(resource) {
      if (resource.resourceType !== 'Consent') return;
      for (const patient of patientsOf(resource)) options.consents?.invalidate(patient);
    },

    hiddenOutcome: () => (options.breakGlassHint ? suppressedOutcome() : undefined),

    // Purpose of use, HTEST and consent can hide data from every token; the privacy office (who may lower
    // labels) manages them, so the ids of what they hide are its to know once its clearance hides nothing.
    // (What a patient's audit trail leaves out are AuditEvents, which no token writes.)
    mayLearnHiddenIds: (token) => mayLowerLabels(token) && !askerOf(token).residual.some((rule) => rule?.type === 'forbid'),

    // Labels, consent and HTEST can hide data from every token, so existence tests are refused for all;
    // the guard filters answers, it cannot evaluate these predicates over what it filtered.
    searchRefusal(token, params, type) {
      const deidentified = deidentifies(askerOf(token).purpose);
      const trailAsPatient = type === 'AuditEvent' && readsTrailAsPatient(token);
      for (const [name, value] of params) {
        if (trailAsPatient && name.split(':')[0] === 'agent') {
          return { status: 403, code: 'forbidden', message: 'the search parameter agent is not allowed: a patient sees the staff in the audit trail by role and organization only' };
        }
        if (trailAsPatient && name.startsWith('entity:')) {
          return { status: 403, code: 'forbidden', message: `the search parameter ${name} is not allowed: a patient searches the audit trail by entity=Type/id only` };
        }
        const what = existenceTest(name, value, type);
        if (what) return { status: 403, code: 'forbidden', message: `the search parameter ${name} (${what}) is not allowed: labels, consent and test-data rules may hide what it would test` };
        if (deidentified) {
          const why = deidentifiedSearchRefusal(name, value, options.deidentification.dates);
          if (why) return { status: 403, code: 'forbidden', message: `the search parameter ${name} is not allowed with de-identified answers: ${why}` };
        }
      }
      return undefined;
    },

    translateRequest(token, interaction) {
      const purpose = askerOf(token).purpose;
      if (!deidentifies(purpose)) return interaction;
      const { key } = deidentificationFor(token, purpose!);
      const unknown: Refusal = { status: 404, code: 'not-found', message: 'no resource has that pseudonym for this client and purpose' };
      switch (interaction.kind) {
        case 'read': case 'vread': case 'history-instance': {
          const id = realId(key, interaction.id ?? '');
          return id === undefined ? unknown : { ...interaction, id };
        }
        case 'search-type': case 'search-system': case 'history-type': case 'history-system': {
          const params = new URLSearchParams();
          for (const [name, value] of interaction.params) {
            const mapped = carriesIds(name) ? mapIdValue(value, (id) => realId(key, id)) : value;
            if (mapped === undefined) return unknown;
            params.append(name, mapped);
          }
          return { ...interaction, params };
        }
        case 'batch': case 'transaction': case 'capabilities':
          return interaction; // entries come through one by one
        default:
          return { status: 403, code: 'forbidden', message: `${interaction.kind} is not available with de-identified answers: they are read-only` };
      }
    },

    prepareWrite(token, { kind, resource, existing, patch }) {
      // An update with nothing stored creates too: new data may be labelled above the writer's clearance (an intake feed).
      if (kind === 'create' || (kind === 'update' && !existing)) return { resource: resource && withConfidentiality(resource, labelOptions) };
      if (mayLowerLabels(token) || kind === 'delete') return { resource };
      // A change may not raise labels beyond what the writer may read: that would hide the record from it and its peers.
      if (resource && !labelsAdmit(askerOf(token), resource)) {
        return { status: 403, code: 'forbidden', message: `the ${resource.resourceType} would carry labels the token may not read (above its clearance, another purpose of use, or test data): a privacy officer sets those` };
      }
      const refuse = (what: string): Refusal => ({ status: 403, code: 'forbidden', message: `labels only go up: ${what} may be removed or lowered by a privacy officer only` });
      if (kind === 'patch') return patchTouchesLabels(patch) ? refuse('a patch of meta') : { resource };
      const lowered = existing && resource && loweredLabel(existing, resource, labelOptions);
      return lowered ? refuse(`${lowered} of ${existing!.resourceType}/${existing!.id ?? ''}`) : { resource };
    },
  };
}
