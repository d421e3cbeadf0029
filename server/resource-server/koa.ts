// The guard as Koa middleware: `app.use(smartGuard({...}))` answers everything under the FHIR base path.
import type { Context, Middleware, Next } from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { createGuard, type Guard, type GuardOptions } from './guard.ts';
import { FHIR_JSON, operationOutcome } from './responses.ts';

export interface SmartGuardOptions extends GuardOptions {
  /** Where the FHIR base is mounted in this app, e.g. "/fhir" (default: the path of `base`). */
  prefix?: string;
  /** Largest request body, in bytes (default 1 MiB): larger is 413. */
  maxBodyBytes?: number;
}

export function smartGuard(options: SmartGuardOptions): Middleware {
  return guardMiddleware(createGuard(options), options);
}

/** Koa middleware for a guard made with createGuard (when the app also calls it directly). */
export function guardMiddleware(guard: Guard, options: Pick<SmartGuardOptions, 'base' | 'prefix' | 'maxBodyBytes'>): Middleware {
  const prefix = (options.prefix ?? new URL(options.base).pathname).replace(/\/$/, '');
  const limit = options.maxBodyBytes ?? 1024 * 1024;
  const parse = bodyParser({
    enableTypes: ['json', 'form'],
    extendTypes: { json: ['application/fhir+json', 'application/json-patch+json'] },
    jsonLimit: limit, formLimit: limit,
    onError: (err, ctx) => {
      const status = (err as { status?: number }).status === 413 ? 413 : 400;
      ctx.throw(status, status === 413 ? 'the request body is too large' : 'the request body is not valid JSON or form data');
    },
  });

  return async function guardMiddleware(ctx: Context, next: Next) {
    if (ctx.path !== prefix && !ctx.path.startsWith(`${prefix}/`)) return next();
    try {
      await parse(ctx, async () => {});
    } catch (err) {
      const status = (err as { status?: number }).status === 413 ? 413 : 400;
      ctx.status = status;
      ctx.type = FHIR_JSON;
      ctx.body = operationOutcome('error', status === 413 ? 'too-costly' : 'invalid', (err as Error).message);
      return;
    }
    const path = ctx.path.slice(prefix.length);
    const isSearchForm = ctx.method === 'POST' && path.endsWith('_search') && ctx.is('application/x-www-form-urlencoded');
    const body = isSearchForm ? new URLSearchParams(ctx.request.body as Record<string, string>) : ctx.request.body;
    const response = await guard.handle({
      method: ctx.method,
      path,
      query: ctx.querystring,
      headers: ctx.headers,
      body: ctx.request.rawBody === undefined && !isSearchForm ? undefined : body,
      remoteAddress: ctx.ip,
    });
    ctx.status = response.status;
    ctx.set(response.headers);
    if (response.body !== undefined) ctx.body = response.body;
  };
}
