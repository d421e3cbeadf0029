// What every answer carries, whoever serves it: the authorization server's pages and the guard's FHIR
// answers in every shape (bundled /fhir, the proxy, the package).

/** No MIME sniffing, no referrer, no framing. */
export const SECURITY_HEADERS = { 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer', 'x-frame-options': 'DENY' } as const;

/** Only over https (browsers ignore it over http). */
export const HSTS = 'max-age=31536000; includeSubDomains';

/** The server's pages: no script but, on the pages that need one, this server's own files (see allowOwnScripts). */
export const PAGE_CSP = "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' https: data:; form-action 'self' http: https:; frame-ancestors 'none'; base-uri 'none'";

/** FHIR answers are data, never a page: nothing they hold may run, load or be framed. */
export const DATA_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";
