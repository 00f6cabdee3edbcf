// The Usage page's charts: requests, tokens and cost per hour or day, stacked by model, drawn with
// the vendored Chart.js (static/vendor/chartjs) from the figures the server put in
// <script id="usage-series" type="application/json"> (inference.selectors.usage_series). Without
// scripts, or if Chart.js did not load, the page keeps showing the same figures as a table.
(function () {
  "use strict";

  const wrap = document.getElementById("usage-charts");
  const table = document.getElementById("usage-table");
  const data = document.getElementById("usage-series");
  if (!wrap || !data || typeof window.Chart === "undefined") return;

  const series = JSON.parse(data.textContent);
  const css = window.getComputedStyle(document.documentElement);
  const color = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  const palette = ["#4f46e5", "#0891b2", "#d97706", "#059669", "#db2777", "#7c3aed", "#65a30d", "#dc2626"];
  const models = Object.keys(series.models);
  // "2026-12-01T10:00:00+00:00" -> "12-01 10:00" per hour, "12-01" per day (UTC, as the server bucketed).
  const labels = series.buckets.map((iso) => (series.per === "hour" ? iso.slice(5, 10) + " " + iso.slice(11, 16) : iso.slice(5, 10)));
  const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
  const dollars = (value) => {
    const amount = Math.abs(Number(value));
    return "$" + Number(value).toFixed(amount === 0 || amount >= 0.01 ? 2 : Math.min(8, 1 - Math.floor(Math.log10(amount))));
  };

  function draw(canvasId, field, format) {
    const canvas = document.getElementById(canvasId);
    if (!canvas) return;
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: labels,
        datasets: models.map((model, i) => ({
          label: model,
          data: series.models[model][field].map(Number),
          backgroundColor: palette[i % palette.length],
          borderRadius: 2,
          stack: "models",
        })),
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: {
          legend: { display: models.length > 0, position: "bottom", labels: { boxWidth: 12, color: color("--muted", "#5f6b7a") } },
          tooltip: {
            callbacks: {
              title: (items) => series.buckets[items[0].dataIndex].slice(0, 16).replace("T", " ") + " UTC",
              // Cost: the exact amount from the server, not the float the bar was drawn from.
              label: (item) =>
                item.dataset.label + ": " + (field === "cost" ? "$" + series.models[item.dataset.label].cost[item.dataIndex] : item.formattedValue),
            },
          },
        },
        scales: {
          x: { stacked: true, grid: { display: false }, ticks: { color: color("--muted", "#5f6b7a"), maxRotation: 0, autoSkip: true } },
          y: {
            stacked: true,
            beginAtZero: true,
            grid: { color: color("--border", "#e1e4e8") },
            // Counts tick at whole numbers; costs are fractions of a cent.
            ticks: { color: color("--muted", "#5f6b7a"), callback: format, maxTicksLimit: 5, precision: field === "cost" ? undefined : 0 },
          },
        },
      },
    });
  }

  wrap.hidden = false;
  if (table) table.open = false; // the table stays one click away
  draw("chart-requests", "requests", (value) => compact.format(value));
  draw("chart-tokens", "tokens", (value) => compact.format(value));
  draw("chart-cost", "cost", dollars);
})();
