// The framework-neutral guard API: the request as it arrives (path with a leading slash, query as a
// string or URLSearchParams, node:http headers), CORS for browser apps, and consent that cannot be read.
import assert from 'node:assert/strict';
import { createGuard, type AccessRecord, type GuardOptions } from '../../server/resource-server/guard.ts';
import { inProcessUpstream, type UpstreamRequest } from '../../server/resource-server/upstream.ts';
import { tokenContext, VerifierUnavailableError } from '../../server/resource-server/verify-token.ts';
import { allowOrigins, corsHeaders, originOf } from '../../server/resource-server/cors.ts';
import { ruleOptions } from '../../server/resource-server/rules.ts';

const BASE = 'https://fhir.example.org/r4';
const APP = 'https://app.example.org';

const patient = { resourceType: 'Patient', id: 'pat-1' };
const observation = { resourceType: 'Observation', id: 'obs-1', status: 'final', code: {}, subject: { reference: 'Patient/pat-1' } };

function guardWith(options: Partial<GuardOptions> = {}, consents: 'ok' | 'down' = 'ok') {
  const seen: string[] = [];
  const upstream = inProcessUpstream(async (request: UpstreamRequest) => {
    seen.push(request.path);
    const json = (status: number, body: unknown) => ({ status, headers: new Headers({ 'content-type': 'application/fhir+json' }), body });
    if (request.path.startsWith('Consent')) return consents === 'ok' ? json(200, { resourceType: 'Bundle', type: 'searchset', entry: [] }) : json(500, { resourceType: 'OperationOutcome', issue: [] });
    if (request.path === 'Patient/pat-1') return json(200, patient);
    if (request.path.startsWith('Observation')) return json(200, { resourceType: 'Bundle', type: 'searchset', entry: [{ resource: observation }] });
    return json(404, { resourceType: 'OperationOutcome', issue: [] });
  });
  const guard = createGuard({
    audit: false,
    base: BASE,
    upstream,
    upstreamBase: 'http://upstream/fhir',
    verify: async () => tokenContext({ iss: 'https://auth.example.org', client_id: 'app', sub: 'app', jti: 'j', exp: 2e9, scope: 'system/*.rs' }, BASE),
    ...options,
  });
  return { guard, seen };
}

const bearer = { authorization: 'Bearer t' };

describe('guard: construction', () => {
  it('has no default verification: the issuer\'s keys alone cannot tell a revoked token', () => {
    const withoutVerify = { base: BASE, upstreamBase: 'http://upstream/fhir', issuer: 'https://auth.example.org' } as GuardOptions;
    assert.throws(() => createGuard(withoutVerify), (err: Error) => err instanceof TypeError && /the guard needs `verify`: createGuardVerifier/.test(err.message));
  });
});

describe('guard: a token that cannot be checked', () => {
  it('is 503 to the client, and whoever runs the guard is told why (wrong introspection credentials, issuer down)', async () => {
    const told: unknown[] = [];
    const why = new VerifierUnavailableError('introspection answered 401: the issuer did not accept the guard\'s client credentials');
    const { guard } = guardWith({ verify: async () => { throw why; }, onError: (err) => told.push(err) });
    const res = await guard.handle({ method: 'GET', path: '/Patient/pat-1', headers: bearer });
    assert.equal(res.status, 503);
    assert.deepEqual(told, [why]);
  });
});

describe('guard: the request as it arrives', () => {
  it('takes the path with or without a leading slash, and the query as a string, URLSearchParams or part of the path', async () => {
    const { guard, seen } = guardWith();
    for (const path of ['/Patient/pat-1', 'Patient/pat-1', '/Patient/pat-1/']) {
      assert.equal((await guard.handle({ method: 'GET', path, headers: bearer })).status, 200, path);
    }
    await guard.handle({ method: 'GET', path: '/Observation', query: '?code=1', headers: bearer });
    await guard.handle({ method: 'GET', path: '/Observation', query: new URLSearchParams({ code: '2' }), headers: bearer });
    await guard.handle({ method: 'GET', path: '/Observation?code=3', headers: bearer });
    assert.deepEqual(seen.filter((p) => p.startsWith('Observation')), ['Observation?code=1', 'Observation?code=2', 'Observation?code=3']);
  });

  it('reads node:http headers in any case, repeated ones as arrays', async () => {
    const { guard } = guardWith();
    assert.equal((await guard.handle({ method: 'get', path: '/Patient/pat-1', headers: { Authorization: 'Bearer t', 'X-Forwarded-For': ['a', 'b'] } })).status, 200);
    assert.equal((await guard.handle({ method: 'GET', path: '/Patient/pat-1', headers: {} })).status, 401);
  });
});

describe('guard: paging', () => {
  it('refuses a raw paging offset and a page link it did not give as a 400, audited like any refusal, whatever the token', async () => {
    const records: AccessRecord[] = [];
    const { guard, seen } = guardWith({ audit: async (record) => { records.push(record); } }); // system/*.rs, no rules: nothing filtered
    for (const query of ['code=1&_getpagesoffset=5', '_offset=5', '_page=forged']) {
      const res = await guard.handle({ method: 'GET', path: '/Observation', query, headers: bearer });
      assert.equal(res.status, 400, query);
      assert.equal((res.body as { resourceType: string }).resourceType, 'OperationOutcome');
      assert.deepEqual([records.at(-1)?.status, records.at(-1)?.interaction?.kind, records.at(-1)?.token?.jti], [400, 'search-type', 'j'], query);
    }
    assert.deepEqual(seen, [], 'nothing reaches the FHIR server');
  });

  it('answers a request the authorize hook refuses with its 403, whatever paging parameters it carries', async () => {
    const { guard, seen } = guardWith({ authorize: () => ({ status: 403, code: 'forbidden', message: 'no purpose of use' }) });
    for (const query of ['code=1', 'code=1&_getpagesoffset=5', 'ct=x', '_page=forged']) {
      const res = await guard.handle({ method: 'GET', path: '/Observation', query, headers: bearer });
      assert.deepEqual([res.status, res.body], [403, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'forbidden', diagnostics: 'no purpose of use' }] }], query);
    }
    assert.deepEqual(seen, []);
  });
});

describe('guard: includes: \'refuse\'', () => {
  it('refuses every _include and _revinclude before the FHIR server is asked, unless the guard hides nothing from the token', async () => {
    const patientToken = async () => tokenContext({ iss: 'https://auth.example.org', client_id: 'app', sub: 'app', jti: 'j', exp: 2e9, scope: 'patient/*.rs', patient: 'pat-1' }, BASE);
    for (const [options, told] of [[{ verify: patientToken }, 'a token bound to a patient'], [ruleOptions(inProcessUpstream(async () => { throw new Error('unused'); }), { consent: false }), 'the rules on']] as const) {
      const { guard, seen } = guardWith({ includes: 'refuse', ...options });
      for (const query of ['_include=Observation:subject', '_revinclude:iterate=Provenance:target', '_include:x=*']) {
        const res = await guard.handle({ method: 'GET', path: '/Observation', query, headers: bearer });
        assert.equal(res.status, 403, `${told}: ${query}`);
        assert.equal((res.body as { resourceType: string }).resourceType, 'OperationOutcome');
      }
      assert.deepEqual(seen, [], `${told}: nothing reaches the FHIR server`);
      assert.equal((await guard.handle({ method: 'GET', path: '/Observation', query: 'code=1', headers: bearer })).status, 200, `${told}: without includes`);
    }
    const { guard } = guardWith({ includes: 'refuse' }); // system/*.rs, no rules
    assert.equal((await guard.handle({ method: 'GET', path: '/Observation', query: '_include=Observation:subject', headers: bearer })).status, 200);
  });
});

describe('guard: the headers of every answer', () => {
  it('sends HSTS when its base is https, and not over http (where browsers ignore it)', async () => {
    const secure = guardWith().guard;
    for (const [method, headers] of [['GET', bearer], ['GET', {}], ['OPTIONS', {}]] as const) {
      const res = await secure.handle({ method, path: '/Patient/pat-1', headers });
      assert.equal(res.headers['strict-transport-security'], 'max-age=31536000; includeSubDomains', `${method} ${res.status}`);
    }
    const plain = guardWith({ base: 'http://fhir.example.org/r4' }).guard;
    assert.equal((await plain.handle({ method: 'GET', path: '/Patient/pat-1', headers: bearer })).headers['strict-transport-security'], undefined);
  });
});

describe('guard: CORS for browser apps', () => {
  const allowed = allowOrigins([`${APP}/callback`], (origin) => origin === 'https://extra.example.org');

  it('answers a preflight without a token, granting only allowed origins, never credentials', async () => {
    const { guard, seen } = guardWith({ allowedOrigins: allowed });
    const preflight = await guard.handle({ method: 'OPTIONS', path: '/Patient/pat-1', headers: { origin: APP, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' } });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers['access-control-allow-origin'], APP);
    const allowedHeaders = preflight.headers['access-control-allow-headers'].toLowerCase().split(', ');
    for (const name of ['authorization', 'content-type', 'dpop', 'x-request-id', 'prefer', 'if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since']) {
      assert.ok(allowedHeaders.includes(name), name);
    }
    assert.equal(preflight.headers.vary, 'Origin');
    assert.equal(preflight.headers['access-control-allow-credentials'], undefined);
    const stranger = await guard.handle({ method: 'OPTIONS', path: '/Patient/pat-1', headers: { origin: 'https://evil.example', 'access-control-request-method': 'GET' } });
    assert.equal(stranger.headers['access-control-allow-origin'], undefined);
    assert.deepEqual(seen, [], 'a preflight reads nothing');
  });

  it('lets an allowed origin read answers and refusals, with Location, ETag, Last-Modified, X-Request-Id and WWW-Authenticate exposed', async () => {
    const { guard } = guardWith({ allowedOrigins: allowed });
    const read = await guard.handle({ method: 'GET', path: '/Patient/pat-1', headers: { ...bearer, origin: 'https://extra.example.org' } });
    assert.equal(read.headers['access-control-allow-origin'], 'https://extra.example.org');
    assert.equal(read.headers['access-control-expose-headers'], 'Location, ETag, Last-Modified, X-Request-Id, WWW-Authenticate');
    const refused = await guard.handle({ method: 'GET', path: '/Patient/pat-1', headers: { origin: APP } });
    assert.equal(refused.status, 401);
    assert.equal(refused.headers['access-control-allow-origin'], APP, 'the app can read why it was refused');
    const other = await guard.handle({ method: 'GET', path: '/Patient/pat-1', headers: { ...bearer, origin: 'https://evil.example' } });
    assert.equal(other.headers['access-control-allow-origin'], undefined);
    assert.equal(other.headers.vary, 'Origin');
  });

  it('allows nothing when no origins are configured, and only exact origins', async () => {
    const { guard } = guardWith();
    const preflight = await guard.handle({ method: 'OPTIONS', path: '/Patient/pat-1', headers: { origin: APP, 'access-control-request-method': 'GET' } });
    assert.equal(preflight.headers['access-control-allow-origin'], undefined);
    assert.deepEqual(await corsHeaders(`${APP}/`, allowed), { vary: 'Origin' }, 'an Origin header is an origin, nothing more');
    assert.deepEqual(await corsHeaders('null', allowed), { vary: 'Origin' });
    assert.equal(originOf('com.example.app:/callback'), undefined, 'custom schemes have no web origin');
  });
});

describe('guard: consent that cannot be read', () => {
  it('fails closed with 502 and no data', async () => {
    const { guard } = guardWith({
      ...ruleOptions(inProcessUpstream(async () => ({ status: 500, headers: new Headers(), body: undefined })), { purposePolicy: false }),
    });
    const res = await guard.handle({ method: 'GET', path: '/Patient/pat-1', headers: bearer });
    assert.equal(res.status, 502);
    assert.equal((res.body as { resourceType: string }).resourceType, 'OperationOutcome');
    assert.doesNotMatch(JSON.stringify(res.body), /pat-1/);
  });
});

describe('guard: conditional reads', () => {
  const stored = { ...observation, meta: { versionId: '2', lastUpdated: '2026-03-01T10:00:00.500Z' } };
  /** A plain FHIR server: 304 when If-None-Match names the current version, 412 when If-Match does not. */
  function plainServer(scope: string, patient?: string) {
    const sent: Record<string, string>[] = [];
    const audited: { status: number; resources: string[] }[] = [];
    const upstream = inProcessUpstream(async (request: UpstreamRequest) => {
      sent.push(request.headers ?? {});
      if (request.path !== 'Observation/obs-1') return { status: 404, headers: new Headers(), body: { resourceType: 'OperationOutcome', issue: [] } };
      const headers = new Headers({ 'content-type': 'application/fhir+json', etag: 'W/"2"' });
      const ifMatch = request.headers?.['if-match'];
      if (ifMatch !== undefined && ifMatch !== 'W/"2"') return { status: 412, headers, body: { resourceType: 'OperationOutcome', issue: [] } };
      return request.headers?.['if-none-match'] === 'W/"2"' ? { status: 304, headers, body: undefined } : { status: 200, headers, body: stored };
    });
    const guard = createGuard({
      base: BASE, upstream, upstreamBase: 'http://upstream/fhir',
      verify: async () => tokenContext({ iss: 'https://auth.example.org', client_id: 'app', sub: 'app', jti: 'j', exp: 2e9, scope, ...(patient && { patient }) }, BASE),
      audit: async (record) => { audited.push({ status: record.status, resources: record.resources }); },
    });
    const read = (headers: Record<string, string | undefined>, method = 'GET') => guard.handle({ method, path: '/Observation/obs-1', headers: { ...bearer, ...headers } });
    return { read, sent, audited };
  }

  it('answers 304 with the ETag and no body when the visible resource is unchanged, and audits it as a read', async () => {
    const { read, sent, audited } = plainServer('system/*.rs');
    for (const headers of [{ 'if-none-match': 'W/"2"' }, { 'if-none-match': 'W/"1", "2"' }, { 'if-none-match': '*' }, { 'if-modified-since': 'Sun, 01 Mar 2026 10:00:00 GMT' }]) {
      for (const method of ['GET', 'HEAD']) {
        const res = await read(headers, method);
        assert.equal(res.status, 304, JSON.stringify(headers));
        assert.equal(res.headers.etag, 'W/"2"');
        assert.equal(res.body, undefined);
        assert.equal(res.headers['content-type'], undefined);
      }
    }
    assert.deepEqual(audited.at(-1), { status: 304, resources: ['Observation/obs-1'] });
    assert.ok(sent.every((headers) => headers['if-none-match'] === undefined), 'the upstream never answers the condition');
  });

  it('answers as without the condition when the resource changed', async () => {
    const { read } = plainServer('system/*.rs');
    for (const headers of [{ 'if-none-match': 'W/"1"' }, { 'if-modified-since': 'Sun, 01 Mar 2026 09:59:59 GMT' }, { 'if-modified-since': 'not a date' }]) {
      const res = await read(headers);
      assert.equal(res.status, 200, JSON.stringify(headers));
      assert.equal((res.body as { id: string }).id, 'obs-1');
      assert.equal(res.headers.etag, 'W/"2"');
    }
  });

  it('answers 412 itself when If-Match does not name the visible version (or If-Unmodified-Since is before it), never asking the upstream', async () => {
    const { read, sent } = plainServer('system/*.rs');
    for (const headers of [{ 'if-match': 'W/"1"' }, { 'if-match': 'W/"1", W/"3"' }, { 'if-unmodified-since': 'Sun, 01 Mar 2026 09:59:59 GMT' }]) {
      const res = await read(headers);
      assert.equal(res.status, 412, JSON.stringify(headers));
      assert.equal((res.body as { resourceType: string }).resourceType, 'OperationOutcome');
    }
    for (const headers of [{ 'if-match': 'W/"2"' }, { 'if-match': '"2"' }, { 'if-match': '*' }, { 'if-unmodified-since': 'Sun, 01 Mar 2026 10:00:00 GMT' }]) {
      assert.equal((await read(headers)).status, 200, JSON.stringify(headers));
    }
    assert.ok(sent.every((headers) => headers['if-match'] === undefined), 'the upstream never answers the condition');
  });

  it('never answers 304 or 412 for a resource the token may not see: the same 404 as a plain read', async () => {
    const { read } = plainServer('patient/*.rs', 'pat-2');
    const plain = await read({});
    assert.equal(plain.status, 404);
    for (const headers of [
      { 'if-none-match': 'W/"2"' }, { 'if-none-match': '*' }, { 'if-modified-since': 'Sun, 01 Mar 2026 10:00:00 GMT' },
      { 'if-match': 'W/"1"' }, { 'if-match': 'W/"2"' }, { 'if-unmodified-since': 'Sun, 01 Mar 2026 09:00:00 GMT' },
    ]) {
      const res = await read(headers);
      assert.deepEqual([res.status, res.body], [plain.status, plain.body], JSON.stringify(headers));
    }
  });
});

describe('guard: conditional writes', () => {
  const stored = { ...observation, meta: { versionId: '2', lastUpdated: '2026-03-01T10:00:00.500Z' } };
  /** A plain FHIR server holding Observation/obs-1 at version 2, answering 412 to an If-Match on a write that does not name it. */
  function plainServer(scope: string, patient?: string) {
    const sent: { method: string; path: string; headers: Record<string, string> }[] = [];
    const upstream = inProcessUpstream(async (request: UpstreamRequest) => {
      sent.push({ method: request.method, path: request.path, headers: request.headers ?? {} });
      const headers = new Headers({ 'content-type': 'application/fhir+json', etag: 'W/"2"' });
      if (request.path !== 'Observation/obs-1') return { status: 404, headers: new Headers(), body: { resourceType: 'OperationOutcome', issue: [] } };
      const ifMatch = request.headers?.['if-match'];
      if (ifMatch !== undefined && ifMatch !== 'W/"2"') return { status: 412, headers, body: { resourceType: 'OperationOutcome', issue: [] } };
      if (request.method === 'GET') return { status: 200, headers, body: stored };
      return { status: 200, headers: new Headers({ 'content-type': 'application/fhir+json', etag: 'W/"3"' }), body: { ...stored, meta: { versionId: '3' } } };
    });
    const guard = createGuard({
      audit: false,
      base: BASE, upstream, upstreamBase: 'http://upstream/fhir',
      verify: async () => tokenContext({ iss: 'https://auth.example.org', client_id: 'app', sub: 'app', jti: 'j', exp: 2e9, scope, ...(patient && { patient }) }, BASE),
    });
    const put = (headers: Record<string, string | undefined>) => guard.handle({ method: 'PUT', path: '/Observation/obs-1', headers: { ...bearer, ...headers }, body: observation });
    const writes = () => sent.filter((s) => s.method !== 'GET');
    return { guard, put, sent, writes };
  }

  it('answers 412 itself for a visible version the conditions do not name, before anything is written', async () => {
    const { put, writes } = plainServer('system/Observation.cruds');
    for (const headers of [{ 'if-match': 'W/"1"' }, { 'if-none-match': '*' }, { 'if-none-match': 'W/"2"' }, { 'if-unmodified-since': 'Sun, 01 Mar 2026 09:59:59 GMT' }] as Record<string, string>[]) {
      const res = await put(headers);
      assert.equal(res.status, 412, JSON.stringify(headers));
      assert.equal((res.body as { issue: { code: string }[] }).issue[0].code, 'conflict');
    }
    assert.deepEqual(writes(), []);
  });

  it('passes If-Match on with an allowed write, so the FHIR server checks it as it writes', async () => {
    const { put, writes } = plainServer('system/Observation.cruds');
    const res = await put({ 'if-match': 'W/"2"', 'if-unmodified-since': 'Sun, 01 Mar 2026 10:00:00 GMT' });
    assert.equal(res.status, 200);
    assert.deepEqual(writes().map((w) => [w.method, w.headers['if-match'], w.headers['if-unmodified-since']]), [['PUT', 'W/"2"', undefined]]);
  });

  it('answers a write on a resource the token may not see as without the conditions: the same 404, nothing about its version', async () => {
    const { put, writes } = plainServer('patient/Observation.cruds', 'pat-2');
    const plain = await put({});
    assert.equal(plain.status, 404);
    for (const headers of [{ 'if-match': 'W/"1"' }, { 'if-match': 'W/"2"' }, { 'if-none-match': '*' }, { 'if-unmodified-since': 'Sun, 01 Mar 2026 09:00:00 GMT' }]) {
      const res = await put(headers);
      assert.deepEqual([res.status, res.body], [plain.status, plain.body], JSON.stringify(headers));
    }
    assert.deepEqual(writes(), []);
  });

  it('holds each batch entry to its own conditions, never to those sent with the Bundle', async () => {
    const { guard, writes } = plainServer('system/Observation.cruds');
    const entry = (request: Record<string, string>) => ({ resource: observation, request: { method: 'PUT', url: 'Observation/obs-1', ...request } });
    const batch = { resourceType: 'Bundle', type: 'batch', entry: [entry({ ifMatch: 'W/"1"' }), entry({ ifMatch: 'W/"2"' }), { request: { method: 'GET', url: 'Observation/obs-1', ifNoneMatch: 'W/"2"' } }] };
    const res = await guard.handle({ method: 'POST', path: '/', headers: { ...bearer, 'if-match': 'W/"9"' }, body: batch });
    assert.equal(res.status, 200);
    assert.deepEqual((res.body as { entry: { response: { status: string } }[] }).entry.map((e) => e.response.status), ['412', '200', '304']);
    assert.deepEqual(writes().map((w) => w.headers['if-match']), ['W/"2"']);
  });
});

describe('guard: an update of a deleted resource', () => {
  const R = { system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' };
  /** A FHIR server that keeps the history of a deleted resource, as HAPI does: 410 on a read, its versions in `_history`. */
  function keepingHistory(historyStatus = 200) {
    const writes: string[] = [];
    const json = (status: number, body: unknown) => ({ status, headers: new Headers({ 'content-type': 'application/fhir+json' }), body });
    const upstream = inProcessUpstream(async (request: UpstreamRequest) => {
      if (request.path.startsWith('Consent')) return json(200, { resourceType: 'Bundle', type: 'searchset', entry: [] });
      if (request.method !== 'GET') {
        writes.push(`${request.method} ${request.path}`);
        return json(201, request.body);
      }
      if (request.path === 'Observation/obs-1/_history') {
        return json(historyStatus, { resourceType: 'Bundle', type: 'history', entry: [
          { request: { method: 'DELETE', url: 'Observation/obs-1' }, response: { status: '204' } },
          { resource: { ...observation, meta: { versionId: '1', security: [R] } }, request: { method: 'PUT', url: 'Observation/obs-1' } },
        ] });
      }
      return json(request.path === 'Observation/obs-1' ? 410 : 404, { resourceType: 'OperationOutcome', issue: [] });
    });
    const guard = createGuard({
      audit: false,
      base: BASE, upstream, upstreamBase: 'http://upstream/fhir', ...ruleOptions(upstream, { purposePolicy: false }),
      verify: async () => tokenContext({ iss: 'https://auth.example.org', client_id: 'app', sub: 'app', jti: 'j', exp: 2e9, scope: 'system/Observation.cruds' }, BASE),
    });
    const put = (body: unknown) => guard.handle({ method: 'PUT', path: '/Observation/obs-1', headers: bearer, body });
    return { put, writes };
  }

  it('keeps the labels of its last version: labels only go up across a delete', async () => {
    const { put, writes } = keepingHistory();
    const stripped = await put(observation);
    assert.equal(stripped.status, 403);
    assert.match((stripped.body as { issue: { diagnostics: string }[] }).issue[0].diagnostics, /labels only go up: the confidentiality R of Observation\/obs-1/);
    assert.deepEqual(writes, []);
    assert.equal((await put({ ...observation, meta: { security: [R] } })).status, 201, 'with its labels');
    assert.deepEqual(writes, ['PUT Observation/obs-1']);
  });

  it('writes nothing when the history of the deleted resource cannot be read (502)', async () => {
    const { put, writes } = keepingHistory(500);
    assert.equal((await put({ ...observation, meta: { security: [R] } })).status, 502);
    assert.deepEqual(writes, []);
  });
});

describe('guard: batch entries', () => {
  it('sends an entry without a resource with no body, never the Bundle it came in', async () => {
    const sent: { path: string; body: unknown }[] = [];
    const upstream = inProcessUpstream(async (request: UpstreamRequest) => {
      sent.push({ path: request.path, body: request.body });
      return { status: 200, headers: new Headers({ 'content-type': 'application/fhir+json' }), body: { resourceType: 'Parameters' } };
    });
    const guard = createGuard({
      audit: false,
      base: BASE, upstream, upstreamBase: 'http://upstream/fhir', allowOperations: ['validate'],
      verify: async () => tokenContext({ iss: 'https://auth.example.org', client_id: 'app', sub: 'app', jti: 'j', exp: 2e9, scope: 'system/*.cruds' }, BASE),
    });
    const batch = { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'POST', url: 'Observation/$validate' } }, { request: { method: 'POST', url: 'Observation' } }] };
    const res = await guard.handle({ method: 'POST', path: '/', headers: bearer, body: batch });
    assert.equal(res.status, 200);
    assert.deepEqual((res.body as { entry: { response: { status: string } }[] }).entry.map((e) => e.response.status), ['200', '400']);
    assert.deepEqual(sent, [{ path: 'Observation/$validate', body: undefined }]);
  });
});

describe('guard: writing operations', () => {
  const meta = { resourceType: 'Parameters', parameter: [{ name: 'meta', valueMeta: { tag: [{ system: 'urn:t', code: 'x' }] } }] };

  function withScope(scope: string) {
    const { guard, seen } = guardWith({
      allowOperations: ['meta-add', 'meta-delete'],
      verify: async () => tokenContext({ iss: 'https://auth.example.org', client_id: 'app', sub: 'app', jti: 'j', exp: 2e9, scope }, BASE),
    });
    const call = (method: string, path: string, body?: unknown) => guard.handle({ method, path, headers: bearer, body });
    return { call, seen };
  }

  it('refuses them with read-only scopes (403 insufficient_scope), before anything reaches the FHIR server', async () => {
    for (const scope of ['system/*.rs', 'system/Patient.read', 'system/Patient.c']) {
      const { call, seen } = withScope(scope);
      for (const name of ['meta-add', 'meta-delete']) {
        const res = await call('POST', `/Patient/pat-1/$${name}`, meta);
        assert.equal(res.status, 403, `${scope} ${name}`);
        assert.match(res.headers['www-authenticate'], /insufficient_scope/);
        assert.equal((res.body as { resourceType: string }).resourceType, 'OperationOutcome');
      }
      assert.deepEqual(seen, []);
    }
  });

  it('passes them with an update scope, once the stored resource was read and checked', async () => {
    const { call, seen } = withScope('system/Patient.u');
    const res = await call('POST', '/Patient/pat-1/$meta-add', meta);
    assert.equal(res.status, 404, 'the fake upstream does not know the operation');
    assert.deepEqual(seen, ['Patient/pat-1', 'Patient/pat-1/$meta-add']);
    assert.equal((await call('POST', '/Patient/pat-1/$meta-add', { resourceType: 'Parameters' })).status, 400, 'no meta parameter');
  });

  it('refuses operations not listed and wrong methods, whatever the scopes', async () => {
    const { call, seen } = withScope('system/*.cruds');
    const unknown = await call('POST', '/$graphql', { resourceType: 'Parameters' });
    assert.equal(unknown.status, 403);
    assert.equal((unknown.body as { resourceType: string }).resourceType, 'OperationOutcome');
    assert.equal((await call('GET', '/Patient/pat-1/$meta-delete')).status, 405);
    assert.deepEqual(seen, []);
  });
});

describe('guard: an operation\'s Parameters answer', () => {
  // $stats answers with Parameters holding Observations: here, another patient's.
  const stats = (subject: string) => ({ resourceType: 'Parameters', parameter: [{ name: 'statistics', resource: { ...observation, id: 'stat-1', subject: { reference: subject } } }] });
  const guardAnswering = (subject: string) => createGuard({
    audit: false,
    base: BASE,
    upstreamBase: 'http://upstream/fhir',
    allowOperations: ['stats'],
    upstream: inProcessUpstream(async () => ({ status: 200, headers: new Headers({ 'content-type': 'application/fhir+json' }), body: stats(subject) })),
    verify: async () => tokenContext({ iss: 'https://auth.example.org', client_id: 'app', sub: 'app', jti: 'j', exp: 2e9, scope: 'patient/*.rs', patient: 'pat-1' }, BASE),
  });

  it('is shown only when every resource it holds would be shown on its own', async () => {
    const ask = (subject: string) => guardAnswering(subject).handle({ method: 'GET', path: '/Observation/$stats', query: 'patient=pat-1&code=1', headers: bearer });
    assert.equal((await ask('Patient/pat-1')).status, 200, 'the token\'s own patient');
    const other = await ask('Patient/pat-2');
    assert.equal(other.status, 404, 'another patient\'s Observation inside');
    assert.ok(!JSON.stringify(other.body).includes('pat-2'));
  });
});

describe('guard: errors of the FHIR server', () => {
  const referenced = {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code: 'processing', diagnostics: 'Unable to delete Patient/pat-1: first reference found was resource Observation/obs-9 in path Observation.subject', expression: ['Observation.subject'] }],
  };
  function erring(scope: string, options: Partial<GuardOptions> = {}) {
    const reports: unknown[] = [];
    const upstream = inProcessUpstream(async (request: UpstreamRequest) => {
      const json = (status: number, body: unknown) => ({ status, headers: new Headers({ 'content-type': 'application/fhir+json' }), body });
      if (request.path.startsWith('Consent')) return json(200, { resourceType: 'Bundle', type: 'searchset', entry: [] });
      return json(request.path.startsWith('Observation') ? 409 : 503, request.path.startsWith('Observation') ? referenced : { resourceType: 'OperationOutcome', issue: [{ severity: 'fatal', code: 'made-up', diagnostics: 'database at 10.0.0.5 down' }] });
    });
    const guard = createGuard({
      audit: false,
      base: BASE, upstream, upstreamBase: 'http://upstream/fhir', onUpstreamError: (report) => { reports.push(report); },
      verify: async () => tokenContext({ iss: 'https://auth.example.org', client_id: 'app', sub: 'app', jti: 'j', exp: 2e9, scope }, BASE),
      ...options,
    });
    const search = (path = '/Observation') => guard.handle({ method: 'GET', path, query: 'code=1', headers: { ...bearer, 'x-request-id': 'r-1' } });
    return { search, reports, upstream };
  }

  it('passes on each issue\'s severity, code and a standard text, and tells whoever runs the guard the original', async () => {
    const { search, reports } = erring('system/Observation.rs');
    const res = await search();
    assert.equal(res.status, 409);
    assert.deepEqual(res.body, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'processing', diagnostics: 'the FHIR server could not process the request' }] });
    assert.deepEqual(reports, [{ status: 409, method: 'GET', path: 'Observation', requestId: 'r-1', issues: [{ code: 'processing', diagnostics: referenced.issue[0].diagnostics, details: undefined, expression: ['Observation.subject'], location: undefined }] }]);
  });

  it('answers a 5xx alike, and an issue code FHIR does not have as an exception', async () => {
    const { search } = erring('system/*.rs', { authorize: () => undefined });
    const res = await search('/Patient');
    assert.equal(res.status, 503);
    assert.deepEqual(res.body, { resourceType: 'OperationOutcome', issue: [{ severity: 'fatal', code: 'exception', diagnostics: 'the FHIR server failed' }] });
  });

  it('passes the whole OperationOutcome on only to a token the guard hides nothing from: no rules, every type of every patient', async () => {
    assert.deepEqual((await erring('system/*.rs').search()).body, referenced);
    for (const [scope, options] of [['system/*.rs', { authorize: () => undefined }], ['system/*.rs?_security=N', {}], ['system/Observation.rs', {}]] as const) {
      const res = await erring(scope, options).search();
      assert.equal(res.status, 409, scope);
      assert.notDeepEqual(res.body, referenced, scope);
    }
    const withRules = erring('system/*.rs');
    const ruled = erring('system/*.rs', ruleOptions(withRules.upstream));
    const res = await ruled.search();
    assert.equal(res.status, 409);
    assert.notDeepEqual(res.body, referenced, 'labels and consent can hide data from any token');
  });
});
