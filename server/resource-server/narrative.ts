// Active content in XHTML narratives (Narrative.div): found, refused or removed. A narrative is
// shown by other apps, often through innerHTML, so it is read the way an HTML parser would:
// case-insensitive names, unquoted attributes, `/` between attributes, character references
// decoded before URLs are judged. Pure.
import type { FhirResource, Refusal } from './types.ts';

const XHTML = 'http://www.w3.org/1999/xhtml';
/**
 * Elements that run code, load documents or change how the page around them behaves, and those
 * whose content an HTML parser reads as raw text, where a tag hidden in an attribute value comes
 * alive (`<noscript><p title="</noscript><img onerror=…>">`). None belongs in a FHIR narrative.
 */
const ACTIVE_ELEMENTS = new Set([
  'script', 'iframe', 'object', 'embed', 'form', 'base', 'meta', 'link', 'applet', 'frame', 'frameset', 'style', 'svg', 'math',
  'noscript', 'noembed', 'noframes', 'xmp', 'plaintext', 'textarea', 'title',
]);
/** Active elements without content (no end tag to look for). */
const VOID_ELEMENTS = new Set(['base', 'meta', 'link', 'embed', 'frame']);
/** Attributes that only ever hold text; every other attribute value is checked as a URL. */
const TEXT_ATTRIBUTES = new Set(['id', 'class', 'title', 'alt', 'lang', 'dir', 'name', 'summary', 'abbr', 'scope', 'headers', 'colspan', 'rowspan', 'width', 'height', 'align', 'valign', 'border']);
const NAME = /^[A-Za-z_][A-Za-z0-9_.:-]*$/;
const SAFE_DATA = /^data:image\/(?:png|gif|jpeg|jpg|webp|bmp)[;,]/;
const EMPTY_DIV = `<div xmlns="${XHTML}"></div>`;

interface Attribute { name: string; value?: string }
type Token =
  | { kind: 'text'; text: string }
  | { kind: 'other'; text: string } // <!…>, <?…>
  | { kind: 'start'; name: string; attrs: Attribute[]; selfClosing: boolean }
  | { kind: 'end'; name: string };

/** Human-readable findings of active content; empty means safe. */
export function activeContent(div: string): string[] {
  const findings = new Set<string>();
  for (const token of tokenize(div)) {
    if (token.kind !== 'start') continue;
    const element = localName(token.name);
    if (ACTIVE_ELEMENTS.has(element)) findings.add(`<${element}> element`);
    for (const attr of token.attrs) {
      const problem = attributeProblem(attr);
      if (problem) findings.add(`${problem} on <${element}>`);
    }
  }
  return [...findings];
}

function attributeProblem(attr: Attribute): string | undefined {
  const name = localName(attr.name);
  if (/^on[a-z]/.test(name)) return `event handler attribute ${attr.name}`;
  if (attr.value === undefined || TEXT_ATTRIBUTES.has(name)) return undefined;
  const value = decodeReferences(attr.value);
  if (name === 'style') {
    const css = decodeCss(value).replace(/\/\*[\s\S]*?\*\//g, '').replace(/[\s\x00-\x1f]/g, '').toLowerCase();
    if (css.includes('expression(')) return 'style attribute with expression()';
    if (/url\(["']?(?:javascript|vbscript|livescript|data:text\/html)/.test(css)) return 'style attribute with a script url()';
    if (css.includes('-moz-binding') || css.includes('behavior:')) return 'style attribute with a binding';
    return undefined;
  }
  // Browsers skip control characters and whitespace in a URL scheme ("jav\tascript:").
  const url = value.replace(/[\x00-\x20\x7f-\x9f]/g, '').toLowerCase();
  const scheme = /^([a-z][a-z0-9+.-]*):/.exec(url)?.[1];
  if (scheme === 'javascript' || scheme === 'vbscript' || scheme === 'livescript') return `${scheme}: URL in ${attr.name}`;
  if (scheme === 'data' && !SAFE_DATA.test(url)) return `data: URL in ${attr.name}`;
  return undefined;
}

/** `<div xmlns="http://www.w3.org/1999/xhtml">…</div>` without active content; a safe XHTML div is returned as it is. */
export function sanitizeNarrative(div: string): string {
  if (activeContent(div).length === 0 && isXhtmlDiv(tokenize(div))) return div;
  let html = div;
  for (let pass = 0; pass < 3; pass++) {
    html = sanitizeOnce(html);
    if (activeContent(html).length === 0) return html;
  }
  return EMPTY_DIV; // removal kept producing new active content: give up on this narrative
}

function sanitizeOnce(div: string): string {
  // Comments go first and whole: an HTML parser may end them early (`<!-->`, `--!>`) and run what follows.
  const tokens = tokenize(div.replace(/<!--[\s\S]*?(?:-->|$)/g, ''));
  const kept: Token[] = [];
  let skipping: { name: string; depth: number } | undefined;
  for (const token of tokens) {
    if (skipping) {
      const name = token.kind === 'start' || token.kind === 'end' ? localName(token.name) : '';
      if (name !== skipping.name) continue;
      if (token.kind === 'start' && !token.selfClosing) skipping.depth++;
      if (token.kind === 'end' && --skipping.depth === 0) skipping = undefined;
      continue;
    }
    if (token.kind === 'other') continue;
    if (token.kind === 'text') {
      kept.push(token);
      continue;
    }
    if (!NAME.test(token.name)) continue; // drop the tag, keep what is inside
    const name = localName(token.name);
    if (ACTIVE_ELEMENTS.has(name)) {
      if (token.kind === 'start' && !token.selfClosing && !VOID_ELEMENTS.has(name)) skipping = { name, depth: 1 };
      continue; // with all its content, up to its end tag (or the end)
    }
    kept.push(token.kind === 'start' ? { ...token, attrs: safeAttributes(token.attrs) } : token);
  }
  const root = rootDiv(kept);
  const inner = root ? kept.slice(root.start + 1, root.end) : kept;
  const rootAttrs = root ? (kept[root.start] as Extract<Token, { kind: 'start' }>).attrs.filter((a) => a.name !== 'xmlns') : [];
  return `<div xmlns="${XHTML}"${rootAttrs.map(emitAttribute).join('')}>${inner.map(emit).join('')}</div>`;
}

function safeAttributes(attrs: Attribute[]): Attribute[] {
  const seen = new Set<string>();
  return attrs.filter((a) => {
    if (!NAME.test(a.name) || seen.has(a.name) || attributeProblem(a)) return false;
    seen.add(a.name);
    return true;
  });
}

function emit(token: Token): string {
  switch (token.kind) {
    case 'text': return token.text.replace(/</g, '&lt;');
    case 'start': return `<${token.name}${token.attrs.map(emitAttribute).join('')}${token.selfClosing ? '/' : ''}>`;
    case 'end': return `</${token.name}>`;
    case 'other': return '';
  }
}

const emitAttribute = (a: Attribute) => ` ${a.name}="${(a.value ?? '').replace(/"/g, '&quot;').replace(/</g, '&lt;')}"`;

/** The root `<div>` and its end tag when they enclose everything (whitespace aside). */
function rootDiv(tokens: Token[]): { start: number; end: number } | undefined {
  const significant = (t: Token) => !(t.kind === 'text' && t.text.trim() === '');
  const start = tokens.findIndex(significant);
  const end = tokens.findLastIndex(significant);
  const first = tokens[start];
  if (first?.kind !== 'start' || localName(first.name) !== 'div' || first.selfClosing) return undefined;
  let depth = 0;
  for (let i = start; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.kind === 'start' && localName(t.name) === 'div' && !t.selfClosing) depth++;
    if (t.kind === 'end' && localName(t.name) === 'div' && --depth === 0) return i === end ? { start, end } : undefined;
  }
  return undefined;
}

function isXhtmlDiv(tokens: Token[]): boolean {
  const root = rootDiv(tokens);
  const first = root && tokens[root.start];
  return first?.kind === 'start' && first.attrs.some((a) => a.name === 'xmlns' && a.value === XHTML);
}

const localName = (name: string) => name.toLowerCase().slice(name.lastIndexOf(':') + 1);

// ---- tokenizer: tags the way an HTML parser splits them, everything else is text ----

function tokenize(html: string): Token[] {
  const tokens: Token[] = [];
  let text = '';
  let i = 0;
  const flush = () => {
    if (text !== '') tokens.push({ kind: 'text', text });
    text = '';
  };
  while (i < html.length) {
    const next = html[i + 1] ?? '';
    if (html[i] === '<' && /[A-Za-z]/.test(next)) {
      flush();
      i = startTag(html, i + 1, tokens);
    } else if (html[i] === '<' && next === '/' && /[A-Za-z]/.test(html[i + 2] ?? '')) {
      flush();
      const end = until(html, i + 2, /[\s/>]/);
      tokens.push({ kind: 'end', name: html.slice(i + 2, end) });
      const close = html.indexOf('>', end);
      i = close < 0 ? html.length : close + 1;
    } else if (html[i] === '<' && (next === '!' || next === '?')) {
      flush();
      const close = html.indexOf('>', i);
      const end = close < 0 ? html.length : close + 1;
      tokens.push({ kind: 'other', text: html.slice(i, end) });
      i = end;
    } else {
      text += html[i++];
    }
  }
  flush();
  return tokens;
}

/** Parses the tag whose name starts at `i`; returns the index after its `>`. */
function startTag(html: string, i: number, tokens: Token[]): number {
  let j = until(html, i, /[\s/>]/);
  const name = html.slice(i, j);
  const attrs: Attribute[] = [];
  let selfClosing = false;
  while (j < html.length && html[j] !== '>') {
    if (/[\s/]/.test(html[j])) {
      selfClosing = html[j++] === '/';
      continue;
    }
    selfClosing = false;
    const nameEnd = until(html, j + 1, /[\s/>=]/); // j + 1: a name may start with '=' in HTML
    const attr: Attribute = { name: html.slice(j, nameEnd) };
    let k = skipSpace(html, nameEnd);
    j = nameEnd;
    if (html[k] === '=') {
      k = skipSpace(html, k + 1);
      const quote = html[k];
      if (quote === '"' || quote === "'") {
        const close = html.indexOf(quote, k + 1);
        attr.value = html.slice(k + 1, close < 0 ? html.length : close);
        j = close < 0 ? html.length : close + 1;
      } else {
        j = until(html, k, /[\s>]/);
        attr.value = html.slice(k, j);
      }
    }
    attrs.push(attr);
  }
  tokens.push({ kind: 'start', name, attrs, selfClosing });
  return j + 1;
}

function until(s: string, from: number, stop: RegExp): number {
  let i = from;
  while (i < s.length && !stop.test(s[i])) i++;
  return i;
}

const skipSpace = (s: string, from: number) => until(s, from, /\S/);

// ---- character references ----

const NAMED: Readonly<Record<string, string>> = {
  amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0', colon: ':', Tab: '\t', NewLine: '\n',
  lpar: '(', rpar: ')', sol: '/', bsol: '\\', period: '.', comma: ',', semi: ';', excl: '!', num: '#',
  percnt: '%', equals: '=', plus: '+', lowbar: '_', quest: '?', commat: '@', lsqb: '[', rsqb: ']',
};

/**
 * Numeric (`&#106;`, `&#x6A`, with or without `;`) and named references, repeated until nothing
 * changes: a narrative that is decoded twice on its way to a page must not hide a scheme either.
 */
function decodeReferences(value: string): string {
  let current = value;
  for (let pass = 0; pass < 5; pass++) {
    const next = current.replace(/&#(?:[xX]([0-9a-fA-F]+)|([0-9]+));?|&([A-Za-z]+);/g, (all, hex?: string, dec?: string, named?: string) => {
      if (named !== undefined) return Object.hasOwn(NAMED, named) ? NAMED[named] : all;
      return codePoint(parseInt(hex ?? dec ?? '', hex !== undefined ? 16 : 10));
    });
    if (next === current) return next;
    current = next;
  }
  return current;
}

/** CSS escapes (`\65 xpression`, `\(`) as characters. */
function decodeCss(css: string): string {
  return css.replace(/\\(?:([0-9a-fA-F]{1,6})\s?|([^\n0-9a-fA-F]))/g, (_, hex?: string, char?: string) =>
    hex !== undefined ? codePoint(parseInt(hex, 16)) : char ?? '');
}

const codePoint = (n: number) => (n > 0 && n <= 0x10ffff ? String.fromCodePoint(n) : '\ufffd');

// ---- resources ----

/**
 * Checks every narrative (`text.div`) in the resource: its own, contained resources', Bundle
 * entries', Composition sections', Parameters' — wherever a Narrative sits. `refuse` answers
 * 400; `sanitize` returns a copy with unsafe divs sanitized (the same object when all are safe).
 */
export function checkNarratives(resource: FhirResource, policy: 'refuse' | 'sanitize'): { resource: FhirResource } | Refusal {
  const findings: string[] = [];
  const result = rewrite(resource, '', (div, path) => {
    const found = activeContent(div);
    if (found.length === 0) return div;
    findings.push(`${path}: ${found.join(', ')}`);
    return policy === 'sanitize' ? sanitizeNarrative(div) : div;
  });
  if (policy === 'refuse' && findings.length > 0) {
    return { status: 400, code: 'invalid', message: `narrative contains active content: ${findings.join('; ')}` };
  }
  return { resource: result as FhirResource };
}

/** Copy-on-write walk replacing each Narrative's div by `visit(div, path)`. */
function rewrite(node: unknown, path: string, visit: (div: string, path: string) => string): unknown {
  if (Array.isArray(node)) {
    const items = node.map((item, i) => rewrite(item, `${path}[${i}]`, visit));
    return items.some((item, i) => item !== node[i]) ? items : node;
  }
  if (node === null || typeof node !== 'object') return node;
  let changed = false;
  const entries = Object.entries(node).map(([key, value]): [string, unknown] => {
    const at = path === '' ? key : `${path}.${key}`;
    let next: unknown;
    if (key === 'text' && isNarrative(value)) {
      const div = visit(value.div, `${at}.div`);
      next = div === value.div ? value : { ...value, div };
    } else {
      next = rewrite(value, at, visit);
    }
    changed ||= next !== value;
    return [key, next];
  });
  return changed ? Object.fromEntries(entries) : node;
}

function isNarrative(value: unknown): value is { div: string } {
  return typeof value === 'object' && value !== null && typeof (value as { div?: unknown }).div === 'string';
}
