// The audit hash chain: RFC 8785 hashing and verifyRecords finding changed, removed and reordered records.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { canonicalJson, chainHash, eventHash, GENESIS_HASH, verifyRecords, type ChainRecord } from '../../server/audit/chain.ts';

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** The same JSON value with every object's keys in another order (chosen by `order`). */
function reorderKeys(value: unknown, order: (keys: string[]) => string[]): unknown {
  if (Array.isArray(value)) return value.map((v) => reorderKeys(v, order));
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>);
    const keys = order(entries.map(([k]) => k));
    return Object.fromEntries(keys.map((k) => [k, reorderKeys((value as Record<string, unknown>)[k], order)]));
  }
  return value;
}

function event(n: number) {
  return {
    resourceType: 'AuditEvent' as const,
    id: `ev-${n}`,
    type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' },
    recorded: new Date(Date.UTC(2025, 0, 1, 0, 0, n)).toISOString(),
    outcome: '0',
    entity: [{ what: { reference: `Patient/p-${n % 3}` }, role: { code: '1' } }],
  };
}

function chain(n: number): ChainRecord[] {
  let prev = GENESIS_HASH;
  return Array.from({ length: n }, (_, i) => {
    const e = event(i + 1);
    const eh = eventHash(e);
    const hash = chainHash(prev, eh);
    const record = { seq: i + 1, id: e.id, event: JSON.stringify(e), eventHash: eh, prevHash: prev, hash };
    prev = hash;
    return record;
  });
}

const headOf = (records: ChainRecord[]) => ({ seq: records[records.length - 1].seq, hash: records[records.length - 1].hash, eventId: records[records.length - 1].id });

describe('audit chain', () => {
  describe('hashing', () => {
    it('hashes the RFC 8785 canonical JSON', () => {
      const e = { b: [3, 'x', { z: 1, a: null }], a: 1.5e-7, c: '\u00e9\u2028' };
      // JCS: keys sorted by UTF-16 code units, ES number serialization, minimal string escaping.
      assert.equal(eventHash(e), sha256('{"a":1.5e-7,"b":[3,"x",{"a":null,"z":1}],"c":"\u00e9\u2028"}'));
    });

    it('links hash = SHA-256(prev_hash ‖ event_hash), from 64 zeros', () => {
      assert.equal(GENESIS_HASH, '0'.repeat(64));
      const eh = eventHash({ resourceType: 'AuditEvent', id: 'x' });
      assert.equal(chainHash(GENESIS_HASH, eh), sha256(GENESIS_HASH + eh));
    });

    it('does not depend on key order (any reordering of object keys gives the same hash)', () => {
      fc.assert(
        fc.property(fc.jsonValue(), fc.infiniteStream(fc.double({ min: 0, max: 1, noNaN: true })), (value, randoms) => {
          const it = randoms[Symbol.iterator]();
          const shuffle = (keys: string[]) => {
            const out = [...keys];
            for (let i = out.length - 1; i > 0; i--) {
              const j = Math.floor((it.next().value as number) * (i + 1)) % (i + 1);
              [out[i], out[j]] = [out[j], out[i]];
            }
            return out;
          };
          const reordered = reorderKeys(value, shuffle);
          assert.equal(eventHash(reordered), eventHash(value));
          assert.equal(eventHash(reorderKeys(value, (keys) => [...keys].reverse())), eventHash(value));
        }),
        { numRuns: 300 },
      );
    });

    it('changes when any value changes', () => {
      fc.assert(
        fc.property(fc.dictionary(fc.string(), fc.integer(), { minKeys: 1 }), (object) => {
          const key = Object.keys(object)[0];
          assert.notEqual(eventHash({ ...object, [key]: object[key] + 1 }), eventHash(object));
        }),
      );
    });
  });

  describe('verifyRecords', () => {
    it('accepts an intact chain (and one stored with other key order)', () => {
      const records = chain(10);
      assert.equal(verifyRecords(records, undefined, headOf(records)), undefined);
      const reordered = records.map((r) => ({ ...r, event: JSON.stringify(reorderKeys(JSON.parse(r.event as string), (k) => [...k].reverse())) }));
      assert.equal(verifyRecords(reordered, undefined, headOf(records)), undefined);
      assert.equal(verifyRecords([], undefined, { seq: 0, hash: GENESIS_HASH }), undefined);
    });

    it('finds a modified record and names it', () => {
      const records = chain(10);
      const changed = JSON.parse(records[4].event as string);
      changed.outcome = '8';
      records[4] = { ...records[4], event: JSON.stringify(changed) };
      const failure = verifyRecords(records, undefined, headOf(records));
      assert.equal(failure?.eventId, 'ev-5');
      assert.equal(failure?.seq, 5);
      assert.match(failure!.problem, /content was changed/);
    });

    it('finds a modified record whose event_hash was recomputed (its link hash no longer follows)', () => {
      const records = chain(10);
      const changed = { ...JSON.parse(records[4].event as string), outcome: '8' };
      records[4] = { ...records[4], event: JSON.stringify(changed), eventHash: eventHash(changed) };
      const failure = verifyRecords(records);
      assert.equal(failure?.eventId, 'ev-5');
      assert.match(failure!.problem, /hash does not follow/);
    });

    it('finds a modified record re-hashed with its link (the next record no longer links)', () => {
      const records = chain(10);
      const changed = { ...JSON.parse(records[4].event as string), outcome: '8' };
      const eh = eventHash(changed);
      records[4] = { ...records[4], event: JSON.stringify(changed), eventHash: eh, hash: chainHash(records[4].prevHash, eh) };
      const failure = verifyRecords(records);
      assert.equal(failure?.eventId, 'ev-6');
      assert.match(failure!.problem, /does not link/);
    });

    it('finds a removed record in the middle', () => {
      const records = chain(10);
      records.splice(3, 1); // seq 4
      const failure = verifyRecords(records, undefined, headOf(records));
      assert.equal(failure?.seq, 5);
      assert.equal(failure?.eventId, 'ev-5');
      assert.match(failure!.problem, /seq 4 were removed/);
    });

    it('finds a removed record in the middle even when seq was renumbered', () => {
      const records = chain(10);
      records.splice(3, 1);
      const renumbered = records.map((r, i) => ({ ...r, seq: i + 1 }));
      const failure = verifyRecords(renumbered);
      assert.equal(failure?.eventId, 'ev-5');
      assert.match(failure!.problem, /does not link/);
    });

    it('finds the last record removed, against the chain head, naming it', () => {
      const records = chain(10);
      const head = headOf(records);
      const failure = verifyRecords(records.slice(0, 9), undefined, head);
      assert.equal(failure?.seq, 10);
      assert.equal(failure?.eventId, 'ev-10');
      assert.match(failure!.problem, /seq 10 were removed/);
      // Without the head, nothing tells that the chain was longer.
      assert.equal(verifyRecords(records.slice(0, 9)), undefined);
    });

    it('finds two swapped records', () => {
      const records = chain(10);
      [records[5], records[6]] = [{ ...records[6], seq: 6 }, { ...records[5], seq: 7 }];
      const failure = verifyRecords(records, undefined, headOf(chain(10)));
      assert.equal(failure?.seq, 6);
      assert.equal(failure?.eventId, 'ev-7');
      assert.match(failure!.problem, /reordered/);
    });

    it('finds records out of seq order', () => {
      const records = chain(5);
      [records[1], records[2]] = [records[2], records[1]];
      const failure = verifyRecords(records);
      assert.equal(failure?.eventId, 'ev-3');
    });

    it('starts from a purge anchor: the first record links to the anchor hash, earlier seqs may be gone', () => {
      const records = chain(10);
      const anchor = { seq: 4, hash: records[3].hash };
      assert.equal(verifyRecords(records.slice(4), anchor, headOf(records)), undefined);
      // Without the anchor, the gap is a removal.
      assert.equal(verifyRecords(records.slice(4))?.eventId, 'ev-5');
      // A wrong anchor hash is found at the first record.
      assert.equal(verifyRecords(records.slice(4), { seq: 4, hash: records[2].hash })?.eventId, 'ev-5');
      // A record after the anchor removed is still found.
      assert.equal(verifyRecords([records[4], ...records.slice(6)], anchor)?.eventId, 'ev-7');
    });

    it('finds a changed id column', () => {
      const records = chain(3);
      records[1] = { ...records[1], id: 'other' };
      const failure = verifyRecords(records);
      assert.equal(failure?.seq, 2);
      assert.match(failure!.problem, /id column/);
    });
  });
});

describe('canonical JSON (RFC 8785)', () => {
  it('is what the canonicalize package (an RFC 8785 implementation) writes, for any JSON value', async () => {
    const { default: canonicalize } = await import('canonicalize');
    fc.assert(fc.property(fc.jsonValue(), (value) => canonicalJson(value) === canonicalize(value)), { numRuns: 2000 });
  });

  it('writes the RFC 8785 example: members sorted by UTF-16 code units, numbers as ECMAScript writes them', () => {
    const input = { numbers: [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001], string: '\u20ac$\u000F\u000aA\'\u0042\u0022\u005c\\"/', literals: [null, true, false] };
    assert.equal(canonicalJson(input), '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}');
    assert.equal(canonicalJson({ '\u20ac': 'Euro Sign', '\r': 'Carriage Return', '\ufb33': 'Hebrew Letter Dalet With Dagesh', '1': 'One', '\ud83d\ude00': 'Emoji: Grinning Face', '\u0080': 'Control', '\u00f6': 'Latin Small Letter O With Diaeresis' }),
      '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign","\ud83d\ude00":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}');
  });

  it('writes every UTF-16 code unit (but a lone surrogate) in a string or a name as JSON.stringify does', () => {
    for (let unit = 0; unit <= 0xffff; unit++) {
      if (unit >= 0xd800 && unit <= 0xdfff) continue;
      const text = `a${String.fromCharCode(unit)}b`;
      assert.equal(canonicalJson({ [text]: text }), `{${JSON.stringify(text)}:${JSON.stringify(text)}}`, `U+${unit.toString(16)}`);
    }
  });

  it('leaves out undefined members, honours toJSON, and refuses what is not JSON', () => {
    assert.equal(canonicalJson({ b: undefined, a: new Date('2026-01-02T03:04:05.000Z'), c: [undefined] }), '{"a":"2026-01-02T03:04:05.000Z","c":[null]}');
    for (const bad of [undefined, NaN, Infinity, { x: -Infinity }, 'lone \ud800', { ['\udc00']: 1 }, 10n]) {
      assert.throws(() => canonicalJson(bad), TypeError);
    }
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    assert.throws(() => canonicalJson(cycle), /cycle/);
  });
});
