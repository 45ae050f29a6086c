// The dashboard's only script, served as /static/app.js (a classic script, deferred). It only
// enhances: following a running deployment's log and state over Server-Sent Events, refreshing
// live regions, and asking before a rollback. Every page works without it.
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

  /** Refetches the page every `data-refresh` seconds and swaps the region in. */
  function refreshRegion(region) {
    let el = region;
    const every = Number(el.getAttribute('data-refresh')) * 1000;
    setInterval(() => {
      if (document.hidden) return;
      fetch(location.href, { credentials: 'same-origin', headers: { Accept: 'text/html' } })
        .then((r) => (r.ok ? r.text() : null))
        .then((text) => {
          if (!text) return;
          const doc = new DOMParser().parseFromString(text, 'text/html');
          const fresh = doc.getElementById(el.id);
          if (fresh) {
            el.replaceWith(fresh);
            el = fresh;
          }
        })
        .catch(() => {});
    }, every);
  }

  onReady(() => {
    const log = document.getElementById('log');
    if (log?.dataset.events) followLog(log);
    for (const region of document.querySelectorAll('[data-refresh]')) refreshRegion(region);
    // Ask before actions that change machines.
    document.addEventListener('submit', (e) => {
      const form = e.target;
      const question = form?.getAttribute?.('data-confirm');
      if (question && !window.confirm(question)) e.preventDefault();
    });
  });
})();
