/**
 * The dashboard's only script and stylesheet, served from /static/. Kept as strings in a module
 * so that they ship inside the package and the build, with no front-end build step. The script
 * only enhances: following a running deployment's log and state over Server-Sent Events,
 * refreshing live regions, and asking before a rollback. Every page works without it.
 */
export const APP_JS = `'use strict';
(function () {
  function onReady(fn) {
    if (document.readyState !== 'loading') fn();
    else document.addEventListener('DOMContentLoaded', fn);
  }
  onReady(function () {
    // Follow a running deployment: log lines and state changes as they happen.
    var log = document.getElementById('log');
    if (log && log.dataset.events) {
      var after = Number(log.dataset.after || 0);
      var es = new EventSource(log.dataset.events + '?after=' + after);
      var empty = document.getElementById('log-empty');
      es.addEventListener('log', function (e) {
        var d = JSON.parse(e.data);
        var follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
        for (var i = 0; i < d.lines.length; i++) {
          var l = d.lines[i];
          if (l.seq <= after) continue;
          after = l.seq;
          var line = document.createElement('span');
          line.className = 'line';
          line.dataset.seq = String(l.seq);
          line.textContent = l.text + '\\n';
          log.appendChild(line);
        }
        if (empty) empty.hidden = true;
        if (follow) log.scrollTop = log.scrollHeight;
      });
      es.addEventListener('state', function (e) {
        var d = JSON.parse(e.data);
        var state = document.getElementById('state');
        if (state) {
          state.textContent = d.state;
          state.className = 'badge s-' + d.state;
        }
        var step = document.getElementById('step');
        if (step) step.textContent = d.step || '–';
      });
      es.addEventListener('end', function () {
        es.close();
        // The final page shows the timeline, the result and the diff.
        setTimeout(function () { location.reload(); }, 300);
      });
      var live = document.getElementById('live');
      if (live) live.hidden = false;
    }
    // Live regions: refetch the page and swap the region in.
    var regions = document.querySelectorAll('[data-refresh]');
    Array.prototype.forEach.call(regions, function (el) {
      var every = Number(el.getAttribute('data-refresh')) * 1000;
      setInterval(function () {
        if (document.hidden) return;
        fetch(location.href, { credentials: 'same-origin', headers: { Accept: 'text/html' } })
          .then(function (r) { return r.ok ? r.text() : null; })
          .then(function (text) {
            if (!text) return;
            var doc = new DOMParser().parseFromString(text, 'text/html');
            var fresh = doc.getElementById(el.id);
            if (fresh) {
              el.replaceWith(fresh);
              el = fresh;
            }
          })
          .catch(function () {});
      }, every);
    });
    // Ask before actions that change machines.
    document.addEventListener('submit', function (e) {
      var form = e.target;
      var question = form && form.getAttribute && form.getAttribute('data-confirm');
      if (question && !window.confirm(question)) e.preventDefault();
    });
  });
})();
`;

/** The stylesheet: system fonts, one column on phones, tables that scroll sideways. */
export const APP_CSS = `:root{--fg:#1d2430;--muted:#667085;--bg:#fff;--line:#e4e7ec;--accent:#2456d6;--ok:#157f3b;--bad:#b42318;--warn:#b54708;--run:#2456d6;--code:#f6f7f9}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
.top{display:flex;align-items:center;gap:1rem;padding:.6rem 1rem;border-bottom:1px solid var(--line);flex-wrap:wrap}
.brand{font-weight:700;font-size:1.1rem;color:var(--fg)}
.top nav{flex:1}
.signout{display:flex;align-items:center;gap:.5rem;margin:0}
.who{color:var(--muted)}
main{padding:1rem;max-width:1200px;margin:0 auto}
h1{font-size:1.35rem;margin:.2rem 0 1rem}h2{font-size:1.05rem;margin:1.5rem 0 .5rem}
.table-wrap{overflow-x:auto;border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid var(--line);white-space:nowrap;vertical-align:top}
th{font-weight:600;color:var(--muted);background:#fafbfc}
tr:last-child td{border-bottom:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.badge{display:inline-block;padding:.05rem .45rem;border-radius:999px;font-size:12px;font-weight:600;border:1px solid currentColor}
.s-online,.s-succeeded{color:var(--ok)}.s-offline,.s-cancelled,.s-none{color:var(--muted)}
.s-failed{color:var(--bad)}.s-rolled-back{color:var(--warn)}.s-running,.s-pending{color:var(--run)}
.filters{display:flex;gap:.5rem;flex-wrap:wrap;margin-bottom:.75rem}
input,select,button{font:inherit;padding:.35rem .55rem;border:1px solid var(--line);border-radius:5px;background:#fff;color:var(--fg)}
button{cursor:pointer;background:var(--accent);border-color:var(--accent);color:#fff}
button.danger{background:var(--bad);border-color:var(--bad)}
button.plain{background:#fff;color:var(--fg);border-color:var(--line)}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:0 0 1rem}
.facts dt{color:var(--muted)}.facts dd{margin:0;overflow-wrap:anywhere}
pre.log{background:var(--code);border:1px solid var(--line);border-radius:6px;padding:.6rem;max-height:32rem;overflow:auto;white-space:pre-wrap;overflow-wrap:anywhere;font:12.5px/1.4 ui-monospace,Menlo,Consolas,monospace}
.timeline{list-style:none;padding:0;margin:0 0 1rem;border-left:2px solid var(--line)}
.timeline li{padding:.15rem 0 .15rem .8rem;position:relative}
.timeline li:before{content:"";position:absolute;left:-6px;top:.55rem;width:10px;height:10px;border-radius:50%;background:var(--line)}
.timeline li.done:before{background:var(--ok)}.timeline li.bad:before{background:var(--bad)}
.muted{color:var(--muted)}.error{color:var(--bad)}
.login{max-width:26rem;margin:3rem auto}.login label{display:block;margin:.5rem 0 .3rem}.login input{width:100%}
.login button{margin-top:.8rem}
.chg-upgraded{color:var(--ok)}.chg-downgraded{color:var(--warn)}.chg-added{color:var(--accent)}.chg-removed{color:var(--bad)}
.chart{width:100%;max-width:760px;height:auto;border:1px solid var(--line);border-radius:6px;background:#fff}
.chart .axis{stroke:var(--line)}.chart .series{fill:none;stroke:var(--accent);stroke-width:2}
.chart .dot{fill:var(--accent)}.chart text{fill:var(--muted);font-size:11px}
.actions{display:flex;gap:.5rem;flex-wrap:wrap;align-items:center;margin:.5rem 0 1rem}
.actions form{margin:0}
.summary{margin:.5rem 0}
@media (max-width:640px){main{padding:.6rem}.facts{grid-template-columns:1fr}.facts dt{margin-top:.4rem}th.opt,td.opt{display:none}}
`;
