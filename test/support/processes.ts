// Child processes for tests that need separate servers: the demo FHIR server, the guard proxy.
import { spawn, type ChildProcess } from 'node:child_process';
import { freePort } from './server.ts';

const ROOT = new URL('../../', import.meta.url).pathname;

export interface ChildServer {
  url: string;
  pid: number;
  output(): string;
  stop(): Promise<void>;
  /** Ends the process with a signal (SIGKILL: no chance to clean up) and waits for it. */
  kill(signal: NodeJS.Signals): Promise<void>;
}

/** Runs a script of this repository with tsx, or with `plain`, a JavaScript file in `cwd` run by plain node (no loader). */
export async function startScript(script: string, env: Record<string, string>, ready: RegExp, plain?: { cwd: string }): Promise<ChildServer> {
  const args = plain ? [script] : ['--import', 'tsx', script];
  const child: ChildProcess = spawn(process.execPath, args, { cwd: plain?.cwd ?? ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (d) => { output += d; });
  child.stderr!.on('data', (d) => { output += d; });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  for (let i = 0; i < 600 && !ready.test(output) && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 50));
  if (!ready.test(output)) {
    child.kill('SIGKILL');
    throw new Error(`${script} did not start:\n${output}`);
  }
  return {
    url: '',
    pid: child.pid!,
    output: () => output,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
    kill: async (signal) => {
      if (child.exitCode === null) child.kill(signal);
      await exited;
    },
  };
}

/** The bundled demo store as an independent, unguarded FHIR server on its own port. */
export async function startDemoFhirServer(databaseUrl: string): Promise<ChildServer> {
  const port = await freePort();
  const server = await startScript('scripts/demo-fhir-server.ts', { PORT: String(port), HOST: '127.0.0.1', DATABASE_URL: databaseUrl }, /listening/);
  return { ...server, url: `http://127.0.0.1:${port}/fhir` };
}

/** Medplum's FHIR router over its in-memory repository (a FHIR server written by someone else), with the demo data. */
export async function startMedplumFhirServer(): Promise<ChildServer> {
  const port = await freePort();
  const server = await startScript('test/support/medplum-fhir-server.ts', { PORT: String(port) }, /listening/);
  return { ...server, url: `http://127.0.0.1:${port}/fhir` };
}

/** scripts/guard-proxy.ts at `base`, in front of `upstream`, for tokens of `server`, auditing into its database. */
export async function startGuardProxy(server: { issuer: string; config: { databaseUrl: string } }, base: string, upstream: string, env: Record<string, string> = {}): Promise<ChildServer> {
  const proxy = await startScript('scripts/guard-proxy.ts', {
    PORT: new URL(base).port, HOST: '127.0.0.1', ISSUER: server.issuer, FHIR_BASE_URL: base, FHIR_UPSTREAM_URL: upstream,
    DATABASE_URL: server.config.databaseUrl, ...env,
  }, /listening/);
  return { ...proxy, url: base };
}
