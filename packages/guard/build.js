// Builds @smart-auth/guard from the sources in server/, in place: compiled ES modules and .d.ts in dist/,
// plus the data files the code reads at run time. `npm run build` builds it here; `node
// packages/guard/build.js <dir>` builds a complete copy of the package in <dir> (the tests pack that one).
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';

const here = (path) => new URL(path, import.meta.url).pathname;
const target = process.argv[2] ? resolve(process.argv[2]) : here('.');
const dist = join(target, 'dist');

rmSync(dist, { recursive: true, force: true });
mkdirSync(target, { recursive: true });
execFileSync(here('../../node_modules/.bin/tsc'), ['-p', here('tsconfig.json'), '--outDir', dist], { stdio: 'inherit' });
copyFileSync(here('../../server/hcs/default-policy.json'), join(dist, 'server/hcs/default-policy.json'));
copyFileSync(here('../../server/fhir/search-param-types.json'), join(dist, 'server/fhir/search-param-types.json'));
if (target !== here('.').replace(/\/$/, '')) {
  for (const file of ['package.json', 'README.md']) copyFileSync(here(file), join(target, file));
}
