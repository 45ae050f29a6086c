import { realpath } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * True when a NixOS system's kernel, initrd or kernel modules differ from the booted system's
 * (`/run/booted-system`): the switch is live, but only a reboot runs the new kernel.
 * False where there is no booted system to compare with (not NixOS, or a container).
 */
export async function rebootRequired(
  storePath: string,
  bootedSystem = '/run/booted-system',
): Promise<boolean> {
  const booted = await realpath(bootedSystem).catch(() => undefined);
  if (!booted) return false;
  for (const part of ['kernel', 'initrd', 'kernel-modules']) {
    const [a, b] = await Promise.all([
      realpath(join(booted, part)).catch(() => null),
      realpath(join(storePath, part)).catch(() => null),
    ]);
    if (a !== b) return true;
  }
  return false;
}
