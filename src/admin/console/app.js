// pullsecret console: progressive touches only; every page works without this file.
(function () {
  "use strict";
  document.documentElement.dataset.js = "on";

  // Byte counts as KiB/MiB/GiB; the exact figure stays in the title.
  var units = ["B", "KiB", "MiB", "GiB", "TiB"];
  document.querySelectorAll("[data-bytes]").forEach(function (el) {
    var n = Number(el.textContent);
    if (!isFinite(n)) return;
    var i = 0, v = n;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    el.title = n + " bytes";
    el.textContent = (i === 0 ? String(v) : v.toFixed(1)) + " " + units[i];
  });

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
})();
