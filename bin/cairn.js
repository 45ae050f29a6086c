#!/usr/bin/env node
// The installed entry point: runs the compiled CLI (built by `npm run build`, or by `npm ci` through `prepare`).
import '../dist/main.js';
