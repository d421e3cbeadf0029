// The User Access Brands Bundle this server publishes at /brands (SMART App Launch 2.2): BRANDS_FILE, or
// one brand made from ISSUER. A file is checked at start: a Bundle that breaks the SMART rules or is not
// valid FHIR R4 stops the server with a message rather than being published.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Context } from 'koa';
import { ConfigError, type Config } from './config.ts';
import { brandBundleProblems, defaultBrandBundle, type BrandBundle } from './smart/brands.ts';
import { validationIssues } from './fhir/validate.ts';

export function loadBrandBundle(config: Config, now = new Date()): BrandBundle {
  if (!config.brandsFile) return defaultBrandBundle({ issuer: config.issuer, fhirBase: config.fhirBase, name: 'smart-auth', timestamp: now.toISOString() });
  let bundle: BrandBundle;
  try {
    bundle = JSON.parse(readFileSync(config.brandsFile, 'utf8'));
  } catch (err) {
    throw new ConfigError(`BRANDS_FILE ${config.brandsFile} cannot be read as JSON: ${(err as Error).message}`);
  }
  const fhirProblems = (bundle?.resourceType === 'Bundle' ? [bundle, ...(bundle.entry ?? []).map((e) => e.resource)] : [])
    .filter((r) => r && typeof r === 'object')
    .flatMap((r) => validationIssues({ ...r, ...(r!.resourceType === 'Bundle' ? { entry: undefined } : {}) }).map((i) => `${i.expression?.[0] ?? r!.resourceType}: ${i.details?.text}`));
  const problems = [...brandBundleProblems(bundle, config.fhirBase), ...fhirProblems];
  if (problems.length) throw new ConfigError(`BRANDS_FILE ${config.brandsFile} is not a User Access Brands Bundle for ${config.fhirBase}: ${problems.join('; ')}`);
  return bundle;
}

/** GET /brands: public, CORS for any origin, a weak ETag and 304 on If-None-Match (brands.md). */
export function sendBrands(bundle: BrandBundle) {
  const body = JSON.stringify(bundle);
  const etag = `W/"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
  return (ctx: Context) => {
    ctx.set('Access-Control-Allow-Origin', '*');
    ctx.set('ETag', etag);
    ctx.set('Cache-Control', 'public, max-age=3600');
    if (ctx.get('if-none-match') === etag) {
      ctx.status = 304;
      return;
    }
    ctx.type = 'application/fhir+json';
    ctx.body = body;
  };
}
