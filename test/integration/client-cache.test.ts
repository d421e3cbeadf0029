// Client metadata is cached for CLIENT_CACHE_MS: a change made through this process is seen at once,
// one made elsewhere (the CLI, another instance: here, straight in the database) within the cache lifetime.
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../support/server.ts';
import { backendClient } from '../support/backend.ts';
import { removeClient } from '../../server/oidc/clients.ts';
import { runCli } from '../support/cli.ts';
import { decodeJwt } from '../support/oauth.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('client metadata cache', () => {
  const servers: TestServer[] = [];
  const start = async (env: Record<string, string>) => {
    const server = await startTestServer(env);
    servers.push(server);
    return server;
  };
  after(async () => { for (const s of servers) await s.stop(); });

  it('sees a client removed by this process at once', async () => {
    const server = await start({ CLIENT_CACHE_MS: '60000' });
    const backend = await backendClient(server, 'system/Patient.rs');
    assert.equal((await backend.token('system/Patient.rs')).res.status, 200);
    await removeClient(server.db, backend.client_id);
    assert.equal((await backend.token('system/Patient.rs')).res.status, 401);
  });

  /** A backend service that got a token and was then deleted straight from the database, as another instance would; its token status after that. */
  async function removedElsewhere(server: TestServer) {
    const backend = await backendClient(server, 'system/Patient.rs');
    assert.equal((await backend.token('system/Patient.rs')).res.status, 200);
    await server.db('oidc_payloads').where({ model: 'Client', id: backend.client_id }).delete();
    return async () => (await backend.token('system/Patient.rs')).res.status;
  }

  it('sees a client removed elsewhere once the cache lifetime is over', async () => {
    const status = await removedElsewhere(await start({ CLIENT_CACHE_MS: '4000' }));
    assert.equal(await status(), 200, 'still cached');
    await sleep(4100);
    assert.equal(await status(), 401);
  });

  it('ends the tokens a server caching the client longer than the CLI issues with the old organization after client update', async () => {
    // The server keeps the client 30 s; the CLI (CLIENT_CACHE_MS unset: 1 s) cannot know that.
    const server = await start({ CLIENT_CACHE_MS: '30000' });
    const backend = await backendClient(server, 'system/Patient.rs', 'ES384', { organizationId: 'urn:oid:1.2.3', organizationName: 'Old Lab' });
    const token = async () => (await backend.token('system/Patient.rs')).body.access_token as string;
    const read = async (accessToken: string) => (await fetch(`${server.fhirBase}/Patient/pat-1`, { headers: { authorization: `Bearer ${accessToken}` } })).status;
    assert.equal(await read(await token()), 200);
    const moved = await runCli(server, 'client', 'update', backend.client_id, '--organization-id', 'urn:oid:1.2.4');
    assert.equal(moved.code, 0, moved.stderr);
    await sleep(2500);
    const stale = await token();
    assert.equal(decodeJwt(stale).payload.extensions.ihe_iua.subject_organization_id, 'urn:oid:1.2.3', 'issued from the cached client');
    assert.equal(await read(stale), 401, 'and ended: no access is credited to the old organization');
  });

  it('CLIENT_CACHE_MS=0 reads the database every time', async () => {
    assert.equal(await (await removedElsewhere(await start({ CLIENT_CACHE_MS: '0' })))(), 401);
  });
});
