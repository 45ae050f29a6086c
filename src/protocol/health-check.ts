import { z } from 'zod';

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
 * `command`: a program in the new closure (a path relative to it, such as `bin/healthcheck`, or an
 * absolute store path) with arguments, healthy when it exits 0. `http`: a URL on the machine,
 * healthy when it answers `status`. `systemd`: units that must be active (NixOS).
 */
export const healthCheckSchema = z.union([
  z.strictObject({
    command: z.array(z.string().min(1).max(4096)).min(1).max(100),
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
