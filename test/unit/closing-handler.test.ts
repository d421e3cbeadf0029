// The handler that lets a server stop under steady keep-alive load, on its own: once closing, every request
// still arriving on an open connection is answered with `Connection: close` (the shutdown test shows the
// effect, that the server stops; on a loaded machine no request may arrive after the close to show the header).
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { closingHandler } from '../../server/net/closing-handler.ts';

describe('closing handler', () => {
  const answer = (handler: (req: IncomingMessage, res: ServerResponse) => void) => {
    const headers: Record<string, string> = {};
    handler({} as IncomingMessage, { setHeader: (name: string, value: string) => { headers[name] = value; } } as unknown as ServerResponse);
    return { headers };
  };

  it('passes each request on, and tells the connection to close only once closing has begun', () => {
    let handled = 0;
    const { handler, closing } = closingHandler(() => { handled++; });
    assert.deepEqual(answer(handler).headers, {}, 'keep-alive while serving');
    closing();
    assert.deepEqual(answer(handler).headers, { connection: 'close' });
    assert.equal(handled, 2, 'both requests were handled');
  });
});
