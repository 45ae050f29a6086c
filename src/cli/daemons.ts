/** Flags of `cairn server` as the CLI parsed them: text, checked by the server. */
export interface ServerCommandFlags {
  listen?: string;
  dataDir?: string;
  database?: string;
  blobStore?: string;
  publicUrl?: string;
  logLevel?: string;
  logRetentionDays?: string;
  gcInterval?: string;
  trustedProxy?: string;
  metricsListen?: string;
  metricsPerAgent?: boolean;
}

/** What `cairn deploy agent` hands the agent once it has checked the name and the token. */
export interface AgentCommandOptions {
  readonly name: string;
  /** The server's URL. */
  readonly server: string;
  readonly token: string;
  /** A profile name under /nix/var/nix/profiles, or an absolute path, as given. */
  readonly profile: string;
  readonly stateDir: string;
  readonly env: NodeJS.ProcessEnv;
  readonly log: (line: string) => void;
  /** `--bootstrap`: stop after the first successful deployment once another agent takes over. */
  readonly bootstrap?: { readonly handoverMs: number };
}

/**
 * The two long-running programs the CLI starts: the server and the agent. Folders import one way
 * and the CLI may import neither, so src/main.ts supplies them (and loads each only when its
 * command runs, so that `cairn deploy agent` never loads the server's native dependencies).
 */
export interface Daemons {
  /** Starts the server from its flags and the environment; resolves once it listens. */
  startServer(flags: ServerCommandFlags, env: NodeJS.ProcessEnv): Promise<{ close(): Promise<void> }>;
  /**
   * Runs the agent, holding its profile's lock, until `signal` aborts or it stops to be
   * restarted as its new version; resolves with the exit code the process ends with (0, or the
   * agent's restart code).
   */
  runAgent(options: AgentCommandOptions, signal: AbortSignal): Promise<number>;
}
