import { html } from 'hono/html';
import type { WebhookDeliveryRow, WebhookEndpointRow } from '../db/webhook-repository.ts';
import { iso, timeAgo } from './format.ts';
import { badge, type Html, layout } from './layout.ts';
import type { Session } from './session-store.ts';

/**
 * The workspace's webhook endpoints (active, or disabled and why) and their recent deliveries
 * with each one's status; `cairn webhook` manages them.
 */
export function webhooksPage(options: {
  session: Session;
  endpoints: readonly WebhookEndpointRow[];
  deliveries: readonly WebhookDeliveryRow[];
  now: number;
}): Html {
  const { endpoints, deliveries, now } = options;
  const urls = new Map(endpoints.map((e) => [e.id, e.url]));
  return layout({
    title: 'Webhooks',
    session: options.session,
    body: html`<h1>Webhooks</h1>
<div id="webhooks" data-refresh="5">
<h2>Endpoints</h2>
${
  endpoints.length === 0
    ? html`<p class="muted">No webhooks. Add one with <code>cairn webhook create URL --event …</code>.</p>`
    : html`<div class="table-wrap"><table id="endpoints">
<thead><tr><th>#</th><th>URL</th><th>Events</th><th>State</th><th>Last success</th></tr></thead>
<tbody>
${endpoints.map(
  (e) => html`<tr data-webhook="${e.id}">
<td>${e.id}</td>
<td class="mono">${e.url}</td>
<td>${(JSON.parse(e.events) as string[]).join(', ')}</td>
<td>${badge(e.disabled_at === null ? 'active' : 'disabled')}${e.disabled_at === null ? '' : html` <span class="muted">${e.disabled_reason ?? ''}</span>`}</td>
<td>${e.last_success_at === null ? 'never' : html`<time datetime="${iso(e.last_success_at)}">${timeAgo(e.last_success_at, now)}</time>`}</td>
</tr>`,
)}
</tbody></table></div>`
}
<h2>Recent deliveries</h2>
${
  deliveries.length === 0
    ? html`<p class="muted">No deliveries yet.</p>`
    : html`<div class="table-wrap"><table id="deliveries">
<thead><tr><th>#</th><th>Event</th><th>Endpoint</th><th>State</th><th class="num">Attempts</th><th>Last answer</th><th>Created</th></tr></thead>
<tbody>
${deliveries.map(
  (d) => html`<tr data-delivery="${d.id}">
<td>${d.id}</td>
<td>${d.event}</td>
<td class="mono">${urls.get(d.endpoint_id) ?? `#${d.endpoint_id} (deleted)`}</td>
<td>${badge(d.state)}</td>
<td class="num">${d.attempts}</td>
<td>${d.last_status ?? ''}${d.last_error ? html` <span class="muted">${d.last_error}</span>` : ''}</td>
<td><time datetime="${iso(d.created_at)}">${timeAgo(d.created_at, now)}</time></td>
</tr>`,
)}
</tbody></table></div>`
}
</div>`,
  });
}
