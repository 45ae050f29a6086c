import { z } from 'zod';
import { isStorePath } from '../nix/store-path.ts';

/**
 * Why `program` (a command check's first word) cannot name a program inside a deployed closure,
 * or undefined when it can: a path relative to the deployed store path (`bin/check`) or inside a
 * store path (`/nix/store/<hash>-<name>/bin/check`), with no empty, `.` or `..` segment. Where
 * it really leads (through symlinks) is checked by the agent against the closure, before it runs.
 */
export function healthCheckProgramProblem(program: string): string | undefined {
  if (program.includes('\0')) return 'contains a NUL character';
  const absolute = program.startsWith('/');
  const segments = (absolute ? program.slice(1) : program).split('/');
  if (segments.some((s) => s === '' || s === '.' || s === '..')) {
    return `must not contain an empty, "." or ".." segment (${JSON.stringify(program)})`;
  }
  if (absolute) {
    const store = `/${segments.slice(0, 3).join('/')}`;
    if (segments.length < 4 || !isStorePath(store)) {
      return `is absolute but not inside a store path such as /nix/store/<hash>-<name>/bin/check (${JSON.stringify(program)})`;
    }
  }
  return undefined;
}

/** Timing shared by every kind of health check. */
const timing = {
  /** Seconds one attempt may take. */
  timeoutSeconds: z.number().positive().max(3600).default(30),
  /** Attempts after the first before the check fails. */
  retries: z.number().int().min(0).max(100).default(3),
  /** Seconds between attempts. */
  intervalSeconds: z.number().min(0).max(3600).default(2),
  /** Seconds to wait after activation before the first attempt. */
  graceSeconds: z.number().min(0).max(3600).default(0),
};

/**
 * A health check, run after activation and after the rollback script; a failure rolls back.
 * `command`: a program in the new closure (a path relative to it, such as `bin/healthcheck`, or a
 * path inside a store path of its closure) with arguments, healthy when it exits 0; see
 * {@link healthCheckProgramProblem}. `http`: a URL on the machine,
 * healthy when it answers `status`. `systemd`: units that must be active (NixOS).
 */
export const healthCheckSchema = z.union([
  z.strictObject({
    command: z
      .array(z.string().min(1).max(4096))
      .min(1)
      .max(100)
      .superRefine((command, ctx) => {
        const problem = command[0] === undefined ? undefined : healthCheckProgramProblem(command[0]);
        if (problem) ctx.addIssue({ code: 'custom', path: [0], message: `the program ${problem}` });
      }),
    ...timing,
  }),
  z.strictObject({
    http: z.url({ protocol: /^https?$/ }),
    status: z.number().int().min(100).max(599).default(200),
    ...timing,
  }),
  z.strictObject({
    systemd: z
      .array(z.string().regex(/^[A-Za-z0-9:_.@\\-]+$/, 'not a systemd unit name'))
      .min(1)
      .max(100),
    ...timing,
  }),
]);
export type HealthCheck = z.infer<typeof healthCheckSchema>;
