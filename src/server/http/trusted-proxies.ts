import type { IncomingMessage } from 'node:http';
import { BlockList, isIP } from 'node:net';

/**
 * The proxies (load balancers) whose `X-Forwarded-For` the server believes, from
 * `--trusted-proxy`: addresses (`10.0.0.5`, `::1`) or networks (`10.0.0.0/8`).
 *
 * A request whose peer is one of them is taken to come from the right-most address in
 * `X-Forwarded-For` that is not a trusted proxy: each proxy appends the address it received the
 * request from, so entries left of that one were written by the client and prove nothing. A
 * request from any other peer is that peer's, whatever its header says, so a client cannot
 * evade the failed-authentication limit by sending the header itself.
 */
export class TrustedProxies {
  readonly #list = new BlockList();
  readonly #empty: boolean;

  /** `entries` must have been checked with {@link parseTrustedProxies}. */
  constructor(entries: readonly string[]) {
    this.#empty = entries.length === 0;
    for (const e of entries) {
      const [address, bits] = e.split('/') as [string, string | undefined];
      const family = isIP(address) === 6 ? 'ipv6' : 'ipv4';
      if (bits === undefined) this.#list.addAddress(address, family);
      else this.#list.addSubnet(address, Number(bits), family);
    }
  }

  /** True when `address` is one of the trusted proxies. */
  trusts(address: string): boolean {
    const a = unmapped(address);
    const family = isIP(a);
    return family !== 0 && this.#list.check(a, family === 6 ? 'ipv6' : 'ipv4');
  }

  /** The address the request came from, the proxies' forwarding taken into account. */
  clientOf(req: IncomingMessage): string {
    const peer = unmapped(req.socket.remoteAddress ?? 'unknown');
    if (this.#empty || !this.trusts(peer)) return peer;
    const header = req.headers['x-forwarded-for'];
    if (header === undefined) return peer;
    const hops = (Array.isArray(header) ? header.join(',') : header)
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    let client = peer;
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = unmapped(hops[i]!);
      // A trusted proxy wrote this entry, so it is not garbage from a client; if it is
      // anyway, the proxy's own address is the safer key.
      if (isIP(hop) === 0) return client;
      client = hop;
      if (!this.trusts(hop)) return hop;
    }
    // Every hop was a proxy of ours: the request began at the left-most.
    return client;
  }
}

/**
 * Parses `--trusted-proxy ADDR[,ADDR...]` (each an IPv4 or IPv6 address, or a network with a
 * prefix length); returns the entries, or the problems, each naming the value at fault.
 */
export function parseTrustedProxies(text: string): { entries: string[] } | { problems: string[] } {
  const entries = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const problems: string[] = [];
  if (entries.length === 0) problems.push(`Cannot use --trusted-proxy: expected ADDR[,ADDR...] (${text})`);
  for (const e of entries) {
    const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(e);
    const family = m ? isIP(m[1]!) : 0;
    const bits = m?.[2] === undefined ? undefined : Number(m[2]);
    if (family === 0 || (bits !== undefined && bits > (family === 6 ? 128 : 32))) {
      problems.push(
        `Cannot use --trusted-proxy: expected an IPv4 or IPv6 address, or ADDRESS/PREFIX-LENGTH (${e})`,
      );
    }
  }
  return problems.length > 0 ? { problems } : { entries };
}

/** `::ffff:10.0.0.1` (an IPv4 peer of a socket listening on IPv6) as `10.0.0.1`. */
function unmapped(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1]! : address;
}
