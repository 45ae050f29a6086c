// The dashboard's only script, served as /static/app.js (a classic script, deferred). It only
// enhances: following a running deployment's log and state over Server-Sent Events, refreshing
// live regions (on a timer, or when a rollout's stream says it changed), and asking before a
// rollback or an abort. Every page works without it.
(() => {
  function onReady(fn) {
    if (document.readyState !== 'loading') fn();
    else document.addEventListener('DOMContentLoaded', fn);
  }

  /** Follows a running deployment: log lines and state changes as they happen. */
  function followLog(log) {
    let after = Number(log.dataset.after || 0);
    const es = new EventSource(`${log.dataset.events}?after=${after}`);
    const empty = document.getElementById('log-empty');
    es.addEventListener('log', (e) => {
      const d = JSON.parse(e.data);
      const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
      for (const l of d.lines) {
        if (l.seq <= after) continue;
        after = l.seq;
        const line = document.createElement('span');
        line.className = 'line';
        line.dataset.seq = String(l.seq);
        line.textContent = `${l.text}\n`;
        log.appendChild(line);
      }
      if (empty) empty.hidden = true;
      if (follow) log.scrollTop = log.scrollHeight;
    });
    es.addEventListener('state', (e) => {
      const d = JSON.parse(e.data);
      const state = document.getElementById('state');
      if (state) {
        state.textContent = d.state;
        state.className = `badge s-${d.state}`;
      }
      const step = document.getElementById('step');
      if (step) step.textContent = d.step || '–';
    });
    es.addEventListener('end', () => {
      es.close();
      // The final page shows the timeline, the result and the diff.
      setTimeout(() => {
        location.reload();
      }, 300);
    });
    const live = document.getElementById('live');
    if (live) live.hidden = false;
  }

  /**
   * Fetches the page again (or `src`: a page answering a form has another address) and swaps the
   * region with id `id` in; resolves to the new region.
   */
  function refetchRegion(id, src) {
    return fetch(src || location.href, { credentials: 'same-origin', headers: { Accept: 'text/html' } })
      .then((r) => (r.ok ? r.text() : null))
      .then((text) => {
        const el = document.getElementById(id);
        if (!text || !el) return null;
        const doc = new DOMParser().parseFromString(text, 'text/html');
        const fresh = doc.getElementById(id);
        if (fresh) el.replaceWith(fresh);
        return fresh;
      })
      .catch(() => null);
  }

  /** Refetches the page every `data-refresh` seconds and swaps the region in. */
  function refreshRegion(region) {
    const every = Number(region.getAttribute('data-refresh')) * 1000;
    setInterval(() => {
      if (!document.hidden) refetchRegion(region.id);
    }, every);
  }

  /**
   * Swaps the region in again whenever the server says it changed (`data-events`, a stream of
   * `changed` doorbells): one fetch at a time, one more if it rang meanwhile; on (re)connecting
   * too. Falls back to polling if the stream fails.
   */
  function followRegion(region) {
    const id = region.id;
    const src = region.dataset.src;
    let busy = false;
    let again = false;
    const refetch = () => {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      refetchRegion(id, src).finally(() => {
        busy = false;
        if (again) {
          again = false;
          refetch();
        }
      });
    };
    const es = new EventSource(region.dataset.events);
    // What changed between drawing the page (or losing the stream) and connecting is not rung.
    es.addEventListener('open', refetch);
    es.addEventListener('changed', refetch);
    es.addEventListener('end', () => {
      es.close();
      refetch();
    });
    es.addEventListener('error', () => {
      if (es.readyState !== EventSource.CLOSED) return;
      setInterval(() => {
        if (!document.hidden) refetchRegion(id, src);
      }, 3000);
    });
  }

  onReady(() => {
    const log = document.getElementById('log');
    if (log?.dataset.events) followLog(log);
    for (const region of document.querySelectorAll('[data-refresh]')) refreshRegion(region);
    const followed = document.querySelector('[data-events]:not(#log)');
    if (followed && window.EventSource) followRegion(followed);
    // Ask before actions that change machines.
    document.addEventListener('submit', (e) => {
      const form = e.target;
      const question = form?.getAttribute?.('data-confirm');
      if (question && !window.confirm(question)) e.preventDefault();
    });
  });
})();
