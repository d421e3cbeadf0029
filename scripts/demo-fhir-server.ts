// A second, independent FHIR server process: the demo store over plain FHIR REST
// at /fhir, with no authorization (put the resource-server guard in front of it).
//
//   PORT           listen port (default 8090; 0 picks a free one)
//   HOST           listen address (default 127.0.0.1)
//   DATABASE_URL   sqlite:<file> or postgres://… (default sqlite:./var/demo-fhir.sqlite)
//   FHIR_BASE_URL  absolute base in fullUrls, Locations and links (default http://127.0.0.1:<port>/fhir)
//
// Migrates and seeds the demo data (when the store is empty) before listening;
// SIGTERM / SIGINT close the server and the database.
//
//   node --import tsx scripts/demo-fhir-server.ts
import type { AddressInfo } from 'node:net';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import Koa from 'koa';
import mount from 'koa-mount';
import { migrate, openDatabase } from '../server/db.ts';
import { FHIR_JSON, fhirServerRoutes } from '../server/fhir/server.ts';
import { createDbStore, seedDemoResources } from '../server/fhir/store-db.ts';
import { operationOutcome } from '../server/fhir/demo-store.ts';

function listenPort(value: string | undefined): number {
  const port = Number(value ?? '8090');
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`PORT must be a port number, not ${value}`);
  return port;
}

async function main() {
  const port = listenPort(process.env.PORT || undefined);
  const host = process.env.HOST || '127.0.0.1';
  const db = openDatabase(process.env.DATABASE_URL || 'sqlite:./var/demo-fhir.sqlite');
  await migrate(db);
  await seedDemoResources(db);

  // The base may need the port the system picks (PORT=0): the app is made once it is known.
  let handle: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
  const server = createServer((req, res) => handle!(req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const actualPort = (server.address() as AddressInfo).port;
  const base = (process.env.FHIR_BASE_URL || `http://127.0.0.1:${actualPort}/fhir`).replace(/\/+$/, '');
  const app = new Koa();
  app.use(mount('/fhir', fhirServerRoutes(createDbStore(db), { base }).routes()));
  app.use((ctx) => {
    ctx.status = 404;
    ctx.type = FHIR_JSON;
    ctx.body = operationOutcome('error', 'not-found', 'the FHIR base is /fhir');
  });
  handle = app.callback();
  console.log(`demo FHIR server listening on http://${host.includes(':') ? `[${host}]` : host}:${actualPort}/fhir`);

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    server.closeIdleConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await db.destroy();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error('demo FHIR server failed to start:', err instanceof Error ? err.message : err);
  process.exit(1);
});
