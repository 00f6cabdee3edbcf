// The Deployments page, kept current: while a deployment is on its way somewhere (pending,
// scheduling, starting, stopping), fetch the page again every few seconds and swap in its totals
// and table. It waits while the operator is typing in the table, and stops once all is settled.
(function () {
  "use strict";

  const INTERVAL_MS = 3000;
  const UNSETTLED = ["pending", "scheduling", "starting", "stopping"];

  function unsettled(root) {
    return Array.from(root.querySelectorAll("tbody.deployment")).some(function (row) {
      return UNSETTLED.indexOf(row.dataset.status) !== -1;
    });
  }

  function swap(fresh, selector) {
    const current = document.querySelector(selector);
    const replacement = fresh.querySelector(selector);
    if (current && replacement) current.replaceWith(document.importNode(replacement, true));
  }

  function refresh() {
    const table = document.getElementById("deployments-table");
    // Not while a scale error is shown in the table: a fresh copy would drop it.
    if (!table || !unsettled(document) || table.querySelector(".errorlist")) return;
    if (document.hidden || table.contains(document.activeElement)) {
      window.setTimeout(refresh, INTERVAL_MS);
      return;
    }
    fetch(window.location.pathname, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok || response.redirected) throw new Error("status " + response.status);
        return response.text();
      })
      .then(function (html) {
        const fresh = new DOMParser().parseFromString(html, "text/html");
        const busy = document.getElementById("deployments-table");
        if (busy && busy.contains(document.activeElement)) return; // typing began meanwhile
        swap(fresh, ".stats");
        swap(fresh, "#deployments-table");
      })
      .catch(function () { /* try again at the next tick */ })
      .finally(function () { window.setTimeout(refresh, INTERVAL_MS); });
  }

  window.setTimeout(refresh, INTERVAL_MS);
})();
