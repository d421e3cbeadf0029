// Every request has an id: the client's X-Request-Id when it is sane, else a new one. The guard (in every
// shape) and the authorization server's own routes give it the same way; it is returned and recorded.
import { randomUUID } from 'node:crypto';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export const requestIdOf = (sent: string | undefined): string => (sent && REQUEST_ID.test(sent) ? sent : randomUUID());
