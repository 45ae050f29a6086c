import { mkdtemp, readlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildPackages, deleteFromStore } from './nix.ts';
import { cli, type TestServer } from './server.ts';

/** The store path a profile points to now (through its generation link). */
export async function profileTarget(profile: string): Promise<string> {
  const link = await readlink(profile);
  return await readlink(join(profile, '..', link));
}

/** A plain profile whose `bin/activate` prints `activated <name>`. */
export function plainPackage(name: string, options: { activateExit?: number } = {}) {
  const exit = options.activateExit ?? 0;
  return {
    name,
    script: `mkdir -p $out/bin; printf '#!/bin/sh\\necho activated ${name}\\nexit ${exit}\\n' > $out/bin/activate; chmod +x $out/bin/activate`,
  };
}

/**
 * A NixOS-kind closure (nixos-version and bin/switch-to-configuration) whose switch appends
 * "<its store path> <goal>" to `record` and exits with `exit`. No real NixOS is needed to test
 * what the agent does with it; the kind and the exit codes are what matter.
 */
export function nixosPackage(name: string, record: string, options: { exit?: number } = {}) {
  const exit = options.exit ?? 0;
  return {
    name,
    script: [
      'mkdir -p $out/bin',
      'echo 24.05 > $out/nixos-version',
      `printf '#!/bin/sh\\necho "$(dirname $(dirname $0)) $1" >> ${record}\\necho switching to configuration\\nexit ${exit}\\n' > $out/bin/switch-to-configuration`,
      'chmod +x $out/bin/switch-to-configuration',
    ].join('; '),
  };
}

/** A cache `main`, agents with their tokens, and a place for profiles: what a deploy test starts from. */
export interface DeployWorld {
  readonly env: Record<string, string>;
  readonly profiles: string;
  readonly publicKey: string;
  createAgent(name: string): Promise<string>;
  /** Builds packages, pushes their closures to `main` and removes them from the local store, as CI would leave them. */
  publish(packages: Parameters<typeof buildPackages>[0]): Promise<Map<string, string>>;
}

/** Prepares a server for deployment tests. */
export async function deployWorld(server: TestServer): Promise<DeployWorld> {
  const env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken };
  const created = await cli(['cache', 'create', 'main'], env);
  if (created.code !== 0) throw new Error(created.stderr);
  const profiles = await mkdtemp(join(tmpdir(), 'cairn-profiles-'));
  return {
    env,
    profiles,
    publicKey: created.stdout.trim(),
    createAgent: async (name) => {
      const r = await cli(['agent', 'create', name], env);
      if (r.code !== 0) throw new Error(r.stderr);
      return r.stdout.trim();
    },
    publish: async (packages) => {
      const paths = await buildPackages(packages);
      const pushed = await cli(['push', 'main', ...paths.values()], env);
      if (pushed.code !== 0) throw new Error(pushed.stderr);
      // The agent must download them, as on another machine.
      await deleteFromStore([...paths.values()]);
      return paths;
    },
  };
}
