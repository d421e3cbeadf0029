// The token pipeline's rules around oidc-provider's answer (server/oidc/token/): what the request read
// (grant-source.ts, request.ts), what its commit comes to (request.ts), what the answer becomes and what
// is recorded (response.ts), and which of oidc-provider's answers are SMART's to rewrite (provider-answers.ts).
// One table per rule file; the reads run on a real SQLite database.
import assert from 'node:assert/strict';
import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import { migrate, nowSeconds, openDatabase, type Db } from '../../server/db.ts';
import { readGrantSource } from '../../server/oidc/token/grant-source.ts';
import { checkCommitted, RequestFacts } from '../../server/oidc/token/request.ts';
import { issuanceRecords, refusedAtCommit, withLaunchContext, type Issuance } from '../../server/oidc/token/response.ts';
import { clientAuthenticationRequired, refusedMalformedAssertion, refusedStructuredToken, refusedWithoutCredentials } from '../../server/oidc/token/provider-answers.ts';
import { CONSUMED, PAYLOAD_TABLE, REPLAYED } from '../../server/oidc/first-use.ts';
import type { GrantContext } from '../../server/oidc/launch-store.ts';
import type { User } from '../../server/oidc/users.ts';
import { refusalOf } from '../support/rule-tables.ts';
import { basicAuth } from '../support/oauth.ts';

describe('token rule: grant-source.ts (the code or refresh token, its grant, context and user in one read)', () => {
  let db: Db;
  // Taken when the rows are written, not when mocha loads the file (the whole suite may run longer than their 10 minutes).
  let now: number;
  const launch = JSON.stringify({ patient: 'p1', need_patient_banner: true, smart_style_url: '' });
  before(async () => {
    now = nowSeconds();
    db = openDatabase('sqlite::memory:');
    await migrate(db);
    const payload = (model: string, id: string, row: { grant?: string; account?: string; expires?: number | null; consumed?: number }) => ({
      model, id, payload: JSON.stringify({ jti: id, ...(row.account && { accountId: row.account }) }), grant_id: row.grant ?? null,
      account_id: row.account ?? null, expires_at: row.expires === undefined ? now + 600 : row.expires, consumed_at: row.consumed ?? null,
    });
    await db(PAYLOAD_TABLE).insert([
      payload('Grant', 'g1', { account: 'u1' }),
      payload('Grant', 'g-expired', { account: 'u1', expires: now - 1 }),
      payload('Grant', 'g-no-context', { account: 'u1' }),
      payload('Grant', 'g-old-context', { account: 'u1' }),
      payload('Grant', 'g-no-user', { account: 'gone' }),
      payload('AuthorizationCode', 'c1', { grant: 'g1' }),
      payload('AuthorizationCode', 'c-forever', { grant: 'g1', expires: null }),
      payload('AuthorizationCode', 'c-used', { grant: 'g1', consumed: now - 5 }),
      payload('AuthorizationCode', 'c-expired', { grant: 'g1', expires: now - 1 }),
      payload('AuthorizationCode', 'c-without-grant', {}),
      payload('AuthorizationCode', 'c-grant-expired', { grant: 'g-expired' }),
      payload('AuthorizationCode', 'c-grant-gone', { grant: 'g-gone' }),
      payload('AuthorizationCode', 'c-no-context', { grant: 'g-no-context' }),
      payload('AuthorizationCode', 'c-old-context', { grant: 'g-old-context' }),
      payload('AuthorizationCode', 'c-no-user', { grant: 'g-no-user' }),
      payload('RefreshToken', 'r1', { grant: 'g1' }),
    ]);
    const context = (grant: string, expires: number) => ({ grant_id: grant, launch, purpose_of_use: 'TREAT', emergency_reason: null, expires_at: expires });
    await db('grant_contexts').insert([context('g1', now + 600), context('g-expired', now + 600), context('g-no-user', now + 600), context('g-old-context', now - 1)]);
    await db('users').insert({ id: 'u1', username: 'doc', password_hash: 'x', name: 'Dr Who', fhir_user: null, attributes: '{}', disabled: false, created_at: now });
  });
  after(() => db.destroy());

  /** What a read found: the row (live or consumed), and of its grant: the Grant, the context's purpose, the user. */
  const summary = async (model: string, id: string) => {
    const { row, facts } = await readGrantSource(db, PAYLOAD_TABLE, model, id);
    return {
      row: row && (row.consumed_at === null ? 'unused' : 'consumed'),
      grant: facts && { id: facts.grantId, stored: facts.grant?.jti, purpose: facts.context?.purposeOfUse, user: facts.user?.id },
    };
  };
  const all = { id: 'g1', stored: 'g1', purpose: 'TREAT', user: 'u1' };
  const rows: [string, string, string, Awaited<ReturnType<typeof summary>>][] = [
    ['a live code: its grant, context and user', 'AuthorizationCode', 'c1', { row: 'unused', grant: all }],
    ['a live refresh token', 'RefreshToken', 'r1', { row: 'unused', grant: all }],
    ['a code without expiry', 'AuthorizationCode', 'c-forever', { row: 'unused', grant: all }],
    ['a used code: still found (oidc-provider refuses it and revokes its grant)', 'AuthorizationCode', 'c-used', { row: 'consumed', grant: all }],
    ['an expired code: nothing', 'AuthorizationCode', 'c-expired', { row: undefined, grant: undefined }],
    ['an unknown code: nothing', 'AuthorizationCode', 'nope', { row: undefined, grant: undefined }],
    ['a code asked for as a refresh token: nothing', 'RefreshToken', 'c1', { row: undefined, grant: undefined }],
    ['a code without a grant: the row only', 'AuthorizationCode', 'c-without-grant', { row: 'unused', grant: undefined }],
    ['a code whose grant expired: no Grant, no user', 'AuthorizationCode', 'c-grant-expired', { row: 'unused', grant: { id: 'g-expired', stored: undefined, purpose: 'TREAT', user: undefined } }],
    ['a code whose grant is gone', 'AuthorizationCode', 'c-grant-gone', { row: 'unused', grant: { id: 'g-gone', stored: undefined, purpose: undefined, user: undefined } }],
    ['a code whose grant has no context', 'AuthorizationCode', 'c-no-context', { row: 'unused', grant: { id: 'g-no-context', stored: 'g-no-context', purpose: undefined, user: 'u1' } }],
    ['a code whose grant\'s context expired', 'AuthorizationCode', 'c-old-context', { row: 'unused', grant: { id: 'g-old-context', stored: 'g-old-context', purpose: undefined, user: 'u1' } }],
    ['a code whose user is gone', 'AuthorizationCode', 'c-no-user', { row: 'unused', grant: { id: 'g-no-user', stored: 'g-no-user', purpose: 'TREAT', user: undefined } }],
  ];
  for (const [name, model, id, found] of rows) {
    it(name, async () => assert.deepEqual(await summary(model, id), found));
  }

  it('takes one statement', async () => {
    let statements = 0;
    const count = () => statements++;
    db.on('query', count);
    try {
      await readGrantSource(db, PAYLOAD_TABLE, 'AuthorizationCode', 'c1');
    } finally {
      db.off('query', count);
    }
    assert.equal(statements, 1);
  });
});

describe('token rule: request.ts (one request\'s facts, and what its commit comes to)', () => {
  const ok = (value: unknown): PromiseSettledResult<unknown> => ({ status: 'fulfilled', value });
  const failed = (reason: unknown): PromiseSettledResult<unknown> => ({ status: 'rejected', reason });
  const storeError = new Error('disk I/O error');
  type Outcome = Parameters<typeof checkCommitted>[0];

  const refused: [string, Outcome, string, string][] = [
    ['a client assertion used before', { jtisNew: [ok(false)], unused: [], written: [ok(undefined)] }, 'invalid_client', REPLAYED],
    ['one of two jtis used before (assertion and DPoP proof)', { jtisNew: [ok(true), ok(false)], unused: [ok(true)], written: [] }, 'invalid_client', REPLAYED],
    ['a replayed assertion with a used code: the assertion first', { jtisNew: [ok(false)], unused: [ok(false)], written: [] }, 'invalid_client', REPLAYED],
    ['a code used by another request first', { jtisNew: [ok(true)], unused: [ok(false)], written: [ok(undefined)] }, 'invalid_grant', CONSUMED],
    ['a used code with a failed write: the code first', { jtisNew: [], unused: [ok(false)], written: [failed(storeError)] }, 'invalid_grant', CONSUMED],
  ];
  for (const [name, outcome, error, description] of refused) {
    it(`refuses ${name} with ${error}`, () => {
      assert.throws(() => checkCommitted(outcome), (err) => assert.deepEqual(refusalOf(err), { error, description }) ?? true);
    });
  }

  const storeFailures: [string, Outcome][] = [
    ['a write that failed', { jtisNew: [ok(true)], unused: [ok(true)], written: [ok(undefined), failed(storeError)] }],
    ['a jti that could not be written', { jtisNew: [failed(storeError)], unused: [], written: [] }],
    ['a consumption that could not be written', { jtisNew: [ok(true)], unused: [failed(storeError)], written: [] }],
  ];
  for (const [name, outcome] of storeFailures) {
    it(`fails with the store's error (not the client's to hear) on ${name}`, () => assert.throws(() => checkCommitted(outcome), (err) => err === storeError));
  }

  const committed: [string, Outcome][] = [
    ['nothing to write', { jtisNew: [], unused: [], written: [] }],
    ['new jtis, an unused code, every write made', { jtisNew: [ok(true), ok(true)], unused: [ok(true)], written: [ok(undefined), ok(undefined)] }],
  ];
  for (const [name, outcome] of committed) {
    it(`commits ${name}`, () => assert.equal(checkCommitted(outcome), undefined));
  }

  describe('facts read once', () => {
    let db: Db;
    let statements = 0;
    const count = () => statements++;
    before(async () => {
      db = openDatabase('sqlite::memory:');
      await migrate(db);
      db.on('query', count);
    });
    after(() => db.destroy());
    beforeEach(() => (statements = 0));
    const context: GrantContext = { launch: { patient: 'p1', need_patient_banner: true, smart_style_url: '' }, purposeOfUse: 'TREAT' };
    const user: User = { id: 'u1', username: 'doc', name: null, fhirUser: null, attributes: {}, disabled: false };

    it('what was read with the code is not read again', async () => {
      const facts = new RequestFacts(db);
      facts.learn({ grantId: 'g1', grant: { jti: 'g1' }, context, user });
      assert.deepEqual(await facts.grantContext('g1'), context);
      assert.deepEqual(await facts.user('u1'), user);
      assert.equal(statements, 0);
    });
    it('the Grant read with the code is handed to oidc-provider once', () => {
      const facts = new RequestFacts(db);
      assert.deepEqual(facts.takeGrant('g1'), { known: false });
      facts.learn({ grantId: 'g1', grant: undefined, context: undefined, user: undefined });
      assert.deepEqual(facts.takeGrant('g1'), { known: true, grant: undefined });
      assert.deepEqual(facts.takeGrant('g1'), { known: false });
    });
    it('a grant context or user not learned is read once per request', async () => {
      const facts = new RequestFacts(db);
      await Promise.all([facts.grantContext('g2'), facts.grantContext('g2'), facts.user('u2'), facts.user('u2')]);
      assert.equal(statements, 2);
    });
    it('nothing is read without an id', async () => {
      const facts = new RequestFacts(db);
      assert.equal(await facts.grantContext(undefined), undefined);
      assert.equal(await facts.user(undefined), undefined);
      assert.equal(statements, 0);
    });
  });
});

describe('token rule: response.ts (the answer and its records)', () => {
  const refusals: [string, unknown, { status: number; body: { error: string; error_description: string } } | undefined][] = [
    ['a client assertion used before', new errors.InvalidClientAuth(REPLAYED), { status: 401, body: { error: 'invalid_client', error_description: 'client authentication failed' } }],
    ['a code or refresh token used first by another request', new errors.InvalidGrant(CONSUMED), { status: 400, body: { error: 'invalid_grant', error_description: 'grant request is invalid' } }],
    ['a store failure: thrown on (500, no detail)', new Error('disk I/O error'), undefined],
    ['another OAuth error: thrown on', new errors.InvalidRequest('x'), undefined],
  ];
  for (const [name, err, answer] of refusals) {
    it(`answers ${name}${answer ? ` with ${answer.body.error}` : ''}`, () => assert.deepEqual(refusedAtCommit(err), answer));
  }
  it('adds the launch context to the answer; a token member always wins', () => {
    const launch = { patient: 'p1', encounter: 'e1', need_patient_banner: true, smart_style_url: 'https://as.example/style', scope: 'evil', access_token: 'evil' };
    assert.deepEqual(withLaunchContext({ access_token: 'at', token_type: 'Bearer', scope: 'patient/*.rs' }, launch), {
      patient: 'p1', encounter: 'e1', need_patient_banner: true, smart_style_url: 'https://as.example/style', access_token: 'at', token_type: 'Bearer', scope: 'patient/*.rs',
    });
  });

  const base: Issuance = {
    issuer: 'https://as.example', address: '192.0.2.1', recorded: new Date('2026-01-01T00:00:00Z'), clientId: 'app', grantType: 'authorization_code',
    answer: { scope: 'patient/*.rs', expires_in: 3600 }, claims: { jti: 'j1', amr: ['pwd', 'otp', 'mfa'] },
  };
  const user: User = { id: 'u1', username: 'doc', name: 'Dr Who', fhirUser: null, attributes: { roles: [] }, disabled: false };
  const launch = { patient: 'p1', need_patient_banner: true, smart_style_url: '' };
  const emergency: GrantContext = { launch, purposeOfUse: 'ETREAT', emergencyReason: 'unconscious, no consent possible', stepUpAmr: ['otp'] };
  const grant = { accountId: 'u1', clientId: 'app' };
  // ITI-71: IHE IUA Get Access Token; 110127: DICOM Emergency Override Started (the security alert). The
  // requestor of the ITI-71 record is the user when there is one, the app (a backend service) otherwise.
  const records: [string, Partial<Issuance>, string[], string][] = [
    ['a backend service\'s token', { grantType: 'client_credentials' }, ['ITI-71'], 'app'],
    ['an app\'s token', { grant, context: { launch, purposeOfUse: 'TREAT' }, user }, ['ITI-71'], 'u1'],
    ['an emergency access\'s token', { grant, context: emergency, user }, ['ITI-71', '110127'], 'u1'],
    ['an emergency access refreshed (never, but if it were: alerted again)', { grantType: 'refresh_token', grant, context: emergency, user }, ['ITI-71', '110127'], 'u1'],
    ['an emergency reason without a purpose', { grant, context: { ...emergency, purposeOfUse: undefined }, user }, ['ITI-71'], 'u1'],
    ['an emergency context without a Grant', { context: emergency, user }, ['ITI-71'], 'u1'],
  ];
  type Agent = { requestor: boolean; who: { identifier?: { value: string } } };
  for (const [name, issuance, events, requestor] of records) {
    it(`records ${name}: ${events.join(' and ')}, requested by ${requestor}`, () => {
      const made = issuanceRecords({ ...base, ...issuance });
      assert.deepEqual(made.map((r) => (r.subtype as { code: string }[])[0].code), events);
      assert.deepEqual((made[0].agent as Agent[]).filter((a) => a.requestor).map((a) => a.who.identifier?.value), [requestor]);
      for (const record of made) assert.equal(record.recorded, '2026-01-01T00:00:00.000Z');
    });
  }
});

describe('token rule: provider-answers.ts (oidc-provider answers that SMART rewrites)', () => {
  /** oidc-provider's answer as the middleware after it sees it. */
  const answered = (a: { status: number; error?: string; params?: Record<string, unknown>; client?: object; authorization?: string }) => ({
    status: a.status,
    body: a.error ? { error: a.error, error_description: 'x' } : { access_token: 'at' },
    oidc: { params: a.params, client: a.client },
    get: (header: string) => (header.toLowerCase() === 'authorization' ? a.authorization ?? '' : ''),
  }) as unknown as KoaContextWithOIDC;
  const jwt = `${Buffer.from('{"alg":"ES384"}').toString('base64url')}.${Buffer.from('{"iss":"svc"}').toString('base64url')}.sig`;

  const malformed: [string, Parameters<typeof answered>[0], boolean][] = [
    ['an assertion that is not a JWT: invalid_client', { status: 400, error: 'invalid_request', params: { client_assertion: 'not-a-jwt' } }, true],
    ['an assertion with a payload that is not JSON: invalid_client', { status: 400, error: 'invalid_request', params: { client_assertion: 'a.b.c' } }, true],
    ['a JWT refused for another reason: left as it is', { status: 400, error: 'invalid_request', params: { client_assertion: jwt } }, false],
    ['a request without an assertion', { status: 400, error: 'invalid_request', params: {} }, false],
    ['another error', { status: 401, error: 'invalid_client', params: { client_assertion: 'not-a-jwt' } }, false],
    ['a token answer', { status: 200, params: { client_assertion: 'not-a-jwt' } }, false],
  ];
  for (const [name, answer, rewritten] of malformed) {
    it(`malformed assertion: ${name}`, () => assert.equal(refusedMalformedAssertion(answered(answer)), rewritten));
  }

  const anonymous: [string, Parameters<typeof answered>[0], boolean][] = [
    ['no client named at all: invalid_client', { status: 400, error: 'invalid_request', params: {} }, true],
    ['no parameters at all: invalid_client', { status: 400, error: 'invalid_request' }, true],
    ['an empty client_id: invalid_client', { status: 400, error: 'invalid_request', params: { client_id: '' } }, true],
    ['a client secret alone: invalid_client', { status: 400, error: 'invalid_request', params: { client_secret: 'x' } }, true],
    ['a Basic header with an empty client_id: invalid_client', { status: 400, error: 'invalid_request', params: {}, authorization: basicAuth({ client_id: '', client_secret: 'secret' }) }, true],
    ['a Basic header naming a client', { status: 400, error: 'invalid_request', params: {}, authorization: basicAuth({ client_id: 'x', client_secret: 'y' }) }, false],
    ['a malformed Authorization header (invalid_request stays)', { status: 400, error: 'invalid_request', params: {}, authorization: 'Basic garbage' }, false],
    ['two mechanisms (invalid_request stays)', { status: 400, error: 'invalid_request', params: { client_secret: 'x' }, authorization: basicAuth({ client_id: '', client_secret: 'secret' }) }, false],
    ['a client_id', { status: 400, error: 'invalid_request', params: { client_id: 'app' } }, false],
    ['a client assertion', { status: 400, error: 'invalid_request', params: { client_assertion: jwt } }, false],
    ['an authenticated client', { status: 400, error: 'invalid_request', params: {}, client: { clientId: 'app' } }, false],
    ['another error', { status: 400, error: 'invalid_grant', params: {} }, false],
  ];
  for (const [name, answer, rewritten] of anonymous) {
    it(`without credentials: ${name}`, () => assert.equal(refusedWithoutCredentials(answered(answer)), rewritten));
  }

  for (const route of ['token', 'introspection', 'revocation', 'authorization']) {
    it(`one rule for every client-authenticating route: ${route}`, async () => {
      const headers: Record<string, string> = {};
      const ctx = Object.assign(answered({ status: 400, error: 'invalid_request', params: {} }), {
        set: (name: string, value: string) => { headers[name] = value; },
      }) as KoaContextWithOIDC;
      Object.assign(ctx.oidc, { route, provider: { issuer: 'https://as.example' } });
      await clientAuthenticationRequired(ctx, async () => {});
      if (route === 'authorization') return assert.equal(ctx.status, 400);
      assert.equal(ctx.status, 401);
      assert.deepEqual(ctx.body, { error: 'invalid_client', error_description: 'client authentication is required' });
      assert.equal(headers['WWW-Authenticate'], `Basic realm="https://as.example"${route === 'introspection' ? ', Bearer realm="https://as.example"' : ''}`);
    });
  }

  const structured: [string, Parameters<typeof answered>[0], boolean][] = [
    ['unsupported_token_type: a JWT access token, ours to answer for', { status: 400, error: 'unsupported_token_type' }, true],
    ['another error', { status: 400, error: 'invalid_request' }, false],
    ['an answer', { status: 200 }, false],
  ];
  for (const [name, answer, rewritten] of structured) {
    it(`structured token: ${name}`, () => assert.equal(refusedStructuredToken(answered(answer)), rewritten));
  }
});
