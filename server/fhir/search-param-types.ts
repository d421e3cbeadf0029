// The type of every FHIR R4 search parameter (token, reference, uri, …), from search-param-types.json
// (scripts/search-param-types.ts writes it from the R4 SearchParameter definitions).
import { readFileSync } from 'node:fs';
import { ownValue } from './search.ts';

type ParamTypes = Readonly<Record<string, Readonly<Record<string, string>>>>;

const TYPES: ParamTypes = JSON.parse(readFileSync(new URL('./search-param-types.json', import.meta.url), 'utf8'));
/** Where the parameters of every resource type are defined. */
const EVERY_TYPE = ['Resource', 'DomainResource'];

/**
 * The type of the search parameter `code` of resource type `type`; undefined when R4 defines no such parameter.
 * Without a resource type (a system-level search), the type every resource type that defines it agrees on.
 */
export function searchParamType(type: string | undefined, code: string): string | undefined {
  const typeOn = (resourceType: string) => ownValue(ownValue(TYPES, resourceType) ?? {}, code);
  if (type !== undefined) return [type, ...EVERY_TYPE].map(typeOn).find((found) => found !== undefined);
  const found = new Set(Object.keys(TYPES).flatMap((resourceType) => typeOn(resourceType) ?? []));
  return found.size === 1 ? [...found][0] : undefined;
}
