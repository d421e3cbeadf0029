// The audit commands of the CLI as an operator runs them: clean output, and errors that say what is wrong.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { startTestServer, type TestServer } from '../support/server.ts';
import { CLI_BIN, runCli, runCliBinary, runCliWithEnv } from '../support/cli.ts';

describe('CLI: audit records and verification', function () {
  this.timeout(180_000);
  let server: TestServer;
  before(async () => { server = await startTestServer({ KEY_ENCRYPTION_SECRET: 'the-servers-own-secret-long-enough-123456' }); });
  after(() => server.stop());

  const settings = { KEY_ENCRYPTION_SECRET: 'the-servers-own-secret-long-enough-123456' };
  const head = async () => Number((await server.db('audit_chain_head').where('id', 1).first('seq')).seq);
  const newestCheckpoint = async () => Number((await server.db('audit_checkpoints').max({ seq: 'seq' }).first())?.seq ?? 0);

  // Before: the record's signed head was still being written when the command closed the database, and
  // every export printed "Acquire connection error … writing an audit checkpoint failed" with a stack trace
  // (through console.error, so the executable is run: its whole output is checked).
  for (const args of [['audit', 'export', '--patient', 'pat-1', '--format', 'json'], ['launch', 'create', '--patient', 'pat-1']]) {
    it(`${args.slice(0, 2).join(' ')}: prints no error, and its record is covered by a signed head`, async () => {
      const result = await runCliBinary(server, settings, ...args);
      assert.equal(result.code, 0, JSON.stringify(result));
      assert.equal(result.stderr, '');
      assert.equal(await newestCheckpoint(), await head());
    });
  }

  // Before: `audit export … | head` crashed with an EPIPE stack trace once the reader had gone.
  it('audit export into a reader that stops early ends quietly, exit 0', async () => {
    const child = spawn(process.execPath, [CLI_BIN, 'audit', 'export', '--patient', 'pat-1', '--format', 'csv'], {
      env: { ...process.env, DATABASE_URL: server.config.databaseUrl, ISSUER: server.issuer, ...settings }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.destroy(); // the reader is gone before the command writes
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise((resolve) => child.on('close', resolve));
    assert.equal(stderr, '');
    assert.equal(code, 0);
  });

  // Before: a KEY_ENCRYPTION_SECRET that cannot open the keys was reported as tampering ("its signature is
  // invalid or it was altered", exit 1): an auditor was told the trail was changed when the CLI was misconfigured.
  it('audit verify with another KEY_ENCRYPTION_SECRET says so, and reports no tampering', async () => {
    await server.audit.checkpoint();
    const result = await runCli(server, 'audit', 'verify');
    assert.equal(result.code, 2, result.stdout + result.stderr);
    assert.match(result.stderr, /KEY_ENCRYPTION_SECRET is not the one it was stored with/);
    assert.doesNotMatch(result.stdout + result.stderr, /altered|does not verify/);
    assert.equal((await runCliWithEnv(server, settings, 'audit', 'verify')).code, 0);
  });
});
