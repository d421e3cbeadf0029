import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  allows,
  categoryAlternatives,
  covers,
  describeScope,
  formatScope,
  formatScopes,
  isPatientScope,
  isResourceScope,
  narrowedAlternatives,
  narrowToAllowed,
  parseScope,
  parseScopes,
  permissionFor,
  toV2,
  type Interaction,
  type Level,
  type Permission,
  type ResourceScope,
  type Scope,
} from '../../server/smart/scopes.ts';

const LEVELS: Level[] = ['patient', 'user', 'system'];
const CRUDS: Permission[] = ['c', 'r', 'u', 'd', 's'];
const INTERACTIONS: Interaction[] = [
  'create', 'read', 'vread', 'history-instance', 'update', 'patch', 'delete',
  'search-type', 'search-system', 'search-compartment', 'history-type', 'history-system',
];
const OBS_CAT = 'http://terminology.hl7.org/CodeSystem/observation-category';

function res(text: string): ResourceScope {
  const s = parseScope(text);
  assert.ok(s && isResourceScope(s), `expected resource scope: ${text}`);
  return s;
}

// ---- generators ----------------------------------------------------------

const typeArb = fc.oneof(
  fc.constantFrom('*', 'Observation', 'Condition', 'Patient'),
  fc.stringMatching(/^[A-Z][A-Za-z]{1,8}$/),
);
const valueArb = fc.oneof(
  fc.constantFrom(`${OBS_CAT}|laboratory`, 'http://x.org/cs|code', 'urn:oid:1.2.3|A/B'),
  fc.tuple(fc.stringMatching(/^[a-z]{1,6}$/), fc.stringMatching(/^[a-z0-9-]{1,6}$/)).map(([h, c]) => `http://${h}.org/cs|${c}`),
);
const queryArb = fc.array(
  fc.tuple(fc.constantFrom('category', 'code', 'code:in', 'patient.birthdate', '_tag'), valueArb),
  { maxLength: 2 },
);
const v2Arb = fc.record({
  level: fc.constantFrom(...LEVELS),
  type: typeArb,
  perms: fc.subarray(CRUDS, { minLength: 1 }),
  query: queryArb,
});
/** Canonical text of a valid resource scope (v2 with optional query, or v1 without). */
const validResourceText = fc.oneof(
  v2Arb.map(({ level, type, perms, query }) =>
    `${level}/${type}.${perms.join('')}${query.length ? '?' + query.map(([k, v]) => `${k}=${v}`).join('&') : ''}`),
  fc.tuple(fc.constantFrom(...LEVELS), typeArb, fc.constantFrom('read', 'write', '*')).map(([l, t, p]) => `${l}/${t}.${p}`),
);
const validOtherText = fc.constantFrom(
  'launch', 'launch/patient', 'launch/encounter', 'launch/questionnaire?role=http://example.org/role',
  'openid', 'fhirUser', 'profile', 'offline_access', 'online_access', 'introspect',
  '__profilePhoto.manage', 'https://example.org/scopes/x', 'urn:example:scope',
  'purpose_of_use=http://terminology.hl7.org/CodeSystem/v3-ActReason|TREAT',
  'purpose_of_use=urn:oid:2.16.756.5.30.1.127.3.10.5|NORM',
);
const validText = fc.oneof(validResourceText, validOtherText);

/** Small domain so that covers-chains occur often. */
const smallScopeArb: fc.Arbitrary<ResourceScope> = fc.record({
  level: fc.constantFrom<Level>('patient', 'user'),
  type: fc.constantFrom('*', 'Observation', 'Condition'),
  perms: fc.subarray(CRUDS, { minLength: 1 }),
  query: fc.subarray([['category', 'a'], ['category', 'b'], ['code', 'x']] as const),
}).map(({ level, type, perms, query }) => ({ kind: 'resource', level, type, permissions: perms, query }));

// Independent oracle for the accepted grammar.
const TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;
const URI = '[A-Za-z][A-Za-z0-9+.-]*:';
const Q = '[^&=?]+=[^&?]+';
const GRAMMAR = new RegExp([
  `^(patient|user|system)/([A-Z][A-Za-z]+|\\*)\\.((?=[cruds])c?r?u?d?s?(\\?${Q}(&${Q})*)?|read|write|\\*)$`,
  `^launch(/[a-z]{2,}(\\?role=${URI}[^&?]+)?)?$`,
  '^(openid|fhirUser|profile|offline_access|online_access|introspect)$',
  `^purpose_of_use=${URI}[^|]+\\|[^|]+$`,
  `^__.+$`,
  `^${URI}.+$`,
].join('|'));
const oracle = (x: string) => TOKEN.test(x) && GRAMMAR.test(x);

// ---- parse / format --------------------------------------------------------

describe('scopes: parseScope / formatScope', () => {
  it('parses v2 resource scopes with query restrictions verbatim', () => {
    const text = `patient/Observation.rs?category=${OBS_CAT}|laboratory&code:in=http://x.org/vs`;
    assert.deepEqual(parseScope(text), {
      kind: 'resource', level: 'patient', type: 'Observation', permissions: ['r', 's'],
      query: [['category', `${OBS_CAT}|laboratory`], ['code:in', 'http://x.org/vs']],
    });
    assert.equal(formatScope(parseScope(text)!), text);
    assert.deepEqual(res('system/Patient.rs?category=x').query, [['category', 'x']]);
    // `.rd` is an ordered subset of cruds (read + delete); the spec only warns against reading `.read` as `.rd`.
    assert.deepEqual(res('patient/Observation.rd').permissions, ['r', 'd']);
  });

  it('maps v1 words and keeps the v1 text when formatting', () => {
    assert.deepEqual(res('patient/*.read'), { ...res('patient/*.rs'), v1: 'read' });
    assert.deepEqual(res('user/*.*').permissions, CRUDS);
    assert.deepEqual(res('user/Observation.write').permissions, ['c', 'u', 'd']);
    assert.equal(formatScope(res('patient/*.read')), 'patient/*.read');
    assert.equal(formatScope(toV2(res('patient/*.read'))), 'patient/*.rs');
  });

  it('parses non-resource scopes', () => {
    assert.deepEqual(parseScope('launch'), { kind: 'launch', value: 'launch' });
    assert.deepEqual(parseScope('launch/patient'), { kind: 'launch', value: 'launch/patient' });
    assert.deepEqual(parseScope('launch/encounter'), { kind: 'launch', value: 'launch/encounter' });
    assert.deepEqual(parseScope('launch/questionnaire?role=http://x.org/r'),
      { kind: 'launch', value: 'launch/questionnaire', role: 'http://x.org/r' });
    assert.deepEqual(parseScope('openid'), { kind: 'identity', value: 'openid' });
    assert.deepEqual(parseScope('fhirUser'), { kind: 'identity', value: 'fhirUser' });
    assert.deepEqual(parseScope('offline_access'), { kind: 'refresh', value: 'offline_access' });
    assert.deepEqual(parseScope('online_access'), { kind: 'refresh', value: 'online_access' });
    assert.deepEqual(parseScope('purpose_of_use=http://terminology.hl7.org/CodeSystem/v3-ActReason|TREAT'),
      { kind: 'purpose', system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT' });
    assert.deepEqual(parseScope('introspect'), { kind: 'other', value: 'introspect' });
    assert.deepEqual(parseScope('__profilePhoto.manage'), { kind: 'other', value: '__profilePhoto.manage' });
    assert.deepEqual(parseScope('https://example.org/x'), { kind: 'other', value: 'https://example.org/x' });
  });

  it('rejects malformed scopes', () => {
    for (const bad of [
      'patient/Observation.sr', 'patient/Observation.dr', 'patient/Observation.dus', 'patient/Observation.',
      'patient/Observation.x', 'patient/Observation.rr', 'patient/Observation', 'Patient/Observation.rs',
      'practitioner/Observation.rs', 'patient/observation.rs', 'patient/O.rs', 'patient/Obs1.rs',
      'patient/Observation.rs?', 'patient/Observation.rs?category', 'patient/Observation.rs?category=',
      'patient/Observation.rs?=x', 'patient/Observation.rs?a=1&', 'patient/Observation.rs?a=1&&b=2',
      'patient/Observation.rs?a=b?c', 'patient/Observation.read?category=x', 'patient/**.rs',
      'patient/Observation.rs?a="x"', 'patient/Observation.rs?a=x\\y', 'launch/', 'launch/Patient',
      'launch/patient?role=', 'launch/patient?role=notauri', 'launch/p', 'launch?role=http://x',
      'purpose_of_use=TREAT', 'purpose_of_use=http://x|', 'purpose_of_use=|TREAT', 'purpose_of_use=http://x|a|b',
      'OpenID', 'offline', 'foo', '__', '', ' ', 'patient/*.rs openid', 'http:', 'patient/*.rsé',
    ]) {
      assert.equal(parseScope(bad), undefined, bad);
    }
  });

  it('property: canonical text round-trips, and parse(format(s)) deep-equals s', () => {
    fc.assert(fc.property(validText, (text) => {
      const s = parseScope(text);
      assert.ok(s, text);
      assert.equal(formatScope(s), text);
      assert.deepEqual(parseScope(formatScope(s)), s);
    }));
  });

  it('property: parseScope accepts exactly the grammar (arbitrary strings)', () => {
    const alphabet = fc.constantFrom(...'patiensuryOobvC*./?=&|:_-crwdsx "\\é1'.split(''));
    fc.assert(fc.property(fc.oneof(validText, fc.string(), fc.string({ unit: alphabet }), fc.string({ unit: 'binary' })), (x) => {
      assert.equal(parseScope(x) !== undefined, oracle(x), JSON.stringify(x));
    }), { numRuns: 2000 });
  });

  it('property: mutated valid scopes are rejected', () => {
    const mutated = v2Arb.chain(({ level, type, perms, query }) => {
      const q = query.length ? '?' + query.map(([k, v]) => `${k}=${v}`).join('&') : '';
      const variants: fc.Arbitrary<string>[] = [
        fc.stringMatching(/^[A-Za-z]{0,10}$/).filter((l) => !(LEVELS as string[]).includes(l))
          .map((l) => `${l}/${type}.${perms.join('')}${q}`),
        fc.nat({ max: perms.length - 1 }).map((i) =>
          `${level}/${type}.${[...perms.slice(0, i + 1), perms[i], ...perms.slice(i + 1)].join('')}${q}`),
      ];
      if (perms.length > 1) variants.push(fc.constant(`${level}/${type}.${[...perms].reverse().join('')}${q}`));
      if (type !== '*') variants.push(fc.constant(`${level}/${type[0].toLowerCase()}${type.slice(1)}.${perms.join('')}${q}`));
      return fc.oneof(...variants);
    });
    fc.assert(fc.property(mutated, (x) => assert.equal(parseScope(x), undefined, x)));
  });
});

describe('scopes: parseScopes / toV2 / guards', () => {
  it('splits on runs of spaces, drops duplicates, reports invalid tokens', () => {
    const r = parseScopes('  openid  fhirUser patient/*.rs openid patient/*.sr  patient/*.sr launch/patient ');
    assert.deepEqual(r.scopes.map(formatScope), ['openid', 'fhirUser', 'patient/*.rs', 'launch/patient']);
    assert.deepEqual(r.invalid, ['patient/*.sr']);
    assert.deepEqual(parseScopes(''), { scopes: [], invalid: [] });
    assert.equal(formatScopes(r.scopes), 'openid fhirUser patient/*.rs launch/patient');
  });

  it('toV2 follows the documented v1 mapping (property)', () => {
    const expected = { read: 'rs', write: 'cud', '*': 'cruds' } as const;
    fc.assert(fc.property(fc.constantFrom(...LEVELS), typeArb, fc.constantFrom('read', 'write', '*') as fc.Arbitrary<'read' | 'write' | '*'>,
      (level, type, word) => {
        const v2 = toV2(res(`${level}/${type}.${word}`));
        assert.equal(v2.v1, undefined);
        assert.ok(!('v1' in v2));
        assert.equal(formatScope(v2), `${level}/${type}.${expected[word]}`);
        assert.deepEqual(v2, res(`${level}/${type}.${expected[word]}`));
      }));
    assert.deepEqual(toV2(res('patient/Observation.rs?category=x')), res('patient/Observation.rs?category=x'));
  });

  it('type guards', () => {
    assert.ok(isPatientScope(res('patient/Observation.r')));
    assert.ok(!isPatientScope(res('user/Observation.r')));
    assert.ok(!isPatientScope(parseScope('launch/patient')!));
    assert.ok(!isResourceScope(parseScope('openid')!));
  });
});

describe('scopes: permissionFor / covers / allows', () => {
  it('maps interactions to permissions', () => {
    const expected: Record<Interaction, Permission> = {
      create: 'c', read: 'r', vread: 'r', 'history-instance': 'r', update: 'u', patch: 'u', delete: 'd',
      'search-type': 's', 'search-system': 's', 'search-compartment': 's', 'history-type': 's', 'history-system': 's',
    };
    for (const i of INTERACTIONS) assert.equal(permissionFor(i), expected[i], i);
  });

  it('covers: examples', () => {
    const all = res('patient/*.cruds');
    assert.ok(covers(all, res('patient/*.read')));
    assert.ok(covers(all, res('patient/Observation.rs?category=x')));
    assert.ok(covers(all, res('patient/Observation.r')));
    assert.ok(!covers(all, res('user/Observation.r')));
    const cat = res('patient/Observation.rs?category=x');
    assert.ok(covers(cat, res('patient/Observation.r?category=x')));
    assert.ok(covers(cat, res('patient/Observation.r?code=y&category=x')));
    assert.ok(!covers(cat, res('patient/Observation.rs')));
    assert.ok(!covers(cat, res('patient/Observation.rs?category=y')));
    assert.ok(!covers(cat, res('patient/Observation.rds?category=x')));
    assert.ok(!covers(res('patient/Observation.rs'), res('patient/*.rs')));
    assert.ok(!covers(res('patient/Observation.rs'), res('patient/Condition.rs')));
    assert.ok(covers(res('patient/*.read'), res('patient/*.rs')) && covers(res('patient/*.rs'), res('patient/*.read')));
    assert.ok(!covers(res('system/*.cruds'), res('system/Consent.cu')), 'a backend writes Consent only when registered with system/Consent');
    assert.ok(covers(res('system/*.cruds'), res('system/Consent.rs')));
    assert.ok(covers(res('system/Consent.cruds'), res('system/Consent.cu')));
  });

  it('covers: reflexive and transitive (property)', () => {
    fc.assert(fc.property(smallScopeArb, (a) => covers(a, a)));
    fc.assert(fc.property(smallScopeArb, smallScopeArb, smallScopeArb, (a, b, c) => {
      if (covers(a, b) && covers(b, c)) assert.ok(covers(a, c));
    }), { numRuns: 3000 });
  });

  it('allows: examples', () => {
    const granted = [res('patient/Observation.rs?category=x'), res('patient/*.r'), res('user/Condition.cruds')];
    assert.deepEqual(allows(granted, { type: 'Observation', interaction: 'search-type' }), [granted[0]]);
    assert.deepEqual(allows(granted, { type: 'Observation', interaction: 'read' }), [granted[0], granted[1]]);
    assert.deepEqual(allows(granted, { type: 'Condition', interaction: 'delete' }), [granted[2]]);
    assert.deepEqual(allows(granted, { level: 'patient', type: 'Condition', interaction: 'delete' }), []);
    assert.deepEqual(allows(granted, { level: 'patient', type: 'Condition', interaction: 'vread' }), [granted[1]]);
    assert.deepEqual(allows(granted, { type: 'Patient', interaction: 'create' }), []);
    assert.deepEqual(allows([res('system/*.read')], { type: '*', interaction: 'search-system' }), [res('system/*.read')]);
    assert.deepEqual(allows(granted, { type: '*', interaction: 'search-system' }), []);
  });

  it('allows agrees with permissionFor and covers (property)', () => {
    fc.assert(fc.property(
      fc.array(smallScopeArb, { maxLength: 5 }), fc.constantFrom<Level>('patient', 'user'),
      fc.constantFrom('Observation', 'Condition', 'Patient'), fc.constantFrom(...INTERACTIONS),
      (granted, level, type, interaction) => {
        const probe: ResourceScope = { kind: 'resource', level, type, permissions: [permissionFor(interaction)], query: [] };
        const expected = granted.filter((g) => covers({ ...g, query: [] }, probe));
        assert.deepEqual(allows(granted, { level, type, interaction }), expected);
        for (const g of allows(granted, { type, interaction })) assert.ok(g.permissions.includes(permissionFor(interaction)));
      }));
  });
});

describe('scopes: narrowToAllowed', () => {
  it('examples', () => {
    const allowed = parseScopes('patient/*.rs openid fhirUser launch/patient').scopes;
    const requested = parseScopes([
      'patient/Observation.read', 'patient/Condition.rs?category=x', 'patient/Patient.cruds', 'user/*.rs',
      'openid', 'offline_access', 'launch/patient', 'launch', 'purpose_of_use=http://x.org/cs|TREAT', '__x',
    ].join(' ')).scopes;
    assert.deepEqual(narrowToAllowed(requested, allowed).map(formatScope), [
      'patient/Observation.read', 'patient/Condition.rs?category=x', 'openid', 'launch/patient',
      'purpose_of_use=http://x.org/cs|TREAT',
    ]);
  });

  it('never returns a scope that allowed does not cover (property)', () => {
    const scopeArb = fc.oneof(
      smallScopeArb as fc.Arbitrary<Scope>,
      validOtherText.map((t) => parseScope(t)!),
    );
    fc.assert(fc.property(fc.array(scopeArb, { maxLength: 6 }), fc.array(scopeArb, { maxLength: 6 }), (requested, allowed) => {
      const allowedText = allowed.map(formatScope);
      for (const s of narrowToAllowed(requested, allowed)) {
        assert.ok(requested.includes(s));
        if (s.kind === 'resource') assert.ok(allowed.some((a) => isResourceScope(a) && covers(a, s)));
        else if (s.kind !== 'purpose') assert.ok(allowedText.includes(formatScope(s)));
      }
    }));
  });
});

describe('scopes: consent helpers', () => {
  it('categoryAlternatives', () => {
    const obs = categoryAlternatives('Observation');
    assert.equal(obs.length, 10);
    for (const code of ['laboratory', 'social-history', 'vital-signs', 'survey', 'procedure', 'exam', 'imaging', 'therapy', 'activity']) {
      assert.ok(obs.includes(`category=${OBS_CAT}|${code}`), code);
    }
    assert.ok(obs.includes('category=http://hl7.org/fhir/us/core/CodeSystem/us-core-category|sdoh'));
    assert.deepEqual(categoryAlternatives('Condition'), [
      'category=http://terminology.hl7.org/CodeSystem/condition-category|encounter-diagnosis',
      'category=http://terminology.hl7.org/CodeSystem/condition-category|problem-list-item',
      'category=http://hl7.org/fhir/us/core/CodeSystem/condition-category|health-concern',
    ]);
    assert.deepEqual(categoryAlternatives('Patient'), []);
    assert.deepEqual(categoryAlternatives('constructor'), []);
  });

  it('narrowedAlternatives', () => {
    const alts = narrowedAlternatives(res('patient/Observation.rs'));
    assert.equal(alts.length, 10);
    assert.equal(formatScope(alts[0]), `patient/Observation.rs?category=${OBS_CAT}|laboratory`);
    for (const a of alts) assert.ok(covers(res('patient/Observation.rs'), a));
    const fromStar = narrowedAlternatives(res('user/*.cruds'));
    assert.equal(fromStar.length, 13);
    assert.ok(fromStar.every((a) => a.level === 'user' && a.permissions.join('') === 'rs'));
    assert.deepEqual(new Set(fromStar.map((a) => a.type)), new Set(['Observation', 'Condition']));
    assert.deepEqual(narrowedAlternatives(res('patient/Condition.read')).map((a) => a.permissions.join('')), ['rs', 'rs', 'rs']);
    assert.equal(narrowedAlternatives(res('patient/Condition.r'))[0].permissions.join(''), 'r');
    assert.deepEqual(narrowedAlternatives(res('patient/Observation.cud')), []);
    assert.deepEqual(narrowedAlternatives(res('patient/Observation.rs?category=x')), []);
    assert.deepEqual(narrowedAlternatives(res('patient/Patient.rs')), []);
    for (const a of fromStar) assert.deepEqual(parseScope(formatScope(a)), a);
  });

  it('describeScope', () => {
    assert.equal(describeScope(res('patient/Observation.rs')), 'Read and search Observation records of the selected patient');
    assert.equal(describeScope(res('patient/Observation.rs'), { patientIsUser: true }), 'Read and search your Observation records');
    assert.equal(describeScope(res('user/*.cruds')),
      'Create, read, update, delete and search all types of data that you can access, including types added in the future');
    assert.equal(describeScope(res('system/Patient.r')), 'Read Patient records for any patient (system access)');
    assert.equal(describeScope(res(`patient/Observation.rs?category=${OBS_CAT}|laboratory`)),
      'Read and search Observation records of the selected patient (only laboratory results)');
    assert.equal(describeScope(res('patient/Observation.r?code=x')), 'Read Observation records of the selected patient (only code is x)');
    assert.equal(describeScope(parseScope('offline_access')!), 'Keep access when you are not using the app (until you revoke it)');
    assert.match(describeScope(parseScope('openid')!), /who you are/);
    assert.match(describeScope(parseScope('fhirUser')!), /FHIR record/);
    assert.equal(describeScope(parseScope('purpose_of_use=http://terminology.hl7.org/CodeSystem/v3-ActReason|TREAT')!), 'Purpose of use: TREAT');
    assert.match(describeScope(parseScope('launch/patient')!), /patient/);
    assert.match(describeScope(res('patient/*.read')), /including types added in the future/);
  });
});
