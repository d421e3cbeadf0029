// Element subsetting (_elements, _summary) through the guard with the privacy rules on: the rules read
// meta.security and the patient references, which an upstream that honours subsetting may leave out.
// And the history of a labelled resource: a deletion carries no labels to read, an older version may predate
// them; paged answers that count it, and how often a refilled page asks the rules.
import assert from 'node:assert/strict';
import { createGuard } from '../../server/resource-server/guard.ts';
import { tokenContext } from '../../server/resource-server/verify-token.ts';
import { createPrivacyPolicy } from '../../server/privacy/pipeline.ts';
import { residualFor } from '../../server/hcs/token-claims.ts';
import type { FhirResource } from '../../server/resource-server/types.ts';
import type { UpstreamRequest } from '../../server/resource-server/upstream.ts';
import type { ConsentCache } from '../../server/privacy/consent.ts';

const BASE = 'https://fhir.example.org/r4';
const HIV: FhirResource = {
  resourceType: 'Observation', id: 'obs-hiv', status: 'final', code: { text: 'HIV viral load' }, subject: { reference: 'Patient/pat-2' },
  meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }, { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'HIV' }] },
};

/** An upstream that subsets as FHIR R4 allows: id and the asked-for elements only (meta is not mandatory). */
function subsettingUpstream(seen: string[]) {
  return {
    async send(request: UpstreamRequest) {
      seen.push(request.path);
      const query = new URLSearchParams(request.path.split('?')[1] ?? '');
      const elements = query.get('_elements')?.split(',');
      const resource = elements ? Object.fromEntries(Object.entries(HIV).filter(([k]) => ['resourceType', 'id', ...elements].includes(k))) : HIV;
      return { status: 200, headers: new Headers(), body: { resourceType: 'Bundle', type: 'searchset', entry: [{ fullUrl: `${BASE}/Observation/obs-hiv`, resource }] } };
    },
  };
}

/** A clinician with every patient (user/*.rs), clearance N and no sensitivity, behind the privacy rules. */
const jonesGuard = (
  upstream: { send(request: UpstreamRequest): Promise<{ status: number; headers: Headers; body: unknown }> },
  { allowOperations, consents }: { allowOperations?: string[]; consents?: ConsentCache } = {},
) => createGuard({
  audit: false,
  base: BASE, upstreamBase: 'http://upstream/fhir', upstream, allowOperations,
  verify: async () => tokenContext({
    iss: 'https://auth.example.org', client_id: 'app', jti: 'j', exp: Date.now() / 1000 + 60, scope: 'user/*.rs', fhirUser: `${BASE}/Practitioner/dr-jones`,
    extensions: { ihe_pcf: { residual: residualFor({ ceiling: 'N', sensitivities: [] }) } },
  }, BASE),
  resourcePolicy: createPrivacyPolicy({
    defaultConfidentiality: 'N', deidentifyPurposes: [], deidentification: { key: 'a'.repeat(32), dates: 'truncate-year' }, breakGlassHint: false, withoutConsent: 'permit', consents,
  }),
});

describe('guard with element subsetting', () => {
  it('never lets the upstream subset what the privacy rules must read: a labelled resource stays hidden', async () => {
    const seen: string[] = [];
    const guard = jonesGuard(subsettingUpstream(seen));
    for (const query of ['_elements=code', '_summary=text', '_elements=code,subject&_summary=data']) {
      const res = await guard.handle({ method: 'GET', path: 'Observation', query: new URLSearchParams(query), headers: { authorization: 'Bearer t' } });
      assert.equal(res.status, 200, query);
      assert.deepEqual((res.body as { entry?: unknown[] }).entry ?? [], [], `${query}: the HIV result is hidden`);
    }
    assert.ok(seen.every((path) => !/_elements|_summary/.test(path)), seen.join(' '));
  });
});

describe('guard with the history of a deleted labelled resource', () => {
  // As an upstream that deletes keeps it: the deletion (no resource) after the labelled version; the first of many pages.
  const history = {
    resourceType: 'Bundle', type: 'history', total: 40,
    link: ['self', 'next', 'last'].map((relation, i) => ({ relation, url: `http://upstream/fhir/Observation/_history?_count=2&_getpagesoffset=${[0, 2, 38][i]}` })),
    entry: [
      { fullUrl: `${BASE}/Observation/obs-hiv`, request: { method: 'DELETE', url: 'Observation/obs-hiv' }, response: { status: '204' } },
      { fullUrl: `${BASE}/Observation/obs-hiv`, resource: HIV, request: { method: 'POST', url: 'Observation' }, response: { status: '201' } },
    ],
  };
  const guard = jonesGuard({ send: async ({ path }) => (path === 'Observation/obs-hiv' ? { status: 410, headers: new Headers(), body: undefined } : { status: 200, headers: new Headers(), body: history }) });
  const get = (path: string) => guard.handle({ method: 'GET', path, headers: { authorization: 'Bearer t' } });

  it('answers its instance history 404, as a read, and leaves its deletion out of a type history', async () => {
    assert.equal((await get('Observation/obs-hiv/_history')).status, 404);
    const types = await get('Observation/_history');
    assert.equal(types.status, 200);
    assert.doesNotMatch(JSON.stringify(types.body), /obs-hiv/);
  });

  it('counts no hidden version: neither the upstream\'s total nor its last link, nor a next link to hidden versions only', async () => {
    const { total, link } = (await get('Observation/_history')).body as { total?: number; link: { relation: string }[] };
    assert.equal(total, undefined, 'unknown: the other pages hold hidden versions too');
    assert.deepEqual(link.map((l) => l.relation), ['self'], 'every following page holds the hidden HIV result only');
  });

  it('fills a history page with the versions the token may see from the pages that follow', async () => {
    const visible: FhirResource = { resourceType: 'Observation', id: 'obs-bp', status: 'final', code: { text: 'blood pressure' }, subject: { reference: 'Patient/pat-2' } };
    const paged = jonesGuard({
      send: async ({ path }) => ({
        status: 200, headers: new Headers(),
        body: path.includes('_getpagesoffset=2') ? { ...history, link: [history.link[0]], entry: [{ fullUrl: `${BASE}/Observation/obs-bp`, resource: visible }] } : history,
      }),
    });
    const { link, entry } = (await paged.handle({ method: 'GET', path: 'Observation/_history', headers: { authorization: 'Bearer t' } })).body as { link: { relation: string }[]; entry: { resource: FhirResource }[] };
    assert.deepEqual(entry.map((e) => e.resource.id), ['obs-bp'], 'not an empty page with a next link');
    assert.deepEqual(link.map((l) => l.relation), ['self'], 'nothing follows');
  });
});

describe('guard with a following page that cannot be read', () => {
  it('answers 502, not a page that ends early', async () => {
    const first = {
      resourceType: 'Bundle', type: 'searchset',
      link: [{ relation: 'next', url: 'http://upstream/fhir/Observation?_count=1&_getpagesoffset=1' }],
      entry: [{ resource: HIV, search: { mode: 'match' } }],
    };
    const guard = jonesGuard({ send: async ({ path }) => (path.includes('offset') ? { status: 500, headers: new Headers(), body: undefined } : { status: 200, headers: new Headers(), body: first }) });
    const res = await guard.handle({ method: 'GET', path: 'Observation', query: '_count=1', headers: { authorization: 'Bearer t' } });
    assert.equal(res.status, 502);
    assert.equal((res.body as { resourceType: string }).resourceType, 'OperationOutcome');
  });
});

describe('guard with the includes of a hidden match', () => {
  it('shows only the includes of the matches it shows: an encounter only a hidden result refers to would tell of it', async () => {
    const bp: FhirResource = { resourceType: 'Observation', id: 'obs-bp', status: 'final', code: { text: 'blood pressure' }, subject: { reference: 'Patient/pat-2' }, encounter: { reference: 'Encounter/enc-1' } };
    const encounter = (id: string) => ({ resourceType: 'Encounter', id, status: 'finished', class: { code: 'AMB' }, subject: { reference: 'Patient/pat-2' } });
    const guard = jonesGuard({
      send: async () => ({
        status: 200, headers: new Headers(),
        body: {
          resourceType: 'Bundle', type: 'searchset',
          entry: [{ resource: bp, search: { mode: 'match' } }, { resource: { ...HIV, encounter: { reference: 'Encounter/enc-2' } }, search: { mode: 'match' } },
            { resource: encounter('enc-1'), search: { mode: 'include' } }, { resource: encounter('enc-2'), search: { mode: 'include' } }],
        },
      }),
    });
    const res = await guard.handle({ method: 'GET', path: 'Observation', query: '_include=Observation:encounter', headers: { authorization: 'Bearer t' } });
    assert.deepEqual((res.body as { entry: { resource: FhirResource }[] }).entry.map((e) => e.resource.id), ['obs-bp', 'enc-1']);
  });
});

describe('guard with a paged operation answer', () => {
  it('counts no hidden match of $everything: neither in its total nor by the upstream\'s last link, nor a next link to hidden ones only', async () => {
    const page = (offset: number, resource: FhirResource) => ({
      resourceType: 'Bundle', type: 'searchset', total: 3,
      link: [{ relation: 'self', url: `http://upstream/fhir/Patient/pat-2/$everything?_getpagesoffset=${offset}` },
        ...(offset < 2 ? [{ relation: 'next', url: `http://upstream/fhir/Patient/pat-2/$everything?_getpagesoffset=${offset + 1}` }] : []),
        { relation: 'last', url: 'http://upstream/fhir/Patient/pat-2/$everything?_getpagesoffset=2' }],
      entry: [{ fullUrl: `${BASE}/${resource.resourceType}/${resource.id}`, resource, search: { mode: 'match' } }],
    });
    const pat2: FhirResource = { resourceType: 'Patient', id: 'pat-2' };
    const guard = jonesGuard({
      send: async ({ path }) => {
        const offset = Number(/offset=(\d)/.exec(path)?.[1] ?? 0);
        return { status: 200, headers: new Headers(), body: path === 'Patient/pat-2' ? pat2 : page(offset, offset ? HIV : pat2) };
      },
    }, { allowOperations: ['everything'] });
    const res = await guard.handle({ method: 'GET', path: 'Patient/pat-2/$everything', headers: { authorization: 'Bearer t' } });
    assert.equal(res.status, 200);
    const body = res.body as { total?: number; link: { relation: string }[]; entry: unknown[] };
    assert.equal(body.entry.length, 1);
    assert.equal(body.total, 1, 'what the token sees, counted over every upstream page it read: not the upstream\'s 3');
    assert.deepEqual(body.link.map((l) => l.relation), ['self'], 'the following pages hold only the hidden HIV result');
  });
});

describe('guard with the older versions of a resource labelled since', () => {
  // Version 1 before the labels were raised, version 2 (current) labelled R + HIV, as an upstream that keeps versions.
  const before: FhirResource = { ...HIV, meta: { versionId: '1' } };
  const current: FhirResource = { ...HIV, meta: { ...HIV.meta, versionId: '2' } };
  const guard = jonesGuard({
    send: async ({ path }) => ({
      status: 200, headers: new Headers(),
      body: path.endsWith('/_history/1') ? before : path.endsWith('/_history')
        ? { resourceType: 'Bundle', type: 'history', entry: [{ resource: current }, { resource: before }] } : current,
    }),
  });

  it('hides them as the current one: vread and history are 404', async () => {
    for (const path of ['Observation/obs-hiv/_history/1', 'Observation/obs-hiv/_history', 'Observation/obs-hiv']) {
      assert.equal((await guard.handle({ method: 'GET', path, headers: { authorization: 'Bearer t' } })).status, 404, path);
    }
  });
});

describe('guard with the paging links of HAPI FHIR (at the base: ?_getpages=…)', () => {
  it('seals them at the path the client searched, and follows them there to the page linked', async () => {
    const visible: FhirResource = { resourceType: 'Observation', id: 'obs-bp', status: 'final', code: { text: 'blood pressure' }, subject: { reference: 'Patient/pat-2' } };
    const seen: string[] = [];
    const page = (offset: number) => ({
      resourceType: 'Bundle', type: 'searchset',
      link: [{ relation: 'self', url: `http://upstream/fhir?_getpages=cache-1&_getpagesoffset=${offset}&_count=1` },
        { relation: 'next', url: `http://upstream/fhir?_getpages=cache-1&_getpagesoffset=${offset + 1}&_count=1` }],
      entry: [{ fullUrl: `${BASE}/Observation/obs-bp`, resource: visible, search: { mode: 'match' } }],
    });
    const guard = jonesGuard({
      send: async ({ path }) => {
        seen.push(path);
        return { status: 200, headers: new Headers(), body: page(Number(/offset=(\d+)/.exec(path)?.[1] ?? 0)) };
      },
    });
    const get = (path: string, query: string) => guard.handle({ method: 'GET', path, query, headers: { authorization: 'Bearer t' } });
    const first = (await get('Observation', 'code=bp&_count=1')).body as { link: { relation: string; url: string }[] };
    const next = first.link.find((l) => l.relation === 'next')!.url;
    assert.match(next, /^https:\/\/fhir\.example\.org\/r4\/Observation\?_page=[\w.-]+$/);
    seen.length = 0;
    const second = await get('Observation', new URL(next).search);
    assert.equal(second.status, 200);
    assert.equal(seen[0], '?_getpages=cache-1&_getpagesoffset=1&_count=1', 'the page linked, at the upstream base');
  });
});

describe('guard with a refilled page', () => {
  it('evaluates the resource policy once for each item it reads, not again for those it shows', async () => {
    const UPSTREAM = 'http://upstream/fhir';
    // Each Observation of its own patient, so that the consent look-ups count the policy's evaluations; b is hidden by its label (HIV's R).
    const obs = (id: string, meta?: FhirResource['meta']): FhirResource => ({ resourceType: 'Observation', id, status: 'final', code: {}, subject: { reference: `Patient/pat-${id}` }, meta });
    const pages = [[obs('a'), obs('b', HIV.meta)], [obs('c'), obs('d')], [obs('e')]];
    const page = (at: number) => ({
      resourceType: 'Bundle', type: 'searchset', entry: pages[at].map((resource) => ({ resource, search: { mode: 'match' } })),
      link: [{ relation: 'self', url: `${UPSTREAM}/Observation?_count=2&_getpagesoffset=${at * 2}` },
        ...(at + 1 < pages.length ? [{ relation: 'next', url: `${UPSTREAM}/Observation?_count=2&_getpagesoffset=${at * 2 + 2}` }] : [])],
    });
    const evaluations: string[] = [];
    const guard = jonesGuard(
      { send: async ({ path }) => ({ status: 200, headers: new Headers(), body: page(Number(/_getpagesoffset=(\d+)/.exec(path)?.[1] ?? 0) / 2) }) },
      { consents: { forPatient: async (patient) => { evaluations.push(patient); return []; }, invalidate: () => {} } },
    );
    const res = await guard.handle({ method: 'GET', path: 'Observation', query: '_count=2', headers: { authorization: 'Bearer t' } });
    assert.deepEqual((res.body as { entry: { resource: FhirResource }[] }).entry.map((e) => e.resource.id), ['a', 'c'], 'filled from the next page');
    assert.deepEqual(evaluations.sort(), ['pat-a', 'pat-c', 'pat-d'], 'each visible item read once (the hidden one stops at its label), the shown ones not again');
  });
});

describe('guard with a container of one patient\'s resources', () => {
  it('looks up the patient\'s consents once for a Bundle of N entries naming them, not once per entry', async () => {
    const obs = (id: string): FhirResource => ({ resourceType: 'Observation', id, status: 'final', code: {}, subject: { reference: 'Patient/pat-1' } });
    const stored = { resourceType: 'Bundle', id: 'doc', type: 'collection', entry: ['a', 'b', 'c', 'd', 'e'].map((id) => ({ fullUrl: `urn:uuid:${id}`, resource: obs(id) })) };
    const evaluations: string[] = [];
    const guard = jonesGuard(
      { send: async () => ({ status: 200, headers: new Headers(), body: stored }) },
      { consents: { forPatient: async (patient) => { evaluations.push(patient); return []; }, invalidate: () => {} } },
    );
    assert.equal((await guard.handle({ method: 'GET', path: 'Bundle/doc', headers: { authorization: 'Bearer t' } })).status, 200);
    assert.deepEqual(evaluations, ['pat-1']);
  });
});
