// An HTTP request handler for a server that must stop under steady keep-alive load: once `closing()` is
// called, each request still arriving on an open connection is answered with `Connection: close`. Otherwise
// a client that keeps its connections open (a load balancer) keeps the server serving, and `server.close()`,
// which waits for every connection, never ends.
import type { IncomingMessage, ServerResponse } from 'node:http';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

export function closingHandler(handle: Handler): { handler: Handler; closing(): void } {
  let closing = false;
  return {
    handler: (req, res) => {
      if (closing) res.setHeader('connection', 'close');
      handle(req, res);
    },
    closing: () => { closing = true; },
  };
}
