// The guard's way to the FHIR server it protects: over HTTP (httpUpstream) or
// in process (inProcessUpstream; server/fhir/server.ts builds storeUpstream on
// it for the bundled store). Imports nothing from the authorization server.
//
// Responses are buffered and parsed: the guard inspects every resource of a
// response (compartments, labels, includes) before anything goes back to the
// client, so streaming a body it filters is not possible. The size limit keeps
// that buffer bounded.

export interface UpstreamRequest {
  method: string;
  /** Below the FHIR base, with the query string: "Patient/pat-1", "Observation?patient=pat-1", "" (batch). */
  path: string;
  /** Only FORWARDED_HEADERS are passed on (names in any case). */
  headers?: Record<string, string>;
  /** A resource or Bundle (sent as JSON), URLSearchParams (a form), or a string sent as is. */
  body?: unknown;
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
  fetch?: typeof fetch;
}

export function httpUpstream(options: HttpUpstreamOptions): Upstream {
  const base = options.baseUrl.replace(/\/+$/, '');
  const timeoutMs = options.timeoutMs ?? 10_000;
  const maxBodyBytes = options.maxBodyBytes ?? 10 * 1024 * 1024;
  const fetchImpl = options.fetch ?? fetch;

  return {
    async send(request) {
      const url = upstreamUrl(base, request.path);
      const headers = new Headers({ accept: 'application/fhir+json' });
      for (const [name, value] of Object.entries(request.headers ?? {})) {
        if (FORWARDED_HEADERS.includes(name.toLowerCase()) && typeof value === 'string' && value !== '') headers.set(name, value);
      }
      let body: string | undefined;
      if (request.body instanceof URLSearchParams) {
        body = request.body.toString();
        headers.set('content-type', 'application/x-www-form-urlencoded');
      } else if (typeof request.body === 'string') {
        body = request.body;
        if (!headers.has('content-type')) headers.set('content-type', 'application/fhir+json');
      } else if (request.body !== undefined) {
        body = JSON.stringify(request.body);
        headers.set('content-type', 'application/fhir+json');
      }
      if (body !== undefined && Buffer.byteLength(body) > maxBodyBytes) {
        throw new UpstreamError(413, `the request body is larger than ${maxBodyBytes} bytes`);
      }

      const signal = AbortSignal.timeout(timeoutMs);
      try {
        // No redirects: a 3xx from a FHIR API is unexpected, and following one could send the request elsewhere.
        const response = await fetchImpl(url, { method: request.method, headers, body, signal, redirect: 'manual' });
        if (response.status >= 300 && response.status < 400 && response.status !== 304) {
          await response.body?.cancel().catch(() => {});
          throw new UpstreamError(502, `the FHIR server answered ${response.status} (a redirect)`);
        }
        const bytes = await readLimited(response, maxBodyBytes);
        return { status: response.status, headers: response.headers, body: parseJson(bytes, response.status) };
      } catch (err) {
        throw asUpstreamError(err, signal);
      }
    },
  };
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

async function readLimited(response: Response, max: number): Promise<Uint8Array> {
  const tooLarge = () => new UpstreamError(502, `the FHIR server's response is larger than ${max} bytes`);
  const declared = Number(response.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > max) {
    await response.body?.cancel().catch(() => {});
    throw tooLarge();
  }
  if (!response.body) return new Uint8Array();
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
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

function asUpstreamError(err: unknown, signal: AbortSignal): Error {
  if (err instanceof UpstreamError) return err;
  const name = (err as { name?: string } | undefined)?.name;
  if (name === 'TimeoutError' || (signal.aborted && (signal.reason as { name?: string } | undefined)?.name === 'TimeoutError')) {
    return new UpstreamError(504, 'upstream timed out', { cause: err });
  }
  return new UpstreamError(502, `the FHIR server could not be reached: ${(err as Error)?.message ?? String(err)}`, { cause: err });
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
