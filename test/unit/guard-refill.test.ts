// Refilled pages: a filtered page is as full as an upstream page while more follows, and following `next`
// shows every visible item once, in upstream order; includes go with the matches they belong to.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { includesOf, refill, type Place, type SeenPage } from '../../server/resource-server/refill.ts';

/** The upstream as pages of `size` items (the last may hold fewer), each item visible or not. */
const upstreamOf = (visible: boolean[], size: number): SeenPage[] => {
  const pages: SeenPage[] = [];
  for (let at = 0; at === 0 || at < visible.length; at += size) pages.push({ visible: visible.slice(at, at + size), hasNext: at + size < visible.length });
  return pages;
};

/** Every page a client sees following `next`, as global item indices, reading at most `reads` pages after the first for each. */
function walk(upstream: SeenPage[], size: number, reads = Infinity): { pages: number[][]; next: boolean[] } {
  const pages: number[][] = [];
  const next: boolean[] = [];
  for (let start: Place | undefined = { page: 0, item: 0 }; start;) {
    let read = 1;
    let decided;
    while ((decided = refill(upstream.slice(start.page, start.page + read), start.item, read <= reads && start.page + read < upstream.length)) === 'more') read++;
    const from: number = start.page;
    pages.push(decided.taken.flatMap(({ page, from: f, to }) =>
      upstream[from + page].visible.slice(f, to).flatMap((v, i) => (v ? [(from + page) * size + f + i] : []))));
    next.push(decided.next !== undefined);
    start = decided.next && { page: from + decided.next.page, item: decided.next.item };
  }
  return { pages, next };
}

const upstreams = fc.record({ size: fc.integer({ min: 1, max: 5 }), visible: fc.array(fc.boolean(), { maxLength: 40 }) });

describe('refill', () => {
  it('fills every page but the last to the upstream page size, and following next shows every visible item once, in order', () => {
    fc.assert(fc.property(upstreams, ({ size, visible }) => {
      const { pages, next } = walk(upstreamOf(visible, size), size);
      assert.deepEqual(pages.flat(), visible.flatMap((v, i) => (v ? [i] : [])), 'every visible item, once, in upstream order, nothing hidden');
      pages.slice(0, -1).forEach((page) => assert.equal(page.length, size, 'a page with a next link is full'));
      assert.ok(pages.at(-1)!.length <= size);
      assert.deepEqual(next, pages.map((_, i) => i < pages.length - 1));
    }));
  });

  it('ends the answer when the reads allowed run out, never with a short page that has a next link', () => {
    fc.assert(fc.property(upstreams, fc.integer({ min: 0, max: 3 }), ({ size, visible }, reads) => {
      const { pages, next } = walk(upstreamOf(visible, size), size, reads);
      const shown = pages.flat();
      assert.deepEqual(shown, visible.flatMap((v, i) => (v ? [i] : [])).slice(0, shown.length), 'a prefix of the visible items, in order');
      pages.forEach((page, i) => { if (next[i]) assert.equal(page.length, size); });
    }));
  });

  it('resumes right after the last item shown, inside an upstream page', () => {
    const pages: SeenPage[] = [{ visible: [true, false, true], hasNext: true }, { visible: [false, true, true], hasNext: true }, { visible: [true, true, true], hasNext: false }];
    assert.equal(refill(pages.slice(0, 1), 0, true), 'more');
    assert.deepEqual(refill(pages, 0, true), { taken: [{ page: 0, from: 0, to: 3 }, { page: 1, from: 0, to: 2 }], next: { page: 1, item: 2 } });
    assert.deepEqual(refill(pages.slice(1), 2, true), { taken: [{ page: 0, from: 2, to: 3 }, { page: 1, from: 0, to: 2 }], next: { page: 1, item: 2 } });
    const fullThenHidden = [pages[0], { visible: [false, true, false], hasNext: true }];
    assert.equal(refill(fullThenHidden, 0, true), 'more', 'full, but is anything visible next?');
    assert.deepEqual(refill(fullThenHidden, 0, false), { taken: [{ page: 0, from: 0, to: 3 }, { page: 1, from: 0, to: 3 }] }, 'out of reads: the answer ends');
  });
});

describe('includes of the matches shown', () => {
  const obs = (id: string, patient: string, performer?: string) =>
    ({ resourceType: 'Observation', id, subject: { reference: `Patient/${patient}` }, ...(performer && { performer: [{ reference: `http://fhir.example.org/Practitioner/${performer}` }] }) });
  const include = (resource: object) => ({ resource, search: { mode: 'include' as const } }) as any;

  it('keeps what a shown match refers to, what refers to one, and what those refer to (:iterate); not what only another match needs', () => {
    // prov-2 is about o2, which the page does not show: that it refers to the patient o1 refers to does not make it o1's.
    const includes = [
      include({ resourceType: 'Patient', id: 'p1' }),
      include({ resourceType: 'Practitioner', id: 'dr-a' }),
      include({ resourceType: 'Practitioner', id: 'dr-hidden' }),
      include({ resourceType: 'Provenance', id: 'prov-1', target: [{ reference: 'Observation/o1' }], agent: [{ who: { reference: 'Organization/org-1' } }] }),
      include({ resourceType: 'Organization', id: 'org-1' }),
      include({ resourceType: 'Provenance', id: 'prov-2', target: [{ reference: 'Observation/o2' }], patient: { reference: 'Patient/p1' } }),
    ];
    const kept = includesOf(includes, [obs('o1', 'p1', 'dr-a')] as any).map((e) => `${e.resource!.resourceType}/${e.resource!.id}`);
    assert.deepEqual(kept, ['Patient/p1', 'Practitioner/dr-a', 'Provenance/prov-1', 'Organization/org-1']);
    assert.deepEqual(includesOf(includes, []), [], 'no match shown, no include');
  });
});
