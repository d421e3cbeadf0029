// GUARD_INCLUDES=refuse in every shape of the guard: the bundled /fhir, the proxy in front of the demo store
// and in front of Medplum (the package's adapters: guard-package.test.ts).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startTestServer, type TestServer } from '../support/server.ts';
import { authorize, exchangeCode } from '../support/oauth.ts';
import { startDemoFhirServer, startGuardProxy, startMedplumFhirServer, type ChildServer } from '../support/processes.ts';
import { assertIncludesTellNothing, INCLUDE_PROBES, storeIncludeProbes } from '../support/includes.ts';
import { createDbStore } from '../../server/fhir/store-db.ts';

const REFUSE = { GUARD_INCLUDES: 'refuse' };

interface Shape { fhirBase: string; stop(): Promise<void> }

describe('GUARD_INCLUDES=refuse tells nothing of what it would include', () => {
  let server: TestServer;
  const shapes: Record<string, Shape> = {};
  let app: Awaited<ReturnType<TestServer['addClient']>>;

  before(async function () {
    this.timeout(120_000);
    const bases = { demo: `http://127.0.0.1:${await freePort()}/r4`, medplum: `http://127.0.0.1:${await freePort()}/r4` };
    server = await startTestServer({ ...REFUSE, ADDITIONAL_FHIR_BASES: Object.values(bases).join(',') });
    const store = createDbStore(server.db);
    for (const resource of INCLUDE_PROBES) await store.update(resource.resourceType, resource.id!, resource);
    shapes.bundled = { fhirBase: server.fhirBase, stop: async () => {} };
    app = await server.addClient({ auth: { kind: 'secret' } });
    // Behind the proxy the FHIR servers keep their data in SQLite or in memory whatever the suite's database
    // (see guard-rules.test.ts): `npm run test:pg` checks the bundled store only.
    if (process.env.TEST_DATABASE === 'postgres') return;
    const dir = mkdtempSync(join(tmpdir(), 'smart-auth-includes-'));
    const upstreams: Record<string, ChildServer> = { demo: await startDemoFhirServer(`sqlite:${join(dir, 'upstream.sqlite')}`), medplum: await startMedplumFhirServer() };
    for (const [name, upstream] of Object.entries(upstreams)) {
      await storeIncludeProbes(upstream.url);
      const base = bases[name as keyof typeof bases];
      const proxy = await startGuardProxy(server, base, upstream.url, REFUSE);
      shapes[`${name} behind the proxy`] = {
        fhirBase: base,
        async stop() {
          await proxy.stop();
          await upstream.stop();
          if (name === 'demo') rmSync(dir, { recursive: true, force: true });
        },
      };
    }
  });
  after(async () => {
    for (const shape of Object.values(shapes)) await shape.stop();
    await server?.stop();
  });

  it('answers a search whose include would bring a hidden resource as one whose include finds none, in every shape', async () => {
    for (const [name, { fhirBase }] of Object.entries(shapes)) {
      const launch = await authorize({ server, client: app, scope: 'launch/patient openid patient/*.rs', patient: 'pat-1', aud: fhirBase });
      await assertIncludesTellNothing(fhirBase, (await exchangeCode(server.issuer, launch, app)).body.access_token as string, name);
    }
  });
});
