// The guard for node:http and Express: `http.createServer(nodeGuard({...}))`, or `app.use(nodeGuard({...}))`
// in Express (a request outside the FHIR base goes to `next`, or gets a 404 without one).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createGuard, type GuardOptions } from './guard.ts';
import { FHIR_JSON, operationOutcome, type GuardResponse } from './responses.ts';

export interface NodeGuardOptions extends GuardOptions {
  /** Where the FHIR base is mounted, e.g. "/fhir" (default: the path of `base`). */
  prefix?: string;
  /** Largest request body, in bytes (default 1 MiB): larger is 413. */
  maxBodyBytes?: number;
}

class BodyError extends Error {
  constructor(readonly status: 400 | 413, message: string) {
    super(message);
  }
}

async function readBody(req: IncomingMessage, limit: number): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new BodyError(413, 'the request body is too large');
    chunks.push(chunk as Buffer);
  }
  return size ? Buffer.concat(chunks).toString('utf8') : undefined;
}

/** JSON (FHIR, JSON Patch) or a form; a body Express already parsed is taken as it is. */
async function bodyOf(req: IncomingMessage & { body?: unknown }, limit: number): Promise<unknown> {
  if (req.body !== undefined && req.readableEnded) return req.body;
  const text = await readBody(req, limit);
  if (text === undefined) return undefined;
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type === 'application/x-www-form-urlencoded') return new URLSearchParams(text);
  try {
    return JSON.parse(text);
  } catch {
    throw new BodyError(400, 'the request body is not valid JSON');
  }
}

function reply(res: ServerResponse, response: GuardResponse): void {
  res.statusCode = response.status;
  for (const [name, value] of Object.entries(response.headers)) res.setHeader(name, value);
  res.end(response.body === undefined ? undefined : JSON.stringify(response.body));
}

export function nodeGuard(options: NodeGuardOptions) {
  const guard = createGuard(options);
  const prefix = (options.prefix ?? new URL(options.base).pathname).replace(/\/$/, '');
  const limit = options.maxBodyBytes ?? 1024 * 1024;

  return async function guardListener(req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname !== prefix && !url.pathname.startsWith(`${prefix}/`)) {
      if (next) return next();
      return reply(res, { status: 404, headers: { 'content-type': FHIR_JSON }, body: operationOutcome('error', 'not-found', 'not a FHIR path') });
    }
    try {
      let body: unknown;
      try {
        body = await bodyOf(req, limit);
      } catch (err) {
        if (!(err instanceof BodyError)) throw err;
        return reply(res, { status: err.status, headers: { 'content-type': FHIR_JSON }, body: operationOutcome('error', err.status === 413 ? 'too-costly' : 'invalid', err.message) });
      }
      reply(res, await guard.handle({
        method: req.method ?? 'GET',
        path: url.pathname.slice(prefix.length),
        query: url.searchParams,
        headers: req.headers,
        body,
        remoteAddress: req.socket.remoteAddress,
      }));
    } catch (err) {
      if (next) return next(err);
      // Nothing about the failure goes to the client.
      reply(res, { status: 500, headers: { 'content-type': FHIR_JSON }, body: operationOutcome('error', 'exception', 'the request could not be processed') });
    }
  };
}
