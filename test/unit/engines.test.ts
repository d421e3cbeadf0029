// `npm ci` on the oldest Node that package.json promises installs without an EBADENGINE warning.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import semver from 'semver';

const read = (file: string) => JSON.parse(readFileSync(new URL(`../../${file}`, import.meta.url), 'utf8'));

describe('Node engines of the locked packages', () => {
  it('every package accepts the oldest Node that package.json promises, and the Node running the tests', () => {
    const oldest = semver.minVersion(read('package.json').engines.node)!;
    assert.equal(oldest.major, 20, 'Node 20 is the supported runtime');
    const lock = read('package-lock.json') as { packages: Record<string, { version?: string; engines?: { node?: string } }> };
    const refused = Object.entries(lock.packages)
      .filter(([, p]) => typeof p.engines?.node === 'string')
      .filter(([, p]) => !semver.satisfies(oldest, p.engines!.node!) || !semver.satisfies(process.version, p.engines!.node!))
      .map(([path, p]) => `${path}@${p.version} requires node ${p.engines!.node}`);
    assert.deepEqual(refused, []);
  });
});
