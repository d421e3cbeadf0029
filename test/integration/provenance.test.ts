// Provenance of every change through the bundled /fhir: stored with the change, in the same transaction,
// and read back with _revinclude=Provenance:target under the same rules as any resource.
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorizedTokens } from '../support/oauth.ts';
import { createDbStore } from '../../server/fhir/store-db.ts';

describe('Provenance of writes through the bundled /fhir', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  before(async () => {
    server = await startTestServer();
    app = await server.addClient({ auth: { kind: 'secret' } });
  });
  after(() => server.stop());

  const token = async (scope: string, who: { username?: string; password?: string; patient?: string } = {}) =>
    (await authorizedTokens({ server, client: app, scope, ...who })).access_token as string;
  const fhir = (path: string, bearer: string, init: RequestInit = {}) => fetch(`${server.fhirBase}/${path}`, {
    ...init, headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/fhir+json', ...(init.headers ?? {}) },
  });
  const observation = (value: number) => ({
    resourceType: 'Observation', status: 'final', code: { text: 'weight' }, subject: { reference: 'Patient/pat-1' },
    valueQuantity: { value, unit: 'kg' },
  });

  it('records who changed what, when, with which app and why, for a create and an update', async () => {
    const smith = await token('openid fhirUser user/*.cruds', { username: 'dr.smith', password: 'demo-password-1' });
    const created = await fhir('Observation', smith, { method: 'POST', body: JSON.stringify(observation(70)) });
    assert.equal(created.status, 201);
    const { id } = await created.json();
    const updated = await fhir(`Observation/${id}`, smith, { method: 'PUT', body: JSON.stringify({ ...observation(71), id }) });
    assert.equal(updated.status, 200);

    const bundle = await (await fhir(`Observation?_id=${id}&_revinclude=Provenance:target`, smith)).json();
    const provenances = bundle.entry.filter((e: any) => e.resource.resourceType === 'Provenance').map((e: any) => e.resource);
    assert.deepEqual(provenances.map((p: any) => [p.target[0].reference, p.activity.coding[0].code]).sort(),
      [[`Observation/${id}/_history/1`, 'CREATE'], [`Observation/${id}/_history/2`, 'UPDATE']]);
    const [first] = provenances;
    assert.ok(!Number.isNaN(Date.parse(first.recorded)));
    const author = first.agent.find((a: any) => a.type.coding[0].code === 'author');
    assert.equal(author.who.reference, 'Practitioner/dr-smith');
    assert.ok(author.role?.length, 'the user by role');
    assert.equal(author.onBehalfOf.display, 'Example Hospital', 'and organization');
    assert.equal(JSON.stringify(first).includes('Jane Smith'), false, 'not by name');
    const performer = first.agent.find((a: any) => a.type.coding[0].code === 'performer');
    assert.equal(performer.who.identifier.value, app.client_id, 'the app');
    assert.equal(first.reason[0].coding[0].code, 'TREAT', 'the purpose of use');
  });

  it('shows a Provenance only to whom may see it', async () => {
    const smith = await token('openid fhirUser user/*.cruds', { username: 'dr.smith', password: 'demo-password-1' });
    const { id } = await (await fhir('Observation', smith, { method: 'POST', body: JSON.stringify(observation(72)) })).json();
    const other = await token('launch/patient openid patient/*.rs', { patient: 'pat-2' });
    const theirs = await (await fhir(`Observation?_revinclude=Provenance:target`, other)).json();
    assert.equal(JSON.stringify(theirs).includes(id), false, 'another patient sees neither the Observation nor its Provenance');
    const amy = await token('launch/patient openid patient/*.rs', { patient: 'pat-1' });
    const own = await (await fhir(`Observation?_id=${id}&_revinclude=Provenance:target`, amy)).json();
    assert.ok(own.entry.some((e: any) => e.resource.resourceType === 'Provenance' && e.resource.target[0].reference.startsWith(`Observation/${id}/`)));
  });

  it('stores the change and its Provenance together, or neither', async () => {
    const store = createDbStore(server.db);
    const template = { resourceType: 'Provenance', id: 'provenance-clash', recorded: new Date().toISOString(), agent: [] };
    await store.create({ resourceType: 'Basic', id: 'first', code: { text: 'x' } }, { provenance: template });
    await assert.rejects(store.create({ resourceType: 'Basic', id: 'second', code: { text: 'x' } }, { provenance: template }));
    assert.equal(await store.read('Basic', 'second'), undefined, 'the Provenance could not be stored, so neither was the change');
    await assert.rejects(store.update('Basic', 'first', { resourceType: 'Basic', id: 'first', code: { text: 'y' } }, { provenance: template }));
    assert.equal((await store.read('Basic', 'first'))?.meta?.versionId, '1');
  });
});
