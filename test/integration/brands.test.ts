// SMART 2.2 User Access Brands: the Bundle at /brands, linked from discovery, checked against the
// brands.md rules and as FHIR R4; BRANDS_FILE replaces the default and is refused when it breaks them.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestServer, type TestServer } from '../support/server.ts';
import { brandBundleProblems, defaultBrandBundle, primaryBrandIdentifier, type BrandBundle } from '../../server/smart/brands.ts';
import { validationIssues } from '../../server/fhir/validate.ts';

const BASE = 'https://ehr.example.org/fhir';
const sample = () => defaultBrandBundle({ issuer: 'https://ehr.example.org', fhirBase: BASE, name: 'Example Hospital', timestamp: '2026-01-01T00:00:00Z' });
type Mutable = { entry: { resource: Record<string, any> }[] } & Record<string, any>;

describe('User Access Brands (SMART 2.2)', function () {
  this.timeout(30_000);
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'brands-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  describe('the default Bundle of a running server', () => {
    let server: TestServer;
    before(async () => { server = await startTestServer(); });
    after(() => server.stop());

    it('is linked from discovery, with the identifier of this server\'s brand', async () => {
      const discovery = await (await fetch(`${server.issuer}/.well-known/smart-configuration`)).json();
      assert.equal(discovery.user_access_brand_bundle, `${server.issuer}/brands`);
      assert.deepEqual(discovery.user_access_brand_identifier, { system: 'urn:ietf:rfc:3986', value: server.issuer });
      const viaFhir = await (await fetch(`${server.fhirBase}/.well-known/smart-configuration`)).json();
      assert.equal(viaFhir.user_access_brand_bundle, discovery.user_access_brand_bundle);
    });

    it('is public, with CORS and a weak ETag, and follows the SMART brand rules and FHIR R4', async () => {
      const res = await fetch(`${server.issuer}/brands`, { headers: { origin: 'https://app.example.com' } });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('access-control-allow-origin'), '*');
      assert.match(res.headers.get('content-type') ?? '', /^application\/fhir\+json/);
      const etag = res.headers.get('etag')!;
      assert.match(etag, /^W\/"/);
      const bundle = await res.json() as BrandBundle;
      assert.deepEqual(brandBundleProblems(bundle, server.fhirBase), []);
      for (const entry of bundle.entry ?? []) assert.deepEqual(validationIssues(entry.resource!), [], entry.resource!.resourceType);
      const identifier = (await (await fetch(`${server.issuer}/.well-known/smart-configuration`)).json()).user_access_brand_identifier;
      const matching = (bundle.entry ?? []).filter((e) => e.resource?.resourceType === 'Organization'
        && (e.resource.identifier as { system: string; value: string }[]).some((i) => i.system === identifier.system && i.value === identifier.value));
      assert.equal(matching.length, 1, 'exactly one Organization has the discovery identifier');
      const endpoint = bundle.entry!.find((e) => e.resource?.resourceType === 'Endpoint')!.resource!;
      assert.equal((await fetch(`${endpoint.address}/metadata`)).status, 200, 'the endpoint is reachable');

      assert.equal((await fetch(`${server.issuer}/brands`, { headers: { 'if-none-match': etag } })).status, 304);
    });
  });

  // ISSUER may differ from where the server listens: the Bundles name this issuer and its FHIR base.
  const ISSUER = 'http://localhost:1';
  const bundleFor = (name: string) => defaultBrandBundle({ issuer: ISSUER, fhirBase: `${ISSUER}/fhir`, name, timestamp: '2026-01-01T00:00:00Z' }) as unknown as Mutable;

  it('publishes BRANDS_FILE, and names the brand of this server among several', async () => {
    const bundle = bundleFor('Good Health');
    const other = structuredClone(bundle.entry);
    other[0].resource.id = 'other';
    other[0].resource.name = 'Other Clinic';
    other[0].resource.identifier = [{ system: 'urn:ietf:rfc:3986', value: 'https://other.example.org' }];
    other[0].resource.extension[0].extension[2].valueReference.reference = 'Endpoint/other-fhir';
    other[0].resource.endpoint = [{ reference: 'Endpoint/other-fhir' }];
    other[1].resource.id = 'other-fhir';
    other[1].resource.address = 'https://other.example.org/fhir';
    bundle.entry.push(...other);
    const file = join(dir, 'two-brands.json');
    writeFileSync(file, JSON.stringify(bundle));
    const server = await startTestServer({ BRANDS_FILE: file, ISSUER });
    try {
      const served = await (await fetch(`${server.issuer}/brands`)).json();
      assert.deepEqual(served, bundle);
      const discovery = await (await fetch(`${server.issuer}/.well-known/smart-configuration`)).json();
      assert.equal(discovery.user_access_brand_bundle, `${ISSUER}/brands`);
      assert.deepEqual(discovery.user_access_brand_identifier, { system: 'urn:ietf:rfc:3986', value: ISSUER });
    } finally {
      await server.stop();
    }
  });

  for (const [name, change, problem] of [
    ['not JSON', null, /cannot be read as JSON/],
    ['not a collection', (b: Mutable) => { b.type = 'searchset'; }, /Bundle of type collection/],
    ['without a timestamp', (b: Mutable) => { delete b.timestamp; }, /Bundle.timestamp is required/],
    ['an Endpoint without its FHIR version', (b: Mutable) => { b.entry[1].resource.extension = []; }, /endpoint-fhir-version extension is required/],
    ['an Endpoint that is not FHIR REST', (b: Mutable) => { b.entry[1].resource.connectionType.code = 'direct-project'; }, /connectionType must be hl7-fhir-rest/],
    ['a portal pointing at a missing Endpoint', (b: Mutable) => { b.entry[0].resource.extension[0].extension[2].valueReference.reference = 'Endpoint/gone'; }, /Endpoint\/gone is not an Endpoint in the Bundle/],
    ['a brand without a website', (b: Mutable) => { delete b.entry[0].resource.telecom; }, /telecom with system url/],
    ['no Endpoint of this server', (b: Mutable) => { b.entry[1].resource.address = 'https://elsewhere.example.org/fhir'; }, /no Endpoint has this server's FHIR base/],
    ['invalid FHIR R4', (b: Mutable) => { b.entry[0].resource.active = 'yes'; }, /Organization.active/],
  ] as const) {
    it(`refuses to start with a BRANDS_FILE: ${name}`, async () => {
      const file = join(dir, 'bad.json');
      const bundle = bundleFor('Bad');
      if (change) (change as (b: Mutable) => void)(bundle);
      writeFileSync(file, change ? JSON.stringify(bundle) : '{not json');
      await assert.rejects(startTestServer({ BRANDS_FILE: file, ISSUER }), problem);
    });
  }

  it('finds the primary brand only when exactly one brand references this server\'s endpoint', () => {
    const bundle = sample() as unknown as Mutable;
    assert.deepEqual(primaryBrandIdentifier(bundle as unknown as BrandBundle, BASE), { system: 'urn:ietf:rfc:3986', value: 'https://ehr.example.org' });
    const twin = structuredClone(bundle.entry[0]);
    twin.resource.id = 'twin';
    bundle.entry.push(twin);
    assert.equal(primaryBrandIdentifier(bundle as unknown as BrandBundle, BASE), undefined);
    assert.match(brandBundleProblems(bundle as unknown as BrandBundle, BASE).join(), /exactly one brand with an identifier/);
  });
});
