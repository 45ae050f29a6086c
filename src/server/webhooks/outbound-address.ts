import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';

/**
 * Addresses a webhook is not sent to unless private addresses are allowed: loopback, the
 * private networks, link-local (cloud metadata services live there), carrier-grade NAT,
 * unspecified, multicast and reserved ranges. A webhook URL is chosen by whoever holds a token;
 * without this, it could make the server call services only it can reach.
 */
const PRIVATE = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const)
  PRIVATE.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const)
  PRIVATE.addSubnet(net, prefix, 'ipv6');

/**
 * The kind of range `address` is in, such as "loopback"; undefined for a public address. An IPv4
 * address carried in an IPv6 one (IPv4-mapped `::ffff:127.0.0.1`, which URLs write as
 * `::ffff:7f00:1`; NAT64 `64:ff9b::/96`; 6to4 `2002::/16`) is judged as that IPv4 address, and
 * the deprecated IPv4-compatible `::/96` is refused as a whole.
 */
export function privateRange(address: string): string | undefined {
  const family = isIP(address);
  if (family === 0) return 'not an IP address';
  if (family === 6) {
    const g = ipv6Groups(address);
    const v4 = (hi: number, lo: number) => `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
    const zeros = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
    if (zeros(0, 5) && g[5] === 0xffff) return privateRange(v4(g[6]!, g[7]!));
    if (g[0] === 0x64 && g[1] === 0xff9b && zeros(2, 6)) return privateRange(v4(g[6]!, g[7]!));
    if (g[0] === 0x2002) return privateRange(v4(g[1]!, g[2]!));
    if (zeros(0, 6)) return zeros(6, 7) && g[7] === 1 ? 'loopback' : 'private or reserved';
  }
  if (family === 4) {
    if (!PRIVATE.check(address, 'ipv4')) return undefined;
    if (address.startsWith('127.')) return 'loopback';
    return 'private or reserved';
  }
  if (!PRIVATE.check(address, 'ipv6')) return undefined;
  return address === '::1' ? 'loopback' : 'private or reserved';
}

/** The host of a URL as an IP address, without IPv6 brackets; undefined when it is a name. */
export function ipLiteral(url: URL): string | undefined {
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return isIP(host) === 0 ? undefined : host;
}

/**
 * A `lookup` for `http.request` that resolves the host name and refuses it if any of its
 * addresses is private (unless `allowPrivate`): the connection then goes to an address that was
 * checked, never to one a second resolution returned (DNS rebinding).
 */
export function checkedLookup(allowPrivate: boolean) {
  return (
    hostname: string,
    options: { all?: boolean; family?: number | string },
    callback: (err: Error | null, address: string | LookupAddress[], family?: number) => void,
  ): void => {
    dnsLookup(hostname, { all: true }, (err, addresses) => {
      if (err) return callback(err, []);
      if (!allowPrivate) {
        for (const a of addresses) {
          const range = privateRange(a.address);
          if (range)
            return callback(
              new Error(
                `${hostname} resolves to ${a.address}, a ${range} address; set CAIRN_WEBHOOK_ALLOW_PRIVATE=1 to allow it`,
              ),
              [],
            );
        }
      }
      if (options.all) return callback(null, addresses);
      const first = addresses[0];
      if (!first) return callback(new Error(`${hostname} has no address`), []);
      callback(null, first.address, first.family);
    });
  };
}

/** The eight 16-bit groups of an IPv6 address (with `::` expanded and a dotted IPv4 tail read). */
function ipv6Groups(address: string): number[] {
  let text = address.toLowerCase();
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const part = (t: string | undefined) => (t ? t.split(':').map((x) => Number.parseInt(x, 16)) : []);
  const left = part(head);
  const right = part(tail);
  if (tail === undefined) return left;
  return [...left, ...new Array(8 - left.length - right.length).fill(0), ...right];
}
