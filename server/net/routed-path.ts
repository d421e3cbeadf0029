// A request path as the routers see it: @koa/router and oidc-provider match paths in any case and with a
// trailing slash (POST /Token/ is the token endpoint). A check that picks requests by their path compares
// this, or a request under another spelling would go past it.
export function routedPath(path: string): string {
  return path.toLowerCase().replace(/\/+$/, '');
}
