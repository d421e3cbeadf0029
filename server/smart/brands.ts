// User-access Brands (SMART App Launch 2.2, brands.md): the Bundle of Organizations (brands, with their
// portals) and Endpoints that apps show as "connect to my health records" cards. Pure functions: the
// default Bundle for this server, the checks a Bundle must pass, and its primary brand's identifier.

export interface Identifier { system?: string; value?: string }
interface Extension { url: string; extension?: Extension[]; valueUrl?: string; valueString?: string; valueCode?: string; valueReference?: { reference?: string } }
interface Resource { resourceType: string; id?: string; [key: string]: unknown }
export interface BrandBundle { resourceType: 'Bundle'; type?: string; timestamp?: string; entry?: { fullUrl?: string; resource?: Resource }[] }

const PORTAL = 'http://hl7.org/fhir/StructureDefinition/organization-portal';
const FHIR_VERSION = 'http://hl7.org/fhir/StructureDefinition/endpoint-fhir-version';
const CONNECTION_TYPE = 'http://terminology.hl7.org/CodeSystem/endpoint-connection-type';

/** This server as one brand with one portal (/account/apps) and one FHIR R4 endpoint. */
export function defaultBrandBundle(o: { issuer: string; fhirBase: string; name: string; timestamp: string }): BrandBundle {
  const origin = new URL(o.issuer).origin;
  return {
    resourceType: 'Bundle',
    type: 'collection',
    timestamp: o.timestamp,
    entry: [
      {
        fullUrl: `${o.issuer}/brands/Organization/brand`,
        resource: {
          resourceType: 'Organization', id: 'brand', active: true, name: o.name,
          identifier: [{ system: 'urn:ietf:rfc:3986', value: origin }],
          telecom: [{ system: 'url', value: o.issuer }],
          type: [{ coding: [{ system: 'http://hl7.org/fhir/smart-app-launch/CodeSystem/user-access-category', code: 'clinical', display: 'Clinical' }] }],
          extension: [{
            url: PORTAL,
            extension: [
              { url: 'portalName', valueString: `${o.name} account` },
              { url: 'portalUrl', valueUrl: `${o.issuer}/account/apps` },
              { url: 'portalEndpoint', valueReference: { reference: 'Endpoint/fhir' } },
            ],
          }],
          endpoint: [{ reference: 'Endpoint/fhir' }],
        },
      },
      {
        fullUrl: `${o.issuer}/brands/Endpoint/fhir`,
        resource: {
          resourceType: 'Endpoint', id: 'fhir', status: 'active', name: `FHIR R4 endpoint of ${o.name}`, address: o.fhirBase,
          connectionType: { system: CONNECTION_TYPE, code: 'hl7-fhir-rest' },
          extension: [{ url: FHIR_VERSION, valueCode: '4.0.1' }],
          contact: [{ system: 'url', value: `${o.issuer}/apps` }],
          payloadType: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/endpoint-payload-type', code: 'none' }] }],
        },
      },
    ],
  };
}

const resources = (bundle: BrandBundle, type: string) => (bundle.entry ?? []).map((e) => e.resource).filter((r): r is Resource => r?.resourceType === type);
const portalsOf = (org: Resource) => ((org.extension as Extension[] | undefined) ?? []).filter((e) => e.url === PORTAL);
const referencedEndpoints = (org: Resource) => [
  ...portalsOf(org).flatMap((p) => (p.extension ?? []).filter((e) => e.url === 'portalEndpoint').map((e) => e.valueReference?.reference)),
  ...((org.endpoint as { reference?: string }[] | undefined) ?? []).map((r) => r.reference),
].filter((r): r is string => typeof r === 'string');

/** The brand whose endpoints include this server's FHIR base: its first identifier (SMART `user_access_brand_identifier`). */
export function primaryBrandIdentifier(bundle: BrandBundle, fhirBase: string): Identifier | undefined {
  const ours = resources(bundle, 'Endpoint').filter((e) => e.address === fhirBase).map((e) => `Endpoint/${e.id}`);
  const brands = resources(bundle, 'Organization').filter((o) => referencedEndpoints(o).some((r) => ours.includes(r)));
  return brands.length === 1 ? (brands[0].identifier as Identifier[] | undefined)?.[0] : undefined;
}

/** What keeps a Bundle from being a SMART 2.2 User Access Brands Bundle for this server; empty when it is one. */
export function brandBundleProblems(bundle: BrandBundle, fhirBase: string): string[] {
  const problems: string[] = [];
  if (bundle.resourceType !== 'Bundle' || bundle.type !== 'collection') problems.push('a Brand Bundle is a Bundle of type collection');
  if (!bundle.timestamp || Number.isNaN(Date.parse(bundle.timestamp))) problems.push('Bundle.timestamp is required (the time of the last change)');
  const orgs = resources(bundle, 'Organization');
  const endpoints = resources(bundle, 'Endpoint');
  if (!orgs.length) problems.push('the Bundle has no brand (Organization)');
  const endpointRefs = new Set(endpoints.map((e) => `Endpoint/${e.id}`));
  for (const org of orgs) {
    const at = `Organization/${org.id}`;
    if (!org.name) problems.push(`${at}: name is required`);
    if (!((org.telecom as { system?: string; value?: string }[] | undefined) ?? []).some((t) => t.system === 'url' && t.value)) problems.push(`${at}: a telecom with system url (the brand's website) is required`);
    for (const ref of referencedEndpoints(org)) if (!endpointRefs.has(ref)) problems.push(`${at}: ${ref} is not an Endpoint in the Bundle`);
  }
  for (const endpoint of endpoints) {
    const at = `Endpoint/${endpoint.id}`;
    if (typeof endpoint.address !== 'string' || !URL.canParse(endpoint.address)) problems.push(`${at}: address must be the FHIR base URL`);
    const type = endpoint.connectionType as { system?: string; code?: string } | undefined;
    if (type?.system !== CONNECTION_TYPE || type.code !== 'hl7-fhir-rest') problems.push(`${at}: connectionType must be hl7-fhir-rest`);
    if (!((endpoint.extension as Extension[] | undefined) ?? []).some((e) => e.url === FHIR_VERSION && e.valueCode)) problems.push(`${at}: the endpoint-fhir-version extension is required`);
    if (!Array.isArray(endpoint.payloadType) || !endpoint.payloadType.length) problems.push(`${at}: payloadType is required (FHIR R4)`);
    if (!orgs.some((o) => referencedEndpoints(o).includes(at))) problems.push(`${at}: no brand references it`);
  }
  if (!endpoints.some((e) => e.address === fhirBase)) problems.push(`no Endpoint has this server's FHIR base ${fhirBase} as address`);
  else if (!primaryBrandIdentifier(bundle, fhirBase)?.value) problems.push(`exactly one brand with an identifier must reference the Endpoint of ${fhirBase}`);
  return problems;
}
