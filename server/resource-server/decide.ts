// The guard's decisions: which scopes let a token make an interaction, what each lets it see
// (views), and whether one resource is inside them. Pure; nothing here knows the store.
import { isInPatientCompartment, parseReference, PATIENT_COMPARTMENT_PATHS, patientCompartmentParams, patientsOf, valuesAt, type ReferenceTarget } from '../fhir/compartment.ts';
import { matchesSearch, searchParamKind } from '../fhir/search.ts';
import { searchParamType } from '../fhir/search-param-types.ts';
import { allows, permissionFor, type Interaction, type Level, type Permission, type ResourceScope } from '../smart/scopes.ts';
import { codingList, isPrivacyOfficerRole } from '../hcs/codes.ts';
import { carriedResources, containedResources } from '../fhir/nested.ts';
import { knownOperation } from './operations.ts';
import type { Decision, FhirInteraction, FhirResource, InteractionKind, Refusal, TokenContext, View } from './types.ts';

/** The interactions a SMART scope permission governs (the rest are decided in `decide`). */
export type ScopedKind = Extract<InteractionKind, Interaction>;

const SCOPED: ReadonlySet<string> = new Set<ScopedKind>([
  'read', 'vread', 'history-instance', 'history-type', 'history-system',
  'search-type', 'search-system', 'create', 'update', 'patch', 'delete',
]);

const isScoped = (kind: InteractionKind): kind is ScopedKind => SCOPED.has(kind);

/** The SMART v2 permission an interaction needs; undefined for capabilities, operations, batch and transaction. */
export function permissionOf(kind: InteractionKind): Permission | undefined {
  return isScoped(kind) ? permissionFor(kind) : undefined;
}

/** "Observation.s" / "*.s": the scope an interaction needs, for messages. */
export function scopeTextFor(kind: InteractionKind, type: string): string {
  return `${type}.${permissionOf(kind) ?? '?'}`;
}

/**
 * What the token may see for `kind` on `type`: what its scopes let it see (scopeViews). The audit trail (who
 * accessed what, staff names, break-the-glass reasons) is not clinical data: no AuditEvent unless the token may
 * read the trail, however the events reach it (an include, a system-level search or history), and at system
 * level only through a scope naming AuditEvent, never `system/*` (a bulk data client's).
 */
export function viewsFor(token: TokenContext, type: string, kind: InteractionKind): View[] {
  return type === 'AuditEvent' && !mayReadAuditTrail(token) ? [] : scopeViews(token, type, kind);
}

/**
 * What the granted scopes let the token see for `kind` on `type` (union of views, deduplicated).
 * `type` '*' (system-wide search/history) only matches `*` scopes. Unscoped kinds give no view.
 */
function scopeViews(token: TokenContext, type: string, kind: InteractionKind): View[] {
  if (!isScoped(kind)) return [];
  const views: View[] = [];
  const seen = new Set<string>();
  for (const scope of allows(token.scopes, { type, interaction: kind })) {
    const patients = patientBound(token, scope.level);
    if (patients === null) continue;
    if (type === 'AuditEvent' && scope.level === 'system' && scope.type !== 'AuditEvent') continue;
    if (WRITES.has(kind) && !writeScopeCounts(token, scope, type, patients)) continue;
    const key = JSON.stringify([patients ?? null, scope.query]);
    if (seen.has(key)) continue;
    seen.add(key);
    views.push(patients === undefined ? { query: scope.query } : { patients, query: scope.query });
  }
  return views;
}

/** Whether the token carries the privacy-officer role (`extensions.ihe_iua.subject_role`). */
export function isPrivacyOfficer(token: TokenContext): boolean {
  const iua = (token.claims.extensions as { ihe_iua?: { subject_role?: unknown } } | undefined)?.ihe_iua;
  return codingList(iua?.subject_role).some(isPrivacyOfficerRole);
}

/**
 * Who may remove or lower security labels: a privacy officer, or a backend registered to write
 * policy data (a `system/Consent` scope with `u`, which registration grants only by name).
 */
export const mayLowerLabels = (token: TokenContext): boolean =>
  isPrivacyOfficer(token) || token.scopes.some((s) => s.level === 'system' && s.type === 'Consent' && s.permissions.includes('u'));

const WRITES: ReadonlySet<InteractionKind> = new Set(['create', 'update', 'patch', 'delete']);

/**
 * Which write scopes count beyond their permission. Policy data (Consent) is written only with a
 * scope naming Consent itself, never `*`, and at user and patient level only by the patient (the
 * token's user, bound to themselves) or a privacy officer: a clinician's token bound to a patient
 * (a launch, `--patients`) is not the patient's. A token bound to patients writes types outside the
 * Patient compartment (Binary aside, which its securityContext places) only with a scope naming the type.
 */
function writeScopeCounts(token: TokenContext, scope: ResourceScope, type: string, patients: readonly string[] | undefined): boolean {
  if (type === 'Consent') {
    if (scope.type !== 'Consent') return false;
    return scope.level === 'system' || isPrivacyOfficer(token) || boundToThemselves(token, patients);
  }
  const inNoCompartment = patientCompartmentParams(type) === undefined && type !== 'Binary';
  return !(inNoCompartment && patients !== undefined && scope.type === '*');
}

/** The patients a scope level is bound to: undefined ⇒ unbounded; null ⇒ the scope gives nothing. */
function patientBound(token: TokenContext, level: Level): readonly string[] | undefined | null {
  switch (level) {
    case 'patient':
      return token.patient ? [bareId(token.patient)] : null;
    case 'user': {
      if (token.fhirUser === undefined) return token.userPatients?.map(bareId);
      const user = parseReference(token.fhirUser);
      // An fhirUser we cannot read might be a patient: bind it to nobody rather than to everybody.
      if (!user) return [];
      return user.type === 'Patient' ? [user.id] : token.userPatients?.map(bareId);
    }
    case 'system':
      return undefined;
  }
}

/** Whether the token's user is a patient and the token is bound to them alone. */
const boundToThemselves = (token: TokenContext, patients: readonly string[] | undefined): boolean =>
  Boolean(patients?.length) && patients!.every((id) => token.fhirUser === `Patient/${id}`);

const bareId = (patient: string) => (patient.startsWith('Patient/') ? patient.slice('Patient/'.length) : patient);

/** A view with no patient bound and no query restriction: it sees everything of its type. */
export const isUnrestricted = (view: View): boolean => view.patients === undefined && view.query.length === 0;

/**
 * Reading the audit trail: a backend service by its system/ scopes, a patient user the events about
 * themselves (their compartment); any other user only with the auditor attribute, as the authorization
 * server told the verifier (not told is no).
 */
export const mayReadAuditTrail = (token: TokenContext): boolean =>
  !token.sub || token.sub === token.clientId || token.fhirUser?.startsWith('Patient/') === true || token.auditor === true;

/**
 * Records the server writes itself, append-only: the audit trail and the Provenance of each write. No token
 * creates, changes or deletes them, whatever its scopes: a client could forge, rewrite or erase the record.
 */
const SERVER_WRITTEN: ReadonlySet<string> = new Set(['AuditEvent', 'Provenance']);

/** Whether the interaction changes data: a create, update, patch, delete, or a writing operation. */
const changesData = ({ kind, operation }: FhirInteraction): boolean =>
  WRITES.has(kind) || (kind === 'operation' && knownOperation(operation ?? '')?.effect === 'write');

export function decide(token: TokenContext, interaction: FhirInteraction, options: { allowOperations?: readonly string[] } = {}): Decision {
  if (interaction.type && SERVER_WRITTEN.has(interaction.type) && changesData(interaction)) {
    return deny({ status: 403, code: 'forbidden', message: `${interaction.type} resources are written by the server only: no token may create, change or delete them` });
  }
  const decision = scopeDecision(token, interaction, options);
  if (decision.effect === 'allow' && interaction.type === 'AuditEvent' && !mayReadAuditTrail(token)) {
    return deny({ status: 403, code: 'forbidden', message: 'reading the audit trail needs the auditor role' });
  }
  return decision;
}

function scopeDecision(token: TokenContext, interaction: FhirInteraction, options: { allowOperations?: readonly string[] }): Decision {
  const { kind, type } = interaction;
  switch (kind) {
    case 'capabilities':
      return { effect: 'allow', views: [{ query: [] }] };
    case 'batch': case 'transaction':
      return { effect: 'allow', views: [] }; // each entry is decided on its own
    case 'operation': {
      const name = interaction.operation ?? '';
      const allowed = options.allowOperations ?? [];
      if (!allowed.includes(name) && !allowed.includes(`$${name}`)) {
        return deny({ status: 403, code: 'forbidden', message: `the operation $${name} is not allowed through this server` });
      }
      const known = knownOperation(name);
      if (!known || type === undefined) {
        return deny({ status: 403, code: 'forbidden', message: `the guard does not know what $${name} reads or writes${type ? '' : ' at the system level'}, so it is refused` });
      }
      // A reading operation needs what a search of its type needs; a writing one changes the resource it
      // is invoked on, so it needs an update of it (SMART v2 `u`, v1 `write`), with the write rules.
      const needs = known.effect === 'write' ? 'update' : 'search-type';
      const views = scopeViews(token, type, needs);
      return views.length > 0 ? { effect: 'allow', views } : deny(insufficientScope(needs, type));
    }
  }
  const target = kind === 'search-system' || kind === 'history-system' ? '*' : type;
  if (target === undefined) return deny({ status: 403, code: 'forbidden', message: `${kind} needs a resource type` });
  const views = scopeViews(token, target, kind);
  if (views.length === 0) return deny(insufficientScope(kind, target));
  if (kind === 'search-type' || kind === 'search-system') {
    const unsafe = searchIsSafe(views, interaction.params, interaction.type);
    if (unsafe) return deny(unsafe);
  }
  return { effect: 'allow', views };
}

const deny = (refusal: Refusal): Decision => ({ effect: 'deny', refusal });

function insufficientScope(kind: InteractionKind, type: string): Refusal {
  const on = type === '*' ? 'all resource types' : type;
  return {
    status: 403,
    code: 'forbidden',
    bearerError: 'insufficient_scope',
    message: `the token's scopes do not allow ${kind} on ${on} (needs a patient/, user/ or system/ ${scopeTextFor(kind, type)} scope)`,
  };
}

/**
 * Parameters whose predicate runs over other resources than those returned, which the
 * result filter never sees: `_has` and chains (what `Patient?_has:Condition:subject:code=…`
 * matches depends on hidden Conditions), `_filter`/`_query` (can express both), `_list`
 * (membership of a possibly hidden List). `_summary=count` and `_total=accurate` are refused too:
 * the upstream's count includes hidden resources, and a count is all `_summary=count` returns. So is
 * `_contained` (other than `false`): a contained resource found on its own carries neither the labels
 * (dom-5 forbids them on it) nor, perhaps, the patient of the resource that contains it.
 * `_security` and `_tag` are allowed: they test the returned resources themselves, which are
 * filtered afterwards, so they reveal nothing about hidden ones. Nor is a `_sort` by the matches' own
 * values; one by a chain (`_sort=patient.name`) orders visible matches by resources the rules may hide, so
 * each sort key is tested as a parameter name (in `_sort:desc=` too, the DSTU2 form some servers still take).
 * Modifiers that match through other resources are refused too (crossingModifier). `type`: the searched type, if one.
 * Undefined when the parameter is safe.
 */
export function existenceTest(name: string, value: string, type?: string): string | undefined {
  // By the name before any modifier: a server that takes an unknown modifier (`_filter:x=`) may still apply the parameter.
  const [base, ...modifiers] = name.split(':');
  if (base === '_sort' && value.split(',').some((key) => existenceTest(key.trim().replace(/^-/, ''), '', type))) {
    return 'a sort by the values of other resources';
  }
  if (base === '_has') return 'reverse chaining';
  if (base === '_filter') return 'a filter expression';
  if (base === '_query') return 'a named query';
  if (base === '_list') return 'list membership';
  if (name.includes('.')) return 'chaining';
  if (modifiers.some((modifier) => /^[A-Z]/.test(modifier))) return 'a typed reference modifier';
  const crossing = crossingModifier(base, modifiers, type);
  if (crossing) return crossing;
  if (base === '_summary' && value.trim().toLowerCase() === 'count') return 'a count that would include hidden resources';
  if (base === '_total' && value !== 'none') return 'a total that would include hidden resources';
  if (base === '_contained' && value !== 'false') return 'contained resources, without the labels and patients of their containers';
  return undefined;
}

/** Search parameter types whose `:above`/`:below` compare the matches' own values (a code system's hierarchy, a URL's path). */
const OWN_HIERARCHY_TYPES: ReadonlySet<string> = new Set(['token', 'uri', 'quantity', 'string', 'number', 'date']);

/**
 * Modifiers that make a match depend on other resources: `:above`/`:below` on a reference follow a hierarchy
 * of them (`Location?partof:below=…` matches what lies under Locations the token may not see), so they are
 * refused unless the parameter's R4 definition gives another type (an unknown parameter could be a reference);
 * HAPI FHIR's `:mdm` widens a reference to the patients MDM links to it, other patients' records.
 * Compared without case: a server may not tell `:Below` from `:below`.
 */
function crossingModifier(base: string, modifiers: readonly string[], type: string | undefined): string | undefined {
  const lowered = modifiers.map((modifier) => modifier.toLowerCase());
  if (lowered.includes('mdm')) return 'records linked by master data management';
  const hierarchy = lowered.some((modifier) => modifier === 'above' || modifier === 'below');
  if (hierarchy && !OWN_HIERARCHY_TYPES.has(searchParamType(type, base) ?? 'unknown')) return 'a hierarchy of other resources';
  return undefined;
}

/** Refuses search parameters that could reveal hidden data, unless every view is unbounded and unrestricted. */
export function searchIsSafe(views: readonly View[], params: URLSearchParams, type?: string): Refusal | undefined {
  if (views.every(isUnrestricted)) return undefined;
  for (const [name, value] of params) {
    const what = existenceTest(name, value, type);
    if (what) {
      return { status: 403, code: 'forbidden', message: `the search parameter ${name} (${what}) is not allowed with patient-bound or query-restricted scopes` };
    }
  }
  return undefined;
}

/**
 * Is `resource` inside `view`: in one of its patients' compartments (when its type has one) and matching
 * its restrictions? `context` is the resource a Binary's securityContext names, when the caller has read it.
 */
export function admits(view: View, resource: FhirResource, context?: FhirResource): boolean {
  if (typeof resource?.resourceType !== 'string') return false;
  return withinPatients(view.patients, resource, context) && matchesRestriction(view.query, resource);
}

export function admitted(views: readonly View[], resource: FhirResource, context?: FhirResource): boolean {
  return views.some((view) => admits(view, resource, context));
}

/** The resource a Binary's securityContext names ("Type/id"), if it names one. */
export function securityContextOf(resource: FhirResource): ReferenceTarget | undefined {
  if (resource.resourceType !== 'Binary') return undefined;
  const reference = (resource.securityContext as { reference?: unknown } | undefined)?.reference;
  return typeof reference === 'string' ? parseReference(reference) : undefined;
}

/** In the patients' compartments: the resource, and what it holds (nested.ts), which is as much theirs as the resource. */
function withinPatients(patients: readonly string[] | undefined, resource: FhirResource, context?: FhirResource): boolean {
  if (patients === undefined) return true;
  return ownWithinPatients(patients, resource, context) && holdsWithin(patients, resource);
}

/**
 * What a resource holds stays within the patients: each resource it carries (a Bundle entry, a Parameters part,
 * inline JSON) is in their compartments in its own right; a contained one, part of its container and so in the
 * container's compartment, names no other patient (a contained Patient could be anyone's record: never).
 */
function holdsWithin(patients: readonly string[], resource: FhirResource): boolean {
  return carriedResources(resource).every((inner) => withinPatients(patients, inner))
    && containedResources(resource).every((inner) => inner.resourceType !== 'Patient'
      && patientsOf(inner).every((id) => patients.includes(id)) && holdsWithin(patients, inner));
}

function ownWithinPatients(patients: readonly string[], resource: FhirResource, context?: FhirResource): boolean {
  // A Binary is in no compartment: FHIR R4 has its securityContext stand in for it. One without a
  // context (or whose context the caller did not read) could be anybody's, so a bounded view never sees it.
  if (resource.resourceType === 'Binary') {
    const target = securityContextOf(resource);
    if (target?.type === 'Patient') return patients.includes(target.id);
    return target !== undefined && context?.resourceType === target.type && context.id === target.id
      && context.resourceType !== 'Binary' && withinPatients(patients, context);
  }
  if (patientCompartmentParams(resource.resourceType) === undefined) return true;
  // Only the patients themselves: a Patient linking to one of them (Patient.link) is another record.
  if (resource.resourceType === 'Patient') return typeof resource.id === 'string' && patients.includes(resource.id);
  return patients.some((patient) => isInPatientCompartment(resource, patient));
}

/**
 * For a write: is every reference by which the resource belongs to a Patient compartment (every
 * compartment parameter of its type) one of the view's patients? A compartment reference the guard
 * cannot resolve (logical, conditional, contained or `urn:` references) could name anyone, so it fails.
 * An unbounded view writes anywhere; a bounded view needs at least one of its patients.
 */
export function writableWithin(view: View, resource: FhirResource): boolean {
  if (!admits(view, resource)) return false;
  const patients = view.patients;
  if (patients === undefined) return true;
  if (!Object.hasOwn(PATIENT_COMPARTMENT_PATHS, resource.resourceType)) return true; // Binary, or a type its scope names (writeScopeCounts)
  const paths = PATIENT_COMPARTMENT_PATHS[resource.resourceType];
  if (resource.resourceType === 'Patient' && !(typeof resource.id === 'string' && patients.includes(resource.id))) return false;
  return paths.every((path) => valuesAt(resource, path).every((value) => {
    if (value === null || typeof value !== 'object') return false;
    const { reference, identifier } = value as { reference?: unknown; identifier?: unknown };
    if (reference === undefined) return identifier === undefined; // display only: names no record
    const target = typeof reference === 'string' ? parseReference(reference) : undefined;
    return target !== undefined && (target.type !== 'Patient' || patients.includes(target.id));
  }));
}

function matchesRestriction(query: View['query'], resource: FhirResource): boolean {
  if (query.length === 0) return true;
  // matchesSearch ignores parameters it does not know, which would widen a restriction.
  if (query.some(([name]) => searchParamKind(name) === undefined)) return false;
  try {
    return matchesSearch(resource, query);
  } catch {
    return false; // SearchParameterError (a modifier, a bad date): a restriction we cannot evaluate admits nothing
  }
}
