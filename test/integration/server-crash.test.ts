// Kill -9 the real server under load: after a restart the audit chain verifies, and every request
// that got an answer has its AuditEvent (an access is not answered before its record is stored).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../support/server.ts';
import { startScript } from '../support/processes.ts';
import { tokenRequest } from '../support/oauth.ts';
import { loadConfig } from '../../server/config.ts';
import { migrate, openDatabase } from '../../server/db.ts';
import { addClient } from '../../server/oidc/clients.ts';
import { checkpointSigner } from '../../server/oidc/keys.ts';
import { createToolProvider } from '../../server/oidc/provider-host.ts';
import { keyPolicy } from '../../server/oidc/keys.ts';
import { createAuditStore } from '../../server/audit/audit-store.ts';

describe('crash under load', function () {
  this.timeout(60_000);
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'smart-auth-crash-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('loses no audit record of an answered request, and the chain verifies after restart', async () => {
    const port = await freePort();
    const env = { PORT: String(port), HOST: '127.0.0.1', DATABASE_URL: `sqlite:${join(dir, 'crash.sqlite')}` };
    const config = loadConfig({ ...env, ISSUER: `http://localhost:${port}` });
    const db = openDatabase(env.DATABASE_URL);
    await migrate(db);
    const tool = await createToolProvider(config, db);
    const client = await addClient(db, tool, { name: 'crash', redirectUris: [], auth: { kind: 'secret' }, grantTypes: ['client_credentials'], scope: 'system/Patient.rs' });
    await db.destroy();

    let server = await startScript('server/main.ts', env, /listening/);
    const { access_token: token } = (await tokenRequest(`http://127.0.0.1:${port}`, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, client)).body;

    const answered: string[] = [];
    let stop = false;
    const worker = async () => {
      while (!stop) {
        const id = randomUUID();
        try {
          const res = await fetch(`http://127.0.0.1:${port}/fhir/Patient/pat-1`, { headers: { authorization: `Bearer ${token}`, 'x-request-id': id } });
          await res.arrayBuffer();
          if (res.status === 200) answered.push(id);
        } catch {
          return; // the server is gone
        }
      }
    };
    const workers = Array.from({ length: 16 }, worker);
    // Killed once it has answered enough under load (not after a fixed time: a loaded machine answers fewer).
    for (let i = 0; i < 1500 && answered.length <= 60; i++) await new Promise((r) => setTimeout(r, 20));
    await server.kill('SIGKILL');
    stop = true;
    await Promise.all(workers);
    assert.ok(answered.length > 50, `the server answered under load (${answered.length})`);

    server = await startScript('server/main.ts', env, /listening/);
    await server.stop();

    const check = openDatabase(env.DATABASE_URL);
    try {
      const audit = createAuditStore(check, checkpointSigner(check, keyPolicy(config)));
      const verified = await audit.verify();
      assert.equal(verified.ok, true, JSON.stringify(verified));
      const stored = new Set<string>();
      for (const { event } of await check('audit_events').select('event')) {
        for (const entity of JSON.parse(event).entity ?? []) if (entity.what?.identifier?.value) stored.add(entity.what.identifier.value);
      }
      const missing = answered.filter((id) => !stored.has(id));
      assert.deepEqual(missing, [], `${missing.length} of ${answered.length} answered requests have no AuditEvent`);
    } finally {
      await check.destroy();
    }
  });
});
