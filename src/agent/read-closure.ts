import { runProcess } from '../lib/run-process.ts';
import { parsePathInfoJson } from '../nix/path-info-json.ts';
import type { ClosurePath } from '../protocol/agent-protocol.ts';

/**
 * Reads the closure of a realised store path from the local store with
 * `nix path-info --json -r` (an array in Nix 2.8 to 2.18, an object keyed by path after).
 */
export async function readClosure(env: NodeJS.ProcessEnv, storePath: string): Promise<ClosurePath[]> {
  const out = await runProcess(
    'nix',
    ['--extra-experimental-features', 'nix-command', 'path-info', '--json', '-r', storePath],
    { env },
  );
  return parsePathInfoJson(out).map((p) => ({
    path: p.path,
    narSize: p.narSize,
    references: [...p.references],
  }));
}

/**
 * Splits a closure into parts whose JSON stays under `maxBytes`, so that each fits in one
 * agent message however large the closure (a NixOS system has thousands of paths).
 */
export function closureParts(paths: readonly ClosurePath[], maxBytes: number): ClosurePath[][] {
  const parts: ClosurePath[][] = [];
  let part: ClosurePath[] = [];
  let size = 0;
  for (const p of paths) {
    const bytes = JSON.stringify(p).length + 1;
    if (part.length > 0 && size + bytes > maxBytes) {
      parts.push(part);
      part = [];
      size = 0;
    }
    part.push(p);
    size += bytes;
  }
  parts.push(part);
  return parts;
}
