// The guard for node:http and Express: `http.createServer(nodeGuard({...}))`, or `app.use(nodeGuard({...}))`
// in Express (a request outside the FHIR base goes to `next`, or gets a 404 without one).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createGuard, type GuardOptions } from './guard.ts';
import { FHIR_JSON, operationOutcome, type GuardResponse } from './responses.ts';
import { BodyRefused, bodyKind, bodyTooLarge, malformedBody, unsupportedBody } from './request-body.ts';
import type { Refusal } from './types.ts';

export interface NodeGuardOptions extends GuardOptions {
  /** Where the FHIR base is mounted, e.g. "/fhir" (default: the path of `base`). */
  prefix?: string;
  /** Largest request body, in bytes (default 1 MiB): larger is 413. */
  maxBodyBytes?: number;
}

/** The body as text; over the limit, reading stops (the stream is paused, not destroyed, so the refusal can still be sent). */
function readBody(req: IncomingMessage, limit: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = () => {
      req.off('data', onData).off('end', onEnd).off('error', onError);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      stop();
      req.pause();
      reject(new BodyRefused(bodyTooLarge));
    };
    const onEnd = () => {
      stop();
      resolve(size ? Buffer.concat(chunks).toString('utf8') : undefined);
    };
    const onError = (err: Error) => {
      stop();
      reject(err);
    };
    req.on('data', onData).on('end', onEnd).on('error', onError);
  });
}

/** JSON (FHIR, JSON Patch) or a form; a body Express already parsed is taken as it is. */
async function bodyOf(req: IncomingMessage & { body?: unknown }, limit: number): Promise<unknown> {
  if (req.body !== undefined && req.readableEnded) return req.body;
  const text = await readBody(req, limit);
  if (text === undefined) return undefined;
  const kind = bodyKind(req.headers['content-type']);
  if (!kind) throw new BodyRefused(unsupportedBody(req.headers['content-type']));
  if (kind === 'form') return new URLSearchParams(text);
  try {
    return JSON.parse(text);
  } catch {
    throw new BodyRefused(malformedBody);
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
      const remoteAddress = req.socket.remoteAddress;
      // A body that cannot be taken is refused by the guard, so that it is audited (with the token that sent it).
      let body: unknown;
      let bodyRefusal: Refusal | undefined;
      try {
        body = await bodyOf(req, limit);
      } catch (err) {
        if (!(err instanceof BodyRefused)) throw err;
        bodyRefusal = err.refusal;
      }
      // The rest of a body that was too large is not read: the connection cannot be used again.
      if (bodyRefusal === bodyTooLarge) res.setHeader('connection', 'close');
      reply(res, await guard.handle({
        method: req.method ?? 'GET',
        path: url.pathname.slice(prefix.length),
        query: url.searchParams,
        headers: req.headers,
        body,
        remoteAddress,
        ...(bodyRefusal && { bodyRefusal }),
      }));
    } catch (err) {
      if (next) return next(err);
      // Nothing about the failure goes to the client.
      reply(res, { status: 500, headers: { 'content-type': FHIR_JSON }, body: operationOutcome('error', 'exception', 'the request could not be processed') });
    }
  };
}
