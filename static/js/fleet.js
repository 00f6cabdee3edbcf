// The Fleet page, live: every "fleet" message from /ws/dashboard/ re-renders the tables and totals.
// The rows built here mirror templates/deployments/_node_row.html and _queue_row.html, so the
// server's first render and the live updates look the same.
(function () {
  "use strict";

  const STALE_AFTER_MS = 5000; // the server pushes every second; silence this long means a dead link
  const MAX_BACKOFF_MS = 30000;

  const live = document.getElementById("fleet-live");
  const nodesWrap = document.getElementById("fleet-nodes");
  const queuesWrap = document.getElementById("fleet-queues");
  if (!live || !nodesWrap || !queuesWrap) return;
  const nodesBody = nodesWrap.querySelector("tbody");
  const queuesBody = queuesWrap.querySelector("tbody");
  const revokeUrl = nodesWrap.querySelector("table").dataset.revokeUrl; // ends in /0/revoke/

  // --- Rendering -------------------------------------------------------------------------------

  // el("td", {class: "num"}, "3"): children are nodes or strings (set as text, never as HTML).
  function el(tag, attrs, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) element.setAttribute(name, value);
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) element.append(child);
    }
    return element;
  }

  // Meters carry their fill in data-fill: the Content-Security-Policy refuses style attributes, not
  // styles set through the DOM.
  function fillMeters(root) {
    for (const meter of root.querySelectorAll(".meter-fill[data-fill]")) {
      meter.style.width = Math.max(0, Math.min(100, Number(meter.dataset.fill) || 0)) + "%";
    }
  }

  const known = (value) => value !== null && value !== undefined;
  // As Django's floatformat:"-1": one decimal, none when whole (75.5, 80).
  const oneDecimal = (value) => String(Math.round(value * 10) / 10);
  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, ...children) {
    const element = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) element.setAttribute(name, value);
    for (const child of children) element.append(child);
    return element;
  }

  function heartbeatText(iso) {
    return iso.slice(0, 10) + " " + iso.slice(11, 19);
  }

  function gpuBlock(gpu) {
    const util = known(gpu.utilization) ? Math.round(gpu.utilization) : null;
    let figures = (known(gpu.memory_used_gb) ? oneDecimal(gpu.memory_used_gb) : "—") + " / ";
    figures += (known(gpu.memory_total_gb) ? oneDecimal(gpu.memory_total_gb) : "—") + " GB";
    if (known(gpu.temperature_c)) figures += " · " + gpu.temperature_c + " °C";
    return el(
      "div",
      { class: "gpu" },
      el(
        "div",
        { class: "gpu-head" },
        el("span", { class: "gpu-name" }, "GPU " + gpu.index + " · " + gpu.name),
        " ",
        el("span", { class: "gpu-util" }, util === null ? "—" : util + "%")
      ),
      el(
        "div",
        { class: "meter", "aria-hidden": "true" },
        el("span", { class: "meter-fill", "data-fill": util === null ? 0 : util })
      ),
      el("div", { class: "gpu-figures muted small" }, figures)
    );
  }

  // Mirrors the reliability cell of _node_row.html.
  function reliabilityCell(r) {
    const title = (r.jobs_lost || 0) + " lost, " + (r.jobs_failed || 0) + " failed of " + (r.jobs_served || 0) +
      " served; " + (r.verification_strikes || 0) + " strikes";
    return el(
      "td",
      { class: "num nowrap", "data-reliability": r.score, title: title },
      el("span", { class: r.placeable ? "reliability" : "reliability reliability-low" }, Math.round(r.score * 100) + "%"),
      r.placeable ? null : [" ", el("span", { class: "muted small" }, "no new replicas")]
    );
  }

  // Requests and tokens per second over the last minute, and a bar per minute of tokens for the
  // last 15 minutes (levels computed by deployments.selectors.node_throughput).
  function throughputCell(throughput) {
    const rate = (value, digits) => String(Number(value.toFixed(digits)));
    const bars = throughput.history.map((minute, i) =>
      svg(
        "rect",
        { x: i + ".1", y: minute.y, width: "0.8", height: minute.level },
        svg("title", {}, minute.requests + " requests, " + minute.tokens + " tokens")
      )
    );
    return el(
      "td",
      { class: "throughput" },
      el(
        "div",
        { class: "nowrap" },
        el("span", { class: "rate", "data-rate": "requests" }, rate(throughput.requests_per_second, 2)),
        " req/s · ",
        el("span", { class: "rate", "data-rate": "tokens" }, rate(throughput.tokens_per_second, 1)),
        " tok/s"
      ),
      svg(
        "svg",
        {
          class: "spark",
          viewBox: "0 0 15 20",
          preserveAspectRatio: "none",
          role: "img",
          "aria-label": "Tokens generated per minute, the last 15 minutes",
        },
        ...bars
      )
    );
  }

  function replicasCell(replicas) {
    if (!replicas || !replicas.length) return el("td", {}, el("span", { class: "muted" }, "none"));
    return el(
      "td",
      {},
      el(
        "ul",
        { class: "replicas node-replicas" },
        replicas.map((replica) =>
          el(
            "li",
            { class: "replica" },
            el("span", { class: "state state-" + replica.state }, replica.state),
            " ",
            el("span", { class: "replica-node" }, replica.deployment),
            " ",
            el(
              "span",
              { class: "muted" },
              (replica.gpus && replica.gpus.length ? "GPU " + replica.gpus.join("+") + " · " : "") +
                oneDecimal(replica.memory_gb || 0) + " GB"
            )
          )
        )
      )
    );
  }

  function nodeRow(node) {
    const inactive = node.status === "offline" || node.status === "left";
    const gpus = node.gpus && node.gpus.length ? node.gpus.map(gpuBlock) : el("span", { class: "muted" }, "none reported");
    return el(
      "tr",
      { "data-node-id": node.id, class: inactive ? "row-inactive" : null },
      el(
        "td",
        {},
        el("div", { class: "node-name" }, node.name),
        el("div", { class: "muted small" }, (node.host || "unknown host") + " · " + node.engine)
      ),
      el("td", {}, el("span", { class: "state state-" + node.status }, node.status)),
      el("td", { class: "num" }, String(node.slots)),
      el("td", { class: "num" }, String(node.in_flight)),
      reliabilityCell(node.reliability || { score: 1, placeable: true }),
      throughputCell(node.throughput),
      replicasCell(node.replicas),
      el("td", { class: "gpus" }, gpus),
      el(
        "td",
        { class: "nowrap" },
        node.last_heartbeat_at
          ? el("time", { datetime: node.last_heartbeat_at }, heartbeatText(node.last_heartbeat_at))
          : el("span", { class: "muted" }, "never")
      ),
      el(
        "td",
        { class: "actions-cell" },
        node.credential_revoked
          ? el("span", { class: "muted nowrap" }, "credential revoked")
          : el(
              "a",
              { class: "link-danger nowrap", href: revokeUrl.replace("/0/revoke/", "/" + node.id + "/revoke/") },
              "Revoke credential"
            )
      )
    );
  }

  function queueRow(queue) {
    return el(
      "tr",
      {},
      el("td", {}, queue.deployment),
      el("td", {}, queue.model),
      el("td", {}, el("code", {}, queue.queue)),
      el("td", { class: "num" }, el("span", { class: queue.waiting ? "waiting waiting-some" : "waiting" }, String(queue.waiting)))
    );
  }

  // The same figures as deployments.views.fleet_totals.
  function totals(snapshot) {
    const serving = snapshot.nodes.filter((n) => n.status === "online" || n.status === "draining");
    const sum = (items, key) => items.reduce((total, item) => total + (item[key] || 0), 0);
    return {
      online: snapshot.nodes.filter((n) => n.status === "online").length,
      nodes: snapshot.nodes.length,
      in_flight: sum(serving, "in_flight"),
      slots: sum(serving, "slots"),
      waiting: sum(snapshot.queues, "waiting"),
    };
  }

  const hints = document.getElementById("fleet-hints");

  function hintItem(hint) {
    return el(
      "p",
      { class: "message message-warning fleet-hint" },
      hint.message + " ",
      el("a", { href: hints.dataset.deploymentsUrl }, "Deployments")
    );
  }

  function render(snapshot) {
    if (hints) hints.replaceChildren(...(snapshot.hints || []).map(hintItem));
    nodesBody.replaceChildren(...snapshot.nodes.map(nodeRow));
    fillMeters(nodesBody);
    nodesWrap.hidden = snapshot.nodes.length === 0;
    document.getElementById("fleet-nodes-empty").hidden = snapshot.nodes.length > 0;

    queuesBody.replaceChildren(...snapshot.queues.map(queueRow));
    queuesWrap.hidden = snapshot.queues.length === 0;
    document.getElementById("fleet-queues-empty").hidden = snapshot.queues.length > 0;

    for (const [name, value] of Object.entries(totals(snapshot))) {
      const target = document.querySelector('[data-total="' + name + '"]');
      if (target) target.textContent = String(value);
    }
  }

  // --- The connection --------------------------------------------------------------------------

  const LABELS = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…" };

  const stats = document.querySelector(".stats");

  function setState(state, detail) {
    live.dataset.state = state;
    // Dim what is shown while it may be out of date.
    for (const part of [stats, nodesWrap, queuesWrap]) {
      if (part) part.classList.toggle("is-stale", state === "reconnecting");
    }
    live.querySelector(".live-label").textContent = LABELS[state];
    live.title = detail || "Updates arrive every second over a WebSocket.";
  }

  let socket = null;
  let attempt = 0;
  let watchdog = null;

  function armWatchdog() {
    window.clearTimeout(watchdog);
    watchdog = window.setTimeout(function () {
      if (socket) socket.close(); // onclose schedules the reconnection
    }, STALE_AFTER_MS);
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(scheme + "//" + window.location.host + "/ws/dashboard/");
    armWatchdog();

    socket.onmessage = function (event) {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      if (message.type !== "fleet") return;
      render(message);
      attempt = 0;
      setState("live");
      armWatchdog();
    };

    socket.onclose = function () {
      window.clearTimeout(watchdog);
      socket = null;
      // Exponential backoff with jitter, so that many open dashboards do not reconnect in step.
      const delay = Math.min(1000 * 2 ** attempt, MAX_BACKOFF_MS) * (0.75 + Math.random() * 0.5);
      attempt += 1;
      setState("reconnecting", "Lost the connection; trying again in " + Math.round(delay / 1000) + " s. " +
        "If this lasts, reload the page: you may have been logged out.");
      window.setTimeout(connect, delay);
    };
  }

  fillMeters(nodesBody);
  connect();
})();
