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

/** The kind of range `address` is in, such as "loopback"; undefined for a public address. */
export function privateRange(address: string): string | undefined {
  const family = isIP(address);
  if (family === 0) return 'not an IP address';
  // An IPv4 address written as IPv6 (::ffff:127.0.0.1) is the IPv4 address.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return privateRange(mapped[1]!);
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
