#!/usr/bin/env node
// The `smart-auth` command: runs the TypeScript CLI through tsx.
import { register } from 'tsx/esm/api';

register();
// oidc-provider prints "Unsupported runtime" when it is imported on Node 20, which smart-auth supports
// (README, "Run it"): the CLI leaves that one warning out of its output, for the whole command, since some
// commands load oidc-provider only when they run.
const warn = console.warn;
console.warn = (...args) => {
  if (!String(args[0]).startsWith('oidc-provider WARNING: Unsupported runtime')) warn(...args);
};
// A reader that stops early (`smart-auth audit export … | head`) ends the output, not the command: the
// command still finishes, and closes what it opened, instead of crashing with EPIPE.
process.stdout.on('error', (err) => {
  if (err.code !== 'EPIPE') throw err;
});
const { runCli } = await import('./cli.ts');
process.exitCode = await runCli(process.argv.slice(2));
