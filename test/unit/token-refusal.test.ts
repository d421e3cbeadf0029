// The record of a refused request at /token, /introspect or /revoke (pure parts): the outcome, the client as
// claimed and whether it authenticated, and no credential of the request in it, whatever the error message says.
import assert from 'node:assert/strict';
import { claimedClientId, credentialsOf, refusalOf, withoutSecrets } from '../../server/oidc/refusals.ts';
import { oauthRequestRefused } from '../../server/audit/balp.ts';
import { basicAuth } from '../support/oauth.ts';

const ISSUER = 'https://auth.example.org';
const jwt = (payload: object) => `${Buffer.from('{"alg":"ES384"}').toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.c2lnbmF0dXJl`;

describe('a refused token, introspection or revocation request, recorded', () => {
  it('names the client as the request claimed it: parameter, Basic user, assertion sub, bearer token client_id', () => {
    assert.equal(claimedClientId({ params: { client_id: 'app-1' } }), 'app-1');
    assert.equal(claimedClientId({ params: {}, authorization: basicAuth({ client_id: 'app 2', client_secret: 's3cret' }) }), 'app 2');
    assert.equal(claimedClientId({ params: { client_assertion: jwt({ sub: 'backend-3', iss: 'backend-3' }) } }), 'backend-3');
    assert.equal(claimedClientId({ params: { client_assertion: 'not a jwt' } }), undefined);
    assert.equal(claimedClientId({ params: {}, authorization: 'Bearer abc' }), undefined);
    assert.equal(claimedClientId({ params: {}, authorization: `Bearer ${jwt({ client_id: 'rs-4', sub: 'rs-4' })}` }), 'rs-4');
  });

  it('knows every credential the request carries, and takes each out of any text', () => {
    const sent = {
      params: { code: 'the-code', code_verifier: 'the-verifier', refresh_token: ['rt-1', 'rt-2'], client_assertion: 'a.b.c', scope: 'system/*.rs' },
      authorization: basicAuth({ client_id: 'app', client_secret: 'the-secret' }),
      dpop: 'the-proof',
    };
    assert.deepEqual(credentialsOf(sent).sort(), ['a.b.c', 'rt-1', 'rt-2', 'the-code', 'the-proof', 'the-secret', 'the-verifier']);
    assert.equal(withoutSecrets('code the-code-1 of the-secret', ['the-code-1', 'the-secret']), 'code redacted of redacted');
  });

  it('knows the token introspected or revoked and a bearer token for credentials too', () => {
    assert.deepEqual(credentialsOf({ params: { token: 'the-token', token_type_hint: 'access_token' }, authorization: 'Bearer the-bearer' }).sort(), ['the-bearer', 'the-token']);
  });

  it('leaves a message whole when a value is too short to be a credential (a sender cannot garble its record)', () => {
    const refusal = refusalOf({ status: 400, body: { error: 'invalid_grant', error_description: 'authorization code not found' } }, { params: { code: 'o' } }, 'app-1');
    assert.equal(refusal.error, 'invalid_grant');
    assert.equal(refusal.description, 'authorization code not found');
  });

  it('is invalid_client from a client that did not authenticate, also when the client was found (a replayed assertion)', () => {
    const sent = { params: { grant_type: 'client_credentials', client_assertion: jwt({ sub: 'backend-3' }) } };
    const replayed = refusalOf({ status: 401, body: { error: 'invalid_client', error_description: 'client assertion tokens must only be used once' } }, sent, 'backend-3');
    assert.equal(replayed.clientAuthenticated, false);
    assert.equal(replayed.clientId, 'backend-3');
    const grant = refusalOf({ status: 400, body: { error: 'invalid_grant', error_description: 'grant request is invalid' } }, { params: { grant_type: 'refresh_token' } }, 'app-1');
    assert.equal(grant.clientAuthenticated, true);
  });

  it('never carries a credential, not even one an error message repeated', () => {
    const sent = { params: { grant_type: 'authorization_code', code: 'SplxlOBeZQQYbYS6WxSbIA', client_id: 'app-1' }, authorization: undefined };
    const refusal = refusalOf({ status: 400, body: { error: 'invalid_grant', error_description: 'code SplxlOBeZQQYbYS6WxSbIA was used' } }, sent, undefined);
    const event = oauthRequestRefused({ endpoint: 'token', recorded: new Date(), issuer: ISSUER, address: '10.0.0.1', requestId: 'r-1', ...refusal });
    assert.ok(!JSON.stringify(event).includes('SplxlOBeZQQYbYS6WxSbIA'));
    assert.equal(event.outcome, '4');
    assert.equal(event.outcomeDesc, 'invalid_grant: code redacted was used');
  });

  it('is a minor failure (4) for a refusal, a serious one (8) for a server error, in the pattern of its endpoint', () => {
    const event = (status: number) => oauthRequestRefused({ endpoint: 'token', recorded: new Date(), issuer: ISSUER, status, error: 'x', clientAuthenticated: false });
    assert.equal(event(401).outcome, '4');
    assert.equal(event(500).outcome, '8');
    const e = event(400) as any;
    assert.deepEqual([e.type.code, e.subtype[0].code, e.action], ['110114', 'ITI-71', 'E']);
    const at = (endpoint: 'introspection' | 'revocation') => oauthRequestRefused({ endpoint, recorded: new Date(), issuer: ISSUER, status: 401, error: 'invalid_client', clientAuthenticated: false }) as any;
    assert.deepEqual([at('introspection').type.code, at('introspection').subtype[0].code, at('introspection').action, at('introspection').outcome], ['110114', 'ITI-102', 'E', '4'], 'ITI-102, as an introspection');
    assert.deepEqual([at('revocation').type.code, at('revocation').subtype[0].code, at('revocation').action, at('revocation').outcome], ['110113', '110135', 'D', '4'], 'as a revocation');
    assert.deepEqual(e.agent[0], { type: { coding: [{ system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110150', display: 'Application' }] }, requestor: true });
  });
});
