// The smart-auth command, run as an administrator would, against the database of a running test server.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { TestServer } from './server.ts';

const run = promisify(execFile);
const BIN = new URL('../../scripts/smart-auth.js', import.meta.url).pathname;

export interface CliResult { code: number; stdout: string; stderr: string; json?: any }

/** Runs `smart-auth <args>` on `server`'s database; its exit code, output and (with --json) parsed answer. */
export function runCli(server: TestServer, ...args: string[]): Promise<CliResult> {
  return runCliWithEnv(server, {}, ...args);
}

/** runCli with settings of its own on top (an operator's shell that lacks or differs in one of the server's). */
export async function runCliWithEnv(server: TestServer, settings: Record<string, string | undefined>, ...args: string[]): Promise<CliResult> {
  const env = { ...process.env, DATABASE_URL: server.config.databaseUrl, ISSUER: server.issuer, ...settings };
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { env });
    return { code: 0, stdout, stderr, json: args.includes('--json') ? JSON.parse(stdout) : undefined };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr, json: args.includes('--json') && e.stdout ? JSON.parse(e.stdout) : undefined };
  }
}
