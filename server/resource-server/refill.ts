// Full pages from filtered upstream pages. A page that shows fewer entries than the page size while a next
// page follows would tell that the rules hid some of it, so a filtered page takes the visible matches (or
// versions) of the upstream pages that follow until it is full, and its next page starts right after the
// last one it shows. Pure: the guard reads the pages, this decides what of them a page shows.
import { parseReference } from '../fhir/compartment.ts';
import type { FhirBundle, FhirBundleEntry, FhirResource } from './types.ts';

/** An upstream page as the refill sees it: which of its items (matches, or a history's versions) the token may see. */
export interface SeenPage {
  visible: readonly boolean[];
  hasNext: boolean;
}

/** An item of the pages read: the page (index into them) and its place among that page's items. */
export interface Place {
  page: number;
  item: number;
}

/** What a page shows: the items of each page read, [from, to) (hidden ones inside the range included), and where the next page starts. */
export interface Refilled {
  taken: { page: number; from: number; to: number }[];
  /** Undefined: no next page (the upstream has no more, or the reads allowed ran out: then the answer ends, short or not). */
  next?: Place;
}

/**
 * The page that starts at item `skip` of the first of `pages`, or 'more' when the pages read cannot decide
 * it yet and `mayRead` allows another. Its size is the first page's item count when a next page follows it
 * (the upstream's page size, which is the client's `_count` when it gave one), else everything left.
 * A page that is full gets a next page only when a visible item follows; one that is not full and can
 * read no further ends the answer: a short page with a next link would tell that hidden items came before.
 */
export function refill(pages: readonly SeenPage[], skip: number, mayRead: boolean): Refilled | 'more' {
  const size = pages[0].hasNext ? Math.max(1, pages[0].visible.length) : Infinity;
  let shown = 0;
  let last: Place | undefined;
  for (let page = 0; page < pages.length; page++) {
    const { visible } = pages[page];
    for (let item = page === 0 ? skip : 0; item < visible.length; item++) {
      if (!visible[item]) continue;
      if (shown === size) return { taken: ranges(pages, skip, after(pages, last!)), next: after(pages, last!) };
      shown++;
      last = { page, item };
    }
  }
  if (pages.at(-1)!.hasNext && mayRead) return 'more';
  return { taken: ranges(pages, skip, { page: pages.length, item: 0 }) };
}

/** The place after `place`: the next page's first item when it was the last of its page. */
function after(pages: readonly SeenPage[], place: Place): Place {
  return place.item + 1 < pages[place.page].visible.length ? { page: place.page, item: place.item + 1 } : { page: place.page + 1, item: 0 };
}

function ranges(pages: readonly SeenPage[], skip: number, end: Place): Refilled['taken'] {
  const taken: Refilled['taken'] = [];
  for (let page = 0; page <= Math.min(end.page, pages.length - 1); page++) {
    const from = page === 0 ? skip : 0;
    const to = page === end.page ? end.item : pages[page].visible.length;
    if (to > from) taken.push({ page, from, to });
  }
  return taken;
}

/**
 * The `_include`/`_revinclude` entries that belong to `matches`: those a match refers to, or an include kept
 * refers to (`:iterate`), and those that refer to a match. An include of a match the page does not show would
 * tell of that match (a hidden one, or one on another page); so would one that refers only to what the
 * matches refer to (the Provenance of a hidden result, by its patient), which is left out too.
 */
export function includesOf(includes: readonly FhirBundleEntry[], matches: readonly FhirResource[]): FhirBundleEntry[] {
  const shown = new Set<string>(matches.flatMap((m) => keyOf(m) ?? []));
  const refersTo = new Set<string>(matches.flatMap(referencesIn));
  const left = new Set(includes.filter((e) => e.resource));
  for (let grew = true; grew;) {
    grew = false;
    for (const entry of left) {
      const key = keyOf(entry.resource!);
      const references = referencesIn(entry.resource!);
      if ((key && refersTo.has(key)) || references.some((r) => shown.has(r))) {
        left.delete(entry);
        for (const r of references) refersTo.add(r);
        grew = true;
      }
    }
  }
  return includes.filter((e) => e.resource && !left.has(e));
}

/**
 * A page after the rules, its includes chosen again from what is left: includesOf ran before the rules, when a
 * hidden include still linked what it refers to (`_include:iterate`), which would then tell what the hidden
 * resource holds (the performer of a hidden test). Every include shown hangs on the matches shown through
 * resources shown.
 */
export function connectedIncludes(page: FhirBundle): FhirBundle {
  const entries = page.entry ?? [];
  const includes = entries.filter((e) => e.search?.mode === 'include');
  if (includes.length === 0) return page;
  const matches = entries.flatMap((e) => ((e.search?.mode ?? 'match') === 'match' && e.resource ? [e.resource] : []));
  const kept = new Set(includesOf(includes, matches));
  return { ...page, entry: entries.filter((e) => e.search?.mode !== 'include' || kept.has(e)) };
}

const keyOf = (resource: FhirResource) => (resource.id ? `${resource.resourceType}/${resource.id}` : undefined);

/** Every literal reference in `node`, as `Type/id`. */
function referencesIn(node: unknown): string[] {
  if (Array.isArray(node)) return node.flatMap(referencesIn);
  if (node === null || typeof node !== 'object') return [];
  return Object.entries(node).flatMap(([name, value]) => {
    if (name === 'reference' && typeof value === 'string') {
      const target = parseReference(value);
      return target ? [`${target.type}/${target.id}`] : [];
    }
    return referencesIn(value);
  });
}
