/**
 * The address classes behind the redirect policy, as a pure function, and the lookup hook that applies
 * them to what a name resolves to (fed by a fake resolver: no DNS, no network).
 */
import test from 'ava';
import type { LookupAddress, LookupOptions } from 'node:dns';
import { AddressRefusedError, classifyAddress, ipLiteral, publicOnlyLookup, type AddressClass, type LookupFunction } from '../src/hub/net.js';

const cases: [string, AddressClass][] = [
  ['93.184.216.34', 'public'],
  ['8.8.8.8', 'public'],
  ['127.0.0.1', 'loopback'],
  ['127.255.255.254', 'loopback'],
  ['10.0.0.1', 'private'],
  ['10.255.1.2', 'private'],
  ['172.16.0.1', 'private'],
  ['172.31.255.255', 'private'],
  ['172.15.0.1', 'public'],
  ['172.32.0.1', 'public'],
  ['192.168.1.10', 'private'],
  ['169.254.169.254', 'link-local'],
  ['100.64.0.1', 'shared'],
  ['100.127.255.255', 'shared'],
  ['100.63.255.255', 'public'],
  ['100.128.0.0', 'public'],
  ['0.0.0.0', 'unspecified'],
  ['0.1.2.3', 'unspecified'],
  ['224.0.0.1', 'multicast'],
  ['255.255.255.255', 'reserved'],
  ['240.0.0.1', 'reserved'],
  ['::', 'unspecified'],
  ['::1', 'loopback'],
  ['[::1]', 'loopback'],
  ['::ffff:127.0.0.1', 'loopback'],
  ['::ffff:7f00:1', 'loopback'],
  ['::FFFF:10.1.2.3', 'private'],
  ['::ffff:169.254.169.254', 'link-local'],
  ['::ffff:a9fe:a9fe', 'link-local'],
  ['::ffff:100.64.1.1', 'shared'],
  ['::ffff:0.0.0.0', 'unspecified'],
  ['::ffff:93.184.216.34', 'public'],
  ['::127.0.0.1', 'loopback'],
  ['64:ff9b::a9fe:a9fe', 'link-local'],
  ['2002:0a00:0001::1', 'private'],
  ['fc00::1', 'private'],
  ['fd12:3456::1', 'private'],
  ['fe80::1', 'link-local'],
  ['fe80::1%eth0', 'link-local'],
  ['febf::1', 'link-local'],
  ['ff02::1', 'multicast'],
  ['2606:4700::6810:84e5', 'public'],
  ['2001:db8::1', 'public'],
  ['example.org', 'invalid'],
  ['127.1', 'invalid'],
  ['1.2.3.4.5', 'invalid'],
  ['::ffff:999.0.0.1', 'invalid'],
];

test('address classes: IPv4, IPv6, IPv4-mapped and other embedded forms, CGNAT, unspecified', (t) => {
  for (const [address, want] of cases) t.is(classifyAddress(address), want, address);
});

test('IP literals in URL host names (the URL parser normalizes 2130706433 and 0x7f.1 to 127.0.0.1)', (t) => {
  t.is(ipLiteral(new URL('http://2130706433/').hostname), '127.0.0.1');
  t.is(ipLiteral(new URL('http://0x7f.1/').hostname), '127.0.0.1');
  t.is(ipLiteral(new URL('http://[::ffff:127.0.0.1]/').hostname), '::ffff:7f00:1');
  t.is(classifyAddress(ipLiteral(new URL('http://[::ffff:127.0.0.1]/').hostname)!), 'loopback');
  t.is(ipLiteral('huggingface.co'), undefined);
});

/** A resolver answering from a table, in both forms net asks for. */
function fakeLookup(table: Record<string, string[]>): LookupFunction {
  return ((host: string, options: LookupOptions, cb: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void) => {
    const list = table[host];
    if (!list) return cb(Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' }), '', 0);
    const all = list.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
    if (options.all) cb(null, all);
    else cb(null, all[0]!.address, all[0]!.family);
  }) as LookupFunction;
}

function resolve(lookup: LookupFunction, host: string, all: boolean): Promise<unknown> {
  return new Promise((ok, fail) => {
    lookup(host, { all }, (err, address) => (err ? fail(err) : ok(address)));
  });
}

test('the lookup hook refuses a name when any address it resolves to is not public', async (t) => {
  const lookup = publicOnlyLookup(fakeLookup({
    'cdn.example': ['93.184.216.34', '2606:4700::6810:84e5'],
    'rebind.example': ['10.0.0.7', '93.184.216.34'],
    'mixed.example': ['93.184.216.34', '10.0.0.7'],
    'metadata.example': ['169.254.169.254'],
    'mapped.example': ['::ffff:127.0.0.1'],
  }));
  t.is(await resolve(lookup, 'cdn.example', false), '93.184.216.34');
  t.deepEqual(await resolve(lookup, 'cdn.example', true), [{ address: '93.184.216.34', family: 4 }, { address: '2606:4700::6810:84e5', family: 6 }]);
  for (const [host, address, cls] of [['rebind.example', '10.0.0.7', 'private'], ['metadata.example', '169.254.169.254', 'link-local'], ['mapped.example', '::ffff:127.0.0.1', 'loopback']] as const) {
    for (const all of [false, true]) {
      const err = await t.throwsAsync(resolve(lookup, host, all), { instanceOf: AddressRefusedError });
      t.like(err, { host, address, addressClass: cls, code: 'ERR_ZOO_ADDRESS_REFUSED' });
    }
  }
  // Asked for one address, net connects to that one only; asked for all, it may try any of them.
  t.is(await resolve(lookup, 'mixed.example', false), '93.184.216.34');
  await t.throwsAsync(resolve(lookup, 'mixed.example', true), { instanceOf: AddressRefusedError });
  await t.throwsAsync(resolve(lookup, 'nowhere.example', false), { message: /ENOTFOUND/ });
});
