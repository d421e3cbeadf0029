// The FHIR server the guard protects: FHIR_UPSTREAM_URL, or the bundled store in the database.
import type { Config } from '../config.ts';
import type { Db } from '../db.ts';
import { httpUpstream, type Upstream } from '../resource-server/upstream.ts';
import { createDbStore } from './store-db.ts';
import { storeUpstream } from './server.ts';

export interface ConfiguredUpstream {
  upstream: Upstream;
  /** The base URL the upstream writes into links (rewritten to the public FHIR base). */
  upstreamBase: string;
}

export function configuredUpstream(config: Config, db: Db): ConfiguredUpstream {
  if (config.fhirUpstreamUrl) {
    return { upstream: httpUpstream({ baseUrl: config.fhirUpstreamUrl, timeoutMs: config.upstreamTimeout * 1000 }), upstreamBase: config.fhirUpstreamUrl };
  }
  return { upstream: storeUpstream(createDbStore(db), config.fhirBase), upstreamBase: config.fhirBase };
}
