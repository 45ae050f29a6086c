#!/usr/bin/env node
// The installed entry point: runs the bundled CLI, dist/cairn.mjs, built by `npm run build` (and
// by `npm ci` and `npm pack` through `prepare`). The bundle holds every dependency but the
// server-only native ones, so an agent machine needs only Node.js and nix.
// Source maps are on before the bundle loads, so that an unexpected error's stack names src/ files.
process.setSourceMapsEnabled(true);
await import('../dist/cairn.mjs');
