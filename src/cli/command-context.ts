import type { ApiClient } from './api-client.ts';
import type { Daemons } from './daemons.ts';

/** Where a command writes, and the environment it reads; the real process, or buffers in tests. */
export interface CliIo {
  readonly stdout: { write(chunk: string): unknown; isTTY?: boolean };
  readonly stderr: { write(chunk: string): unknown; isTTY?: boolean };
  readonly env?: NodeJS.ProcessEnv;
  /**
   * Resolves when the process is asked to stop (SIGINT or SIGTERM). Only long-running commands
   * call it; until one does, the signals keep their default effect.
   */
  readonly untilStopped?: () => Promise<string>;
  /**
   * Asks a question on the terminal and resolves with the answer line; absent when stdin is not
   * a terminal (CI), where nothing may wait for a person.
   */
  readonly ask?: (question: string) => Promise<string>;
  /** The server and the agent, for `cairn server` and `cairn deploy agent`; src/main.ts gives them. */
  readonly daemons?: Daemons;
}

/** What every command gets: its IO and a way to build an API client from the global options. */
export interface CommandContext {
  readonly io: CliIo;
  readonly env: NodeJS.ProcessEnv;
  /** An API client from the global options; `tokenEnv` names the environment variable tried before CAIRN_TOKEN. */
  client(tokenEnv?: string): ApiClient;
  /** Sets the exit code for a command that finished without an error but must not report success. */
  setExitCode(code: number): void;
}
