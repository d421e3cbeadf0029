// The request log: one JSON line per request, written once per turn of the event loop.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createLogger } from '../../server/ops/log.ts';

describe('log lines on standard output', () => {
  it('writes the lines of one turn of the event loop with one write, in order', async () => {
    const writes: string[] = [];
    const write = process.stdout.write;
    process.stdout.write = ((chunk: string) => { writes.push(String(chunk)); return true; }) as typeof process.stdout.write;
    try {
      const logger = createLogger('info');
      logger.log('info', 'first');
      logger.log('info', 'second');
      logger.log('debug', 'below the level');
      assert.equal(writes.length, 0);
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.stdout.write = write;
    }
    assert.equal(writes.length, 1);
    assert.deepEqual(writes[0].trimEnd().split('\n').map((line) => JSON.parse(line).msg), ['first', 'second']);
  });

  it('writes what it still holds when the process exits', () => {
    const script = `import { createLogger } from ${JSON.stringify(new URL('../../server/ops/log.ts', import.meta.url).href)};
      const logger = createLogger('info'); logger.log('info', 'before exit'); process.exit(3);`;
    const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.equal(run.status, 3);
    assert.equal(JSON.parse(run.stdout.trim()).msg, 'before exit');
  });
});
