import { spawn } from 'node:child_process';
import { CairnError } from './cairn-error.ts';

/** Runs a command to completion and returns its stdout; a non-zero exit is a COMMAND_FAILED error with its stderr. */
export async function runProcess(
  cmd: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; maxOutputBytes?: number } = {},
): Promise<string> {
  const max = options.maxOutputBytes ?? 256 * 1024 * 1024;
  return await new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let size = 0;
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      size += d.length;
      if (size > max) child.kill();
      else out.push(d);
    });
    child.stderr.on('data', (d: Buffer) => {
      if (err.length < 8192) err += d.toString();
    });
    child.on('error', (e) =>
      reject(new CairnError('COMMAND_FAILED', `Cannot run ${cmd}: ${e.message}`, { cause: e })),
    );
    child.on('close', (code, signal) => {
      if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
      else {
        const why =
          err.trim().split('\n').slice(-3).join(' ') || (signal ? `killed by ${signal}` : `exit ${code}`);
        reject(new CairnError('COMMAND_FAILED', `Cannot run ${cmd} ${args.join(' ').slice(0, 200)}: ${why}`));
      }
    });
  });
}
