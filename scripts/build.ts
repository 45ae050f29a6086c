/**
 * Builds dist/cairn.mjs: the whole `cairn` CLI in one ESM file for Node 20, so that a machine
 * running the agent needs Node.js and nix and nothing else: no native npm module, no build step.
 *
 * Only what `cairn server` alone needs and cannot be bundled stays outside, loaded on first use:
 * better-sqlite3 (native code, found through `bindings` next to its package) and the optional
 * modules some dependencies try to load (pg-native, ws's bufferutil and utf-8-validate).
 * Type-checking is separate (`npm run typecheck`); esbuild only strips types.
 *
 * Usage: node --import tsx scripts/build.ts (or `npm run build`)
 */
import { readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = join(root, 'dist');
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };

/** The text of a dashboard asset, carried in the bundle (see src/server/dashboard/static-assets.ts). */
const asset = (name: string) =>
  JSON.stringify(readFileSync(join(root, 'src/server/dashboard/assets', name), 'utf8'));

/** Server-only modules with native code: imported by a stub that `require`s them on first use. */
const LAZY_NATIVE = ['better-sqlite3'];
/** Optional modules dependencies `require` inside try/catch or a getter; absent is fine. */
const OPTIONAL = ['pg-native', 'bufferutil', 'utf-8-validate'];

/**
 * esbuild hoists an `import` of an external module to the top of the bundle, so a static import
 * of better-sqlite3 deep inside the server would load it when the agent starts. This plugin
 * replaces such a module by a stand-in that loads the real one when first constructed, called or
 * read, and says what to do when it cannot be found or built.
 */
const lazyNative: Plugin = {
  name: 'cairn-lazy-native',
  setup(b) {
    const filter = new RegExp(`^(${LAZY_NATIVE.map((n) => n.replace(/[.-]/g, '\\$&')).join('|')})$`);
    b.onResolve({ filter }, (args) => ({ path: args.path, namespace: 'cairn-lazy-native' }));
    b.onLoad({ filter: /.*/, namespace: 'cairn-lazy-native' }, (args) => ({
      loader: 'js',
      contents: `
import { createRequire } from 'node:module';
const name = ${JSON.stringify(args.path)};
let loaded;
function load() {
  if (loaded === undefined) {
    try {
      loaded = createRequire(import.meta.url)(name);
    } catch (err) {
      throw new Error(
        'Cannot load ' + name + ', which only cairn server needs: ' + err.message +
          ' (install cairn with its dependencies and their install scripts, or run npm rebuild ' + name + ')',
        { cause: err },
      );
    }
  }
  return loaded;
}
export default new Proxy(function () {}, {
  construct: (_target, args) => Reflect.construct(load(), args),
  apply: (_target, self, args) => Reflect.apply(load(), self, args),
  get: (_target, key) => load()[key],
  has: (_target, key) => key in load(),
});
`,
    }));
  },
};

rmSync(outdir, { recursive: true, force: true });
const result = await build({
  absWorkingDir: root,
  entryPoints: { cairn: join(root, 'src/main.ts') },
  outdir,
  outExtension: { '.js': '.mjs' },
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  sourcemap: true,
  // Every command starts by compiling the whole bundle: without whitespace and with simpler
  // syntax it is 3 MB instead of 4.5, and `cairn --version` takes about 40 ms less (250 ms
  // instead of 290 on the bench machine). Names stay as written (no minifyIdentifiers, which saves
  // nothing more), so stack traces read as the source does even without the source map.
  minifyWhitespace: true,
  minifySyntax: true,
  // Bundled CommonJS dependencies call require() for Node's built-in modules (and for the optional
  // ones above); an ES module has no require, so the bundle makes one.
  banner: {
    js: [
      '#!/usr/bin/env node',
      "import { createRequire as __cairnCreateRequire } from 'node:module';",
      'const require = __cairnCreateRequire(import.meta.url);',
    ].join('\n'),
  },
  define: {
    CAIRN_BUNDLED_VERSION: JSON.stringify(version),
    CAIRN_ASSET_APP_JS: asset('app.js'),
    CAIRN_ASSET_APP_CSS: asset('app.css'),
  },
  external: OPTIONAL,
  plugins: [lazyNative],
  metafile: true,
  logLevel: 'warning',
});
// On stderr: `npm pack --json` runs this script through `prepare`, and its stdout must stay JSON.
for (const [file, out] of Object.entries(result.metafile.outputs)) {
  if (!file.endsWith('.map')) {
    process.stderr.write(`${file}: ${(out.bytes / 1024).toFixed(0)} KiB\n`);
  }
}
