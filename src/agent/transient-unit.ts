import { readFile, stat } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { runLines } from '../lib/run-lines.ts';

/**
 * The directory that exists when systemd runs as the init system, as nixos-rebuild checks it
 * (`test -d /run/systemd/system`). `CAIRN_AGENT_SYSTEMD_DIR` names another directory instead:
 * for tests only, on machines without systemd as PID 1, together with a fake `systemd-run` and
 * `systemctl` on PATH.
 */
export function systemdMarkerDir(env: NodeJS.ProcessEnv): string {
  return env.CAIRN_AGENT_SYSTEMD_DIR || '/run/systemd/system';
}

async function onPath(program: string, env: NodeJS.ProcessEnv): Promise<boolean> {
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const s = await stat(join(dir, program)).catch(() => undefined);
    if (s?.isFile() && (s.mode & 0o111) !== 0) return true;
  }
  return false;
}

/**
 * Whether activations can run in transient systemd units: systemd is the init system (its
 * runtime directory exists) and both `systemd-run` and `systemctl` are on the agent's PATH.
 */
export async function systemdUsable(env: NodeJS.ProcessEnv): Promise<boolean> {
  const marker = await stat(systemdMarkerDir(env)).catch(() => undefined);
  if (!marker?.isDirectory()) return false;
  return (await onPath('systemd-run', env)) && (await onPath('systemctl', env));
}

/** The id of the running boot, which changes at every boot; undefined where the kernel has none. */
export async function currentBootId(): Promise<string | undefined> {
  const text = await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => undefined);
  return text?.trim() || undefined;
}

/**
 * A transient unit name for an activation of deployment `deploymentId`: `cairn-activation-<id>-<n>`,
 * with every character systemd does not allow in a unit name replaced by `_`, and `n` telling
 * apart the activations of one deployment (the new configuration, then a rollback).
 */
export function activationUnitName(deploymentId: string, n: string): string {
  const safe = (s: string) => s.replace(/[^A-Za-z0-9_.-]/g, '_');
  return `cairn-activation-${safe(deploymentId)}-${safe(n)}.service`;
}

/**
 * Starts `argv` in the transient service `unit` with `systemd-run`, as nixos-rebuild starts
 * switch-to-configuration (`--collect --no-ask-password --quiet --service-type=exec`), and
 * resolves once systemd has started it. The unit gets exactly the variables of `env` (passed
 * with `-E NAME`, the values taken from systemd-run's own environment, so none appears on a
 * command line): a transient service inherits nothing else. Unlike nixos-rebuild the agent does
 * not use `--pipe` or `--wait`: the command writes its output and status to files, so that the
 * agent can stop or restart while the unit runs on.
 */
export async function startTransientUnit(
  unit: string,
  argv: readonly string[],
  options: { env: NodeJS.ProcessEnv; description: string },
): Promise<void> {
  const setenv = Object.keys(options.env).flatMap((k) => ['-E', k]);
  const args = [
    `--unit=${unit}`,
    `--description=${options.description}`,
    '--collect',
    '--no-ask-password',
    '--quiet',
    '--service-type=exec',
    ...setenv,
    '--',
    ...argv,
  ];
  const r = await runLines('systemd-run', args, { env: options.env, onLine: () => {} });
  if (r.code !== 0)
    throw new Error(
      `Cannot start the activation unit ${unit}: systemd-run exited with ${r.code ?? r.signal}${
        r.tail.length ? `: ${r.tail.at(-1)}` : ''
      }`,
    );
}

/** What `systemctl show` says of a unit. `loaded` is false once the unit is gone (collected). */
export interface UnitState {
  readonly loaded: boolean;
  readonly activeState: string;
  readonly subState: string;
  readonly result: string;
  readonly execMainStatus: string;
}

/** Reads a unit's state with `systemctl show`; throws when systemctl fails. */
export async function unitState(unit: string, env: NodeJS.ProcessEnv): Promise<UnitState> {
  const r = await runLines(
    'systemctl',
    ['show', '-p', 'LoadState,ActiveState,SubState,Result,ExecMainStatus', '--', unit],
    { env, onLine: () => {} },
  );
  if (r.code !== 0)
    throw new Error(`systemctl show ${unit} exited with ${r.code ?? r.signal}: ${r.tail.at(-1) ?? ''}`);
  const props = new Map<string, string>();
  for (const line of r.tail) {
    const eq = line.indexOf('=');
    if (eq > 0) props.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return {
    loaded: props.get('LoadState') !== 'not-found',
    activeState: props.get('ActiveState') ?? 'unknown',
    subState: props.get('SubState') ?? 'unknown',
    result: props.get('Result') ?? 'unknown',
    execMainStatus: props.get('ExecMainStatus') ?? 'unknown',
  };
}

/** Whether a unit in this state may still write its status: starting, running or stopping. */
export function unitRunning(s: UnitState): boolean {
  return s.loaded && ['active', 'activating', 'deactivating', 'reloading'].includes(s.activeState);
}
