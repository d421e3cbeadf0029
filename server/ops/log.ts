// Structured logs: one JSON object per line on stdout, with the request id. Never a secret or a token:
// paths are logged without their query string, and errors without request bodies.
import { writeSync } from 'node:fs';
import type { Context, Next } from 'koa';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';
const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

export interface Logger {
  log(level: Exclude<LogLevel, 'silent'>, message: string, fields?: Record<string, unknown>): void;
  /** Koa middleware: one line per request (method, path without query, status, duration, request id, client address). */
  requests(ctx: Context, next: Next): Promise<void>;
}

function errorFields(err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { error: String(err) };
  return { error: err.message, error_name: err.name, stack: err.stack?.split('\n').slice(0, 6).join('\n') };
}

/** What the process has logged in this turn of the event loop (standard output is the process's, so is this). */
let held = '';
let exitHooked = false;

function flushHeld() {
  const text = held;
  held = '';
  if (text) process.stdout.write(text);
}

/**
 * A line to standard output, written together with the others of the same turn of the event loop: under
 * load, the answers one group commit releases are logged with one write instead of one each. What is
 * still held when the process exits is written then.
 */
export function stdoutLine(line: string): void {
  if (!exitHooked) {
    exitHooked = true;
    process.once('exit', () => {
      try {
        if (held) writeSync(1, held);
      } catch {
        // standard output is gone: nothing to write to
      }
    });
  }
  if (!held) setImmediate(flushHeld);
  held += `${line}\n`;
}

export function createLogger(level: LogLevel, write: (line: string) => void = stdoutLine): Logger {
  const log: Logger['log'] = (lvl, message, fields = {}) => {
    if (RANK[lvl] < RANK[level]) return;
    const { err, ...rest } = fields as { err?: unknown };
    write(JSON.stringify({ time: new Date().toISOString(), level: lvl, msg: message, ...rest, ...(err !== undefined && errorFields(err)) }));
  };
  return {
    log,
    async requests(ctx, next) {
      const start = process.hrtime.bigint();
      try {
        await next();
      } finally {
        log(ctx.status >= 500 ? 'error' : 'info', 'request', {
          request_id: ctx.state.requestId, method: ctx.method, path: ctx.path, status: ctx.status,
          ms: Number(process.hrtime.bigint() - start) / 1e6, address: ctx.ip,
        });
      }
    },
  };
}
