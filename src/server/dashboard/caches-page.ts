import { html } from 'hono/html';
import { formatSeconds } from '../../protocol/duration.ts';
import type { GcResult } from '../cache/cache-collector.ts';
import type { GcRun } from '../db/cache-gc-repository.ts';
import type { CacheRow } from '../db/cache-repository.ts';
import { formatBytes, iso, timeAgo } from './format.ts';
import { type Html, layout } from './layout.ts';
import type { Session } from './session-store.ts';

type Stats = { paths: number; narBytes: number; fileBytes: number };

function lastGc(run: GcRun | undefined, now: number): Html {
  if (!run) return html`<span class="muted">never</span>`;
  const when = html`<time datetime="${iso(run.started_at)}">${timeAgo(run.started_at, now)}</time>`;
  if (run.error) return html`${when} (${run.trigger}): <span class="error">failed: ${run.error}</span>`;
  if (run.finished_at === null) return html`${when} (${run.trigger}): running`;
  return html`${when} (${run.trigger}): removed ${run.paths_removed} paths, freed ${formatBytes(run.bytes_freed)}`;
}

/** The workspace's caches: size, retention, quota and last collection of each. */
export function cachesPage(options: {
  session: Session;
  caches: ReadonlyArray<{
    row: CacheRow;
    stats: Stats | undefined;
    last: GcRun | undefined;
    retention: number;
  }>;
  now: number;
}): Html {
  return layout({
    title: 'Caches',
    session: options.session,
    body: html`<h1>Caches</h1>
${
  options.caches.length === 0
    ? html`<p class="muted">No caches. Create one with <code>cairn cache create NAME</code>.</p>`
    : html`<div class="table-wrap"><table id="caches">
<thead><tr><th>Name</th><th class="num">Paths</th><th class="num">Stored</th><th>Retention</th><th>Quota</th><th>Last collection</th></tr></thead>
<tbody>
${options.caches.map(
  ({ row, stats, last, retention }) => html`<tr data-cache="${row.name}">
<td><a href="/caches/${row.name}">${row.name}</a></td>
<td class="num">${stats?.paths ?? 0}</td>
<td class="num">${formatBytes(stats?.fileBytes ?? 0)}</td>
<td>${formatSeconds(retention)}${row.retention_seconds === null ? html` <span class="muted">(default)</span>` : ''}</td>
<td>${row.quota_bytes === null ? html`<span class="muted">none</span>` : formatBytes(row.quota_bytes)}</td>
<td>${lastGc(last, options.now)}</td>
</tr>`,
)}
</tbody></table></div>`
}`,
  });
}

/**
 * One cache: its usage (what a collection would free now, what deployments and pins keep), its
 * retention and quota (a form), its collections, and a button that collects it now.
 */
export function cachePage(options: {
  session: Session;
  row: CacheRow;
  stats: Stats | undefined;
  plan: GcResult;
  runs: readonly GcRun[];
  pins: number;
  now: number;
  error?: string | undefined;
}): Html {
  const { row, stats, plan, session } = options;
  return layout({
    title: `Cache ${row.name}`,
    session,
    body: html`<h1>Cache ${row.name}</h1>
${options.error ? html`<p class="error" id="form-error">${options.error}</p>` : ''}
<dl id="usage">
<dt>Paths</dt><dd id="paths">${stats?.paths ?? 0}</dd>
<dt>Stored</dt><dd id="stored">${formatBytes(stats?.fileBytes ?? 0)} <span class="muted">(${formatBytes(stats?.narBytes ?? 0)} unpacked)</span></dd>
<dt>Reclaimable now</dt><dd id="reclaimable">${formatBytes(plan.bytesFreed)} <span class="muted">(${plan.paths.length} paths, ${plan.narFiles.length} NAR files)</span></dd>
<dt>Kept for deployments and pins</dt><dd id="roots">${plan.rootPaths} paths <span class="muted">(${options.pins} pins)</span></dd>
</dl>
<h2>Retention and quota</h2>
<form method="post" action="/caches/${row.name}/policy" id="policy">
<input type="hidden" name="_csrf" value="${session.csrf}">
<label>Keep what was pushed or fetched within <input name="retention" value="${row.retention_seconds === null ? '' : formatSeconds(row.retention_seconds)}" placeholder="28d (default)" size="8"></label>
<label>Quota <input name="quota" value="${row.quota_bytes === null ? '' : formatBytes(row.quota_bytes).replace(' ', '')}" placeholder="none" size="8"></label>
<button type="submit">Save</button>
</form>
<p class="muted">Durations such as <code>28d</code> or <code>12h</code>, empty for the default of 28 days; sizes such as <code>50GiB</code>, empty for no quota. What deployments run, ran last and are about to run, and pinned paths, are never removed.</p>
<form method="post" action="/caches/${row.name}/gc" data-confirm="Collect cache ${row.name} now?">
<input type="hidden" name="_csrf" value="${session.csrf}">
<button type="submit" class="danger">Collect now</button>
</form>
<h2>Collections</h2>
${
  options.runs.length === 0
    ? html`<p class="muted">No collection yet.</p>`
    : html`<div class="table-wrap"><table id="runs">
<thead><tr><th>Started</th><th>Trigger</th><th class="num">Paths removed</th><th class="num">NAR files removed</th><th class="num">Freed</th><th>Result</th></tr></thead>
<tbody>
${options.runs.map(
  (r) => html`<tr>
<td><time datetime="${iso(r.started_at)}">${timeAgo(r.started_at, options.now)}</time></td>
<td>${r.trigger}</td>
<td class="num">${r.paths_removed}</td>
<td class="num">${r.nar_files_removed}</td>
<td class="num">${formatBytes(r.bytes_freed)}</td>
<td>${r.error ? html`<span class="error">${r.error}</span>` : r.finished_at === null ? 'running' : 'done'}</td>
</tr>`,
)}
</tbody></table></div>`
}`,
  });
}
