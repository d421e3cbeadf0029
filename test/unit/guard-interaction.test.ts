import assert from 'node:assert/strict';
import { classify, entryRequests } from '../../server/resource-server/interaction.ts';
import type { FhirBundle, FhirInteraction, FhirRequest, Refusal } from '../../server/resource-server/types.ts';

const req = (method: string, target: string, body?: unknown): FhirRequest => {
  const q = target.indexOf('?');
  return {
    method,
    path: q < 0 ? target : target.slice(0, q),
    query: new URLSearchParams(q < 0 ? '' : target.slice(q + 1)),
    ...(body !== undefined ? { body } : {}),
  };
};

function interaction(method: string, target: string, body?: unknown): FhirInteraction {
  const result = classify(req(method, target, body));
  assert.ok('kind' in result, `${method} ${target} refused: ${JSON.stringify(result)}`);
  return result;
}

function refusal(method: string, target: string, body?: unknown): Refusal {
  const result = classify(req(method, target, body));
  assert.ok(!('kind' in result), `${method} ${target} classified as ${JSON.stringify(result)}`);
  return result;
}

const obs = { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-1' } };

describe('resource-server/interaction', () => {
  describe('classify', () => {
    it('maps reads, searches and history', () => {
      const cases: [string, string, Partial<FhirInteraction>][] = [
        ['GET', '', { kind: 'search-system' }],
        ['GET', '?_type=Observation', { kind: 'search-system' }],
        ['GET', 'metadata', { kind: 'capabilities' }],
        ['GET', 'Observation', { kind: 'search-type', type: 'Observation' }],
        ['GET', 'Observation/obs-1', { kind: 'read', type: 'Observation', id: 'obs-1' }],
        ['GET', 'Observation/obs-1/_history', { kind: 'history-instance', type: 'Observation', id: 'obs-1' }],
        ['GET', 'Observation/obs-1/_history/2', { kind: 'vread', type: 'Observation', id: 'obs-1', versionId: '2' }],
        ['GET', 'Observation/_history', { kind: 'history-type', type: 'Observation' }],
        ['GET', '_history', { kind: 'history-system' }],
        ['HEAD', 'Patient/pat-1', { kind: 'read', type: 'Patient', id: 'pat-1' }],
        ['get', 'Patient/pat-1', { kind: 'read', type: 'Patient', id: 'pat-1' }],
      ];
      for (const [method, target, expected] of cases) {
        const got = interaction(method, target);
        for (const [key, value] of Object.entries(expected)) {
          assert.equal(got[key as keyof FhirInteraction], value, `${method} ${target}: ${key}`);
        }
        assert.ok(got.params instanceof URLSearchParams);
      }
    });

    it('keeps the query as params, as a copy', () => {
      const request = req('GET', 'Observation?category=laboratory&patient=pat-1');
      const got = classify(request) as FhirInteraction;
      assert.equal(got.params.toString(), 'category=laboratory&patient=pat-1');
      got.params.append('x', 'y');
      assert.equal(request.query.toString(), 'category=laboratory&patient=pat-1');
    });

    it('merges the form body of POST _search with the query', () => {
      const got = interaction('POST', 'Observation/_search?category=laboratory', new URLSearchParams('patient=pat-2&code=x'));
      assert.equal(got.kind, 'search-type');
      assert.equal(got.type, 'Observation');
      assert.deepEqual([...got.params], [['category', 'laboratory'], ['patient', 'pat-2'], ['code', 'x']]);
      assert.equal(interaction('POST', 'Observation/_search').params.size, 0);
      const system = interaction('POST', '_search', new URLSearchParams('_type=Patient'));
      assert.equal(system.kind, 'search-system');
      assert.equal(system.params.get('_type'), 'Patient');
      assert.equal(refusal('POST', 'Observation/_search', { patient: 'pat-2' }).status, 400);
      assert.equal(refusal('GET', '_search').status, 405);
      assert.equal(refusal('PUT', 'Observation/_search').status, 405);
    });

    it('maps writes with their resource', () => {
      const created = interaction('POST', 'Observation', obs);
      assert.deepEqual({ kind: created.kind, type: created.type, resource: created.resource }, { kind: 'create', type: 'Observation', resource: obs });
      const updated = interaction('PUT', 'Observation/obs-1', { ...obs, id: 'obs-1' });
      assert.equal(updated.kind, 'update');
      assert.equal(updated.id, 'obs-1');
      assert.equal(updated.resource?.id, 'obs-1');
      assert.equal(interaction('PUT', 'Observation/obs-1', obs).kind, 'update', 'id may be absent');
      assert.equal(interaction('PUT', 'Observation/obs-1?_format=json', obs).kind, 'update');
      assert.equal(interaction('POST', 'Observation?_format=json', obs).kind, 'create');
      const patched = interaction('PATCH', 'Observation/obs-1', [{ op: 'replace', path: '/status', value: 'amended' }]);
      assert.deepEqual([patched.kind, patched.type, patched.id, patched.resource], ['patch', 'Observation', 'obs-1', undefined]);
      const deleted = interaction('DELETE', 'Observation/obs-1');
      assert.deepEqual([deleted.kind, deleted.type, deleted.id], ['delete', 'Observation', 'obs-1']);
    });

    it('refuses a create or update whose body is not a resource of the type', () => {
      for (const body of [undefined, null, 'text', [obs], { status: 'final' }, { resourceType: 'Patient' }]) {
        const r = refusal('POST', 'Observation', body);
        assert.deepEqual([r.status, r.code], [400, 'invalid'], JSON.stringify(body));
        assert.deepEqual([refusal('PUT', 'Observation/obs-1', body).status], [400]);
      }
      const mismatch = refusal('PUT', 'Observation/obs-1', { ...obs, id: 'obs-2' });
      assert.deepEqual([mismatch.status, mismatch.code], [400, 'invalid']);
      assert.match(mismatch.message, /obs-2/);
    });

    it('maps batch and transaction Bundles posted to the base', () => {
      for (const type of ['batch', 'transaction'] as const) {
        const bundle = { resourceType: 'Bundle', type, entry: [] };
        const got = interaction('POST', '', bundle);
        assert.equal(got.kind, type);
        assert.equal(got.resource, bundle);
      }
      for (const body of [undefined, obs, { resourceType: 'Bundle', type: 'collection' }, { resourceType: 'Bundle', type: 'batch', entry: {} }]) {
        const r = refusal('POST', '', body);
        assert.deepEqual([r.status, r.code], [400, 'invalid'], JSON.stringify(body));
      }
    });

    it('maps operations at system, type and instance level', () => {
      const system = interaction('GET', '$export?_type=Patient');
      assert.deepEqual([system.kind, system.operation, system.type, system.id], ['operation', 'export', undefined, undefined]);
      assert.equal(system.params.get('_type'), 'Patient');
      const type = interaction('POST', 'Observation/$lastn', { resourceType: 'Parameters', parameter: [] });
      assert.deepEqual([type.kind, type.operation, type.type, type.resource?.resourceType], ['operation', 'lastn', 'Observation', 'Parameters']);
      const instance = interaction('GET', 'Patient/pat-1/$everything');
      assert.deepEqual([instance.operation, instance.type, instance.id], ['everything', 'Patient', 'pat-1']);
      const form = interaction('POST', 'ValueSet/$validate-code?system=s', new URLSearchParams('code=c'));
      assert.deepEqual([...form.params], [['system', 's'], ['code', 'c']]);
    });

    it('refuses malformed operations', () => {
      assert.deepEqual(pick(refusal('PUT', 'Patient/pat-1/$everything')), [405, 'not-supported']);
      assert.deepEqual(pick(refusal('DELETE', '$export')), [405, 'not-supported']);
      assert.deepEqual(pick(refusal('GET', 'Patient/pat-1/_history/$x')), [404, 'not-supported']);
      assert.deepEqual(pick(refusal('GET', '$export/more')), [404, 'not-supported']);
      assert.deepEqual(pick(refusal('GET', '$')), [404, 'not-supported']);
      assert.deepEqual(pick(refusal('GET', 'patient/$everything')), [404, 'not-supported']);
      assert.deepEqual(pick(refusal('GET', 'Patient/bad_id/$everything')), [404, 'not-found']);
      assert.deepEqual(pick(refusal('POST', '$export', [1, 2])), [400, 'invalid']);
    });

    it('refuses a writing operation sent with GET, and a known operation at a level it is not defined at', () => {
      const meta = { resourceType: 'Parameters', parameter: [{ name: 'meta', valueMeta: { tag: [{ system: 's', code: 'c' }] } }] };
      assert.equal(interaction('POST', 'Observation/obs-1/$meta-delete', meta).operation, 'meta-delete');
      assert.equal(interaction('GET', 'Observation/obs-1/$meta').operation, 'meta');
      assert.deepEqual(pick(refusal('GET', 'Observation/obs-1/$meta-delete')), [405, 'not-supported']);
      assert.deepEqual(pick(refusal('HEAD', 'Observation/obs-1/$meta-add')), [405, 'not-supported']);
      assert.deepEqual(pick(refusal('POST', 'Observation/$meta-delete', meta)), [400, 'not-supported']);
      assert.deepEqual(pick(refusal('GET', '$everything')), [400, 'not-supported']);
    });

    it('answers 404 for unknown types and malformed ids', () => {
      for (const target of ['lowercase', 'Observation1', 'X', '_everything', 'metadata/x', 'Obs-ervation/1']) {
        assert.deepEqual(pick(refusal('GET', target)), [404, 'not-supported'], target);
      }
      assert.match(refusal('GET', 'lowercase').message, /unknown resource type/);
      for (const target of ['Observation/bad_id', `Observation/${'a'.repeat(65)}`, 'Observation/a%20b', 'Observation/1/_history/v_1',
        'Observation/1/_history/1/x', 'Observation/1/x', 'Observation//1', 'Observation/']) {
        assert.deepEqual(pick(refusal('GET', target)), [404, 'not-found'], target);
      }
      assert.equal(interaction('GET', `Observation/${'a'.repeat(64)}`).kind, 'read');
      assert.equal(interaction('GET', 'Observation/A-z.0').kind, 'read');
    });

    it('answers 405 for other methods and for methods a path does not take', () => {
      for (const [method, target] of [
        ['OPTIONS', 'Patient'], ['TRACE', ''], ['CONNECT', 'Patient/1'], ['', 'Patient'],
        ['PUT', ''], ['DELETE', 'metadata'], ['POST', 'metadata'], ['POST', '_history'], ['DELETE', '_history'],
        ['POST', 'Patient/1'], ['PUT', 'Patient'], ['DELETE', 'Patient'], ['POST', 'Patient/_history'],
        ['DELETE', 'Patient/1/_history'], ['PUT', 'Patient/1/_history/2'],
      ]) {
        assert.deepEqual(pick(refusal(method, target)), [405, 'not-supported'], `${method} ${target}`);
      }
    });

    it('refuses conditional update, patch, delete and create', () => {
      for (const [method, target, body] of [
        ['PUT', 'Observation?identifier=x', obs], ['DELETE', 'Observation?code=x', undefined],
        ['PATCH', 'Observation?identifier=x', []], ['POST', 'Observation?identifier=x', obs],
      ] as const) {
        const r = refusal(method, target, body);
        assert.deepEqual(pick(r), [400, 'not-supported'], `${method} ${target}`);
        assert.match(r.message, /conditional/);
      }
      const header = classify({ ...req('POST', 'Observation', obs), headers: { 'if-none-exist': 'identifier=x' } }) as Refusal;
      assert.deepEqual(pick(header), [400, 'not-supported'], 'If-None-Exist as a header, not only in a batch entry');
    });
  });

  describe('entryRequests', () => {
    it('turns batch entries into requests', () => {
      const bundle: FhirBundle = {
        resourceType: 'Bundle',
        type: 'batch',
        entry: [
          { request: { method: 'GET', url: 'Patient/pat-1' } },
          { request: { method: 'get', url: 'Observation?patient=pat-2&code=x' } },
          { resource: obs, request: { method: 'POST', url: 'Observation' } },
          { resource: { ...obs, id: 'o1' }, request: { method: 'PUT', url: '/Observation/o1' } },
          { request: { method: 'DELETE', url: 'Observation/o2' } },
        ],
      };
      const requests = entryRequests(bundle);
      assert.deepEqual(requests.map((r) => [r.method, r.path, r.query.toString(), r.body]), [
        ['GET', 'Patient/pat-1', '', undefined],
        ['GET', 'Observation', 'patient=pat-2&code=x', undefined],
        ['POST', 'Observation', '', obs],
        ['PUT', 'Observation/o1', '', { ...obs, id: 'o1' }],
        ['DELETE', 'Observation/o2', '', undefined],
      ]);
      assert.deepEqual(requests.map((r) => (classify(r) as FhirInteraction).kind), ['read', 'search-type', 'create', 'update', 'delete']);
    });

    it('makes entries that cannot be classified fail', () => {
      const requests = entryRequests({
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          { resource: obs, request: { method: 'POST', url: 'Observation', ifNoneExist: 'identifier=http://x|1' } },
          { resource: obs } as never,
          { request: { method: 'GET', url: 'https://other.example/fhir/Patient/1' } },
        ],
      });
      assert.deepEqual(requests.map((r) => (classify(r) as Refusal).status), [400, 405, 404]);
      assert.match((classify(requests[0]) as Refusal).message, /conditional create/);
      assert.deepEqual(entryRequests({ resourceType: 'Bundle', type: 'batch' }), []);
    });
  });
});

function pick(r: Refusal): [number, string] {
  return [r.status, r.code];
}
