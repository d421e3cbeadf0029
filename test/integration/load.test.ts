// A bounded load on loopback: 20 workers send 1500 mixed requests to the real server — client_credentials
// token requests (each with a fresh ES384 assertion), introspection by a resource server, guarded FHIR
// reads and searches, and refused ones (no token, a garbage token, a revoked token: 401; a scope not
// granted: 403). It shows that no request gets a 5xx, each gets the status of its kind, every answered
// /fhir request has exactly one AuditEvent carrying its X-Request-Id, every token issued and every
// introspection is in the trail, and the audit hash chain verifies afterwards. Runs on SQLite, or on
// PostgreSQL with TEST_DATABASE=postgres.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { startTestServer, type TestServer } from '../support/server.ts';
import { ASSERTION_TYPE, backendClient, type BackendClient } from '../support/backend.ts';
import { decodeJwt, introspectToken, tokenRequest } from '../support/oauth.ts';

const TOTAL = 1500;
const WORKERS = 20;
const SCOPE = 'system/Patient.rs system/Observation.rs';

type Kind = 'token' | 'introspect' | 'read' | 'search' | 'no-token' | 'garbage-token' | 'revoked-token' | 'scope-not-granted';

/** One round of the mix; request i is MIX[i % MIX.length]. Everything but token and introspect goes to /fhir. */
const MIX: Kind[] = ['token', 'read', 'introspect', 'search', 'no-token', 'read', 'garbage-token', 'search', 'revoked-token', 'scope-not-granted'];
const EXPECTED: Record<Kind, number> = {
  token: 200, introspect: 200, read: 200, search: 200, 'no-token': 401, 'garbage-token': 401, 'revoked-token': 401, 'scope-not-granted': 403,
};
const isGuarded = (kind: Kind) => kind !== 'token' && kind !== 'introspect';

interface Outcome {
  kind: Kind;
  requestId: string;
  /** Undefined when the request got no answer (the connection failed). */
  status?: number;
  echoedId?: string | null;
  error?: string;
  /** token: the jti of the access token issued; introspect: whether the token was active. */
  jti?: string;
  active?: boolean;
}

/** The X-Request-Id an AuditEvent carries (BALP XrequestId entity). */
const requestIdOf = (event: any): string | undefined =>
  event.entity?.find((e: any) => e.type?.code === 'XrequestId')?.what?.identifier?.value;

describe('under a bounded concurrent load', function () {
  this.timeout(60_000);
  let server: TestServer;
  let backend: BackendClient;
  let rs: Awaited<ReturnType<TestServer['addClient']>>;
  let tokens: { latest: string; narrow: string; revoked: string };
  const setupJtis: string[] = [];

  before(async () => {
    server = await startTestServer({ RATE_LIMIT_TOKEN_PER_MINUTE: '1000000', RATE_LIMIT_INTROSPECT_PER_MINUTE: '1000000' });
    backend = await backendClient(server, SCOPE, 'ES384');
    rs = await server.addClient({ name: 'FHIR server', redirectUris: [], auth: { kind: 'secret' }, resourceServer: true });
    const issue = async (scope: string) => {
      const { res, body } = await backend.token(scope);
      assert.equal(res.status, 200, JSON.stringify(body));
      setupJtis.push(decodeJwt(body.access_token).payload.jti);
      return body.access_token as string;
    };
    tokens = { latest: await issue(SCOPE), narrow: await issue('system/Patient.rs'), revoked: await issue(SCOPE) };
    const revoked = await fetch(`${server.issuer}/revoke`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: tokens.revoked, client_assertion_type: ASSERTION_TYPE, client_assertion: await backend.assertion() }),
    });
    assert.equal(revoked.status, 200);
  });
  after(() => server?.stop());

  /** A guarded FHIR request, with or without a bearer token. */
  const fhir = (path: string, requestId: string, bearer?: string) =>
    fetch(`${server.fhirBase}/${path}`, { headers: { 'x-request-id': requestId, ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) } });

  /** A client_credentials token with a fresh assertion; the token issued becomes the one later reads use. */
  async function requestToken(requestId: string): Promise<Partial<Outcome>> {
    const { res, body } = await tokenRequest(server.issuer, {
      grant_type: 'client_credentials', scope: SCOPE, client_assertion_type: ASSERTION_TYPE, client_assertion: await backend.assertion(),
    }, undefined, { 'x-request-id': requestId });
    if (res.status !== 200) return { status: res.status, echoedId: res.headers.get('x-request-id') };
    tokens.latest = body.access_token;
    return { status: res.status, echoedId: res.headers.get('x-request-id'), jti: decodeJwt(body.access_token).payload.jti };
  }

  async function introspect(requestId: string): Promise<Partial<Outcome>> {
    const res = await introspectToken(server.issuer, rs, tokens.latest, { 'x-request-id': requestId });
    const body = await res.json() as { active?: boolean };
    return { status: res.status, echoedId: res.headers.get('x-request-id'), active: body.active };
  }

  async function send(kind: Kind, requestId: string): Promise<Partial<Outcome>> {
    if (kind === 'token') return requestToken(requestId);
    if (kind === 'introspect') return introspect(requestId);
    const res = {
      read: () => fhir('Patient/pat-1', requestId, tokens.latest),
      search: () => fhir('Observation?patient=pat-1', requestId, tokens.latest),
      'no-token': () => fhir('Patient/pat-1', requestId),
      'garbage-token': () => fhir('Patient/pat-1', requestId, `garbage.${randomUUID()}.token`),
      'revoked-token': () => fhir('Patient/pat-1', requestId, tokens.revoked),
      'scope-not-granted': () => fhir('Observation?patient=pat-1', requestId, tokens.narrow),
    }[kind];
    const answer = await res();
    await answer.arrayBuffer(); // read the body: the keep-alive connection is free again
    return { status: answer.status, echoedId: answer.headers.get('x-request-id') };
  }

  /** Sends TOTAL requests from WORKERS concurrent workers, each taking the next request from a shared counter. */
  async function runLoad(): Promise<Outcome[]> {
    const outcomes: Outcome[] = [];
    let next = 0;
    const worker = async () => {
      while (next < TOTAL) {
        const kind = MIX[next++ % MIX.length];
        const requestId = `load-${randomUUID()}`;
        try {
          outcomes.push({ kind, requestId, ...(await send(kind, requestId)) });
        } catch (err) {
          outcomes.push({ kind, requestId, error: String((err as Error).cause ?? err) });
        }
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, worker));
    return outcomes;
  }

  it('answers every request as expected with no 5xx, and loses no audit record', async () => {
    const started = Date.now();
    const outcomes = await runLoad();
    const seconds = (Date.now() - started) / 1000;
    assert.equal(outcomes.length, TOTAL);

    const failedConnections = outcomes.filter((o) => o.status === undefined);
    assert.deepEqual(failedConnections.slice(0, 5), [], `${failedConnections.length} requests got no answer`);
    const serverErrors = outcomes.filter((o) => o.status! >= 500);
    assert.deepEqual(serverErrors.slice(0, 5), [], `${serverErrors.length} answers were 5xx`);
    const unexpected = outcomes.filter((o) => o.status !== EXPECTED[o.kind]);
    assert.deepEqual(unexpected.slice(0, 5), [], `${unexpected.length} answers had another status than their kind's`);
    const notEchoed = outcomes.filter((o) => o.echoedId !== o.requestId);
    assert.deepEqual(notEchoed.slice(0, 5), [], `${notEchoed.length} answers did not return their X-Request-Id`);
    const inactive = outcomes.filter((o) => o.kind === 'introspect' && o.active !== true);
    assert.deepEqual(inactive.slice(0, 5), [], `${inactive.length} introspections of a valid token were not active`);

    // Every answered /fhir request has exactly one AuditEvent (each touches at most one patient), by its X-Request-Id.
    const guarded = outcomes.filter((o) => isGuarded(o.kind) && o.status !== undefined);
    const recordsPerRequest = new Map<string, number>();
    for (const event of await server.audit.search({ type: 'rest' })) {
      const id = requestIdOf(event);
      if (id) recordsPerRequest.set(id, (recordsPerRequest.get(id) ?? 0) + 1);
    }
    const notRecordedOnce = guarded.filter((o) => recordsPerRequest.get(o.requestId) !== 1);
    assert.deepEqual(notRecordedOnce.slice(0, 5).map((o) => ({ ...o, records: recordsPerRequest.get(o.requestId) ?? 0 })), [],
      `${notRecordedOnce.length} of ${guarded.length} answered /fhir requests do not have exactly one AuditEvent`);
    const guardedRecords = guarded.reduce((sum, o) => sum + (recordsPerRequest.get(o.requestId) ?? 0), 0);
    assert.equal(guardedRecords, guarded.length, 'as many AuditEvents for the /fhir requests as /fhir requests answered');

    // Every token issued (ITI-71, found by its jti) and every introspection answered (ITI-102) is in the trail.
    const issuedRecorded = new Set((await server.audit.search({ subtype: 'ITI-71', agent: backend.client_id }))
      .flatMap((e: any) => e.entity.map((x: any) => x.what?.identifier?.value)));
    const issued = [...setupJtis, ...outcomes.filter((o) => o.kind === 'token').map((o) => o.jti!)];
    const tokensNotRecorded = issued.filter((jti) => !issuedRecorded.has(`urn:ietf:params:oauth:jti:${jti}`));
    assert.deepEqual(tokensNotRecorded.slice(0, 5), [], `${tokensNotRecorded.length} of ${issued.length} issued tokens have no ITI-71 record`);
    const introspections = outcomes.filter((o) => o.kind === 'introspect').length;
    assert.equal((await server.audit.search({ subtype: 'ITI-102', agent: rs.client_id })).length, introspections);

    const verified = await server.audit.verify();
    assert.equal(verified.ok, true, JSON.stringify(verified));
    console.log(`      (${TOTAL} requests over ${WORKERS} workers in ${seconds.toFixed(1)} s; ${guarded.length} /fhir requests audited; ${verified.records} records in the chain)`);
  });
});
