import { readFileSync } from 'node:fs';

/** Cairn's version, read once from package.json (two levels above both `src/lib` and `dist/lib`). */
export const CAIRN_VERSION: string = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
