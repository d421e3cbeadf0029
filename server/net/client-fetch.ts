// Fetching a URL a client named (its jwks_uri): no redirects, bounded time and size, and only to public
// addresses (loopback too outside production). The address is checked after DNS, before connecting, and
// again on the socket actually connected, so a name that resolves to an internal address is refused.
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction, Socket } from 'node:net';
import { classifyAddress } from './address-class.ts';

export interface ClientFetchOptions {
  /** Allow loopback destinations (local development; never in production). */
  allowLoopback: boolean;
  /** Default 2500 ms. */
  timeoutMs?: number;
  /** Largest response body, default 64 KiB. */
  maxBytes?: number;
}

export class RefusedDestinationError extends Error {
  override name = 'RefusedDestinationError';
}

export function createClientFetch(options: ClientFetchOptions) {
  const timeoutMs = options.timeoutMs ?? 2500;
  const maxBytes = options.maxBytes ?? 64 * 1024;
  const allowed = (address: string | undefined) => {
    const kind = address === undefined ? 'invalid' : classifyAddress(address);
    return kind === 'public' || (options.allowLoopback && kind === 'loopback');
  };
  const refuse = (address: string | undefined) => new RefusedDestinationError(`requests to ${address ?? 'an unknown address'} are not allowed`);

  // Every address a name resolves to must be allowed: one internal address among public ones is refused too.
  const lookup: LookupFunction = (hostname, lookupOptions, callback) => {
    dnsLookup(hostname, { ...lookupOptions, all: true }, (err, addresses: LookupAddress[]) => {
      if (err) return callback(err, '', 0);
      const bad = addresses.find((a) => !allowed(a.address));
      if (bad || !addresses.length) return callback(refuse(bad?.address), '', 0);
      if (lookupOptions.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses);
      return callback(null, addresses[0].address, addresses[0].family);
    });
  };

  return async function clientFetch(url: string | URL, init: { method?: string; headers?: HeadersInit; signal?: AbortSignal | null } = {}): Promise<Response> {
    const target = new URL(String(url));
    if (target.protocol !== 'https:' && target.protocol !== 'http:') throw new RefusedDestinationError(`${target.protocol} URLs are not fetched`);
    const literal = target.hostname.replace(/^\[(.*)\]$/, '$1');
    if (classifyAddress(literal) !== 'invalid' && !allowed(literal)) throw refuse(literal);
    const signal = init.signal ? AbortSignal.any([init.signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs);
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;

    const response = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = send(target, { method: init.method ?? 'GET', headers: Object.fromEntries(new Headers(init.headers)), lookup, signal, agent: false }, resolve);
      req.on('error', reject);
      req.on('socket', (socket: Socket) => {
        socket.once('connect', () => {
          if (!allowed(socket.remoteAddress)) req.destroy(refuse(socket.remoteAddress));
        });
      });
      req.end();
    });

    // Redirects are not followed: the caller sees the 3xx and treats it as a failure.
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of response as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > maxBytes) {
        response.destroy();
        throw new RangeError(`the response is larger than ${maxBytes} bytes`);
      }
      chunks.push(chunk);
    }
    const headers = new Headers();
    for (const [name, value] of Object.entries(response.headers)) {
      for (const v of Array.isArray(value) ? value : value === undefined ? [] : [value]) headers.append(name, v);
    }
    const status = response.statusCode ?? 502;
    if (status < 200 || status > 599) return new Response(null, { status: 502 });
    return new Response([204, 205, 304].includes(status) ? null : Buffer.concat(chunks), { status, headers });
  };
}
