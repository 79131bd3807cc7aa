/**
 * Where a download may connect: the classes of IP addresses, and the policy that keeps a redirect from a
 * public host away from the machine's own network (loopback, link-local such as the cloud metadata
 * service at 169.254.169.254, private and carrier-grade NAT ranges). The classification is pure; the
 * policy is applied in a `lookup` hook, to the address a name actually resolves to at connect time, so
 * a DNS answer cannot be used to get around it.
 */
import dns from 'node:dns';
import net from 'node:net';

/** What an IP address is, for the redirect policy. Everything but 'public' stays off limits to redirects. */
export type AddressClass =
  | 'public'
  /** 127.0.0.0/8, ::1 */
  | 'loopback'
  /** 10/8, 172.16/12, 192.168/16, fc00::/7 (unique local) */
  | 'private'
  /** 169.254/16 (cloud metadata services live here), fe80::/10 */
  | 'link-local'
  /** 100.64/10, carrier-grade NAT: inside a provider's network */
  | 'shared'
  /** 0.0.0.0/8, :: (connecting to them reaches this host) */
  | 'unspecified'
  /** 224/4, ff00::/8 */
  | 'multicast'
  /** 240/4 and 255.255.255.255, 192.0.0.0/24, 198.18/15; not routable on the internet */
  | 'reserved'
  /** not an IP address */
  | 'invalid';

function ipv4Class(a: number, b: number): AddressClass {
  if (a === 0) return 'unspecified';
  if (a === 127) return 'loopback';
  if (a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168)) return 'private';
  if (a === 169 && b === 254) return 'link-local';
  if (a === 100 && b >= 64 && b <= 127) return 'shared';
  if (a >= 224 && a <= 239) return 'multicast';
  if (a >= 240 || (a === 192 && b === 0) || (a === 198 && (b === 18 || b === 19))) return 'reserved';
  return 'public';
}

function parseIpv4(s: string): number[] | undefined {
  if (!net.isIPv4(s)) return undefined;
  return s.split('.').map(Number);
}

/** The eight 16-bit groups of an IPv6 address (zone id dropped, an embedded dotted IPv4 tail expanded). */
function parseIpv6(s: string): number[] | undefined {
  const bare = s.replace(/%.*$/, '');
  if (!net.isIPv6(bare)) return undefined;
  let text = bare;
  const tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (tail) {
    const v4 = parseIpv4(tail[1]!);
    if (!v4) return undefined;
    text = `${text.slice(0, tail.index)}${((v4[0]! << 8) | v4[1]!).toString(16)}:${((v4[2]! << 8) | v4[3]!).toString(16)}`;
  }
  const [head, rest] = text.split('::') as [string, string | undefined];
  const left = head === '' ? [] : head.split(':');
  const right = rest === undefined || rest === '' ? [] : rest.split(':');
  const fill = rest === undefined ? 0 : 8 - left.length - right.length;
  const groups = [...left, ...new Array<string>(fill).fill('0'), ...right].map((g) => parseInt(g, 16));
  return groups.length === 8 && groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff) ? groups : undefined;
}

/**
 * The class of an IP address, IPv4 or IPv6 (brackets and a zone id allowed). IPv6 forms that carry an
 * IPv4 address (IPv4-mapped ::ffff:a.b.c.d, the old IPv4-compatible ::a.b.c.d, NAT64 64:ff9b::/96 and
 * 6to4 2002::/16) take the class of that IPv4 address, so ::ffff:127.0.0.1 is loopback.
 */
export function classifyAddress(address: string): AddressClass {
  const s = address.trim().replace(/^\[(.*)\]$/, '$1');
  const v4 = parseIpv4(s);
  if (v4) return ipv4Class(v4[0]!, v4[1]!);
  const g = parseIpv6(s);
  if (!g) return 'invalid';
  const zeroUpTo = (n: number) => g.slice(0, n).every((x) => x === 0);
  if (zeroUpTo(8)) return 'unspecified';
  if (zeroUpTo(7) && g[7] === 1) return 'loopback';
  // The first 16 bits of an embedded IPv4 address (a.b) are all its class depends on.
  const embedded = (ab: number) => ipv4Class(ab >> 8, ab & 0xff);
  if (zeroUpTo(5) && g[5] === 0xffff) return embedded(g[6]!); // ::ffff:a.b.c.d
  if (zeroUpTo(6)) return embedded(g[6]!); // ::a.b.c.d (deprecated IPv4-compatible)
  if (g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0)) return embedded(g[6]!); // NAT64
  if (g[0] === 0x2002) return embedded(g[1]!); // 6to4
  if ((g[0]! & 0xfe00) === 0xfc00) return 'private';
  if ((g[0]! & 0xffc0) === 0xfe80) return 'link-local';
  if ((g[0]! & 0xff00) === 0xff00) return 'multicast';
  return 'public';
}

/** True for the classes a redirect from a public host must never reach. */
export function isNonPublic(address: string): boolean {
  return classifyAddress(address) !== 'public';
}

/** The host part of a URL as an IP address, when it is one (the WHATWG parser already turned 2130706433 into 127.0.0.1). */
export function ipLiteral(hostname: string): string | undefined {
  const bare = hostname.replace(/^\[(.*)\]$/, '$1');
  return net.isIP(bare.replace(/%.*$/, '')) ? bare : undefined;
}

/** A resolver with the signature of `dns.lookup` as http and net call it. */
export type LookupFunction = net.LookupFunction;

/** A refused connection: the code lets the downloader tell it from network errors. */
export class AddressRefusedError extends Error {
  readonly code = 'ERR_ZOO_ADDRESS_REFUSED';
  constructor(readonly host: string, readonly address: string, readonly addressClass: AddressClass) {
    super(`refusing to connect to ${host} (${address}, ${addressClass} address)`);
  }
}

/**
 * Wraps `lookup` (default `dns.lookup`) so that it fails with `AddressRefusedError` when any address
 * a name resolves to is not public. Handles both the single-address and the `all: true` forms that
 * Node's net module asks for.
 */
export function publicOnlyLookup(lookup: LookupFunction = dns.lookup as unknown as LookupFunction): LookupFunction {
  return ((hostname: string, options: dns.LookupOptions, callback: (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void) => {
    lookup(hostname, options, (err, address, family) => {
      if (err) return callback(err, address, family);
      const list = Array.isArray(address) ? address.map((a) => a.address) : [address];
      const bad = list.find((a) => isNonPublic(a));
      if (bad !== undefined) return callback(new AddressRefusedError(hostname, bad, classifyAddress(bad)) as unknown as NodeJS.ErrnoException, address, family);
      return callback(null, address, family);
    });
  }) as LookupFunction;
}
