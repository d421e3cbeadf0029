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

/** What the resource holds directly. */
function held(resource: FhirResource): FhirResource[] {
  const inside: unknown[] = [...list(resource.contained)];
  switch (resource.resourceType) {
    case 'Bundle': inside.push(...list(resource.entry).map((e) => (e as { resource?: unknown })?.resource)); break;
    case 'Parameters': inside.push(...parameterResources(resource.parameter)); break;
    case 'Binary': inside.push(inline(resource)); break;
    case 'DocumentReference': inside.push(...list(resource.content).map((c) => inline((c as { attachment?: unknown })?.attachment))); break;
  }
  return inside.filter(isResource);
}

/** Every resource held inside `resource`, at any depth (not the resource itself). */
export function nestedResources(resource: FhirResource): FhirResource[] {
  return held(resource).flatMap((inner) => [inner, ...nestedResources(inner)]);
}
