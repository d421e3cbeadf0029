// What goes back to the client: answers filtered to the token's views, and writes checked
// against them. Hidden data is absent (404, or left out of a Bundle), never announced.
// Pure; inputs are never mutated (unchanged entries are shared with the input).
import { parseReference, referencesAt } from '../fhir/compartment.ts';
import { carriedResources, mayCarry } from '../fhir/nested.ts';
import { admits, isUnrestricted, viewsFor, writableWithin } from './decide.ts';
import type { FhirBundle, FhirBundleEntry, FhirResource, Refusal, TokenContext, View } from './types.ts';

/**
 * Matches stay when the token's search views of their type admit them; `_include`/`_revinclude`
 * targets (mode 'include') when its read views do: a hidden include is stripped (with `includes: 'refuse'`
 * the guard refused the search beforehand, unless nothing is hidden from the token). OperationOutcome entries (mode 'outcome') stay.
 */
export function filterSearchBundle(bundle: FhirBundle, token: TokenContext): FhirBundle {
  const entries = bundle.entry ?? [];
  const modeOf = (entry: FhirBundleEntry) => entry.search?.mode ?? 'match';
  const matches = new Set(entries.filter((e) => modeOf(e) === 'match' && e.resource !== undefined
    && seen(token, viewsFor(token, e.resource.resourceType, 'search-type'), e.resource)));
  const shown = new Set([...matches].flatMap(({ resource }) => (resource?.id ? [`${resource.resourceType}/${resource.id}`] : [])));
  const kept: FhirBundleEntry[] = [];
  for (const entry of entries) {
    const mode = modeOf(entry);
    if (mode === 'outcome' || matches.has(entry)) kept.push(entry);
    if (mode !== 'include') continue;
    const resource = entry.resource;
    if (resource && (seen(token, viewsFor(token, resource.resourceType, 'read'), resource) || provenanceOfShown(resource, token, shown))) {
      kept.push(entry);
    }
  }
  return rebuilt(bundle, kept, matches.size);
}

/**
 * `_revinclude=Provenance:target`: R4 puts a Provenance in a patient's compartment only when it
 * targets the Patient itself, so the Provenance of an Observation would always be stripped. It
 * describes its targets, so it is shown when every target is a match shown in this answer (and
 * the token may read Provenance, its restrictions included).
 */
function provenanceOfShown(resource: FhirResource, token: TokenContext, shown: ReadonlySet<string>): boolean {
  if (resource.resourceType !== 'Provenance' || !Array.isArray(resource.target)) return false;
  const targets = referencesAt(resource, 'target');
  return targets.length > 0 && targets.length === resource.target.length
    && targets.every((t) => shown.has(`${t.type}/${t.id}`))
    && viewsFor(token, 'Provenance', 'read').some((view) => admits({ query: view.query }, resource));
}

/**
 * The resource when the token's views for `kind` admit it; undefined ⇒ answer 404, as if it did not exist.
 * `context`: what a Binary's securityContext names, when the caller has read it (see admits).
 */
export function filterResource(
  resource: FhirResource,
  token: TokenContext,
  kind: 'read' | 'vread' | 'history-instance',
  context?: FhirResource,
): FhirResource | undefined {
  return seen(token, viewsFor(token, resource.resourceType, kind), resource, context) ? resource : undefined;
}

/**
 * A history Bundle: each version is checked on its own (an older version may have been in
 * another compartment), with the views of the history interaction made. Entries without a
 * resource (deletions) cannot be checked, so they stay only when a view of their type is
 * unbounded and unrestricted.
 */
export function filterHistoryBundle(
  bundle: FhirBundle,
  token: TokenContext,
  kind: 'history-instance' | 'history-type' | 'history-system' = 'history-instance',
): FhirBundle {
  // history-system is granted by `*` scopes; its entries are checked like type history of their own type.
  const entryKind = kind === 'history-instance' ? 'history-instance' : 'history-type';
  const kept = (bundle.entry ?? []).filter((entry) => {
    if (entry.resource) return seen(token, viewsFor(token, entry.resource.resourceType, entryKind), entry.resource);
    const type = entryType(entry);
    return type !== undefined && viewsFor(token, type, entryKind).some(isUnrestricted);
  });
  return rebuilt(bundle, kept, kept.length);
}

/** The token's views of a type. */
type ViewsOf = (type: string) => readonly View[];
const viewsOf = (token: TokenContext, ...kinds: ('read' | WriteKind)[]): ViewsOf =>
  (type) => kinds.flatMap((kind) => viewsFor(token, type, kind));

/**
 * Whether a view passes the resource by `fits`, and so, by the token's views of its own type (`viewsOf`), each
 * resource it carries as one of its own (a stored Bundle's entries, a Parameters' resources, inline JSON:
 * nested.ts): a token that may read or write Bundles, but not Conditions, reads or writes no Condition through one.
 */
function passes(viewsOf: ViewsOf, views: readonly View[], resource: FhirResource, fits: (view: View, resource: FhirResource) => boolean): boolean {
  return views.some((view) => fits(view, resource))
    && carriedResources(resource).every((inner) => passes(viewsOf, viewsOf(inner.resourceType), inner, fits));
}

const seen = (token: TokenContext, views: readonly View[], resource: FhirResource, context?: FhirResource): boolean =>
  passes(viewsOf(token, 'read'), views, resource, (view, inner) => admits(view, inner, inner === resource ? context : undefined));

function entryType(entry: FhirBundleEntry): string | undefined {
  for (const url of [entry.request?.url, entry.fullUrl]) {
    const target = typeof url === 'string' ? parseReference(url.split('?')[0]) : undefined;
    if (target) return target.type;
  }
  return undefined;
}

function rebuilt(bundle: FhirBundle, kept: FhirBundleEntry[], total: number): FhirBundle {
  const copy: FhirBundle = { ...bundle };
  if (bundle.entry !== undefined || kept.length > 0) copy.entry = kept;
  // Only recount a total the upstream sent (it counted hidden resources too).
  if (bundle.total !== undefined) copy.total = total;
  return copy;
}

export type WriteKind = 'create' | 'update' | 'patch' | 'delete';

/**
 * A write is checked against the views of its own interaction. The current version (update, patch,
 * delete) must be known to the token, else 404 as for a missing one: it and each resource it carries
 * admitted by a view of its own type for reading or for this write (a container the token may not read
 * for what it carries is not known). It and the new version (create, update, and a patch result when
 * given) must lie wholly inside a view's patients (writableWithin), else 403; so must each resource
 * either carries, by the token's views of its own type (passes): replacing or deleting a container
 * changes or deletes what it carries, as writing one stores it. An update that would create (no
 * current version) is a 404 unless the token could know every stored version at that id (`createsByUpdate`):
 * otherwise its success on a free id and its 404 on a hidden one would tell them apart.
 */
export function checkWrite(
  token: TokenContext,
  kind: WriteKind,
  resource: FhirResource | undefined,
  existing?: FhirResource,
  mayLearnHiddenIds = true,
): Refusal | undefined {
  if (kind !== 'create' && existing !== undefined) {
    const known = viewsOf(token, 'read', kind);
    if (!passes(known, known(existing.resourceType), existing, admits)) return notFound(existing);
    if (!passes(viewsOf(token, kind), viewsFor(token, existing.resourceType, kind), existing, writableWithin)) return outside(existing, kind);
  }
  if (kind === 'delete') return undefined;
  if (resource === undefined) {
    return kind === 'patch' ? undefined : { status: 400, code: 'invalid', message: `${kind} needs a resource` };
  }
  const views = viewsFor(token, resource.resourceType, kind);
  if (kind === 'update' && existing === undefined && !(mayLearnHiddenIds && createsByUpdate(token, resource.resourceType, views))) {
    return notFound(resource);
  }
  if (!passes(viewsOf(token, kind), views, resource, writableWithin)) return outside(resource, kind);
  return undefined;
}

/**
 * Whether no view hides from the token what a stored resource of the type at an id could be: a view of
 * the type unbounded and unrestricted, and for a type that carries others (which may be of any type), an
 * unrestricted read of every type (`*`).
 */
const createsByUpdate = (token: TokenContext, type: string, views: readonly View[]): boolean =>
  views.some(isUnrestricted) && (!mayCarry(type) || viewsFor(token, '*', 'read').some(isUnrestricted));

const outside = (resource: FhirResource, kind: WriteKind): Refusal => ({
  status: 403,
  code: 'forbidden',
  message: `the ${resource.resourceType} would be outside the patients and restrictions the token may ${kind}: every patient it refers to must be one of them`,
});

const notFound = (resource: FhirResource): Refusal =>
  ({ status: 404, code: 'not-found', message: `${resource.resourceType}/${resource.id ?? ''} is not known` });
