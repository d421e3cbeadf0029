// The address classifier behind every server-side fetch for a client: a table of addresses and what they are.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { classifyAddress, type AddressClass } from '../../server/net/address-class.ts';

const TABLE: [string, AddressClass][] = [
  ['8.8.8.8', 'public'], ['93.184.216.34', 'public'], ['172.15.255.255', 'public'], ['172.32.0.1', 'public'], ['100.63.255.255', 'public'], ['169.253.1.1', 'public'],
  ['127.0.0.1', 'loopback'], ['127.255.255.254', 'loopback'],
  ['10.0.0.1', 'private'], ['172.16.0.1', 'private'], ['172.31.255.255', 'private'], ['192.168.1.1', 'private'], ['100.64.0.1', 'private'],
  ['169.254.0.1', 'link-local'], ['169.254.169.254', 'metadata'], ['100.100.100.200', 'metadata'],
  ['0.0.0.0', 'unspecified'], ['0.1.2.3', 'unspecified'],
  ['224.0.0.1', 'multicast'], ['255.255.255.255', 'reserved'], ['240.0.0.1', 'reserved'], ['192.0.2.1', 'reserved'], ['198.18.0.1', 'reserved'],
  ['2606:4700:4700::1111', 'public'], ['2001:4860:4860::8888', 'public'],
  ['::1', 'loopback'], ['[::1]', 'loopback'], ['0:0:0:0:0:0:0:1', 'loopback'], ['::', 'unspecified'],
  ['fc00::1', 'unique-local'], ['fd12:3456:789a::1', 'unique-local'], ['fd00:ec2::254', 'metadata'],
  ['fe80::1', 'link-local'], ['fe80::1%eth0', 'link-local'], ['febf::1', 'link-local'], ['fec0::1', 'private'],
  ['ff02::1', 'multicast'], ['2001:db8::1', 'reserved'], ['::127.0.0.1', 'reserved'],
  // IPv4-mapped IPv6 takes the class of the IPv4 address, dotted or in hex as URL parsing writes it.
  ['::ffff:127.0.0.1', 'loopback'], ['::ffff:7f00:1', 'loopback'], ['[::ffff:7f00:1]', 'loopback'], ['::ffff:10.1.2.3', 'private'],
  ['::ffff:a9fe:a9fe', 'metadata'], ['::ffff:169.254.169.254', 'metadata'], ['::ffff:192.168.0.1', 'private'], ['::ffff:8.8.8.8', 'public'],
  ['0:0:0:0:0:ffff:7f00:0001', 'loopback'], ['64:ff9b::a9fe:a9fe', 'metadata'], ['64:ff9b::808:808', 'public'],
  ['localhost', 'invalid'], ['example.org', 'invalid'], ['256.1.1.1', 'invalid'], ['1.2.3', 'invalid'], ['', 'invalid'], ['::ffff:1.2.3.4.5', 'invalid'],
];

describe('classifyAddress', () => {
  for (const [address, expected] of TABLE) {
    it(`${address || '(empty)'} is ${expected}`, () => assert.equal(classifyAddress(address), expected));
  }

  it('classifies every IPv4 address the same, written plainly or IPv4-mapped (dotted or as URL parsing writes it)', () => {
    fc.assert(fc.property(fc.ipV4(), (ip) => {
      const mapped = new URL(`http://[::ffff:${ip}]/`).hostname;
      return classifyAddress(`::ffff:${ip}`) === classifyAddress(ip) && classifyAddress(mapped) === classifyAddress(ip);
    }), { numRuns: 2000 });
  });

  it('agrees with how URL parsing writes an IPv4-mapped host', () => {
    const host = new URL('http://[::ffff:169.254.169.254]/').hostname;
    assert.equal(classifyAddress(host), 'metadata');
  });
});
