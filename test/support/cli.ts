// The smart-auth command, run as an administrator would, against the database of a running test server.
// Most tests run the command's code in the test's own process, with settings and streams of its own (a
// separate `node` for each call cost the suite about a second of CPU each, some hundred times); what only
// the `smart-auth` executable does (its exit status, its output filters, a reader that closes early) is
// tested by running it (runCliBinary).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { runCli as runCommand } from '../../scripts/cli.ts';
import type { TestServer } from './server.ts';

const run = promisify(execFile);
export const CLI_BIN = new URL('../../scripts/smart-auth.js', import.meta.url).pathname;

export interface CliResult { code: number; stdout: string; stderr: string; json?: any }

/** Runs `smart-auth <args>` on `server`'s database; its exit code, output and (with --json) parsed answer. */
export function runCli(server: TestServer, ...args: string[]): Promise<CliResult> {
  return runCliWithEnv(server, {}, ...args);
}

const serverSettings = (server: TestServer, settings: Record<string, string | undefined>) => {
  const env: Record<string, string | undefined> = { ...process.env, DATABASE_URL: server.config.databaseUrl, ISSUER: server.issuer, ...settings };
  for (const [name, value] of Object.entries(env)) if (value === undefined) delete env[name];
  return env;
};

const parsed = (args: string[], stdout: string) => (args.includes('--json') && stdout ? JSON.parse(stdout) : undefined);

/** runCli with settings of its own on top (an operator's shell that lacks, `undefined`, or differs in one of the server's). */
export function runCliWithEnv(server: TestServer, settings: Record<string, string | undefined>, ...args: string[]): Promise<CliResult> {
  return runCliPiped(server, { settings }, ...args);
}

/** runCli with `input` piped to its standard input (and settings of its own, as runCliWithEnv). */
export async function runCliPiped(server: TestServer, { settings = {}, input = '' }: { settings?: Record<string, string | undefined>; input?: string }, ...args: string[]): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const code = await runCommand(args, {
    env: serverSettings(server, settings),
    stdout: { write: (chunk) => { stdout += String(chunk); } },
    stderr: { write: (chunk) => { stderr += String(chunk); } },
    stdin: { isTTY: false, async *[Symbol.asyncIterator]() { if (input) yield input; } },
  });
  return { code, stdout, stderr, json: parsed(args, stdout) };
}

/** The `smart-auth` executable itself, in a process of its own. */
export async function runCliBinary(server: TestServer, settings: Record<string, string | undefined>, ...args: string[]): Promise<CliResult> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI_BIN, ...args], { env: serverSettings(server, settings) as NodeJS.ProcessEnv });
    return { code: 0, stdout, stderr, json: parsed(args, stdout) };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr, json: parsed(args, e.stdout) };
  }
}
