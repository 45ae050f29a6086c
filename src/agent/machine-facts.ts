import { hostname } from 'node:os';
import { runProcess } from '../lib/run-process.ts';

/** The Nix system name of this machine, such as `x86_64-linux` or `aarch64-darwin`. */
export function nixSystem(): string {
  const arch = { x64: 'x86_64', arm64: 'aarch64', ia32: 'i686', arm: 'armv7l', riscv64: 'riscv64' }[
    process.arch as string
  ];
  return `${arch ?? process.arch}-${process.platform}`;
}

/** The machine's host name. */
export function machineHostname(): string {
  return hostname();
}

/** `nix --version`'s version, such as `2.8.0`, or `unknown`. */
export async function nixVersion(env: NodeJS.ProcessEnv): Promise<string> {
  try {
    const out = await runProcess('nix', ['--version'], { env });
    return /(\d+\.\d+[^\s]*)/.exec(out)?.[1] ?? out.trim();
  } catch {
    return 'unknown';
  }
}
