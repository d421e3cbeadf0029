// One guard, all the rules, everywhere: labels and clearance, consent, test data, de-identification,
// compartments and the audit trail, checked the same way against three upstreams — the bundled store
// (/fhir), the demo store as a separate process behind scripts/guard-proxy.ts, and Medplum's in-memory
// FHIR repository (a FHIR server written by someone else) behind the same proxy.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startTestServer, type TestServer } from '../support/server.ts';
import { authorize, exchangeCode, revokeToken, tokenRequest } from '../support/oauth.ts';
import { startDemoFhirServer, startGuardProxy, startMedplumFhirServer, type ChildServer } from '../support/processes.ts';
import { addUser } from '../../server/oidc/users.ts';
import { knownSensitivities } from '../../server/hcs/label-vocabulary.ts';
import { disclosureEvents, disclosureLines } from '../../server/audit/disclosures.ts';
import { createDbStore } from '../../server/fhir/store-db.ts';
import type { FhirResource } from '../../server/fhir/types.ts';
import { mentions } from '../support/words.ts';

const ROLE = 'http://terminology.hl7.org/CodeSystem/practitioner-role';
/** Set in every shape: two writing operations (one the guard does not know stops it at start); a paging parameter of the FHIR server behind it. */
const SETTINGS = { GUARD_OPERATIONS: 'meta-add,meta-delete', GUARD_PAGING_PARAMS: 'next_token' };
const CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';

interface Shape {
  server: TestServer;
  /** The FHIR base the app calls (and names in `aud`). */
  fhirBase: string;
  /** Stores a resource in the FHIR server behind the guard, past the guard. */
  seed(resource: FhirResource): Promise<void>;
  /** The ids of a search's matches as the FHIR server behind the guard orders them, past the guard. */
  stored(type: string, query: string): Promise<string[]>;
  /** Whether the FHIR server behind the guard stores Bundles as resources (the demo store keeps none). */
  keepsBundles?: boolean;
}

/** `patches`: whether the FHIR server behind the guard applies a JSON Patch (the demo store answers 405). */
function guardRules(label: string, start: () => Promise<Shape & { stop(): Promise<void> }>, { patches = false } = {}) {
  describe(`the guard's rules: ${label}`, () => {
    let shape: Shape & { stop(): Promise<void> };
    let app: Awaited<ReturnType<TestServer['addClient']>>;
    before(async () => {
      shape = await start();
      app = await shape.server.addClient({ auth: { kind: 'secret' } });
      await addUser(shape.server.db, { username: 'researcher', password: 'research-pass', name: 'Rita Search', fhirUser: 'Practitioner/dr-jones', attributes: { roles: [{ system: ROLE, code: 'researcher' }], purposes: ['HRESCH'], clearance: 'R', sensitivities: [] } });
    });
    after(() => shape.stop());

    const token = async (username: string, password: string, extra: { purpose?: string; scope?: string; patient?: string } = {}) => {
      const launch = await authorize({ server: shape.server, client: app, scope: extra.scope ?? 'openid fhirUser user/*.rs', username, password, aud: shape.fhirBase, ...extra });
      return (await exchangeCode(shape.server.issuer, launch, app)).body.access_token as string;
    };
    const get = (path: string, bearer: string, requestId?: string) =>
      fetch(`${shape.fhirBase}/${path}`, { headers: { authorization: `Bearer ${bearer}`, ...(requestId && { 'x-request-id': requestId }) } });
    const ids = async (res: Response) => ((await res.json()).entry ?? []).map((e: any) => `${e.resource.resourceType}/${e.resource.id}`);

    it('hides what is above the clearance or in a sensitivity not granted', async () => {
      const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT' }); // clearance N, no sensitivities
      assert.equal((await get('Observation/obs-2a-hiv-vl', jones)).status, 404, 'R + HIV');
      assert.equal((await get('Observation/obs-2a-hiv-vl/_history', jones)).status, 404, 'its history too, not an empty one');
      assert.equal((await get('Observation/obs-1a-hba1c', jones)).status, 200, 'unlabelled counts as N');
      const found = await ids(await get('Observation?patient=Patient/pat-2', jones));
      assert.ok(found.length > 0);
      assert.ok(!found.includes('Observation/obs-2a-hiv-vl'), 'filtered from searches');
      const smith = await token('dr.smith', 'demo-password-1'); // clearance R
      assert.equal((await get('Observation/obs-1-brca', smith)).status, 404, 'V is above R');
    });

    it('enforces the patient\'s Consent read from the FHIR server itself', async () => {
      const smith = await token('dr.smith', 'demo-password-1'); // cleared for SUD; pat-2's consent denies it to dr-smith
      assert.equal((await get('Condition/cond-2-oud', smith)).status, 404);
      assert.equal((await get('Observation/obs-2a-hiv-vl', smith)).status, 200, 'the rest of her record is permitted');
    });

    describe('resources that hold other resources: a container is shown only when everything inside it would be', () => {
      const HIV = { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'HIV' };
      const hivLoad = { resourceType: 'Observation', id: 'hiv-vl', status: 'final', code: { text: 'HIV viral load' }, subject: { reference: 'Patient/pat-2' }, meta: { security: [{ system: CONFIDENTIALITY, code: 'R' }, HIV] } };
      const oud = { resourceType: 'Condition', id: 'oud', code: { text: 'opioid use disorder' }, subject: { reference: 'Patient/pat-2' }, meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'SUD' }] } };
      const pat2Pain = { resourceType: 'Observation', id: 'pain', status: 'final', code: { text: 'pain' }, subject: { reference: 'Patient/pat-2' } };
      const inParameters = (id: string, resource: object) => ({ resourceType: 'Parameters', id, parameter: [{ name: 'result', part: [{ name: 'item', resource }] }] });
      const send = (method: string, path: string, bearer: string, body: unknown) => fetch(`${shape.fhirBase}/${path}`, {
        method, headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/fhir+json' }, body: JSON.stringify(body),
      });
      before(async () => {
        await shape.seed(inParameters('params-hiv', hivLoad));
        await shape.seed(inParameters('params-oud', oud));
        await shape.seed(inParameters('params-plain', { ...pat2Pain, subject: { reference: 'Patient/pat-1' } }));
        const inline = (resource: object) => ({ contentType: 'application/fhir+json', data: Buffer.from(JSON.stringify(resource)).toString('base64') });
        await shape.seed({ resourceType: 'DocumentReference', id: 'doc-inline-hiv', status: 'current', subject: { reference: 'Patient/pat-2' }, content: [{ attachment: inline(hivLoad) }] });
        await shape.seed({ resourceType: 'Binary', id: 'bin-inline-hiv', securityContext: { reference: 'Patient/pat-2' }, ...inline(hivLoad) });
        // pat-1's Observation that contains pat-2's; a Medication (in no compartment) that contains pat-2's, ordered for pat-1.
        await shape.seed({ resourceType: 'Observation', id: 'obs-1-holds-2', status: 'final', code: { text: 'panel' }, subject: { reference: 'Patient/pat-1' }, contained: [pat2Pain], hasMember: [{ reference: '#pain' }] });
        await shape.seed({ resourceType: 'Medication', id: 'med-holds-2', code: { text: 'compounded' }, contained: [pat2Pain] });
        await shape.seed({ resourceType: 'MedicationRequest', id: 'mr-1-holds-2', status: 'active', intent: 'order', subject: { reference: 'Patient/pat-1' }, medicationReference: { reference: 'Medication/med-holds-2' } });
      });

      it('hides a container holding labels above the clearance, by read and by search', async () => {
        const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT' }); // clearance N, no sensitivities
        assert.equal((await get('Parameters/params-hiv', jones)).status, 404, 'an unlabelled Parameters holding R + HIV');
        assert.equal((await get('Parameters/params-plain', jones)).status, 200, 'one holding nothing hidden is shown');
        assert.equal((await get('DocumentReference/doc-inline-hiv', jones)).status, 404, 'a DocumentReference with it inline as FHIR JSON');
        assert.equal((await get('Binary/bin-inline-hiv', jones)).status, 404, 'a Binary that is it as FHIR JSON');
        const found = await ids(await get('Parameters?_id=params-hiv,params-plain', jones));
        assert.deepEqual(found, ['Parameters/params-plain'], 'and searches leave it out');
        const smith = await token('dr.smith', 'demo-password-1'); // cleared for R and HIV
        assert.equal((await get('Parameters/params-hiv', smith)).status, 200, 'a token cleared for what it holds sees it');
      });

      it('shows the resources a Parameters or a Bundle carries only to a token whose scopes read their types', async () => {
        const parametersOnly = await token('dr.smith', 'demo-password-1', { scope: 'launch/patient openid patient/Parameters.rs', patient: 'pat-1' });
        assert.equal((await get('Parameters/params-plain', parametersOnly)).status, 404, 'it holds an Observation, which the token may not read');
        assert.deepEqual(await ids(await get('Parameters?_id=params-plain', parametersOnly)), []);
        const withObservations = await token('dr.smith', 'demo-password-1', { scope: 'launch/patient openid patient/Parameters.rs patient/Observation.rs', patient: 'pat-1' });
        assert.equal((await get('Parameters/params-plain', withObservations)).status, 200);
      });

      it('applies the patient\'s Consent to what a container holds', async () => {
        const smith = await token('dr.smith', 'demo-password-1'); // pat-2's consent denies SUD to dr-smith
        assert.equal((await get('Parameters/params-oud', smith)).status, 404);
      });

      it('de-identifies the resources a Parameters holds as resources of their own: no real id', async () => {
        const research = await token('researcher', 'research-pass');
        const found = await get('Parameters', research);
        assert.equal(found.status, 200);
        const text = await found.text();
        assert.ok(JSON.parse(text).entry.length > 0, 'params-plain is shown');
        for (const real of ['"pain"', 'pat-1']) assert.ok(!text.includes(real), real);
      });

      it('hides a resource that contains another patient\'s data from a token bound to one patient: read, search and _include', async () => {
        const patient = await token('dr.smith', 'demo-password-1', { scope: 'launch/patient openid patient/*.rs', patient: 'pat-1' });
        assert.equal((await get('Observation/obs-1-holds-2', patient)).status, 404, 'pat-1\'s Observation containing pat-2\'s');
        assert.ok(!(await ids(await get('Observation?patient=Patient/pat-1', patient))).includes('Observation/obs-1-holds-2'));
        assert.equal((await get('Medication/med-holds-2', patient)).status, 404, 'a Medication containing pat-2\'s Observation');
        assert.equal((await get('Parameters/params-hiv', patient)).status, 404, 'a Parameters is in no compartment: it is only as visible as what it holds');
        assert.equal((await get('Parameters/params-plain', patient)).status, 200, 'which here is pat-1\'s');
        const included = await ids(await get('MedicationRequest?_id=mr-1-holds-2&_include=MedicationRequest:medication', patient));
        assert.deepEqual(included, ['MedicationRequest/mr-1-holds-2'], 'the included Medication is stripped');
      });

      it('shows a resource whose contained resources name no other patient to a token bound to its patient', async () => {
        // Contained resources are part of their container (FHIR R4 §2.3.0.14): one naming no patient is in the container's compartment.
        await shape.seed({
          resourceType: 'DiagnosticReport', id: 'dr-1-contained', status: 'final', code: { text: 'panel' }, subject: { reference: 'Patient/pat-1' },
          contained: [{ resourceType: 'Observation', id: 'o1', status: 'final', code: { text: 'sodium' } }], result: [{ reference: '#o1' }],
        });
        await shape.seed({
          resourceType: 'MedicationRequest', id: 'mr-1-contained', status: 'active', intent: 'order', subject: { reference: 'Patient/pat-1' },
          contained: [{ resourceType: 'Medication', id: 'm1', code: { text: 'amoxicillin' } }], medicationReference: { reference: '#m1' },
        });
        const patient = await token('dr.smith', 'demo-password-1', { scope: 'launch/patient openid patient/*.rs', patient: 'pat-1' });
        assert.equal((await get('DiagnosticReport/dr-1-contained', patient)).status, 200, 'a contained Observation without a subject');
        assert.equal((await get('MedicationRequest/mr-1-contained', patient)).status, 200, 'a contained Medication');
      });

      it('lets no change put what the writer may not read into a container', async () => {
        const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT', scope: 'openid fhirUser user/*.cruds' });
        const holder = { resourceType: 'Observation', id: 'obs-2-holder', status: 'final', code: { text: 'panel' }, subject: { reference: 'Patient/pat-2' } };
        await shape.seed(holder);
        const updated = await send('PUT', 'Observation/obs-2-holder', jones, { ...holder, contained: [hivLoad], hasMember: [{ reference: '#hiv-vl' }] });
        assert.equal(updated.status, 403, 'an update that contains R + HIV');
        assert.match((await updated.json()).issue[0].diagnostics, /labels the token may not read/);
        const unchanged = await get('Observation/obs-2-holder', jones);
        assert.equal(unchanged.status, 200, 'nothing was written');
        assert.equal((await unchanged.json()).contained, undefined);
      });

      it('labels a new container with the high-water mark of what it holds', async () => {
        const smith = await token('dr.smith', 'demo-password-1', { scope: 'openid fhirUser user/*.cruds' }); // cleared for R and HIV
        const created = await send('POST', 'Parameters', smith, { ...inParameters('unused', hivLoad), id: undefined });
        assert.equal(created.status, 201);
        const stored = await get(`Parameters/${(await created.json()).id}`, smith);
        assert.deepEqual((await stored.json()).meta.security.filter((c: any) => c.system === CONFIDENTIALITY).map((c: any) => c.code), ['R']);
      });

      it('lets a write store inside a container only what the token may write: each carried resource\'s type and patients', async () => {
        const writer = (scope: string) => token('dr.smith', 'demo-password-1', { scope: `launch/patient openid ${scope}`, patient: 'pat-1' });
        const pat1Pain = { ...pat2Pain, id: undefined, subject: { reference: 'Patient/pat-1' } };
        const parametersOnly = await writer('patient/Parameters.crus');
        const carrying = { ...inParameters('unused', pat1Pain), id: undefined };
        assert.equal((await send('POST', 'Parameters', parametersOnly, carrying)).status, 403, 'a Parameters carrying an Observation, which the token may not create');
        const batch = await send('POST', '', parametersOnly, { resourceType: 'Bundle', type: 'batch', entry: [{ resource: carrying, request: { method: 'POST', url: 'Parameters' } }] });
        assert.deepEqual(((await batch.json()).entry ?? []).map((e: any) => e.response.status), ['403'], 'and as a batch entry');
        const inline = { contentType: 'application/fhir+json', data: Buffer.from(JSON.stringify(pat1Pain)).toString('base64') };
        const document = { resourceType: 'DocumentReference', status: 'current', subject: { reference: 'Patient/pat-1' }, content: [{ attachment: inline }] };
        assert.equal((await send('POST', 'DocumentReference', await writer('patient/DocumentReference.crus'), document)).status, 403, 'an Observation inline in a DocumentReference');
        if (shape.keepsBundles) {
          const collection = { resourceType: 'Bundle', type: 'collection', entry: [{ fullUrl: 'urn:uuid:9d1f8a52-54b5-4e0a-9c7e-2b1d1c0e1a03', resource: pat1Pain }] };
          assert.equal((await send('POST', 'Bundle', await writer('patient/Bundle.crus'), collection)).status, 403, 'an Observation in a stored Bundle');
        }
        const both = await writer('patient/Parameters.crus patient/Observation.crus');
        assert.equal((await send('POST', 'Parameters', both, carrying)).status, 201, 'a token that may create Observations may carry one');
        const naming2 = { ...inParameters('unused', { ...pat1Pain, performer: [{ reference: 'Patient/pat-2' }] }), id: undefined };
        assert.equal((await send('POST', 'Parameters', both, naming2)).status, 403, 'one that also names pat-2 is not written within pat-1');
        const containing2 = { ...pat1Pain, contained: [pat2Pain], hasMember: [{ reference: '#pain' }] };
        assert.equal((await send('POST', 'Observation', both, containing2)).status, 403, 'a contained resource naming pat-2');
      });

      it('lets a change or a deletion of a stored container only to a token that may write what it carries', async () => {
        const writer = (scope: string) => token('dr.smith', 'demo-password-1', { scope: `launch/patient openid ${scope}`, patient: 'pat-1' });
        const pat1Pain = { ...pat2Pain, subject: { reference: 'Patient/pat-1' } };
        const inline = { contentType: 'application/fhir+json', data: Buffer.from(JSON.stringify(pat1Pain)).toString('base64') };
        const containers: FhirResource[] = [
          inParameters('params-1-stored', pat1Pain),
          { resourceType: 'DocumentReference', id: 'doc-1-stored', status: 'current', subject: { reference: 'Patient/pat-1' }, content: [{ attachment: inline }] },
          // Readable by a token bound to pat-1 (it is in pat-1's compartment), but not written within pat-1 alone.
          inParameters('params-1-names-2', { ...pat1Pain, performer: [{ reference: 'Patient/pat-2' }] }),
          ...(shape.keepsBundles ? [{ resourceType: 'Bundle', id: 'bundle-1-stored', type: 'collection', entry: [{ fullUrl: 'urn:uuid:9d1f8a52-54b5-4e0a-9c7e-2b1d1c0e1a04', resource: pat1Pain }] }] : []),
        ];
        for (const container of containers) await shape.seed(container);
        const emptied = (container: FhirResource) => (container.resourceType === 'Parameters' ? { resourceType: 'Parameters', id: container.id, parameter: [] }
          : container.resourceType === 'Bundle' ? { resourceType: 'Bundle', id: container.id, type: 'collection' }
            : { ...container, content: [{ attachment: { contentType: 'text/plain', data: Buffer.from('gone').toString('base64') } }] });
        for (const container of containers) {
          const path = `${container.resourceType}/${container.id}`;
          const names2 = container.id === 'params-1-names-2';
          const bearer = await writer(`patient/${container.resourceType}.cruds patient/Observation.${names2 ? 'cruds' : 'rs'}`);
          const version = async () => {
            const res = await get(path, bearer);
            assert.equal(res.status, 200, `${path}: the token may read it and what it carries`);
            return (await res.json()).meta?.versionId;
          };
          const before = await version();
          const why = names2 ? 'it carries an Observation naming pat-2' : 'it carries an Observation, which the token may not write';
          assert.equal((await send('PUT', path, bearer, emptied(container))).status, 403, `${path}: overwritten, though ${why}`);
          assert.equal((await send('DELETE', path, bearer, undefined)).status, 403, `${path}: deleted, though ${why}`);
          const batch = await send('POST', '', bearer, { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'DELETE', url: path } }] });
          assert.deepEqual(((await batch.json()).entry ?? []).map((e: any) => e.response.status), ['403'], `${path}: deleted by a batch entry`);
          const transaction = await send('POST', '', bearer, { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: emptied(container), request: { method: 'PUT', url: path } }] });
          assert.equal(transaction.status, 403, `${path}: overwritten by a transaction entry`);
          const tagged = { resourceType: 'Parameters', parameter: [{ name: 'meta', valueMeta: { tag: [{ system: 'http://example.org/tags', code: 'reviewed' }] } }] };
          assert.equal((await send('POST', `${path}/$meta-add`, bearer, tagged)).status, 403, `${path}: changed by $meta-add`);
          assert.equal(await version(), before, `${path}: nothing was written`);
        }
        const may = await writer('patient/Parameters.cruds patient/Observation.cruds');
        const emptying = await send('PUT', 'Parameters/params-1-stored', may, emptied(containers[0]));
        assert.equal(emptying.status, 200, `a token that may write what it carries changes it: ${await emptying.text()}`);
      });

      it('answers a write to a stored container the token may not see for what it carries exactly as one to a free id: 404, nothing written', async () => {
        const pat1Pain = { ...pat2Pain, subject: { reference: 'Patient/pat-1' } };
        const containers: FhirResource[] = [
          inParameters('params-1-unseen', pat1Pain),
          ...(shape.keepsBundles ? [{ resourceType: 'Bundle', id: 'bundle-1-unseen', type: 'collection', entry: [{ fullUrl: 'urn:uuid:9d1f8a52-54b5-4e0a-9c7e-2b1d1c0e1a05', resource: pat1Pain }] }] : []),
        ];
        for (const container of containers) await shape.seed(container);
        const emptied = (type: string, id: string) => (type === 'Parameters' ? { resourceType: type, id, parameter: [] } : { resourceType: type, id, type: 'collection' });
        const tagged = { resourceType: 'Parameters', parameter: [{ name: 'meta', valueMeta: { tag: [{ system: 'http://example.org/tags', code: 'reviewed' }] } }] };
        const requests = (type: string, id: string) => {
          const path = `${type}/${id}`;
          const bundle = (kind: string, entry: object) => ['POST', '', { resourceType: 'Bundle', type: kind, entry: [entry] }] as const;
          return {
            update: ['PUT', path, emptied(type, id)] as const,
            delete: ['DELETE', path, undefined] as const,
            metaAdd: ['POST', `${path}/$meta-add`, tagged] as const,
            batchUpdate: bundle('batch', { resource: emptied(type, id), request: { method: 'PUT', url: path } }),
            batchDelete: bundle('batch', { request: { method: 'DELETE', url: path } }),
            transactionUpdate: bundle('transaction', { resource: emptied(type, id), request: { method: 'PUT', url: path } }),
          };
        };
        const told = async (method: string, path: string, bearer: string, body: unknown, id: string, headers: Record<string, string> = {}) => {
          const res = await fetch(`${shape.fhirBase}/${path}`, {
            method, headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/fhir+json', ...headers }, ...(body !== undefined && { body: JSON.stringify(body) }),
          });
          return { status: res.status, body: (await res.text()).replaceAll(id, '<id>') };
        };
        const writer = (scope: string) => token('dr.smith', 'demo-password-1', { scope: `launch/patient openid ${scope}`, patient: 'pat-1' });
        const reader = await writer('patient/*.rs');
        for (const container of containers) {
          const type = container.resourceType;
          const free = `${type === 'Bundle' ? 'bundle' : 'params'}-1-free`;
          const version = async () => (await (await get(`${type}/${container.id}`, reader)).json()).meta?.versionId;
          const before = await version();
          // No scope for Observations at all; one restricted to laboratory results (the carried Observation has no category).
          for (const scope of [`patient/${type}.cruds`, `patient/${type}.cruds patient/Observation.cruds?category=laboratory`]) {
            const bearer = await writer(scope);
            assert.equal((await get(`${type}/${container.id}`, bearer)).status, 404, `${type}: ${scope} may not read it`);
            const hidden = requests(type, container.id!);
            const missing = requests(type, free);
            for (const [name, [method, path, body]] of Object.entries(hidden)) {
              const [, freePath, freeBody] = missing[name as keyof typeof missing];
              const answer = await told(method, path, bearer, body, container.id!);
              assert.deepEqual(answer, await told(method, freePath, bearer, freeBody, free), `${type} ${name} (${scope}): as for a free id`);
            }
            for (const condition of [{ 'if-match': 'W/"1"' }, { 'if-match': 'W/"999"' }]) {
              const answer = await told('PUT', `${type}/${container.id}`, bearer, emptied(type, container.id!), container.id!, condition);
              assert.equal(answer.status, 404, `${type} (${scope}) with ${condition['if-match']}: ${answer.body}`);
              assert.deepEqual(answer, await told('PUT', `${type}/${free}`, bearer, emptied(type, free), free, condition), `${type} (${scope}) with If-Match: as for a free id`);
            }
            assert.equal((await told('DELETE', `${type}/${container.id}`, bearer, undefined, container.id!)).status, 404, `${type} (${scope}): deleted`);
          }
          assert.equal(await version(), before, `${type}: nothing was written`);
          assert.equal((await get(`${type}/${free}`, reader)).status, 404, `${type}: nothing was created`);
        }
      });

      it('refuses with 403, not 404, a write to a stored resource the token may read but not write', async () => {
        await shape.seed({ ...pat2Pain, id: 'pain-1-readable', subject: { reference: 'Patient/pat-1' } });
        const bearer = await token('dr.smith', 'demo-password-1', { scope: 'launch/patient openid patient/Observation.rs patient/Observation.ud?category=laboratory', patient: 'pat-1' });
        assert.equal((await get('Observation/pain-1-readable', bearer)).status, 200, 'it may read it');
        const body = { ...pat2Pain, id: 'pain-1-readable', subject: { reference: 'Patient/pat-1' }, category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] }] };
        assert.equal((await send('PUT', 'Observation/pain-1-readable', bearer, body)).status, 403, 'updated into its laboratory results');
        assert.equal((await send('DELETE', 'Observation/pain-1-readable', bearer, undefined)).status, 403, 'deleted');
        assert.equal((await get('Observation/pain-1-readable', bearer)).status, 200, 'nothing was deleted');
      });

      it('creates a container by update only for a writer from whom no view can hide what a stored one carries', async () => {
        await shape.seed(inParameters('params-vitals', { ...pat2Pain, id: 'bp', code: { text: 'blood pressure' } }));
        await addUser(shape.server.db, { username: 'privacy.carrier', password: 'privacy-carrier-pass', name: 'Cary Office', attributes: { purposes: ['HOPERAT'], privacyOfficer: true, clearance: 'V', sensitivities: knownSensitivities() } });
        const office = (scope: string) => token('privacy.carrier', 'privacy-carrier-pass', { purpose: 'HOPERAT', scope: `openid ${scope}` });
        const put = async (id: string, bearer: string) => {
          const res = await send('PUT', `Parameters/${id}`, bearer, { resourceType: 'Parameters', id, parameter: [] });
          return { status: res.status, body: (await res.text()).replaceAll(id, '<id>') };
        };
        // Every label cleared, but Observations only of the laboratory: the one params-vitals carries is not.
        const labOnly = await office('user/Parameters.cruds user/Observation.rs?category=laboratory');
        assert.equal((await get('Parameters/params-vitals', labOnly)).status, 404, 'it may not read the stored one');
        const hidden = await put('params-vitals', labOnly);
        assert.equal(hidden.status, 404, hidden.body);
        assert.deepEqual(await put('params-put-free', labOnly), hidden, 'a free id is answered as the hidden one');
        const patch = [{ op: 'add', path: '/parameter/-', value: { name: 'note', valueString: 'x' } }];
        for (const [method, body, type] of [['DELETE', undefined, undefined], ['PATCH', patch, 'application/json-patch+json']] as const) {
          const told = async (id: string) => {
            const res = await fetch(`${shape.fhirBase}/Parameters/${id}`, { method, headers: { authorization: `Bearer ${labOnly}`, ...(type && { 'content-type': type }) }, ...(body && { body: JSON.stringify(body) }) });
            return { status: res.status, body: (await res.text()).replaceAll(id, '<id>') };
          };
          assert.deepEqual(await told('params-vitals'), await told('params-put-free'), `${method}: as for a free id`);
        }
        const seesAll = await office('user/*.rs user/Parameters.cruds');
        assert.ok((await put('params-put-free', seesAll)).status < 300, 'a writer who reads every type unrestricted creates by update');
      });

      it('hides an older version of a container that held what the token may not read, by vread and in its history', async function () {
        await shape.seed(inParameters('params-versions', hivLoad));
        await shape.seed(inParameters('params-versions', pat2Pain));
        const smith = await token('dr.smith', 'demo-password-1'); // cleared for R and HIV
        const versions = (await (await get('Parameters/params-versions/_history', smith)).json()).entry.map((e: any) => e.resource);
        if (versions.length < 2) this.skip(); // the demo store keeps the current version only
        const holding = versions.find((v: any) => JSON.stringify(v).includes('hiv-vl')).meta.versionId;
        const plain = versions.find((v: any) => !JSON.stringify(v).includes('hiv-vl')).meta.versionId;
        assert.equal((await get(`Parameters/params-versions/_history/${holding}`, smith)).status, 200);
        const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT' }); // clearance N, no sensitivities
        assert.equal((await get('Parameters/params-versions', jones)).status, 200, 'the current version holds nothing hidden');
        assert.equal((await get(`Parameters/params-versions/_history/${plain}`, jones)).status, 200);
        assert.equal((await get(`Parameters/params-versions/_history/${holding}`, jones)).status, 404, 'the version that held R + HIV');
        const history = (await (await get('Parameters/params-versions/_history', jones)).json()).entry.map((e: any) => e.resource.meta.versionId);
        assert.deepEqual(history, [plain], 'left out of the history');
      });

      it('hides a stored document Bundle holding an entry the token may not read', async function () {
        if (!shape.keepsBundles) this.skip(); // the demo store keeps no Bundles
        await shape.seed({ resourceType: 'Bundle', id: 'doc-hiv', type: 'collection', entry: [{ fullUrl: 'urn:uuid:9d1f8a52-54b5-4e0a-9c7e-2b1d1c0e1a01', resource: hivLoad }] });
        await shape.seed({ resourceType: 'Bundle', id: 'doc-plain', type: 'collection', entry: [{ fullUrl: 'urn:uuid:9d1f8a52-54b5-4e0a-9c7e-2b1d1c0e1a02', resource: pat2Pain }] });
        const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT' });
        assert.equal((await get('Bundle/doc-hiv', jones)).status, 404, 'an unlabelled Bundle with an R + HIV entry');
        assert.equal((await get('Bundle/doc-plain', jones)).status, 200);
        assert.deepEqual(await ids(await get('Bundle?_id=doc-hiv,doc-plain', jones)), ['Bundle/doc-plain']);
      });
    });

    it('shows test data only to test tokens', async () => {
      const smith = await token('dr.smith', 'demo-password-1');
      assert.equal((await get('Patient/pat-4', smith)).status, 404);
      assert.ok(!(await ids(await get('Patient', smith))).includes('Patient/pat-4'));
    });

    it('de-identifies answers for a research purpose', async () => {
      const research = await token('researcher', 'research-pass');
      assert.equal((await get('Patient/pat-1', research)).status, 404, 'never by a real id');
      const found = await get('Patient', research);
      assert.equal(found.status, 200);
      const text = await found.text();
      for (const secret of ['Shaw', 'Amy', 'MRN-10001', 'pat-1']) assert.ok(!mentions(text, secret), secret);
      const pseudonyms: string[] = (JSON.parse(text).entry ?? []).map((e: any) => e.resource.id);
      assert.ok(pseudonyms.length > 0);
      const byPseudonym = await get(`Patient/${pseudonyms[0]}`, research);
      assert.equal(byPseudonym.status, 200, 'by its pseudonym');
      assert.equal(byPseudonym.headers.get('last-modified'), null, 'nor the real date of its last change');
      const { meta } = await byPseudonym.json();
      const since = new Date(Date.now() + 60_000).toUTCString();
      assert.equal((await fetch(`${shape.fhirBase}/Patient/${pseudonyms[0]}`, { headers: { authorization: `Bearer ${research}`, 'if-modified-since': since } })).status, 200, 'which If-Modified-Since must not probe');
      assert.equal((await fetch(`${shape.fhirBase}/Patient/${pseudonyms[0]}`, { headers: { authorization: `Bearer ${research}`, 'if-none-match': `W/"${meta.versionId}"` } })).status, 304, 'the version is no secret');
    });

    it('lets a de-identified search compare dates only to the year the answers show', async () => {
      const research = await token('researcher', 'research-pass');
      for (const query of ['Encounter?date=2025-09-15', 'Encounter?date=ge2025-09-15&date=le2025-09-15', 'Encounter?date=ap2025', 'Observation?date=ge2025-09',
        'Condition?onset-date=2023-04-11', 'Condition?recorded-date=le2025-09-15', 'Patient?death-date=2019-03-04', 'Patient?birthdate=ap1987',
        'Patient?_lastUpdated=ge2026-01-15T10:00:00Z', 'Encounter?date:missing=false', 'Patient/_history?_since=2026-01-15T10:00:00Z', '_history?_at=2026-01-15T10:00:00Z']) {
        const res = await get(query, research);
        assert.equal(res.status, 403, query);
        const outcome = await res.json();
        assert.equal(outcome.resourceType, 'OperationOutcome', query);
        assert.match(outcome.issue[0].diagnostics, /de-identified/, query);
      }
      for (const query of ['Encounter?date=2025', 'Encounter?date=ge2025&date=lt2026', 'Condition?onset-date=2023', 'Condition?recorded-date=2025',
        'Patient?birthdate=1987', 'Patient?death-date=2019', 'Patient?_lastUpdated=ge2000']) {
        assert.equal((await get(query, research)).status, 200, query);
      }
      assert.ok((await ids(await get('Encounter?date=2025', research))).length > 0, 'a year finds the encounters of that year');
    });

    it('pages with opaque links that tell nothing of what the rules hide, each for its own token and search', async () => {
      const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT' }); // obs-2a-hiv-vl (R + HIV) is hidden from him
      const link = (bundle: any, relation: string) => bundle.link?.find((l: any) => l.relation === relation)?.url as string | undefined;
      const opaque = new RegExp(`^${shape.fhirBase.replace(/[.?]/g, '\\$&')}/Observation\\?_page=[\\w.-]+$`);
      const pages: any[] = [];
      for (let url: string | undefined = `${shape.fhirBase}/Observation?patient=Patient/pat-2&_count=1`; url; url = link(pages.at(-1), 'next')) {
        const res: Response = await fetch(url, { headers: { authorization: `Bearer ${jones}` } });
        assert.equal(res.status, 200, url);
        pages.push(await res.json());
      }
      const seen = pages.flatMap((p) => (p.entry ?? []).map((e: any) => `${e.resource.resourceType}/${e.resource.id}`));
      const refused = async (url: string, bearer: string, why: RegExp) => {
        const res = await fetch(url, { headers: { authorization: `Bearer ${bearer}` } });
        assert.equal(res.status, 400, url);
        const outcome = await res.json();
        assert.equal(outcome.resourceType, 'OperationOutcome');
        assert.match(outcome.issue[0].diagnostics, why);
      };
      // HAPI's, Medplum's, Azure's, Google's, others', and the one GUARD_PAGING_PARAMS names; in a history too.
      for (const raw of ['_getpagesoffset=1', '_offset=1', '_getpages=x', '_cursor=x', 'ct=x', '_page_token=x', '_pageToken=x', 'page=2', '_skip=1', '_start=1', 'next_token=x']) {
        await refused(`${shape.fhirBase}/Observation?patient=Patient/pat-2&_count=1&${raw}`, jones, /follow the Bundle's paging links/);
      }
      await refused(`${shape.fhirBase}/Observation/_history?_skip=1`, jones, /follow the Bundle's paging links/);
      await refused(`${shape.fhirBase}/Observation?patient=Patient/pat-2&_page=2`, jones, /alone/);
      await refused(`${shape.fhirBase}/Observation?_page=2`, jones, /not valid/);
      assert.ok(pages.length > 2, 'following next works, page after page');
      assert.ok(!seen.includes('Observation/obs-2a-hiv-vl'), 'the hidden one never shows');
      assert.equal(new Set(seen).size, seen.length, 'nor anything twice');
      for (const page of pages) {
        for (const { relation, url } of page.link) {
          assert.match(url, opaque, 'no offset, no upstream query: a sealed page');
          assert.ok(!['previous', 'prev', 'last'].includes(relation), `${relation} would count hidden matches`);
        }
      }
      const self = await (await fetch(link(pages[1], 'self')!, { headers: { authorization: `Bearer ${jones}` } })).json();
      assert.deepEqual(self.entry.map((e: any) => e.resource.id), pages[1].entry.map((e: any) => e.resource.id), 'self is the same page again');

      const next = link(pages[0], 'next')!;
      const [at, sealed] = next.split('_page=');
      const parts = sealed.split('.');
      parts[3] = (parts[3][0] === 'A' ? 'B' : 'A') + parts[3].slice(1);
      const smith = await token('dr.smith', 'demo-password-1');
      await refused(`${at}_page=${parts.join('.')}`, jones, /not valid/);
      await refused(next, smith, /another access token/);
      await refused(next.replace('/Observation?', '/Condition?'), jones, /another search/);
      await refused(`${next}&_count=50`, jones, /alone/);
    });

    it('refuses a token without scope for the type the same 403 whatever paging parameters it sends (one with it gets their 400)', async () => {
      const patientsOnly = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT', scope: 'openid fhirUser user/Patient.rs' });
      for (const path of ['Observation', 'Observation/_history']) {
        const plain = await get(`${path}?patient=Patient/pat-2`, patientsOnly);
        assert.equal(plain.status, 403, path);
        const refusal = { body: await plain.json(), challenge: plain.headers.get('www-authenticate') };
        assert.match(refusal.challenge ?? '', /insufficient_scope/);
        for (const paging of ['_getpagesoffset=1', '_getpages=x', '_offset=1', '_cursor=x', '_page=forged']) {
          for (const query of [paging, `patient=Patient/pat-2&${paging}`]) {
            const res = await get(`${path}?${query}`, patientsOnly);
            assert.equal(res.status, 403, `${path}?${query}`);
            assert.deepEqual({ body: await res.json(), challenge: res.headers.get('www-authenticate') }, refusal, `${path}?${query}: the same refusal`);
          }
        }
      }
    });

    it('fills every page but the last to _count when the rules hide matches, and next resumes right after the last shown', async () => {
      const restricted = { security: [{ system: CONFIDENTIALITY, code: 'R' }] };
      const observation = (id: string, hidden: boolean, encounter = 'enc-2b'): FhirResource => ({
        resourceType: 'Observation', id, status: 'final', code: { text: id }, subject: { reference: 'Patient/pat-2' },
        encounter: { reference: `Encounter/${encounter}` }, ...(hidden && { meta: restricted }),
      });
      // Hidden matches between visible ones, in id order (the demo store's) and in the order stored (Medplum's);
      // one refers to an encounter that no visible match refers to.
      await shape.seed({ resourceType: 'Encounter', id: 'enc-2z', status: 'finished', class: { code: 'AMB' }, subject: { reference: 'Patient/pat-2' } });
      for (const [id, hidden] of [['obs-2a-c-hidden', true], ['obs-2a-d-shown', false], ['obs-2b-a-hidden', true], ['obs-2b-c-hidden', true], ['obs-2b-q-shown', false], ['obs-2c-hidden', true]] as const) {
        await shape.seed(observation(id, hidden, id === 'obs-2b-c-hidden' ? 'enc-2z' : 'enc-2b'));
      }
      const hidden = ['obs-2a-hiv-vl', 'obs-2a-c-hidden', 'obs-2b-a-hidden', 'obs-2b-c-hidden', 'obs-2c-hidden'];
      const visible = (await shape.stored('Observation', 'patient=Patient/pat-2')).filter((id) => !hidden.includes(id));
      const jones = await token('dr.jones', 'demo-password-2', { scope: 'launch/patient openid patient/*.rs', patient: 'pat-2', purpose: 'TREAT' });
      const pages: any[] = [];
      for (let url: string | undefined = `${shape.fhirBase}/Observation?_count=2&_include=Observation:encounter`; url;) {
        const res: Response = await fetch(url, { headers: { authorization: `Bearer ${jones}` } });
        assert.equal(res.status, 200, url);
        pages.push(await res.json());
        url = pages.at(-1).link?.find((l: any) => l.relation === 'next')?.url;
      }
      const matches = (page: any) => (page.entry ?? []).filter((e: any) => e.search?.mode !== 'include').map((e: any) => e.resource.id);
      assert.deepEqual(pages.flatMap(matches), visible, 'every visible match once, in the FHIR server\'s order, none hidden');
      for (const page of pages.slice(0, -1)) assert.equal(matches(page).length, 2, `every page but the last holds _count matches: ${JSON.stringify(pages.map(matches))}`);
      for (const page of pages) {
        const referred = new Set((page.entry ?? []).filter((e: any) => e.search?.mode !== 'include').map((e: any) => e.resource.encounter?.reference));
        for (const e of (page.entry ?? []).filter((x: any) => x.search?.mode === 'include')) {
          assert.ok(referred.has(`Encounter/${e.resource.id}`), `an include of a match the page shows: ${e.resource.id}`);
        }
      }
      const [at, sealed] = pages[1].link.find((l: any) => l.relation === 'next').url.split('_page=');
      const parts = sealed.split('.');
      parts[3] = (parts[3][0] === 'A' ? 'B' : 'A') + parts[3].slice(1);
      assert.equal((await fetch(`${at}_page=${parts.join('.')}`, { headers: { authorization: `Bearer ${jones}` } })).status, 400, 'where the next page starts is sealed');
    });

    it('tells nothing of hidden matches through counts, subsetting, formats, errors or links', async () => {
      const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT' }); // pat-2's R + HIV viral load is hidden from him
      const search = async (query: string) => {
        const res = await get(`Observation?patient=Patient/pat-2&${query}`, jones);
        assert.equal(res.status, 200, query);
        return res.json();
      };
      assert.equal((await search('_count=0')).total, undefined, '_count=0: the FHIR server\'s count would include it');
      const all = await search('_count=100');
      assert.ok(all.entry.length > 0 && !all.entry.some((e: any) => e.resource.id === 'obs-2a-hiv-vl'));
      assert.equal(all.total, all.entry.length, 'one page holding every match: its own count');
      for (const subsetting of ['_elements=id', '_summary=true', '_summary=data']) {
        const page = await search(subsetting);
        assert.deepEqual(page.entry.map((e: any) => e.resource.id).sort(), all.entry.map((e: any) => e.resource.id).sort(), subsetting);
        assert.ok(page.entry.every((e: any) => e.resource.subject && e.resource.code), `${subsetting}: whole resources, for the rules to read`);
      }
      for (const query of ['_summary=count', '_total=accurate', '_has:Observation:patient:code=x', 'subject:Patient.name=Garcia', '_filter=code eq x', '_list=x', '_contained=true',
        '_filter:x=code eq x', '_list:x=x', '_query:x=x', '_total:x=accurate', '_summary:x=count', '_contained:x=true']) {
        const res = await get(`Observation?patient=Patient/pat-2&${query}`, jones);
        assert.equal(res.status, 403, query);
        assert.equal((await res.json()).resourceType, 'OperationOutcome', query);
      }
      assert.equal((await get('Observation?patient=Patient/pat-2&_format=xml', jones)).status, 406, 'an answer it could not read');
      const hidden = await get('Observation/obs-2a-hiv-vl', jones);
      const absent = await get('Observation/obs-2a-none', jones);
      assert.deepEqual([hidden.status, (await hidden.text()).replace('hiv-vl', 'X')], [absent.status, (await absent.text()).replace('none', 'X')], 'hidden reads as absent');
      const res = await get('Observation?patient=Patient/pat-2&_count=2', jones);
      for (const name of ['content-location', 'link', 'location']) assert.equal(res.headers.get(name), null, name);
      const page = await res.json();
      assert.ok(!JSON.stringify(page).includes('hiv-vl'), 'no hidden id');
      const urls = [...page.link.map((l: any) => l.url), ...page.entry.flatMap((e: any) => e.fullUrl ?? [])];
      assert.ok(urls.every((url: string) => url.startsWith(`${shape.fhirBase}/`)), `links at the public base only: ${urls}`);
    });

    it('refuses a sort by the values of other resources (a chained _sort), which the rules may hide', async () => {
      const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT' });
      for (const sort of ['_sort=patient.name', '_sort=-subject:Patient.birthdate', '_sort=date,-patient.family', '_sort:desc=patient.name']) {
        const res = await get(`Observation?${sort}`, jones);
        assert.equal(res.status, 403, sort);
        assert.equal((await res.json()).resourceType, 'OperationOutcome', sort);
      }
      assert.equal((await get('Observation?patient=Patient/pat-2&_sort=-date', jones)).status, 200, 'a sort by the matches\' own values stays');
    });

    it('refuses the modifiers that match through other resources (a reference\'s hierarchy, MDM links), in a query, a _search form and a batch entry', async () => {
      const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT' });
      const refused = ['Location?partof:below=Location/loc-1', 'Location?partof:above=Location/loc-1', 'Observation?subject:below=Patient/pat-2',
        'Organization?partof:below=Organization/org-1', 'Observation?patient:mdm=Patient/pat-2', 'Observation?code:mdm=x', 'Observation?subject:identifier:mdm=x',
        '?patient:below=Patient/pat-2', 'Observation?no-such-param:below=x', 'Observation?subject:bElow=Patient/pat-2'];
      for (const query of refused) {
        const res = await get(query, jones);
        assert.equal(res.status, 403, query);
        assert.equal((await res.json()).resourceType, 'OperationOutcome', query);
      }
      const form = await fetch(`${shape.fhirBase}/Observation/_search`, { method: 'POST', headers: { authorization: `Bearer ${jones}`, 'content-type': 'application/x-www-form-urlencoded' }, body: 'subject:below=Patient/pat-2' });
      assert.equal(form.status, 403, 'in a _search form');
      const batch = await fetch(shape.fhirBase, {
        method: 'POST', headers: { authorization: `Bearer ${jones}`, 'content-type': 'application/fhir+json' },
        body: JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: ['Location?partof:below=Location/loc-1', 'Observation?patient:mdm=Patient/pat-2'].map((url) => ({ request: { method: 'GET', url } })) }),
      });
      assert.deepEqual(((await batch.json()).entry ?? []).map((e: any) => e.response.status), ['403', '403'], 'as batch entries');
      // On the matches' own values: a code system's hierarchy, a canonical URL's path, the reference's own identifier.
      for (const query of ['code:below=http://loinc.org|8480-6', 'code:above=http://loinc.org|8480-6', '_profile:below=http://hl7.org/fhir', 'subject:identifier=urn:x|1', 'value-quantity:below=5']) {
        assert.notEqual((await get(`Observation?patient=Patient/pat-2&${query}`, jones)).status, 403, query);
      }
    });

    it('keeps a patient token in its compartment', async () => {
      const patient = await token('dr.smith', 'demo-password-1', { scope: 'launch/patient openid patient/*.rs', patient: 'pat-2' });
      assert.equal((await get('Patient/pat-2', patient)).status, 200);
      assert.equal((await get('Patient/pat-1', patient)).status, 404);
      const found = await ids(await get('Observation', patient));
      assert.ok(found.length > 0 && found.every((id: string) => id.startsWith('Observation/obs-2')), found.join());
    });

    describe('conditional reads', () => {
      const conditional = (path: string, bearer: string, headers: Record<string, string | undefined>) =>
        fetch(`${shape.fhirBase}/${path}`, { headers: { authorization: `Bearer ${bearer}`, ...headers } as Record<string, string> });

      it('answers 304 with the ETag and no body when the resource the token sees is unchanged, audited as a read', async () => {
        const smith = await token('dr.smith', 'demo-password-1');
        const first = await get('Observation/obs-2a-hiv-vl', smith);
        assert.equal(first.status, 200);
        const { meta } = await first.json();
        const etag = first.headers.get('etag');
        assert.equal(etag, `W/"${meta.versionId}"`);
        const requestId = `conditional-${Date.now()}`;
        const again = await conditional('Observation/obs-2a-hiv-vl', smith, { 'if-none-match': etag!, 'x-request-id': requestId });
        assert.equal(again.status, 304);
        assert.equal(again.headers.get('etag'), etag);
        assert.equal(await again.text(), '');
        const since = new Date(Date.parse(meta.lastUpdated) + 1000).toUTCString();
        assert.equal((await conditional('Observation/obs-2a-hiv-vl', smith, { 'if-modified-since': since })).status, 304);
        const events = await shape.server.audit.search({ limit: 1000 });
        const [read] = events.filter((e: any) => e.entity?.some((x: any) => x.what?.identifier?.value === requestId));
        assert.ok(read, 'the 304 is in the chain');
        assert.equal(read.outcome, '0');
        assert.ok(disclosureEvents([read], { patient: 'pat-2' }).length === 1, 'a read of pat-2\'s data');
      });

      it('answers 200 with the resource when it changed', async () => {
        const smith = await token('dr.smith', 'demo-password-1');
        for (const headers of [{ 'if-none-match': 'W/"not-this-version"' }, { 'if-modified-since': 'Thu, 01 Jan 2015 00:00:00 GMT' }]) {
          const res = await conditional('Observation/obs-2a-hiv-vl', smith, headers);
          assert.equal(res.status, 200, JSON.stringify(headers));
          assert.equal((await res.json()).id, 'obs-2a-hiv-vl');
        }
      });

      it('answers what a plain read answers, never 304, for a resource the token may not see (labels, consent, compartment)', async () => {
        const jones = await token('dr.jones', 'demo-password-2', { purpose: 'TREAT' });
        const smith = await token('dr.smith', 'demo-password-1');
        const patient = await token('dr.smith', 'demo-password-1', { scope: 'launch/patient openid patient/*.rs', patient: 'pat-2' });
        const etagOf = async (path: string) => (await get(path, smith)).headers.get('etag') ?? 'W/"1"';
        for (const [path, bearer, etag] of [
          ['Observation/obs-2a-hiv-vl', jones, await etagOf('Observation/obs-2a-hiv-vl')], // above jones's clearance
          ['Condition/cond-2-oud', smith, 'W/"1"'], // pat-2's consent denies it to dr-smith
          ['Observation/obs-1a-hba1c', patient, await etagOf('Observation/obs-1a-hba1c')], // another patient's
        ] as const) {
          const plain = await get(path, bearer);
          for (const headers of [
            { 'if-none-match': etag }, { 'if-none-match': '*' }, { 'if-modified-since': new Date().toUTCString() },
            { 'if-match': etag }, { 'if-match': 'W/"not-this-version"' }, { 'if-unmodified-since': 'Thu, 01 Jan 2015 00:00:00 GMT' },
          ]) {
            const res = await conditional(path, bearer, headers);
            assert.equal(res.status, plain.status, `${path} ${JSON.stringify(headers)}`);
            assert.equal(res.status, 404);
            assert.equal(res.headers.get('etag'), null);
          }
        }
      });
    });

    describe('conditional reads with If-Match', () => {
      it('answers 412 for a visible resource whose version If-Match does not name, the resource when it does', async () => {
        const smith = await token('dr.smith', 'demo-password-1');
        const etag = (await get('Observation/obs-2a-hiv-vl', smith)).headers.get('etag')!;
        const read = (headers: Record<string, string>) => fetch(`${shape.fhirBase}/Observation/obs-2a-hiv-vl`, { headers: { authorization: `Bearer ${smith}`, ...headers } });
        const stale = await read({ 'if-match': 'W/"not-this-version"' });
        assert.equal(stale.status, 412);
        assert.equal((await stale.json()).issue[0].code, 'conflict');
        assert.equal((await read({ 'if-unmodified-since': 'Thu, 01 Jan 2015 00:00:00 GMT' })).status, 412);
        for (const headers of [{ 'if-match': etag }, { 'if-match': '*' }]) {
          const res = await read(headers);
          assert.equal(res.status, 200, JSON.stringify(headers));
          assert.equal((await res.json()).id, 'obs-2a-hiv-vl');
        }
      });
    });

    describe('conditional writes (version-aware updates)', () => {
      const put = (path: string, bearer: string, resource: unknown, headers: Record<string, string> = {}) => fetch(`${shape.fhirBase}/${path}`, {
        method: 'PUT', headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/fhir+json', ...headers }, body: JSON.stringify(resource),
      });
      const writer = () => token('dr.smith', 'demo-password-1', { scope: 'launch/patient openid patient/*.cruds', patient: 'pat-2' });
      const current = async (path: string, bearer: string) => {
        const res = await get(path, bearer);
        const { meta: _, text: __, ...resource } = await res.json();
        return { resource, etag: res.headers.get('etag')! };
      };

      it('answers 412 when the conditions do not name the stored version, and writes nothing', async () => {
        const bearer = await writer();
        const { resource, etag } = await current('Observation/obs-2b-pain', bearer);
        const changed = { ...resource, status: 'amended' };
        for (const headers of [{ 'if-match': 'W/"not-this-version"' }, { 'if-none-match': '*' }, { 'if-unmodified-since': 'Thu, 01 Jan 2015 00:00:00 GMT' }] as Record<string, string>[]) {
          const res = await put('Observation/obs-2b-pain', bearer, changed, headers);
          assert.equal(res.status, 412, JSON.stringify(headers));
          assert.equal((await res.json()).resourceType, 'OperationOutcome');
        }
        const after = await current('Observation/obs-2b-pain', bearer);
        assert.equal(after.etag, etag);
        assert.equal(after.resource.status, resource.status);
      });

      it('writes when If-Match names the stored version', async () => {
        const bearer = await writer();
        const { resource, etag } = await current('Observation/obs-2b-pain', bearer);
        const res = await put('Observation/obs-2b-pain', bearer, { ...resource, status: 'amended' }, { 'if-match': etag });
        assert.equal(res.status, 200);
        const after = await current('Observation/obs-2b-pain', bearer);
        assert.notEqual(after.etag, etag);
        assert.equal(after.resource.status, 'amended');
        assert.equal((await put('Observation/obs-2b-pain', bearer, resource, { 'if-match': etag })).status, 412, 'the version it replaced is stale now');
      });

      it('refuses a conditional create (If-None-Exist), which would tell whether hidden data matches, and creates nothing', async () => {
        const bearer = await writer();
        const identifier = `if-none-exist-${Date.now()}`;
        const res = await fetch(`${shape.fhirBase}/Observation`, {
          method: 'POST',
          headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/fhir+json', 'if-none-exist': `identifier=${identifier}` },
          body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-2' }, identifier: [{ value: identifier }] }),
        });
        assert.equal(res.status, 400);
        assert.equal((await res.json()).issue[0].code, 'not-supported');
        assert.deepEqual(await ids(await get(`Observation?identifier=${identifier}`, bearer)), []);
      });

      it('refuses a conditional update, patch or delete (by search), alone or in a batch, which could change hidden matches, and changes nothing', async () => {
        const smith = await token('dr.smith', 'demo-password-1', { scope: 'openid fhirUser user/*.cruds' }); // sees neither obs-1-brca (V) nor cond-2-oud (pat-2's consent)
        const before = await ids(await get('Observation?code=http://loinc.org|69548-6', smith));
        const hidden = { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-1' } };
        for (const [method, path, body] of [
          ['PUT', 'Observation?identifier=brca-1', hidden],
          ['PATCH', 'Observation?code=http://loinc.org|69548-6', [{ op: 'add', path: '/note', value: [{ text: 'x' }] }]],
          ['DELETE', 'Observation?code=http://loinc.org|69548-6', undefined],
          ['DELETE', 'Condition?patient=Patient/pat-2', undefined],
        ] as const) {
          const res = await fetch(`${shape.fhirBase}/${path}`, {
            method, headers: { authorization: `Bearer ${smith}`, 'content-type': 'application/fhir+json' }, ...(body !== undefined && { body: JSON.stringify(body) }),
          });
          assert.equal(res.status, 400, `${method} ${path}`);
          assert.equal((await res.json()).issue[0].code, 'not-supported', `${method} ${path}`);
          const batch = await fetch(shape.fhirBase, {
            method: 'POST', headers: { authorization: `Bearer ${smith}`, 'content-type': 'application/fhir+json' },
            body: JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: [{ ...(body && !Array.isArray(body) && { resource: body }), request: { method, url: path } }] }),
          });
          assert.deepEqual(((await batch.json()).entry ?? []).map((e: any) => e.response.status), ['400'], `${method} ${path} in a batch`);
        }
        assert.deepEqual(await ids(await get('Observation?code=http://loinc.org|69548-6', smith)), before);
        assert.ok((await shape.stored('Observation', '_id=obs-1-brca')).includes('obs-1-brca'), 'the hidden match is still stored');
        assert.ok((await shape.stored('Condition', '_id=cond-2-oud')).includes('cond-2-oud'), 'the match hidden by consent too');
      });

      it('answers a write on a resource the token may not see as without the conditions', async () => {
        const bearer = await writer();
        const smith = await token('dr.smith', 'demo-password-1');
        for (const [path, etag] of [
          ['Observation/obs-1a-hba1c', (await get('Observation/obs-1a-hba1c', smith)).headers.get('etag')!], // another patient's
          ['Condition/cond-2-oud', 'W/"1"'], // pat-2's consent denies it to dr-smith
        ]) {
          const body = { resourceType: path.split('/')[0], id: path.split('/')[1], status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-2' } };
          const plain = await put(path, bearer, body);
          for (const headers of [{ 'if-match': etag }, { 'if-match': 'W/"not-this-version"' }, { 'if-none-match': '*' }, { 'if-unmodified-since': 'Thu, 01 Jan 2015 00:00:00 GMT' }] as Record<string, string>[]) {
            const res = await put(path, bearer, body, headers);
            assert.equal(res.status, plain.status, `${path} ${JSON.stringify(headers)}`);
            assert.equal(res.status, 404);
            assert.equal(res.headers.get('etag'), null);
          }
        }
      });
    });

    it('sends a JSON Patch on as application/json-patch+json, for a token not limited to patients', async () => {
      const patch = (bearer: string) => fetch(`${shape.fhirBase}/Observation/obs-1a-hba1c`, {
        method: 'PATCH',
        headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json-patch+json' },
        body: JSON.stringify([{ op: 'add', path: '/note', value: [{ text: 'patched through the guard' }] }]),
      });
      const bounded = await patch(await token('dr.smith', 'demo-password-1', { scope: 'launch/patient openid patient/*.cruds', patient: 'pat-1' }));
      assert.equal(bounded.status, 403, 'a token limited to a patient cannot know where a patch leaves the resource');
      const smith = await token('dr.smith', 'demo-password-1', { scope: 'openid fhirUser user/Observation.rus' });
      const res = await patch(smith);
      assert.equal(res.status, patches ? 200 : 405, await res.clone().text());
      const notes = (await (await get('Observation/obs-1a-hba1c', smith)).json()).note ?? [];
      assert.equal(notes.some((n: any) => n.text === 'patched through the guard'), patches);
    });

    describe('operations listed in GUARD_OPERATIONS', () => {
      const post = (path: string, bearer: string, body?: unknown, method = 'POST') => fetch(`${shape.fhirBase}/${path}`, {
        method, headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/fhir+json' }, ...(body !== undefined && { body: JSON.stringify(body) }),
      });
      const meta = (security: unknown[]) => ({ resourceType: 'Parameters', parameter: [{ name: 'meta', valueMeta: { security } }] });
      const HIV = { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'HIV' };

      it('refuses a writing operation to a token with read scopes only', async () => {
        const smith = await token('dr.smith', 'demo-password-1');
        for (const name of ['meta-delete', 'meta-add']) {
          const res = await post(`Observation/obs-2a-hiv-vl/$${name}`, smith, meta([HIV]));
          assert.equal(res.status, 403, name);
          assert.match(res.headers.get('www-authenticate') ?? '', /insufficient_scope/);
          assert.equal((await res.json()).resourceType, 'OperationOutcome');
        }
        assert.deepEqual((await (await get('Observation/obs-2a-hiv-vl', smith)).json()).meta.security.map((c: any) => c.code).sort(), ['HIV', 'R']);
      });

      it('holds a writing operation to the rules of an update: labels only go up, the compartment, hidden data, Consent', async () => {
        const writer = await token('dr.smith', 'demo-password-1', { scope: 'launch/patient openid patient/*.cruds', patient: 'pat-2' });
        const removed = await post('Observation/obs-2a-hiv-vl/$meta-delete', writer, meta([HIV]));
        assert.equal(removed.status, 403);
        assert.match((await removed.json()).issue[0].diagnostics, /labels only go up/);
        for (const label of [{ system: CONFIDENTIALITY, code: 'R' }, { code: 'HIV' }]) {
          assert.equal((await post('Observation/obs-2a-hiv-vl/$meta-delete', writer, meta([label]))).status, 403, JSON.stringify(label));
        }
        assert.equal((await post('Observation/obs-1a-hba1c/$meta-add', writer, meta([HIV]))).status, 404, 'another patient\'s');
        assert.equal((await post('Condition/cond-2-oud/$meta-add', writer, meta([HIV]))).status, 404, 'hidden by pat-2\'s consent');
        const consent = await post('Consent/consent-pat-2/$meta-delete', writer, meta([HIV]));
        assert.equal(consent.status, 403, 'policy data needs a scope naming Consent');
        const smith = await token('dr.smith', 'demo-password-1');
        assert.deepEqual((await (await get('Observation/obs-2a-hiv-vl', smith)).json()).meta.security.map((c: any) => c.code).sort(), ['HIV', 'R']);
      });

      it('refuses an operation not listed, and one sent with a method it does not support', async () => {
        const writer = await token('dr.smith', 'demo-password-1', { scope: 'launch/patient openid patient/*.cruds', patient: 'pat-2' });
        const unknown = await post(`$graphql?query=${encodeURIComponent('{ PatientList { id } }')}`, writer, undefined, 'GET');
        assert.equal(unknown.status, 403);
        assert.equal((await unknown.json()).resourceType, 'OperationOutcome');
        const byGet = await post('Observation/obs-2a-hiv-vl/$meta-delete', writer, undefined, 'GET');
        assert.equal(byGet.status, 405);
        assert.equal((await byGet.json()).resourceType, 'OperationOutcome');
      });
    });

    describe('who may change policy data and the records the server keeps', () => {
      const send = (method: string, path: string, bearer: string, body?: unknown) => fetch(`${shape.fhirBase}/${path}`, {
        method, headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/fhir+json' }, ...(body !== undefined && { body: JSON.stringify(body) }),
      });
      /** Asserts a 403 OperationOutcome whose diagnostics match `why`. */
      const refused = async (res: Response, why: RegExp, what: string) => {
        assert.equal(res.status, 403, what);
        const outcome = await res.json();
        assert.equal(outcome.resourceType, 'OperationOutcome', what);
        assert.match(outcome.issue[0].diagnostics, why, what);
      };
      const batchStatus = async (res: Response) => ((await res.json()).entry ?? []).map((e: any) => e.response.status);
      const R = { system: CONFIDENTIALITY, code: 'R' };
      const HIV = { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'HIV' };
      const writer = (username: string, password: string, purpose = 'TREAT') => token(username, password, { purpose, scope: 'openid fhirUser user/*.cruds' });

      it('lets no token create, change or delete AuditEvents or Provenance: the server writes them, append-only', async () => {
        const provenance = { resourceType: 'Provenance', id: 'prov-by-server', target: [{ reference: 'Observation/obs-1a-hba1c' }], recorded: '2026-01-01T00:00:00Z', agent: [{ who: { reference: 'Practitioner/dr-smith' } }] };
        await shape.seed(provenance);
        const forged = { ...provenance, agent: [{ who: { reference: 'Practitioner/dr-jones' } }] };
        const event = {
          resourceType: 'AuditEvent', type: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110110' }, recorded: '2026-01-01T00:00:00Z',
          agent: [{ requestor: true, who: { reference: 'Patient/pat-1' } }], source: { observer: { display: 'forged' } }, entity: [{ what: { reference: 'Patient/pat-1' } }],
        };
        const amy = await writer('amy', 'demo-password-3', 'PATRQT');
        const auditor = await writer('auditor', 'demo-password-4', 'HOPERAT');
        const smith = await writer('dr.smith', 'demo-password-1');
        const why = /written by the server only/;
        for (const bearer of [amy, auditor]) {
          await refused(await send('POST', 'AuditEvent', bearer, event), why, 'AuditEvent create');
          await refused(await send('PUT', 'AuditEvent/forged', bearer, { ...event, id: 'forged' }), why, 'AuditEvent update');
          await refused(await send('DELETE', 'AuditEvent/forged', bearer), why, 'AuditEvent delete');
        }
        await refused(await send('POST', 'Provenance', smith, { ...forged, id: undefined }), why, 'Provenance create');
        await refused(await send('PUT', 'Provenance/prov-by-server', smith, forged), why, 'Provenance update');
        await refused(await send('DELETE', 'Provenance/prov-by-server', smith), why, 'Provenance delete');
        await refused(await send('POST', 'Provenance/prov-by-server/$meta-add', smith, { resourceType: 'Parameters', parameter: [{ name: 'meta', valueMeta: { security: [R] } }] }), why, '$meta-add');
        const batch = await send('POST', '', smith, { resourceType: 'Bundle', type: 'batch', entry: [
          { resource: forged, request: { method: 'PUT', url: 'Provenance/prov-by-server' } },
          { resource: event, request: { method: 'POST', url: 'AuditEvent' } },
        ] });
        assert.deepEqual(await batchStatus(batch), ['403', '403']);
        const kept = await get('Provenance/prov-by-server', smith);
        assert.equal(kept.status, 200);
        assert.deepEqual((await kept.json()).agent, provenance.agent, 'the record is as the server wrote it');
      });

      it('lets no change raise a label beyond what the writer may read: its clearance, a sensitivity not granted, another purpose, test data', async () => {
        const observation = { resourceType: 'Observation', id: 'obs-2-labelled', status: 'final', code: { text: 'labelled' }, subject: { reference: 'Patient/pat-2' } };
        await shape.seed(observation);
        const jones = await writer('dr.jones', 'demo-password-2'); // clearance N, no sensitivities
        const why = /labels the token may not read/;
        for (const label of [R, HIV, { system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'HTEST' }, { system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'HRESCH' }]) {
          const labelled = { ...observation, meta: { security: [label] } };
          await refused(await send('PUT', 'Observation/obs-2-labelled', jones, labelled), why, `update ${label.code}`);
          await refused(await send('POST', 'Observation/obs-2-labelled/$meta-add', jones, { resourceType: 'Parameters', parameter: [{ name: 'meta', valueMeta: { security: [label] } }] }), why, `$meta-add ${label.code}`);
        }
        const batch = await send('POST', '', jones, { resourceType: 'Bundle', type: 'batch', entry: [{ resource: { ...observation, meta: { security: [R] } }, request: { method: 'PUT', url: 'Observation/obs-2-labelled' } }] });
        assert.deepEqual(await batchStatus(batch), ['403']);
        const unchanged = await get('Observation/obs-2-labelled', jones);
        assert.equal(unchanged.status, 200, 'still visible to him: nothing was written');
        assert.deepEqual((await unchanged.json()).meta.security?.filter((c: any) => c.code !== 'N') ?? [], []);
        const created = await send('POST', 'Observation', jones, { ...observation, id: undefined, meta: { security: [R] } });
        assert.equal(created.status, 201, 'new data may be written up (hidden from him once written)');
        assert.equal((await get(`Observation/${(await created.json()).id}`, jones)).status, 404);
        const smith = await writer('dr.smith', 'demo-password-1'); // cleared for R and HIV: labels still go up within a clearance
        assert.equal((await send('PUT', 'Observation/obs-2-labelled', smith, { ...observation, meta: { security: [R, HIV] } })).status, 200);
        assert.equal((await get('Observation/obs-2-labelled', jones)).status, 404);
      });
    });

    it('answers an update to a new id (update-as-create) as one to a hidden id, 404, unless the writer is the privacy office cleared for every label', async () => {
      const resource = (path: string) => {
        const [resourceType, id] = path.split('/');
        return { resourceType, id, ...(resourceType === 'Observation' && { status: 'final' }), code: { text: 'x' }, subject: { reference: 'Patient/pat-1' } };
      };
      const put = (path: string, bearer: string) => fetch(`${shape.fhirBase}/${path}`, {
        method: 'PUT', headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/fhir+json' }, body: JSON.stringify(resource(path)),
      });
      const answer = async (res: Response) => ({ status: res.status, body: JSON.stringify(await res.json()).replace(/obs-1-brca|cond-2-oud|obs-put-free/g, '<id>') });
      const batch = (type: string, paths: string[], bearer: string) => fetch(`${shape.fhirBase}/`, {
        method: 'POST', headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/fhir+json' },
        body: JSON.stringify({ resourceType: 'Bundle', type, entry: paths.map((url) => ({ resource: resource(url), request: { method: 'PUT', url } })) }),
      });
      // dr.smith: user/*.cruds on every patient, clearance R; obs-1-brca is V, pat-2's consent denies him cond-2-oud.
      const smith = await token('dr.smith', 'demo-password-1', { purpose: 'TREAT', scope: 'openid fhirUser user/*.cruds' });
      const free = await answer(await put('Observation/obs-put-free', smith));
      assert.equal(free.status, 404, 'a free id');
      assert.deepEqual(await answer(await put('Observation/obs-1-brca', smith)), free, 'an id a resource above his clearance holds');
      assert.equal((await put('Condition/cond-2-oud', smith)).status, 404, 'an id a resource his consent denies holds');
      const inBatch = await (await batch('batch', ['Observation/obs-1-brca', 'Observation/obs-put-free'], smith)).json();
      assert.deepEqual(inBatch.entry.map((e: any) => e.response.status), ['404', '404'], 'batch entries');
      const transactions = [];
      for (const path of ['Observation/obs-1-brca', 'Observation/obs-put-free']) transactions.push(await answer(await batch('transaction', [path], smith)));
      assert.deepEqual(transactions[0], transactions[1], 'a transaction');
      assert.equal(transactions[0].status, 404);
      assert.equal((await get('Observation/obs-put-free', await token('dr.smith', 'demo-password-1'))).status, 404, 'nothing was created');
      await addUser(shape.server.db, { username: 'privacy.all', password: 'privacy-all-pass', name: 'Pat Office', attributes: { purposes: ['HOPERAT'], privacyOfficer: true, clearance: 'V', sensitivities: knownSensitivities() } });
      const office = await token('privacy.all', 'privacy-all-pass', { purpose: 'HOPERAT', scope: 'openid user/Observation.cruds' });
      const created = await put('Observation/obs-put-free', office);
      assert.ok(created.ok, `the privacy office may learn which ids are taken: ${created.status}`); // Medplum answers 200, not 201
      assert.equal((await get('Observation/obs-put-free', await token('dr.smith', 'demo-password-1'))).status, 200, 'created, with the default confidentiality');
    });

    it('records every access in the authorization server\'s audit chain, in the patient\'s accounting of disclosures', async () => {
      const smith = await token('dr.smith', 'demo-password-1');
      const requestId = `rules-${Date.now()}`;
      assert.equal((await get('Observation/obs-2a-hiv-vl', smith, requestId)).status, 200);
      assert.equal((await get('Condition/cond-2-oud', smith, `${requestId}-hidden`)).status, 404);
      const events = await shape.server.audit.search({ limit: 1000 });
      const tagged = (id: string) => events.filter((e: any) => e.entity?.some((x: any) => x.what?.identifier?.value === id));
      const [read] = tagged(requestId);
      assert.ok(read, 'the read is in the chain');
      assert.equal(read.outcome, '0');
      assert.ok(disclosureEvents([read], { patient: 'pat-2' }).length === 1, 'and in the accounting of disclosures');
      assert.equal(tagged(`${requestId}-hidden`).length, 1, 'a hidden read is recorded too');
      assert.equal((await shape.server.audit.verify()).ok, true, 'the chain stays intact');
    });

    it('lets only auditors among the clinicians read AuditEvents', async () => {
      const smith = await token('dr.smith', 'demo-password-1');
      const refused = await get('AuditEvent?patient=pat-2', smith);
      assert.equal(refused.status, 403);
      assert.match((await refused.json()).issue[0].diagnostics, /auditor role/);
      const auditor = await token('auditor', 'demo-password-4', { purpose: 'HOPERAT' });
      assert.equal((await get('AuditEvent?patient=pat-2', auditor)).status, 200);
    });

    it('keeps AuditEvents from a backend service whose scopes name them only by `*` (a bulk data client)', async () => {
      const backendToken = async (scope: string) => {
        const client = await shape.server.addClient({ name: 'Warehouse', redirectUris: [], auth: { kind: 'secret' }, grantTypes: ['client_credentials'], scope });
        const { body } = await tokenRequest(shape.server.issuer, { grant_type: 'client_credentials', scope, resource: shape.fhirBase }, client);
        return body.access_token as string;
      };
      const bulk = await backendToken('system/*.rs');
      assert.equal((await get('Patient/pat-2', bulk)).status, 200, 'its clinical data');
      assert.equal((await get('AuditEvent?patient=pat-2', bulk)).status, 403);
      assert.equal((await get('AuditEvent?patient=pat-2', await backendToken('system/AuditEvent.rs'))).status, 200, 'a scope naming AuditEvent');
    });

    it('shows the AuditEvents the FHIR server behind it keeps only to those who may read the audit trail, also as includes', async () => {
      await shape.seed({
        resourceType: 'AuditEvent', id: 'ae-kept-upstream', type: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110110' }, recorded: '2026-01-01T00:00:00Z',
        agent: [{ who: { reference: 'Practitioner/dr-smith' }, requestor: true }], source: { observer: { display: 'an audit repository' } }, entity: [{ what: { reference: 'Patient/pat-1' } }],
      });
      const query = 'Patient?_id=pat-1&_revinclude=AuditEvent:patient';
      const smith = await token('dr.smith', 'demo-password-1');
      assert.deepEqual(await ids(await get(query, smith)), ['Patient/pat-1'], 'a clinician who is no auditor');
      const auditor = await token('auditor', 'demo-password-4', { purpose: 'HOPERAT' });
      // Medplum's in-memory repository includes no AuditEvent.
      if (!label.startsWith('Medplum')) assert.deepEqual(await ids(await get(query, auditor)), ['Patient/pat-1', 'AuditEvent/ae-kept-upstream'], 'an auditor');
    });

    it('refuses a token revoked at the authorization server (within REVOCATION_CACHE_MS, 1 s), whatever the verification mode', async () => {
      const smith = await token('dr.smith', 'demo-password-1');
      assert.equal((await get('Patient/pat-2', smith)).status, 200);
      const revoked = await revokeToken(shape.server.issuer, app, smith);
      assert.equal(revoked.status, 200);
      await new Promise((resolve) => setTimeout(resolve, 1100));
      const refused = await get('Patient/pat-2', smith);
      assert.equal(refused.status, 401);
      assert.match(refused.headers.get('www-authenticate') ?? '', /error="invalid_token", error_description="the access token has been revoked"/);
      assert.equal((await refused.json()).resourceType, 'OperationOutcome');
    });

    it('answers as a data API: no sniffing, no framing, no referrer, nothing active, whatever the answer', async () => {
      const smith = await token('dr.smith', 'demo-password-1');
      const answers = [
        await get('Observation/obs-2a-hiv-vl', smith), await get('Condition/cond-2-oud', smith), await fetch(`${shape.fhirBase}/Patient/pat-2`),
        await fetch(`${shape.fhirBase}/metadata`), await fetch(`${shape.fhirBase}/Patient`, { method: 'OPTIONS', headers: { origin: 'https://app.example.org', 'access-control-request-method': 'GET' } }),
      ];
      assert.deepEqual(answers.map((res) => res.status), [200, 404, 401, 200, 204]);
      for (const res of answers) {
        assert.equal(res.headers.get('x-content-type-options'), 'nosniff', String(res.status));
        assert.equal(res.headers.get('referrer-policy'), 'no-referrer', String(res.status));
        assert.equal(res.headers.get('x-frame-options'), 'DENY', String(res.status));
        assert.equal(res.headers.get('content-security-policy'), "default-src 'none'; frame-ancestors 'none'; base-uri 'none'", String(res.status));
      }
    });

    it('gives every access an id (the client\'s when sane), returned and recorded, with the address it came from and not one the client claims', async () => {
      const smith = await token('dr.smith', 'demo-password-1');
      const read = (headers: Record<string, string>) => fetch(`${shape.fhirBase}/Patient/pat-2`, { headers: { authorization: `Bearer ${smith}`, ...headers } });
      const spoofed = '203.0.113.9';
      const unnamed = await read({ 'x-forwarded-for': spoofed });
      const malformed = await read({ 'x-request-id': 'not an id' });
      const named = await read({ 'x-request-id': `named-${Date.now()}` });
      const ids = [unnamed, malformed, named].map((res) => res.headers.get('x-request-id'));
      assert.match(ids[0] ?? '', /^[0-9a-f-]{36}$/, 'a new id when the client sent none');
      assert.match(ids[1] ?? '', /^[0-9a-f-]{36}$/, 'and when it sent a malformed one');
      assert.match(ids[2] ?? '', /^named-/, 'the client\'s own otherwise');
      const events = await shape.server.audit.search({ patient: 'pat-2', limit: 1000 });
      for (const id of ids) {
        const [event] = events.filter((e: any) => e.entity?.some((x: any) => x.what?.identifier?.value === id)) as any[];
        assert.ok(event, `${id} is recorded`);
        const addresses = event.agent.map((a: any) => a.network?.address).filter(Boolean);
        assert.ok(addresses.some((a: string) => /127\.0\.0\.1$/.test(a)), `${id}: the connection's address (${addresses})`);
        assert.ok(!JSON.stringify(event).includes(spoofed), `${id}: not the address the client claimed`);
      }
    });

    it('records a de-identified access under the real patient, marked de-identified, in the patient\'s accounting of disclosures', async () => {
      const research = await token('researcher', 'research-pass');
      const requestId = `deid-${Date.now()}`;
      const found = await get('Patient?birthdate=1987', research, `${requestId}-search`); // Amy Shaw, pat-1
      const pseudonym = (await found.json()).entry[0].resource.id as string;
      const read = await get(`Patient/${pseudonym}`, research, `${requestId}-read`);
      assert.equal(read.status, 200);
      assert.ok(!(await read.text()).includes('pat-1'), 'the app sees the pseudonym only');
      assert.equal((await get(`Observation?patient=${pseudonym}&date=2025-09-15`, research, `${requestId}-refused`)).status, 403);

      const events = await shape.server.audit.search({ patient: 'pat-1', limit: 1000 });
      const tagged = (id: string) => events.filter((e: any) => e.entity?.some((x: any) => x.what?.identifier?.value === id));
      for (const id of ['search', 'read', 'refused'].map((s) => `${requestId}-${s}`)) {
        const [event] = tagged(id) as any[];
        assert.ok(event, `${id} is recorded under the real patient`);
        assert.ok(event.entity.some((x: any) => x.what?.reference === 'Patient/pat-1' && x.role.code === '1'), id);
        assert.ok(!JSON.stringify(event.entity.filter((x: any) => x.what?.reference)).includes(pseudonym), `${id}: no pseudonym for the patient`);
        const labelled = event.entity.filter((x: any) => x.securityLabel?.some((l: any) => l.system === 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue' && l.code === 'PSEUDED'));
        assert.ok(labelled.length > 0, `${id}: the disclosure is marked PSEUDED`);
        assert.ok(event.agent.some((a: any) => a.purposeOfUse?.some((p: any) => p.coding?.some((c: any) => c.code === 'HRESCH'))), `${id}: for research`);
      }
      assert.ok((tagged(`${requestId}-read`)[0] as any).entity.some((x: any) => x.what?.reference === 'Patient/pat-1' && x.role.code === '4'), 'the resource read, by its real id');
      const lines = disclosureLines(events, { patient: 'pat-1' }).filter((l) => l.request_id.startsWith(requestId));
      assert.deepEqual(lines.map((l) => [l.request_id, l.purpose_of_use, l.deidentified]), [[`${requestId}-search`, 'HRESCH', true], [`${requestId}-read`, 'HRESCH', true]]);
    });
  });
}

guardRules('bundled store', async () => {
  const server = await startTestServer(SETTINGS);
  const store = createDbStore(server.db);
  return {
    server, fhirBase: server.fhirBase, stop: () => server.stop(),
    seed: async (resource) => { await store.update(resource.resourceType, resource.id!, resource); },
    stored: async (type, query) => (await store.search(type, query)).map((r) => r.id!),
  };
});

/** The proxy at its own base, in front of `upstream`, for tokens of a fresh authorization server. */
async function behindProxy(startUpstream: () => Promise<ChildServer & { dir?: string }>) {
  const upstream = await startUpstream();
  const fhirBase = `http://127.0.0.1:${await freePort()}/r4`;
  const server = await startTestServer({ ADDITIONAL_FHIR_BASES: fhirBase });
  const proxy = await startGuardProxy(server, fhirBase, upstream.url, SETTINGS);
  return {
    server, fhirBase,
    async seed(resource: FhirResource) {
      const res = await fetch(`${upstream.url}/${resource.resourceType}/${resource.id}`, { method: 'PUT', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(resource) });
      assert.ok(res.ok, `${resource.id}: ${res.status}`);
    },
    async stored(type: string, query: string) {
      const bundle = await (await fetch(`${upstream.url}/${type}?${query}&_count=200`)).json();
      return (bundle.entry ?? []).map((e: any) => e.resource.id as string);
    },
    async stop() {
      await proxy.stop();
      await server.stop();
      await upstream.stop();
      if (upstream.dir) rmSync(upstream.dir, { recursive: true, force: true });
    },
  };
}

// Under `npm run test:pg` the proxied shapes are left out: their FHIR servers keep their data in a SQLite file
// or in memory either way, so PostgreSQL would change only where the proxy writes its audit records, which
// guard-proxy.test.ts checks on PostgreSQL. The bundled store keeps its resources in the server's database.
if (process.env.TEST_DATABASE !== 'postgres') {
  guardRules('demo store behind the guard proxy', () => behindProxy(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'smart-auth-rules-'));
    return { ...(await startDemoFhirServer(`sqlite:${join(dir, 'upstream.sqlite')}`)), dir };
  }));

  guardRules('Medplum behind the guard proxy', async () => ({ ...(await behindProxy(startMedplumFhirServer)), keepsBundles: true }), { patches: true });
}
