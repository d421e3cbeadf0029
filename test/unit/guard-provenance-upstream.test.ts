// The guard proxy's Provenance setting: a write with its Provenance goes upstream as one transaction.
import assert from 'node:assert/strict';
import { provenanceUpstream } from '../../server/resource-server/provenance-upstream.ts';
import { UpstreamError, type UpstreamRequest, type UpstreamResponse } from '../../server/resource-server/upstream.ts';

const PROVENANCE = { resourceType: 'Provenance', recorded: '2026-01-01T00:00:00.000Z', agent: [] };

function fake(answer: (request: UpstreamRequest) => UpstreamResponse) {
  const sent: UpstreamRequest[] = [];
  return { sent, upstream: { send: async (request: UpstreamRequest) => { sent.push(request); return answer(request); } } };
}

describe('guard: Provenance with writes to an upstream FHIR server', () => {
  it('sends a create as a transaction with its Provenance, and answers with the create\'s own response', async () => {
    const { sent, upstream } = fake(() => ({
      status: 200, headers: new Headers(), body: { resourceType: 'Bundle', type: 'transaction-response', entry: [
        { resource: { resourceType: 'Observation', id: 'o-9' }, response: { status: '201 Created', location: 'Observation/o-9/_history/1', etag: 'W/"1"', lastModified: '2026-01-01T00:00:00Z' } },
        { response: { status: '201 Created', location: 'Provenance/p-1/_history/1' } },
      ] },
    }));
    const answer = await provenanceUpstream(upstream).send({
      method: 'POST', path: 'Observation', headers: { 'x-request-id': 'r-1' }, body: { resourceType: 'Observation' }, provenance: PROVENANCE,
    });
    assert.equal(answer.status, 201);
    assert.equal(answer.headers.get('location'), 'Observation/o-9/_history/1');
    assert.equal(answer.headers.get('etag'), 'W/"1"');
    assert.deepEqual(answer.body, { resourceType: 'Observation', id: 'o-9' });
    const [request] = sent;
    assert.deepEqual([request.method, request.path, request.headers], ['POST', '', { 'x-request-id': 'r-1' }]);
    assert.equal('provenance' in request, false, 'the template itself is never sent');
    const bundle = request.body as any;
    assert.equal(bundle.type, 'transaction');
    assert.deepEqual(bundle.entry[0].request, { method: 'POST', url: 'Observation' });
    assert.match(bundle.entry[0].fullUrl, /^urn:uuid:/);
    assert.deepEqual(bundle.entry[1].resource.target, [{ reference: bundle.entry[0].fullUrl }], 'the Provenance targets the write');
    assert.deepEqual(bundle.entry[1].request, { method: 'POST', url: 'Provenance' });
  });

  it('moves If-Match into the entry of an update, passes refusals on, and refuses an answer without the write\'s response', async () => {
    const refused = fake(() => ({ status: 412, headers: new Headers(), body: { resourceType: 'OperationOutcome' } }));
    const answer = await provenanceUpstream(refused.upstream).send({
      method: 'PUT', path: 'Observation/o-1', headers: { 'If-Match': 'W/"3"' }, body: { resourceType: 'Observation', id: 'o-1' }, provenance: PROVENANCE,
    });
    assert.equal(answer.status, 412);
    assert.deepEqual((refused.sent[0].body as any).entry[0].request, { method: 'PUT', url: 'Observation/o-1', ifMatch: 'W/"3"' });
    assert.deepEqual(refused.sent[0].headers, {});
    const empty = fake(() => ({ status: 200, headers: new Headers(), body: { resourceType: 'Bundle', type: 'transaction-response' } }));
    await assert.rejects(provenanceUpstream(empty.upstream).send({ method: 'POST', path: 'Observation', body: {}, provenance: PROVENANCE }), UpstreamError);
  });

  it('leaves reads and writes without a Provenance as they are', async () => {
    const { sent, upstream } = fake(() => ({ status: 200, headers: new Headers(), body: {} }));
    await provenanceUpstream(upstream).send({ method: 'GET', path: 'Observation/o-1', provenance: PROVENANCE });
    await provenanceUpstream(upstream).send({ method: 'POST', path: 'Observation', body: { resourceType: 'Observation' } });
    assert.deepEqual(sent, [{ method: 'GET', path: 'Observation/o-1' }, { method: 'POST', path: 'Observation', body: { resourceType: 'Observation' } }]);
  });
});
