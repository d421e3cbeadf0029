// An error of the FHIR server behind the guard, as HAPI FHIR words it, names resources the token may not see
// (a 409 for referential integrity, a 500 quoting content), and so do its warnings in a search page's outcome
// entry, in a create's OperationOutcome and in the OperationOutcome $validate answers: the client gets their coded part and standard text, the guard's log
// their original text. In the bundled /fhir (FHIR_UPSTREAM_URL) and the guard proxy; the
// package's adapters in guard-package.test.ts.
import { freePort, startTestServer, type TestServer } from '../support/server.ts';
import { authorize, exchangeCode } from '../support/oauth.ts';
import { startGuardProxy, type ChildServer } from '../support/processes.ts';
import assert from 'node:assert/strict';
import { assertUpstreamErrorsSafe, CREATED_ID, startHapiErrors, upstreamErrorsTold, type HapiErrors } from '../support/hapi-errors.ts';
import { withStdout } from '../support/stdout.ts';

describe('errors of a FHIR server that names other resources in them (as HAPI FHIR does)', () => {
  let upstream: HapiErrors;
  let server: TestServer;
  let proxy: ChildServer;
  let proxyBase: string;
  before(async () => {
    upstream = await startHapiErrors();
    proxyBase = `http://127.0.0.1:${await freePort()}/r4`;
    server = await startTestServer({ FHIR_UPSTREAM_URL: upstream.url, ADDITIONAL_FHIR_BASES: proxyBase, GUARD_OPERATIONS: 'validate' });
    proxy = await startGuardProxy(server, proxyBase, upstream.url, { GUARD_OPERATIONS: 'validate' });
  });
  after(async () => {
    await proxy?.stop();
    await server?.stop();
    await upstream?.stop();
  });

  const patientToken = async (aud: string) => {
    const app = await server.addClient({ auth: { kind: 'secret' } });
    const launch = await authorize({ server, client: app, scope: 'launch/patient openid patient/*.cruds', patient: 'pat-1', aud });
    return (await exchangeCode(server.issuer, launch, app)).body.access_token as string;
  };

  it('the bundled /fhir passes on their coded part only, and logs their text', async () => {
    const bearer = await patientToken(server.fhirBase);
    const told = await withStdout((written) => upstreamErrorsTold(server.fhirBase, bearer, async () => {
      await new Promise((resolve) => setImmediate(resolve));
      return written();
    }));
    assertUpstreamErrorsSafe(told, 'bundled');
  });

  it('the guard proxy passes on their coded part only, and logs their text', async () => {
    const bearer = await patientToken(proxyBase);
    assertUpstreamErrorsSafe(await upstreamErrorsTold(proxyBase, bearer, async () => proxy.output()), 'proxy');
  });

  it('records, in the bundled /fhir and the proxy, a create answered with an OperationOutcome as the create of the resource sent, with the id of its Location', async () => {
    const creates = (await server.audit.search({ limit: 10_000 }) as any[])
      .filter((e) => e.action === 'C' && e.entity.some((x: any) => x.what?.identifier?.value === 'hapi-201'));
    assert.equal(creates.length, 2, 'the bundled /fhir and the proxy each recorded the create');
    for (const event of creates) {
      const references = event.entity.map((x: any) => x.what?.reference).filter(Boolean);
      assert.ok(references.includes(`Observation/${CREATED_ID}`), JSON.stringify(event.entity));
      assert.ok(!references.some((r: string) => r.startsWith('OperationOutcome')), JSON.stringify(references));
    }
  });
});
