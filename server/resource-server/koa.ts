// The guard as Koa middleware: `app.use(smartGuard({...}))` answers everything under the FHIR base path.
import type { Context, Middleware, Next } from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { createGuard, type Guard, type GuardOptions } from './guard.ts';
import type { Refusal } from './types.ts';
import { BodyRefused, bodyKind, bodyTooLarge, JSON_BODY_TYPES, malformedBody, unsupportedBody } from './request-body.ts';

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
    extendTypes: { json: [...JSON_BODY_TYPES] },
    jsonLimit: limit, formLimit: limit,
    onError: (err) => { throw new BodyRefused((err as { status?: number }).status === 413 ? bodyTooLarge : malformedBody); },
  });

  return async function guardMiddleware(ctx: Context, next: Next) {
    if (ctx.path !== prefix && !ctx.path.startsWith(`${prefix}/`)) return next();
    // A body that cannot be taken is refused by the guard, so that it is audited (with the token that sent it).
    let bodyRefusal: Refusal | undefined;
    const hasBody = ctx.request.length > 0 || ctx.get('transfer-encoding') !== '';
    if (hasBody && !bodyKind(ctx.get('content-type'))) {
      bodyRefusal = unsupportedBody(ctx.get('content-type'));
    } else {
      try {
        await parse(ctx, async () => {});
      } catch (err) {
        bodyRefusal = err instanceof BodyRefused ? err.refusal : malformedBody;
      }
    }
    const path = ctx.path.slice(prefix.length);
    const isSearchForm = ctx.method === 'POST' && path.endsWith('_search') && ctx.is('application/x-www-form-urlencoded');
    const body = isSearchForm ? new URLSearchParams(ctx.request.body as Record<string, string>) : ctx.request.body;
    const response = await guard.handle({
      method: ctx.method,
      path,
      query: ctx.querystring,
      headers: ctx.headers,
      body: bodyRefusal || (ctx.request.rawBody === undefined && !isSearchForm) ? undefined : body,
      remoteAddress: ctx.ip,
      ...(bodyRefusal && { bodyRefusal }),
    });
    ctx.status = response.status;
    ctx.set(response.headers);
    if (response.body !== undefined) ctx.body = response.body;
  };
}
