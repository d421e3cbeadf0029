// The rule for date searches on de-identified answers: a search may not tell more of a real date than
// the answers show of it. De-identification coarsens every date, dateTime, instant and Period it
// returns (birth and death dates, effective, onset, recorded, period, meta.lastUpdated …), so every
// date search parameter is on a coarsened element. Pure.
//
// - truncate-year: a value written to the year (`2019`, `ge2019`); truncate-month: to the year or month.
//   A finer value (`2019-03-04`, an instant) is refused whatever the prefix: `ge` and `le` the same day
//   pin a date as well as `eq` does.
// - Only prefixes that compare whole periods: `ap` ("approximately", a window the server chooses that
//   does not end on a year) is refused, so are modifiers (`:missing` …).
// - shift: every real date moves by a patient's secret shift, so the answers show no real date at any
//   precision; every date search is refused (a search by real dates would reveal the shift).
import type { DeidPolicy } from './deidentify.ts';
import { searchParamKind } from '../fhir/search.ts';

/** The history parameters on meta.lastUpdated (instants). */
const HISTORY_DATE_PARAMS = new Set(['_since', '_at']);

/** Whether a search parameter (name with or without modifier) compares dates. */
export const isDateSearch = (name: string): boolean => {
  const base = name.split(':')[0]!;
  return HISTORY_DATE_PARAMS.has(base) || searchParamKind(base) === 'date';
};

/** The date values as precise as the answers show, by date policy. */
const SHOWN: Record<DeidPolicy['dates'], RegExp | undefined> = {
  'truncate-year': /^\d{4}$/,
  'truncate-month': /^\d{4}(-\d{2})?$/,
  shift: undefined,
};
const WHOLE_PERIOD_PREFIX = /^(?:eq|ne|gt|lt|ge|le|sa|eb)?/;

/**
 * Why a date search is refused for answers de-identified with `dates`, or undefined when it tells no
 * more than the answers show. `name` must be a date search (isDateSearch); `value` is its whole value
 * (comma-separated alternatives).
 */
export function dateSearchRefusal(name: string, value: string, dates: DeidPolicy['dates']): string | undefined {
  const shown = SHOWN[dates];
  if (!shown) return 'de-identified dates are shifted, so a search by real dates would reveal the shift';
  if (name.includes(':')) return 'a modifier on a date parameter is not allowed';
  const precision = dates === 'truncate-year' ? 'a year (2019)' : 'a year or a month (2019-03)';
  for (const part of value.split(',')) {
    if (shown.test(part.replace(WHOLE_PERIOD_PREFIX, ''))) continue;
    return part.startsWith('ap') ? 'the prefix ap compares with a window that does not follow the dates the answers show'
      : `de-identified answers show dates to ${precision} only, and ${part} is not one`;
  }
  return undefined;
}
