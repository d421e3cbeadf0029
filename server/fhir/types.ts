// Minimal structural FHIR R4 types used by the demo store. Resources stay
// loosely typed (`[element: string]: unknown`): the store is schema-agnostic.

export interface Coding {
  system?: string;
  version?: string;
  code?: string;
  display?: string;
}

export interface FhirMeta {
  versionId?: string;
  lastUpdated?: string;
  profile?: string[];
  security?: Coding[];
  tag?: Coding[];
  [element: string]: unknown;
}

export interface FhirResource {
  resourceType: string;
  id?: string;
  meta?: FhirMeta;
  [element: string]: unknown;
}

export interface FhirBundleEntry {
  fullUrl?: string;
  resource?: FhirResource;
  [element: string]: unknown;
}

export interface FhirBundle extends FhirResource {
  resourceType: 'Bundle';
  type?: string;
  entry?: FhirBundleEntry[];
}
