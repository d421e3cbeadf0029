// The guard's way to the FHIR server it protects: over HTTP (httpUpstream) or
// in process (inProcessUpstream; server/fhir/server.ts builds storeUpstream on
// it for the bundled store). Imports nothing from the authorization server.
//
// Responses are buffered and parsed: the guard inspects every resource of a
// response (compartments, labels, includes) before anything goes back to the
// client, so streaming a body it filters is not possible. The size limit keeps
// that buffer bounded.
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { FhirResource } from './types.ts';

export interface UpstreamRequest {
  method: string;
  /** Below the FHIR base, with the query string: "Patient/pat-1", "Observation?patient=pat-1", "" (batch). */
  path: string;
  /** Only FORWARDED_HEADERS are passed on (names in any case). */
  headers?: Record<string, string>;
  /** A resource or Bundle (sent as JSON), URLSearchParams (a form), or a string sent as is. */
  body?: unknown;
  /** With a write: its Provenance without the target, for an upstream that stores it with the change (never sent over HTTP). */
  provenance?: FhirResource;
}

export interface UpstreamResponse {
  status: number;
  /** The upstream's headers (ETag, Location, Last-Modified, …). */
  headers: Headers;
  /** The parsed JSON body; undefined when the body was empty. */
  body: unknown | undefined;
}

export interface Upstream {
  send(request: UpstreamRequest): Promise<UpstreamResponse>;
}

/** The upstream failed: unreachable, timed out, or answered something that is not FHIR JSON (502/504); or the request is too large to send (413). */
export class UpstreamError extends Error {
  readonly status: 502 | 504 | 413;
  constructor(status: 502 | 504 | 413, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UpstreamError';
    this.status = status;
  }
}

/** Request headers that reach the upstream (lower case). Never Authorization or cookies: the client's token is for the guard. */
export const FORWARDED_HEADERS: readonly string[] = ['content-type', 'if-match', 'if-none-match', 'prefer', 'x-request-id'];

export interface HttpUpstreamOptions {
  /** The upstream FHIR base URL, e.g. http://127.0.0.1:8090/fhir. */
  baseUrl: string;
  /** For the whole exchange, body included (default 10 s): then UpstreamError 504. */
  timeoutMs?: number;
  /** Largest response body, and request body, in bytes (default 10 MiB): then UpstreamError 502 (response) or 413 (request). */
  maxBodyBytes?: number;
}

/**
 * Over node:http(s) with a keep-alive agent, not fetch: measured on the same machine, fetch spent 0.4-0.5 ms
 * of CPU per small request against 0.11-0.2 ms for node:http, and the guard proxy is mostly this hop.
 */
export function httpUpstream(options: HttpUpstreamOptions): Upstream {
  const base = options.baseUrl.replace(/\/+$/, '');
  const timeoutMs = options.timeoutMs ?? 10_000;
  const maxBodyBytes = options.maxBodyBytes ?? 10 * 1024 * 1024;
  const agent = new URL(base).protocol === 'https:' ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true });
  const limits = { timeoutMs, maxBodyBytes };

  return {
    async send(request) {
      const url = upstreamUrl(base, request.path);
      const headers: Record<string, string> = { accept: 'application/fhir+json' };
      for (const [name, value] of Object.entries(request.headers ?? {})) {
        if (FORWARDED_HEADERS.includes(name.toLowerCase()) && typeof value === 'string' && value !== '') headers[name.toLowerCase()] = value;
      }
      let body: string | undefined;
      if (request.body instanceof URLSearchParams) {
        body = request.body.toString();
        headers['content-type'] = 'application/x-www-form-urlencoded';
      } else if (typeof request.body === 'string') {
        body = request.body;
        headers['content-type'] ??= 'application/fhir+json';
      } else if (request.body !== undefined) {
        body = JSON.stringify(request.body);
        // No FHIR resource is an array: an array is a JSON Patch (RFC 6902), which has its own media type.
        headers['content-type'] = Array.isArray(request.body) ? 'application/json-patch+json' : 'application/fhir+json';
      }
      if (body !== undefined) {
        const length = Buffer.byteLength(body);
        if (length > maxBodyBytes) throw new UpstreamError(413, `the request body is larger than ${maxBodyBytes} bytes`);
        headers['content-length'] = String(length);
      }
      // A read may go again once when its kept-alive connection turns out to be closed (see exchange).
      const call = { url, method: request.method, headers, body, agent, mayRetry: request.method === 'GET' || request.method === 'HEAD' };
      return exchange(call, limits);
    },
  };
}

interface Call {
  url: URL;
  method: string;
  headers: Record<string, string>;
  body?: string;
  agent: HttpAgent;
  mayRetry: boolean;
}

/**
 * One request and its whole answer, within the time and size limits. No redirects are followed: a 3xx
 * from a FHIR API is unexpected, and following one could send the request elsewhere.
 */
function exchange(call: Call, { timeoutMs, maxBodyBytes }: { timeoutMs: number; maxBodyBytes: number }): Promise<UpstreamResponse> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (err: Error | undefined, response?: UpstreamResponse) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) {
        req.destroy();
        reject(err);
      } else {
        resolve(response!);
      }
    };
    const tooLarge = () => new UpstreamError(502, `the FHIR server's response is larger than ${maxBodyBytes} bytes`);
    const timer = setTimeout(() => settle(new UpstreamError(504, 'upstream timed out')), timeoutMs);
    const send = call.url.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(call.url, { method: call.method, headers: call.headers, agent: call.agent }, (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400 && status !== 304) {
        res.resume();
        settle(new UpstreamError(502, `the FHIR server answered ${status} (a redirect)`));
        return;
      }
      if (Number(res.headers['content-length']) > maxBodyBytes) {
        settle(tooLarge());
        return;
      }
      const chunks: Buffer[] = [];
      let total = 0;
      res.on('data', (chunk: Buffer) => {
        total += chunk.byteLength;
        if (total > maxBodyBytes) settle(tooLarge());
        else chunks.push(chunk);
      });
      res.on('end', () => {
        try {
          settle(undefined, { status, headers: headersOf(res.rawHeaders), body: parseJson(Buffer.concat(chunks), status) });
        } catch (err) {
          settle(err as Error);
        }
      });
      res.on('error', (err) => settle(unreachable(err)));
      res.on('aborted', () => settle(unreachable(new Error('the connection closed before the answer was complete'))));
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      // ECONNRESET on a reused keep-alive socket before any answer: the upstream had closed it. A read
      // goes once more, on a new connection (with a new time limit); a write is never repeated.
      if (!settled && call.mayRetry && req.reusedSocket && err.code === 'ECONNRESET') {
        settled = true;
        clearTimeout(timer);
        resolve(exchange({ ...call, mayRetry: false }, { timeoutMs, maxBodyBytes }));
        return;
      }
      settle(unreachable(err));
    });
    req.end(call.body);
  });
}

// The message reaches the client: the cause (addresses, system error codes) stays in `cause`.
const unreachable = (err: Error) => new UpstreamError(502, 'the FHIR server could not be reached', { cause: err });

function headersOf(raw: string[]): Headers {
  const headers = new Headers();
  for (let i = 0; i + 1 < raw.length; i += 2) headers.append(raw[i], raw[i + 1]);
  return headers;
}

/** `{base}/{path}`, refusing a path that would leave the base (`..`, another origin). */
function upstreamUrl(base: string, path: string): URL {
  const url = new URL(`${base}/${path.replace(/^\/+/, '')}`);
  const root = new URL(`${base}/`);
  if (url.origin !== root.origin || !(url.pathname.startsWith(root.pathname) || `${url.pathname}/` === root.pathname)) {
    throw new RangeError(`upstream path leaves the FHIR base: ${path}`);
  }
  return url;
}

function parseJson(bytes: Uint8Array, status: number): unknown {
  if (bytes.byteLength === 0) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new UpstreamError(502, `the FHIR server answered ${status} with a body that is not JSON`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new UpstreamError(502, `the FHIR server answered ${status} with JSON that is not a FHIR resource`);
  }
  return parsed;
}

/**
 * An Upstream answered by a function in this process (no network). Whatever
 * the function throws, other than an UpstreamError, becomes UpstreamError 502:
 * the guard fails closed the same way as over HTTP.
 */
export function inProcessUpstream(handler: (request: UpstreamRequest) => Promise<UpstreamResponse>): Upstream {
  return {
    async send(request) {
      try {
        return await handler(request);
      } catch (err) {
        if (err instanceof UpstreamError) throw err;
        throw new UpstreamError(502, 'the in-process FHIR server failed', { cause: err });
      }
    },
  };
}

/** `url` with the base `from` replaced by `to` (for Location and Content-Location); other URLs unchanged. */
export function rewriteUrl(url: string, from: string, to: string): string {
  const source = from.replace(/\/+$/, '');
  const target = to.replace(/\/+$/, '');
  if (url === source) return target;
  if (url.startsWith(source) && (url[source.length] === '/' || url[source.length] === '?')) return target + url.slice(source.length);
  return url;
}

/**
 * A copy of a response body with the upstream base `from` replaced by the
 * public base `to` in Bundle.link[].url, entry[].fullUrl and
 * entry[].response.location (nested Bundles too, e.g. searchsets in a
 * batch-response) and in CapabilityStatement.implementation.url. Anything
 * else is returned as is (the same object).
 */
export function rewriteLinks(body: unknown, from: string, to: string): unknown {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return body;
  const resource = body as Record<string, unknown>;
  const url = (value: unknown) => (typeof value === 'string' ? rewriteUrl(value, from, to) : value);
  if (resource.resourceType === 'CapabilityStatement' && isRecord(resource.implementation)) {
    return { ...resource, implementation: { ...resource.implementation, url: url(resource.implementation.url) } };
  }
  if (resource.resourceType !== 'Bundle') return body;
  return {
    ...resource,
    ...(Array.isArray(resource.link)
      ? { link: resource.link.map((l) => (isRecord(l) ? { ...l, url: url(l.url) } : l)) }
      : {}),
    ...(Array.isArray(resource.entry)
      ? {
        entry: resource.entry.map((e) => {
          if (!isRecord(e)) return e;
          const entry: Record<string, unknown> = { ...e };
          if ('fullUrl' in e) entry.fullUrl = url(e.fullUrl);
          if (isRecord(e.response) && 'location' in e.response) entry.response = { ...e.response, location: url(e.response.location) };
          if ('resource' in e) entry.resource = rewriteLinks(e.resource, from, to);
          return entry;
        }),
      }
      : {}),
  };
}

const isRecord = (value: unknown): value is Record<string, unknown> => value !== null && typeof value === 'object' && !Array.isArray(value);
