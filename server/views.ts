// Server-rendered pages: ejs templates under views/, always inside views/layout.ejs.
// ejs escapes every <%= %> output; templates never use the unescaped <%- %> for data.
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import ejs from 'ejs';
import type { Context } from 'koa';
import { PAGE_CSP } from './net/security-headers.ts';

const VIEWS = fileURLToPath(new URL('../views/', import.meta.url));

export async function renderPage(view: string, data: Record<string, unknown>): Promise<string> {
  const options = { async: true, cache: process.env.NODE_ENV === 'production', root: VIEWS };
  const content = await ejs.renderFile(join(VIEWS, `${view}.ejs`), data, options);
  return ejs.renderFile(join(VIEWS, 'layout.ejs'), { title: 'smart-auth', ...data, content }, options);
}

/** Answers with a page; pages are never cached (they carry CSRF tokens, secrets or personal data). */
export async function sendPage(ctx: Context, view: string, data: Record<string, unknown>, status = 200): Promise<void> {
  ctx.status = status;
  ctx.type = 'html';
  ctx.set('Cache-Control', 'no-store');
  ctx.body = await renderPage(view, data);
}

/**
 * For pages with a passkey form or an automatic step: they may load this server's own scripts (/static/),
 * never inline ones (whatever a library added to the policy for its own inline script).
 */
export function allowOwnScripts(ctx: Context): void {
  ctx.set('Content-Security-Policy', PAGE_CSP.replace("script-src 'none'", "script-src 'self'"));
}
