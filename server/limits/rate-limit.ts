// Request rate limits (token and registration endpoints): a fixed window per key, in memory.
// These counters are per instance: with N instances behind a load balancer a client may get up to
// N x limit requests per window. That is deliberate (they are a guard against floods, not a quota);
// the login lockout, which must hold across instances, is in the database (login-throttle.ts).
import type { Context, Next } from 'koa';
import { routedPath } from '../net/routed-path.ts';

export interface RateLimiterOptions {
  /** Requests allowed per key per window. */
  limit: number;
  windowSeconds: number;
  /** Keys kept at most; beyond it, expired keys are dropped, then the oldest (10 000). */
  maxKeys?: number;
  /** The clock in milliseconds since the epoch; for tests. */
  now?: () => number;
}

export interface RateLimitResult {
  allowed: boolean;
  /** Seconds until the key's window is over (0 when allowed). */
  retryAfter: number;
}

export interface RateLimiter {
  take(key: string): RateLimitResult;
  /** Keys currently held (for tests and metrics). */
  readonly size: number;
}

interface Window {
  count: number;
  resetAt: number;
}

export function createRateLimiter({ limit, windowSeconds, maxKeys = 10_000, now = Date.now }: RateLimiterOptions): RateLimiter {
  if (!(limit >= 1) || !(windowSeconds > 0)) throw new RangeError('rate limiter: limit must be at least 1 and windowSeconds above 0');
  const windowMs = windowSeconds * 1000;
  const windows = new Map<string, Window>();
  let nextSweep = now() + windowMs;

  function sweep(at: number) {
    for (const [key, w] of windows) if (w.resetAt <= at) windows.delete(key);
    nextSweep = at + windowMs;
  }

  return {
    take(key) {
      const at = now();
      if (at >= nextSweep) sweep(at);
      let w = windows.get(key);
      if (!w || w.resetAt <= at) {
        if (w) windows.delete(key);
        if (windows.size >= maxKeys) {
          sweep(at);
          // Still full: forget the oldest windows (Map order is insertion order); they start afresh.
          for (const k of windows.keys()) {
            if (windows.size < maxKeys) break;
            windows.delete(k);
          }
        }
        w = { count: 0, resetAt: at + windowMs };
        windows.set(key, w);
      }
      if (w.count >= limit) return { allowed: false, retryAfter: Math.max(1, Math.ceil((w.resetAt - at) / 1000)) };
      w.count += 1;
      return { allowed: true, retryAfter: 0 };
    },
    get size() {
      return windows.size;
    },
  };
}

export interface RateLimitOptions {
  /** Request paths, e.g. ['/token'], matched as the routers match them: any case, with or without a trailing slash. */
  paths: string[];
  /** Methods limited (['POST']). */
  methods?: string[];
  limiter: RateLimiter;
  /** The key of a request (ctx.ip). */
  key?: (ctx: Context) => string;
  /** Answers a refused request once its status (429) and Retry-After are set (an OAuth error body). */
  refuse?: (ctx: Context, retryAfter: number) => void | Promise<void>;
}

function oauthRefusal(ctx: Context, retryAfter: number) {
  ctx.body = { error: 'temporarily_unavailable', error_description: `too many requests; retry after ${retryAfter} seconds` };
}

/** Koa middleware: 429 with Retry-After and an OAuth error body (or `refuse`'s answer) once a key is over its limit. */
export function rateLimit({ paths, methods = ['POST'], limiter, key = (ctx) => ctx.ip, refuse = oauthRefusal }: RateLimitOptions) {
  const pathSet = new Set(paths.map(routedPath));
  const methodSet = new Set(methods.map((m) => m.toUpperCase()));
  return async function rateLimited(ctx: Context, next: Next) {
    if (!pathSet.has(routedPath(ctx.path)) || !methodSet.has(ctx.method)) return next();
    const { allowed, retryAfter } = limiter.take(key(ctx));
    if (allowed) return next();
    ctx.status = 429;
    ctx.set('Retry-After', String(retryAfter));
    ctx.set('Cache-Control', 'no-store');
    await refuse(ctx, retryAfter);
  };
}
