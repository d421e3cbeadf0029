// The guard's DPoP proof check (RFC 9449 section 4.3) on its own, with a fixed clock.
import assert from 'node:assert/strict';
import { exportJWK } from 'jose';
import { createDpopCheck, DpopError, memoryReplayStore, proofForAnotherUrl, type DpopRequest } from '../../server/resource-server/dpop.ts';
import { dpopKey } from '../support/dpop.ts';

describe('DPoP proof check', () => {
  const url = 'https://fhir.example.org/r4/Patient/1';
  const token = 'header.payload.signature';

  async function outcome(check: ReturnType<typeof createDpopCheck>, request: DpopRequest): Promise<string> {
    try {
      await check(request);
      return 'ok';
    } catch (err) {
      if (err instanceof DpopError) return err.error;
      throw err;
    }
  }

  it('lets an unbound Bearer token pass without a proof, and refuses it with the DPoP scheme', async () => {
    const check = createDpopCheck();
    assert.equal(await outcome(check, { scheme: 'bearer', accessToken: token, proof: undefined, method: 'GET', url }), 'ok');
    assert.equal(await outcome(check, { scheme: 'dpop', accessToken: token, proof: undefined, method: 'GET', url }), 'invalid_token');
  });

  it('refuses several DPoP headers, and a proof carrying a private key', async () => {
    const key = await dpopKey();
    const check = createDpopCheck();
    const proof = await key.proof({ htm: 'GET', htu: url, accessToken: token });
    assert.equal(await outcome(check, { scheme: 'dpop', accessToken: token, jkt: key.jkt, proof: [proof, proof], method: 'GET', url }), 'invalid_dpop_proof');
    const withPrivate = await key.proof({ htm: 'GET', htu: url, accessToken: token, header: { jwk: await exportJWK(key.privateKey) } });
    assert.equal(await outcome(check, { scheme: 'dpop', accessToken: token, jkt: key.jkt, proof: withPrivate, method: 'GET', url }), 'invalid_dpop_proof');
  });

  it('accepts an htu differing only in query or fragment, and a proof at the edges of the iat window', async () => {
    const key = await dpopKey();
    const now = Math.floor(Date.now() / 1000);
    const check = createDpopCheck({ now: () => now, maxAgeSeconds: 60, clockTolerance: 5 });
    const request = async (claims: Record<string, unknown>, htu = url) => ({
      scheme: 'dpop' as const, accessToken: token, jkt: key.jkt, method: 'GET', url: `${url}?x=1`,
      proof: await key.proof({ htm: 'GET', htu, accessToken: token, claims }),
    });
    assert.equal(await outcome(check, await request({ iat: now }, `${url}#frag`)), 'ok');
    assert.equal(await outcome(check, await request({ iat: now - 60 })), 'ok');
    assert.equal(await outcome(check, await request({ iat: now + 5 })), 'ok');
    assert.equal(await outcome(check, await request({ iat: now - 61 })), 'invalid_dpop_proof');
    assert.equal(await outcome(check, await request({ iat: now + 6 })), 'invalid_dpop_proof');
  });

  it('remembers a jti until its proof could no longer be fresh', async () => {
    let now = 1000;
    const store = memoryReplayStore(() => now);
    assert.equal(await store.firstUse('a', 1065), true);
    assert.equal(await store.firstUse('a', 1065), false);
    now = 1064;
    assert.equal(await store.firstUse('a', 1130), false);
    now = 1065;
    assert.equal(await store.firstUse('a', 1130), true, 'expired entries are forgotten');
  });

  it('keeps a bounded number of entries', async () => {
    const store = memoryReplayStore(() => 0, 3);
    for (const id of ['a', 'b', 'c', 'd']) assert.equal(await store.firstUse(id, 100), true);
    assert.equal(await store.firstUse('d', 100), false);
  });
});

describe('DPoP proof for another URL (the /token pre-check)', () => {
  const endpoint = 'https://as.example/token';
  it('tells a proof for another server or path from one for this endpoint (query ignored); leaves broken proofs to the full check', async () => {
    const key = await dpopKey();
    const proof = (htu: unknown) => key.proof({ htm: 'POST', htu: htu as string });
    assert.equal(proofForAnotherUrl(await proof(endpoint), endpoint), false);
    assert.equal(proofForAnotherUrl(await proof(`${endpoint}?x=1`), endpoint), false);
    assert.equal(proofForAnotherUrl(await proof('https://other.example/token'), endpoint), true);
    assert.equal(proofForAnotherUrl(await proof('https://as.example/other'), endpoint), true);
    assert.equal(proofForAnotherUrl(await proof(7), endpoint), false);
    assert.equal(proofForAnotherUrl('not a jwt', endpoint), false);
  });
});
