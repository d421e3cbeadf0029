// The FHIR operations the guard knows, and what each does: reads (decided and filtered like a search of
// their type), or writes to the resource they are invoked on (checked as the update they amount to).
// An operation not here is refused even when a deployment lists it: the guard cannot tell what it would
// reveal or change. Pure.
import type { FhirResource, Refusal } from './types.ts';

export type OperationLevel = 'system' | 'type' | 'instance';

export interface KnownOperation {
  /** `read`: changes nothing (OperationDefinition.affectsState false), so GET may invoke it; `write`: POST only. */
  effect: 'read' | 'write';
  levels: readonly OperationLevel[];
}

const read = (...levels: OperationLevel[]): KnownOperation => ({ effect: 'read', levels });
const write = (...levels: OperationLevel[]): KnownOperation => ({ effect: 'write', levels });

/**
 * From the FHIR R4 operation definitions. Not here on purpose: `$export` (its files are served outside the
 * guard, which could not filter them), `$graphql` (mutations), `$process-message`, `$document` (persist),
 * `$closure`, `$submit`: what they write is not the resource they are invoked on.
 */
const OPERATIONS: Readonly<Record<string, KnownOperation>> = {
  everything: read('type', 'instance'),
  meta: read('type', 'instance'),
  validate: read('type', 'instance'),
  lastn: read('type'),
  stats: read('type'),
  match: read('type'),
  expand: read('type', 'instance'),
  lookup: read('type'),
  'validate-code': read('type', 'instance'),
  subsumes: read('type', 'instance'),
  translate: read('type', 'instance'),
  'meta-add': write('instance'),
  'meta-delete': write('instance'),
};

export function knownOperation(name: string): KnownOperation | undefined {
  return Object.hasOwn(OPERATIONS, name) ? OPERATIONS[name] : undefined;
}

const dollar = (name: string) => `$${name.replace(/^\$/, '')}`;

/**
 * What is wrong with a list of operations to let through (names with or without `$`): the names the guard does
 * not know, which it would refuse on every request; undefined when it knows them all.
 */
export function operationsProblem(listed: readonly string[]): string | undefined {
  const unknown = listed.filter((name) => !knownOperation(name.replace(/^\$/, '')));
  if (!unknown.length) return undefined;
  return `names operations the guard does not know: ${unknown.map(dollar).join(', ')} (it knows ${Object.keys(OPERATIONS).map(dollar).join(', ')})`;
}

type Coding = { system?: string; code?: string };
type Meta = { profile?: string[]; tag?: Coding[]; security?: Coding[] };

const sameCoding = (a: Coding, b: Coding) => a.system === b.system && a.code === b.code;
/** What `$meta-delete` may remove: a coding without a system (or code) may match any, as some servers take it. */
const mayMatch = (stored: Coding, given: Coding) =>
  (given.system === undefined || given.system === stored.system) && (given.code === undefined || given.code === stored.code);

/**
 * The resource as a writing operation leaves it: `$meta-add` adds the profiles, tags and security labels
 * of its `meta` parameter (those not there yet), `$meta-delete` removes them (at the most the server could
 * take them to name). A refusal for any other operation, or a body that is not Parameters with a `meta`.
 */
export function applyOperation(name: string, stored: FhirResource, body: unknown): FhirResource | Refusal {
  if (name !== 'meta-add' && name !== 'meta-delete') return { status: 403, code: 'forbidden', message: `the guard cannot check what $${name} writes` };
  const parameters = body as { resourceType?: unknown; parameter?: unknown } | undefined;
  const meta = parameters?.resourceType === 'Parameters' && Array.isArray(parameters.parameter)
    ? (parameters.parameter as { name?: unknown; valueMeta?: unknown }[]).find((p) => p?.name === 'meta')?.valueMeta as Meta | undefined
    : undefined;
  if (typeof meta !== 'object' || meta === null) return { status: 400, code: 'invalid', message: `$${name} needs a Parameters body with a meta parameter (valueMeta)` };
  const adding = name === 'meta-add';
  const codings = (have: unknown, given: unknown): Coding[] => {
    const current = Array.isArray(have) ? (have as Coding[]) : [];
    const named = Array.isArray(given) ? (given as Coding[]).filter((c) => typeof c === 'object' && c !== null) : [];
    return adding
      ? [...current, ...named.filter((c) => !current.some((h) => sameCoding(h, c)))]
      : current.filter((h) => !named.some((c) => mayMatch(h, c)));
  };
  const profiles = (have: unknown, given: unknown): string[] => {
    const current = Array.isArray(have) ? (have as string[]) : [];
    const named = Array.isArray(given) ? given : [];
    return adding ? [...new Set([...current, ...named.filter((p): p is string => typeof p === 'string')])] : current.filter((p) => !named.includes(p));
  };
  const before = stored.meta ?? {};
  return {
    ...stored,
    meta: { ...before, profile: profiles(before.profile, meta.profile), tag: codings(before.tag, meta.tag), security: codings(before.security, meta.security) },
  };
}
