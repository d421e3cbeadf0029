// /fhir/AuditEvent: the audit trail served as FHIR, read-only, behind the same guard as everything
// else (patient/ scopes see the events about their patient; reading the trail is itself audited).
import type { Upstream, UpstreamResponse } from '../resource-server/upstream.ts';
import type { AuditSearch, AuditStore } from './types.ts';

const SEARCH_PARAMS = new Set(['patient', 'date', 'agent', 'entity', 'type', 'subtype', 'outcome', '_count', '_format', '_id', '_getpagesoffset']);

const json = (status: number, body: unknown): UpstreamResponse =>
  ({ status, headers: new Headers({ 'content-type': 'application/fhir+json' }), body });

const outcome = (status: number, code: string, diagnostics: string) =>
  json(status, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics }] });

/**
 * FHIR search parameters to the store's filter (`limit`: the page size, 0 for the total only; `offset`: where the
 * page starts) and whether they can match nothing at all, or the reason they cannot be.
 */
export function auditSearchFrom(params: URLSearchParams): { filter: AuditSearch; matchesNothing: boolean } | string {
  const filter: AuditSearch & { patient?: readonly string[] } = {};
  let noMatch = false;
  for (const [name, value] of params) {
    if (!SEARCH_PARAMS.has(name)) return `AuditEvent search does not support ${name}`;
    switch (name) {
      case 'patient': {
        // A comma ORs, a repeated parameter ANDs (the guard adds the token's patients): keep the ids in both.
        const patients = value.split(',').map((id) => id.replace(/^Patient\//, ''));
        filter.patient = filter.patient === undefined ? patients : filter.patient.filter((id) => patients.includes(id));
        if (filter.patient.length === 0) noMatch = true;
        break;
      }
      case '_id': filter.id = value; break;
      case 'agent': case 'entity': case 'type': case 'subtype': case 'outcome':
        if (filter[name] !== undefined) return `AuditEvent search takes ${name} once (a comma-separated list of values matches any of them)`;
        filter[name] = value.split(',').map((v) => v.replace(/^.*\|/, ''));
        break;
      case '_count': case '_getpagesoffset': {
        const count = Number(value);
        if (!/^\d{1,9}$/.test(value) || !Number.isSafeInteger(count)) return `${name} must be a whole number`;
        if (name === '_count') filter.limit = Math.min(count, 1000);
        else filter.offset = count;
        break;
      }
      case 'date': {
        const match = /^(eq|ge|gt|le|lt)?(\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2})?)?)$/.exec(value);
        const when = match && new Date(match[2]);
        if (!match || !when || Number.isNaN(when.getTime())) return `date ${value} is not a FHIR date with an optional eq/ge/gt/le/lt prefix`;
        const prefix = match[1] ?? 'eq';
        const dayOnly = !match[3];
        const endOfDay = new Date(when.getTime() + (dayOnly ? 86_400_000 - 1 : 0));
        if (prefix === 'ge' || prefix === 'gt' || prefix === 'eq') filter.from = prefix === 'gt' ? new Date(endOfDay.getTime() + 1) : when;
        if (prefix === 'le' || prefix === 'lt' || prefix === 'eq') filter.to = prefix === 'lt' ? new Date(when.getTime() - 1) : endOfDay;
        break;
      }
      default: break;
    }
  }
  filter.limit ??= 200;
  return { filter, matchesNothing: noMatch };
}

export function auditEventUpstream(store: AuditStore, base: string, next: Upstream): Upstream {
  return {
    async send(request) {
      const [path, query = ''] = request.path.split('?');
      const segments = path.split('/');
      if (segments[0] !== 'AuditEvent') return next.send(request);
      if (request.method !== 'GET') return outcome(405, 'not-supported', 'the audit trail is append-only');
      if (segments.length === 2 || (segments.length === 4 && segments[2] === '_history')) {
        const [event] = await store.search({ id: segments[1], limit: 1 });
        return event ? json(200, event) : outcome(404, 'not-found', `AuditEvent/${segments[1]} is not known`);
      }
      if (segments.length !== 1) return outcome(400, 'not-supported', 'this AuditEvent interaction is not supported');
      const params = new URLSearchParams(query);
      const parsed = auditSearchFrom(params);
      if (typeof parsed === 'string') return outcome(400, 'not-supported', parsed);
      const { filter, matchesNothing } = parsed;
      const self = { relation: 'self', url: `${base}/AuditEvent${query ? `?${query}` : ''}` };
      // _count=0 is _summary=count (FHIR R4 search): the total of every match, no entries, no paging links.
      if (filter.limit === 0) return json(200, { resourceType: 'Bundle', type: 'searchset', total: matchesNothing ? 0 : await store.count(filter), link: [self] });
      const { offset = 0, limit = 0 } = filter;
      // One more than the page, in chain order (oldest first): whether there is a next page.
      const found = matchesNothing ? [] : await store.search({ ...filter, limit: limit + 1 });
      const events = found.slice(0, limit);
      const more = found.length > limit;
      const page = (at: number) => {
        const p = new URLSearchParams(params);
        p.set('_getpagesoffset', String(at));
        p.set('_count', String(limit));
        return `${base}/AuditEvent?${p}`;
      };
      return json(200, {
        resourceType: 'Bundle',
        type: 'searchset',
        // Known only when this page holds the last match.
        ...(!more && (found.length > 0 || offset === 0) && { total: offset + found.length }),
        link: [
          self,
          ...(more ? [{ relation: 'next', url: page(offset + limit) }] : []),
          ...(offset > 0 ? [{ relation: 'previous', url: page(Math.max(0, offset - limit)) }] : []),
        ],
        entry: events.map((event) => ({ fullUrl: `${base}/AuditEvent/${event.id}`, resource: event, search: { mode: 'match' } })),
      });
    },
  };
}
