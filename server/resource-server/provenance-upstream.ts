// Provenance with the writes to an upstream FHIR server (the guard proxy with GUARD_PROVENANCE=true): a
// write that carries its Provenance goes as one FHIR transaction, the write and the Provenance together
// (atomic at the server), and its answer is given back as the write's own.
import { randomUUID } from 'node:crypto';
import { UpstreamError, type Upstream, type UpstreamResponse } from './upstream.ts';
import type { FhirBundle } from './types.ts';

export function provenanceUpstream(upstream: Upstream): Upstream {
  return {
    async send({ provenance, ...request }) {
      if (!provenance || (request.method !== 'POST' && request.method !== 'PUT')) return upstream.send(request);
      const { 'if-match': ifMatch, ...headers } = Object.fromEntries(Object.entries(request.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
      const fullUrl = `urn:uuid:${randomUUID()}`;
      const transaction: FhirBundle = {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          { fullUrl, resource: request.body as FhirBundle, request: { method: request.method, url: request.path, ...(ifMatch && { ifMatch }) } },
          { resource: { ...provenance, target: [{ reference: fullUrl }] }, request: { method: 'POST', url: 'Provenance' } },
        ],
      };
      const answer = await upstream.send({ method: 'POST', path: '', headers, body: transaction });
      if (answer.status >= 400) return answer;
      const entry = (answer.body as FhirBundle | undefined)?.entry?.[0];
      const status = Number.parseInt(entry?.response?.status ?? '', 10);
      if (!entry?.response || !(status >= 200 && status < 600)) throw new UpstreamError(502, 'the FHIR server answered the transaction without the write\'s response');
      const written: UpstreamResponse = { status, headers: new Headers(), body: entry.resource ?? entry.response.outcome };
      if (entry.response.location) written.headers.set('location', entry.response.location);
      if (entry.response.etag) written.headers.set('etag', entry.response.etag);
      const modified = Date.parse(entry.response.lastModified ?? '');
      if (Number.isFinite(modified)) written.headers.set('last-modified', new Date(modified).toUTCString());
      return written;
    },
  };
}
