// GUARD_INCLUDES=refuse (the package's `includes: 'refuse'`) in any shape of the guard: a search with `_include`
// or `_revinclude` must not answer differently when what it would include exists but is hidden from the token
// and when it does not exist at all.
import assert from 'node:assert/strict';
import type { FhirResource } from '../../server/fhir/types.ts';

/** To store behind the guard. Seen by a token bound to pat-1: its Observations, each performed by someone, and two Practitioners. */
export const INCLUDE_PROBES: FhirResource[] = [
  // Its performer, Patient/pat-2, is hidden from pat-1's token; Patient/pat-nobody does not exist.
  { resourceType: 'Observation', id: 'inc-hidden', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-1' }, performer: [{ reference: 'Patient/pat-2' }] },
  { resourceType: 'Observation', id: 'inc-missing', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-1' }, performer: [{ reference: 'Patient/pat-nobody' }] },
  // pat-2's Observation (hidden from pat-1's token) names inc-prac-busy as its performer; nothing names inc-prac-idle.
  { resourceType: 'Practitioner', id: 'inc-prac-busy', name: [{ family: 'Busy' }] },
  { resourceType: 'Practitioner', id: 'inc-prac-idle', name: [{ family: 'Idle' }] },
  { resourceType: 'Observation', id: 'inc-of-pat-2', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-2' }, performer: [{ reference: 'Practitioner/inc-prac-busy' }] },
];

/** Stores INCLUDE_PROBES in a FHIR server, past the guard. */
export async function storeIncludeProbes(upstream: string): Promise<void> {
  for (const resource of INCLUDE_PROBES) {
    const res = await fetch(`${upstream}/${resource.resourceType}/${resource.id}`, { method: 'PUT', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(resource) });
    assert.ok(res.ok, `${resource.id}: ${res.status}`);
  }
}

/**
 * With INCLUDE_PROBES stored, `bearer` a token bound to pat-1: searches whose include would bring a hidden resource
 * and those whose include finds none get the same answer, a 403, in a query, a `_search` form and batch entries.
 */
export async function assertIncludesTellNothing(fhirBase: string, bearer: string, label: string): Promise<void> {
  const answer = async (query: string) => {
    const res = await fetch(`${fhirBase}/${query}`, { headers: { authorization: `Bearer ${bearer}` } });
    return { status: res.status, body: (await res.text()).replaceAll(/inc-\w+/g, 'X') };
  };
  const pairs = [
    ['Observation?_id=inc-hidden&_include=Observation:performer', 'Observation?_id=inc-missing&_include=Observation:performer'],
    ['Practitioner?_id=inc-prac-busy&_revinclude=Observation:performer', 'Practitioner?_id=inc-prac-idle&_revinclude=Observation:performer'],
  ];
  for (const [hidden, none] of pairs) {
    const told = await answer(hidden);
    assert.deepEqual(told, await answer(none), `${label}: ${hidden}`);
    assert.equal(told.status, 403, `${label}: ${hidden}: refused, as the guard could not show all it would include`);
  }
  const post = await fetch(`${fhirBase}/Observation/_search`, {
    method: 'POST', headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/x-www-form-urlencoded' }, body: '_id=inc-missing&_include=Observation:performer',
  });
  assert.equal(post.status, 403, `${label}: in a _search form`);
  const batch = await fetch(fhirBase, {
    method: 'POST', headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/fhir+json' },
    body: JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: pairs.flat().map((url) => ({ request: { method: 'GET', url } })) }),
  });
  assert.deepEqual(((await batch.json()).entry ?? []).map((e: any) => e.response.status), ['403', '403', '403', '403'], `${label}: as batch entries`);
  assert.equal((await answer('Observation?_id=inc-missing')).status, 200, `${label}: without includes`);
}
