// Koa's trust in a reverse proxy (TRUST_PROXY), for the authorization server and the guard proxy alike.

/** Trusted, the client address is the one the proxy appended (maxIpsCount 1), never one a client sent; untrusted, the connection's. */
export const proxyTrust = (trusted: boolean) => ({ proxy: trusted, maxIpsCount: 1 });
