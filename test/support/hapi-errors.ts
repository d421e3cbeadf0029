// A FHIR server stub that answers errors as HAPI FHIR does: an OperationOutcome whose free text names
// other resources and quotes their content. Pat-1's record as the guard needs it (the Patient, no Consent);
// DELETE Patient/pat-1 is refused for referential integrity (409), a search with code=boom fails (500), and
// a search with code=warn succeeds with a warning that names and quotes another resource (HAPI FHIR puts its
// warnings in an OperationOutcome entry with search.mode "outcome"), and so does a create of an Observation
// (its answer an OperationOutcome, as with Prefer: return=OperationOutcome), and so does the successful answer of
// Observation/$validate (an OperationOutcome, which HAPI FHIR's validator fills with what it found of the references).
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What the stub's errors tell and no client of the guard may learn: a resource's id and its content. */
const HIDDEN = ['obs-1-brca', 'BRCA1'];

const REFERENCED = {
  resourceType: 'OperationOutcome',
  issue: [{
    severity: 'error',
    code: 'processing',
    diagnostics: 'HAPI-0515: Unable to delete Patient/pat-1 because at least one resource has a reference to this resource. First reference found was resource Observation/obs-1-brca in path Observation.subject',
  }],
};

const FAILED = {
  resourceType: 'OperationOutcome',
  text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">Observation/obs-1-brca: BRCA1 pathogenic variant</div>' },
  issue: [{
    severity: 'error',
    code: 'exception',
    details: { coding: [{ system: 'https://hapifhir.io/fhir/CodeSystem/hapi-fhir-storage-response-code', code: 'FAILURE', display: 'Observation/obs-1-brca' }], text: 'BRCA1 pathogenic variant' },
    diagnostics: 'HAPI-0389: Failed to index Observation/obs-1-brca: value "BRCA1 pathogenic variant" is too long',
    expression: ['Observation.where(id = \'obs-1-brca\').valueString'],
    location: ['Observation/obs-1-brca/valueString'],
  }],
};

const WARNED = {
  resourceType: 'OperationOutcome',
  issue: [{
    severity: 'warning',
    code: 'processing',
    diagnostics: 'HAPI-1094: Unknown reference Observation/obs-1-brca in value "BRCA1 pathogenic variant"',
  }],
};

const VALIDATED = {
  resourceType: 'OperationOutcome',
  issue: [{
    severity: 'information',
    code: 'informational',
    details: { coding: [{ system: 'http://hl7.org/fhir/java-core-messageId', code: 'Reference_REF_CantMatchChoice', display: 'Observation/obs-1-brca' }] },
    diagnostics: 'Unknown reference Observation/obs-1-brca: BRCA1 pathogenic variant',
    location: ['Observation.hasMember[0]'],
  }],
};

/** The id the stub gives the Observation it creates (in its Location header: its answer is the warning). */
export const CREATED_ID = 'obs-created';

const PATIENT = { resourceType: 'Patient', id: 'pat-1', meta: { versionId: '1' }, name: [{ family: 'Doe', given: ['Jane'] }] };

export interface HapiErrors {
  url: string;
  stop(): Promise<void>;
}

export async function startHapiErrors(): Promise<HapiErrors> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://stub');
    const send = (status: number, body: object, headers: Record<string, string> = {}) => res.writeHead(status, { 'content-type': 'application/fhir+json', ...headers }).end(JSON.stringify(body));
    if (req.method === 'DELETE' && url.pathname === '/fhir/Patient/pat-1') return send(409, REFERENCED);
    if (url.searchParams.get('code') === 'boom') return send(500, FAILED);
    if (req.method === 'POST' && url.pathname === '/fhir/Observation') return send(201, WARNED, { location: `http://${req.headers.host}/fhir/Observation/${CREATED_ID}/_history/1` });
    if (req.method === 'POST' && url.pathname === '/fhir/Observation/$validate') return send(200, VALIDATED);
    if (url.searchParams.get('code') === 'warn') return send(200, { resourceType: 'Bundle', type: 'searchset', entry: [{ resource: WARNED, search: { mode: 'outcome' } }] });
    if (url.pathname === '/fhir/metadata') return send(200, { resourceType: 'CapabilityStatement', status: 'active', kind: 'instance', fhirVersion: '4.0.1', format: ['json'], rest: [{ mode: 'server' }] });
    if (url.pathname === '/fhir/Patient/pat-1') return send(200, PATIENT);
    // The patient picker's search finds pat-1; any other search (a Consent) finds nothing.
    return send(200, { resourceType: 'Bundle', type: 'searchset', entry: url.pathname === '/fhir/Patient' ? [{ resource: PATIENT, search: { mode: 'match' } }] : [] });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`,
    stop: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** The answers of one shape to the two errors and the two warnings, as the client gets them, and what the guard logged meanwhile. */
export async function upstreamErrorsTold(base: string, bearer: string, logged: () => Promise<string>) {
  const call = (method: string, path: string, requestId: string, body?: object) => fetch(`${base}/${path}`, {
    method,
    headers: { authorization: `Bearer ${bearer}`, 'x-request-id': requestId, ...(body && { 'content-type': 'application/fhir+json' }) },
    body: body && JSON.stringify(body),
  });
  const deleted = await call('DELETE', 'Patient/pat-1', 'hapi-409');
  const failed = await call('GET', 'Observation?code=boom', 'hapi-500');
  const warned = await call('GET', 'Observation?code=warn', 'hapi-200');
  const created = await call('POST', 'Observation', 'hapi-201', { resourceType: 'Observation', status: 'final', code: { text: 'weight' }, subject: { reference: 'Patient/pat-1' } });
  const validated = await call('POST', 'Observation/$validate', 'hapi-validate', { resourceType: 'Observation', status: 'final', code: { text: 'panel' }, subject: { reference: 'Patient/pat-1' }, hasMember: [{ reference: 'Observation/obs-1-brca' }] });
  const told = async (answer: Response) => ({ status: answer.status, body: await answer.json() });
  return { deleted: await told(deleted), failed: await told(failed), warned: await told(warned), created: await told(created), validated: await told(validated), log: await logged() };
}

/** What every shape must do with them. */
export function assertUpstreamErrorsSafe(told: Awaited<ReturnType<typeof upstreamErrorsTold>>, shape: string) {
  assert.equal(told.deleted.status, 409, shape);
  assert.equal(told.failed.status, 500, shape);
  assert.equal(told.warned.status, 200, shape);
  assert.equal(told.created.status, 201, shape);
  assert.equal(told.validated.status, 200, `${shape}: ${JSON.stringify(told.validated.body)}`);
  for (const body of [told.deleted.body, told.failed.body, told.warned.body, told.created.body, told.validated.body]) {
    for (const hidden of HIDDEN) assert.ok(!JSON.stringify(body).includes(hidden), `${shape}: ${JSON.stringify(body)}`);
  }
  assert.deepEqual(told.deleted.body.issue.map((i: any) => [i.severity, i.code]), [['error', 'processing']], shape);
  assert.ok(told.deleted.body.issue[0].diagnostics, `${shape}: a standard text in place of the FHIR server's`);
  assert.deepEqual(told.failed.body.issue[0].details, { coding: [{ system: 'https://hapifhir.io/fhir/CodeSystem/hapi-fhir-storage-response-code', code: 'FAILURE' }] }, `${shape}: the coded details, without their display`);
  const outcomes = told.warned.body.entry.filter((e: any) => e.search?.mode === 'outcome').map((e: any) => e.resource.issue.map((i: any) => [i.severity, i.code]));
  assert.deepEqual(outcomes, [[['warning', 'processing']]], `${shape}: a search's outcome entry keeps its coded part`);
  assert.deepEqual(told.created.body.issue.map((i: any) => [i.severity, i.code]), [['warning', 'processing']], `${shape}: a write's OperationOutcome keeps its coded part`);
  assert.deepEqual(told.validated.body.issue, [{
    severity: 'information', code: 'informational', details: { coding: [{ system: 'http://hl7.org/fhir/java-core-messageId', code: 'Reference_REF_CantMatchChoice' }] }, diagnostics: 'the FHIR server gave information',
  }], `${shape}: an operation's OperationOutcome (a $validate's answer) keeps its coded part`);
  for (const id of ['hapi-409', 'hapi-500', 'hapi-200', 'hapi-201', 'hapi-validate']) assert.match(told.log, new RegExp(`${id}.*obs-1-brca`), `${shape}: the original text in the guard's log, with the request id`);
}
