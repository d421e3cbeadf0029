#!/usr/bin/env node
// The `smart-auth` command: runs the TypeScript CLI through tsx.
import { register } from 'tsx/esm/api';

register();
// oidc-provider prints "Unsupported runtime" when it is imported on Node 20, which smart-auth supports
// (README, "Requirements"): the CLI leaves that one warning out of its output.
const warn = console.warn;
console.warn = (...args) => {
  if (!String(args[0]).startsWith('oidc-provider WARNING: Unsupported runtime')) warn(...args);
};
const { runCli } = await import('./cli.ts');
console.warn = warn;
process.exitCode = await runCli(process.argv.slice(2));
