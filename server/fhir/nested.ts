// Resources held inside another: its `contained` resources, a stored Bundle's entries, a Parameters'
// resource parameters and parts, and FHIR JSON inline in a Binary or a DocumentReference's attachments.
// Whoever may see the holder sees them, so rules on who sees a resource apply to them too. Pure.
import type { FhirResource } from './types.ts';

const FHIR_JSON = /^application\/(?:fhir\+json|json\+fhir)\s*(?:;|$)/i;

const list = (value: unknown): unknown[] => (Array.isArray(value) ? value : []);

const isResource = (value: unknown): value is FhirResource =>
  value !== null && typeof value === 'object' && typeof (value as { resourceType?: unknown }).resourceType === 'string';

/** A resource as FHIR JSON inline in an attachment or a Binary (`contentType` and base64 `data`); not JSON: none. */
function inline(holder: unknown): unknown {
  const { contentType, data } = (holder ?? {}) as { contentType?: unknown; data?: unknown };
  if (typeof contentType !== 'string' || !FHIR_JSON.test(contentType) || typeof data !== 'string') return undefined;
  try {
    return JSON.parse(Buffer.from(data, 'base64').toString('utf8'));
  } catch {
    return undefined;
  }
}

/** The resources in a Parameters' parameters and, at any depth, their parts. */
const parameterResources = (parameters: unknown): unknown[] =>
  list(parameters).flatMap((p) => [(p as { resource?: unknown })?.resource, ...parameterResources((p as { part?: unknown })?.part)]);

/**
 * What each type that carries resources of their own holds as such: a Bundle's entries, a Parameters'
 * resources, FHIR JSON inline. Not contained resources, which are part of their container.
 */
const CARRIERS: Readonly<Record<string, (resource: FhirResource) => unknown[]>> = {
  Bundle: (resource) => list(resource.entry).map((e) => (e as { resource?: unknown })?.resource),
  Parameters: (resource) => parameterResources(resource.parameter),
  Binary: (resource) => [inline(resource)],
  DocumentReference: (resource) => list(resource.content).map((c) => inline((c as { attachment?: unknown })?.attachment)),
};

/** Whether a resource of the type can carry others (carriedResources). */
export const mayCarry = (type: string): boolean => Object.hasOwn(CARRIERS, type);

/** What the resource carries directly as resources of their own, each of its type. */
export function carriedResources(resource: FhirResource): FhirResource[] {
  return mayCarry(resource.resourceType) ? CARRIERS[resource.resourceType](resource).filter(isResource) : [];
}

/** The resource's contained resources: part of it, not resources of their own (FHIR R4 §2.3.0.14). */
export const containedResources = (resource: FhirResource): FhirResource[] => list(resource.contained).filter(isResource);

/** What the resource holds directly: its contained resources and what it carries. */
const held = (resource: FhirResource): FhirResource[] => [...containedResources(resource), ...carriedResources(resource)];

/** Every resource held inside `resource`, at any depth (not the resource itself). */
export function nestedResources(resource: FhirResource): FhirResource[] {
  return held(resource).flatMap((inner) => [inner, ...nestedResources(inner)]);
}
