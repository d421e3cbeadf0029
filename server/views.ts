// Server-rendered pages: ejs templates under views/, always inside views/layout.ejs.
// ejs escapes every <%= %> output; templates never use the unescaped <%- %> for data.
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import ejs from 'ejs';

const VIEWS = fileURLToPath(new URL('../views/', import.meta.url));

export async function renderPage(view: string, data: Record<string, unknown>): Promise<string> {
  const options = { async: true, cache: process.env.NODE_ENV === 'production', root: VIEWS };
  const content = await ejs.renderFile(join(VIEWS, `${view}.ejs`), data, options);
  return ejs.renderFile(join(VIEWS, 'layout.ejs'), { title: 'smart-auth', ...data, content }, options);
}
