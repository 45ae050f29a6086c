import { readFileSync } from 'node:fs';

/*
 * Set by the bundler (`scripts/build.ts`, esbuild `define`) to the text of `assets/app.js` and
 * `assets/app.css`: the bundle may be copied alone onto a machine, so it carries them. Unset
 * when running the source, which reads them next to this file.
 */
declare const CAIRN_ASSET_APP_JS: string | undefined;
declare const CAIRN_ASSET_APP_CSS: string | undefined;

function readAsset(name: string): string {
  return readFileSync(new URL(`./assets/${name}`, import.meta.url), 'utf8');
}

/**
 * The dashboard's only script, served as /static/app.js (`assets/app.js`). It only enhances:
 * following a running deployment's log and state over Server-Sent Events, refreshing live
 * regions, and asking before a rollback. Every page works without it.
 */
export const APP_JS: string =
  typeof CAIRN_ASSET_APP_JS === 'string' ? CAIRN_ASSET_APP_JS : readAsset('app.js');

/** The stylesheet, served as /static/app.css (`assets/app.css`): system fonts, one column on phones. */
export const APP_CSS: string =
  typeof CAIRN_ASSET_APP_CSS === 'string' ? CAIRN_ASSET_APP_CSS : readAsset('app.css');
