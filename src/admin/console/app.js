// pullsecret console: progressive touches only; every page works without this file.
(function () {
  "use strict";
  document.documentElement.dataset.js = "on";

  // Byte counts as KiB/MiB/GiB; the exact figure stays in the title.
  var units = ["B", "KiB", "MiB", "GiB", "TiB"];
  function bytes(el) {
    var n = Number(el.textContent);
    if (el.textContent === "" || !isFinite(n)) return;
    var i = 0, v = n;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    el.title = n + " bytes";
    el.textContent = (i === 0 ? String(v) : v.toFixed(1)) + " " + units[i];
  }
  document.querySelectorAll("[data-bytes]").forEach(bytes);

  // Creation times in the reader's own time zone.
  document.querySelectorAll("[data-unix]").forEach(function (el) {
    var t = Number(el.dataset.unix);
    if (t > 0) el.textContent = new Date(t * 1000).toLocaleString();
  });

  // A form is sent once: its button is disabled after the first submit.
  document.querySelectorAll("form").forEach(function (form) {
    form.addEventListener("submit", function () {
      form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
    });
  });

  // Recent pulls, live: each pull the proxy serves is prepended (text only, never HTML).
  var live = document.getElementById("pulls-body");
  if (live && window.EventSource) {
    var state = document.getElementById("live-state");
    var source = new EventSource(live.dataset.live);
    source.addEventListener("open", function () {
      live.dataset.state = "open";
      if (state) state.textContent = "Newest first; live.";
    });
    source.addEventListener("error", function () {
      live.dataset.state = "closed";
      if (state) state.textContent = "Newest first; the live view is disconnected (reload to retry).";
    });
    source.addEventListener("pull", function (ev) {
      var p;
      try { p = JSON.parse(ev.data); } catch (e) { return; }
      var tr = document.createElement("tr");
      tr.className = "pull live";
      [p.time, p.namespace, p.image, p.reference, p.kind, p.status, p.bytes, p.cache, p.duration_ms]
        .forEach(function (v, i) {
          var td = document.createElement("td");
          td.textContent = v === undefined || v === null ? "" : String(v);
          if (i === 6) { td.dataset.bytes = ""; bytes(td); }
          tr.appendChild(td);
        });
      live.insertBefore(tr, live.firstChild);
      while (live.rows.length > 200) live.deleteRow(live.rows.length - 1);
    });
  }
})();
