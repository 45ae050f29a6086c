import { html } from 'hono/html';
import type { Html } from './layout.ts';

/** An agent's tags as small labels (escaped, as every `html` value), or a muted "none". */
export function tagList(tags: readonly string[]): Html {
  if (tags.length === 0) return html`<span class="muted">none</span>`;
  return html`${tags.map((t, i) => html`${i > 0 ? ' ' : ''}<span class="tag">${t}</span>`)}`;
}
