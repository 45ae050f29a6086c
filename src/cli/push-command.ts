import { type Command, Option } from 'commander';
import { CairnError } from '../lib/cairn-error.ts';
import type { CommandContext } from './command-context.ts';
import { formatBytes } from './format-table.ts';
import { type PushCompression, pushClosure } from './push-closure.ts';

/** `cairn push CACHE PATH...`. */
export function registerPushCommand(program: Command, ctx: CommandContext): void {
  program
    .command('push')
    .description('push the closures of store paths to a cache, skipping what it already holds')
    .argument('<cache>', 'cache name')
    .argument('<paths...>', 'store paths (their whole closures are pushed)')
    .addOption(
      new Option('--compression <kind>', 'NAR compression').choices(['zstd', 'xz', 'none']).default('zstd'),
    )
    .option('-j, --jobs <n>', 'uploads at a time', '4')
    .action(async (cache: string, paths: string[], opts: { compression: PushCompression; jobs: string }) => {
      const jobs = Number(opts.jobs);
      if (!Number.isInteger(jobs) || jobs < 1 || jobs > 64) {
        throw new CairnError(
          'INVALID_ARGUMENT',
          `Cannot use --jobs: expected a whole number from 1 to 64 (${opts.jobs})`,
        );
      }
      const tty = ctx.io.stderr.isTTY === true;
      const started = Date.now();
      const result = await pushClosure(
        ctx.client(),
        { cache, paths },
        {
          compression: opts.compression,
          jobs,
          env: ctx.env,
          onProgress: (p) => {
            if (tty)
              ctx.io.stderr.write(`\r\x1b[Kpushing ${p.done}/${p.total} paths, ${formatBytes(p.bytes)}`);
          },
        },
      );
      if (tty) ctx.io.stderr.write('\r\x1b[K');
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      ctx.io.stderr.write(
        `pushed ${result.uploaded} path(s) (${formatBytes(result.bytes)}) to ${cache} in ${secs}s; ${result.skipped} already there\n`,
      );
    });
}
