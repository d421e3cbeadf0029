import assert from 'node:assert/strict';
import fc from 'fast-check';
import { dateSearchRefusal, isDateSearch } from '../../server/privacy/date-search.ts';
import { deidentifyResource, type DeidPolicy } from '../../server/privacy/deidentify.ts';
import { matchesSearch } from '../../server/fhir/search.ts';

const KEY = 'test-key-0123456789abcdef';

describe('privacy/date-search', () => {
  it('isDateSearch: every date parameter, with or without modifier, and history\'s _since and _at', () => {
    for (const name of ['date', 'birthdate', 'death-date', 'onset-date', 'recorded-date', '_lastUpdated', '_since', '_at', 'date:missing']) {
      assert.ok(isDateSearch(name), name);
    }
    for (const name of ['code', 'patient', '_count', '_id', 'name', 'unknown-date']) assert.ok(!isDateSearch(name), name);
  });

  const table: [DeidPolicy['dates'], string, string, boolean][] = [
    // [dates, name, value, allowed]
    ['truncate-year', 'date', '2019', true],
    ['truncate-year', 'birthdate', 'ge1987', true],
    ['truncate-year', 'death-date', 'lt2020', true],
    ['truncate-year', 'date', 'sa2019', true],
    ['truncate-year', 'date', 'eb2019', true],
    ['truncate-year', 'date', 'ne2019', true],
    ['truncate-year', '_lastUpdated', '2026', true],
    ['truncate-year', 'date', '2019,2021', true],
    ['truncate-year', 'date', '2019-03', false],
    ['truncate-year', 'date', '2019-03-04', false],
    ['truncate-year', 'birthdate', '1987-02-20', false],
    ['truncate-year', 'birthdate', 'ge1987-02-20', false],
    ['truncate-year', 'birthdate', 'le1987-02', false],
    ['truncate-year', 'onset-date', 'eq2019-03-04T10:00:00Z', false],
    ['truncate-year', 'recorded-date', 'ap2019', false],
    ['truncate-year', 'date', '2019,2019-03-04', false],
    ['truncate-year', 'date:missing', 'true', false],
    ['truncate-year', '_lastUpdated', 'ge2026-01-15T10:00:00Z', false],
    ['truncate-year', '_since', '2026-01-15T10:00:00Z', false],
    ['truncate-year', '_at', '2026-01-01T00:00:00Z', false],
    ['truncate-year', 'date', '', false],
    ['truncate-year', 'date', 'gt', false],
    ['truncate-month', 'date', '2019-03', true],
    ['truncate-month', 'date', 'le2019-03', true],
    ['truncate-month', 'birthdate', '1987', true],
    ['truncate-month', 'date', '2019-03-04', false],
    ['truncate-month', 'date', 'ap2019-03', false],
    ['shift', 'date', '2019', false],
    ['shift', 'birthdate', '1987', false],
    ['shift', '_lastUpdated', 'ge2026', false],
  ];
  for (const [dates, name, value, allowed] of table) {
    it(`${dates}: ${name}=${value} is ${allowed ? 'allowed' : 'refused'}`, () => {
      const why = dateSearchRefusal(name, value, dates);
      assert.equal(why === undefined, allowed, why);
    });
  }

  it('property: an allowed date search matches two real dates alike whenever the answers show them alike', () => {
    const digits = (n: number, min: number, max: number) => fc.integer({ min, max }).map((v) => String(v).padStart(n, '0'));
    const year = digits(4, 1990, 2030);
    // A real date below a shown prefix (a year, or a year and month): any precision, any time of day.
    const below = (shown: string) => fc.tuple(digits(2, 1, 12), digits(2, 1, 28), fc.constantFrom('', 'T00:00:00Z', 'T23:59:59+05:00'), fc.integer({ min: 0, max: 3 }))
      .map(([m, d, time, cut]) => {
        const full = shown.length === 4 ? `${shown}-${m}-${d}${time}` : `${shown}-${d}${time}`;
        return cut === 0 ? shown : cut === 1 && shown.length === 4 ? `${shown}-${m}` : full;
      });
    const searchValue = fc.tuple(fc.constantFrom('', 'eq', 'ne', 'gt', 'lt', 'ge', 'le', 'ap'), year, fc.option(digits(2, 1, 12)), fc.option(digits(2, 1, 28)))
      .map(([p, y, m, d]) => `${p}${y}${m ? `-${m}${d ? `-${d}` : ''}` : ''}`);
    const condition = (recordedDate: string) => ({ resourceType: 'Condition', id: 'c', recordedDate });
    const shownOf = (recordedDate: string, policy: DeidPolicy) => deidentifyResource(condition(recordedDate), policy).recordedDate;

    const policy = fc.constantFrom<DeidPolicy['dates']>('truncate-year', 'truncate-month').map((dates): DeidPolicy => ({ key: KEY, dates }));
    // What the answers show (a year; under truncate-month also a month), and two real dates shown as it.
    const shownAlike = fc.tuple(policy, year, digits(2, 1, 12), fc.boolean()).chain(([p, y, m, byMonth]) => {
      if (p.dates === 'truncate-year') return fc.tuple(fc.constant(p), below(y), below(y));
      return byMonth ? fc.tuple(fc.constant(p), below(`${y}-${m}`), below(`${y}-${m}`)) : fc.constant([p, y, y] as const);
    });
    fc.assert(fc.property(shownAlike, searchValue, ([p, a, b], value) => {
      assert.equal(shownOf(a, p), shownOf(b, p), 'the answers show the two alike');
      if (dateSearchRefusal('recorded-date', value, p.dates) !== undefined) return;
      assert.ok(!value.startsWith('ap'));
      const query = `recorded-date=${value}`;
      assert.equal(matchesSearch(condition(a), query), matchesSearch(condition(b), query), `${query} tells ${a} from ${b}`);
    }), { numRuns: 2000 });
  });
});
