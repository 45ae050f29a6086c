import { readFileSync } from 'node:fs';

/**
 * Set by the bundler (`scripts/build.ts`, esbuild `define`) to the version in package.json. A
 * bundle lives at a different depth than the source, and may be copied alone onto a machine, so
 * it carries its version instead of looking for package.json. Unset when running the source.
 */
declare const CAIRN_BUNDLED_VERSION: string | undefined;

/**
 * Cairn's version: the one built into the bundle, or, running from source (`src/lib`, or tsc's
 * `dist/lib`), the one in package.json two levels up.
 */
export const CAIRN_VERSION: string =
  typeof CAIRN_BUNDLED_VERSION === 'string'
    ? CAIRN_BUNDLED_VERSION
    : (
        JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
          version: string;
        }
      ).version;
