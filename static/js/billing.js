// Money per day for 30 days as a bar chart: the Billing page's spend and the Host page's
// earnings. Drawn with the vendored Chart.js (static/vendor/chartjs) in each
// <div data-daily-chart="ID"> from the figures the server put in <script id="ID-data">, folding
// <details id="ID-table"> away; the bars' label is the div's data-label. Without scripts, or if
// Chart.js did not load, the page keeps showing the same figures as that table.
(function () {
  "use strict";

  if (typeof window.Chart === "undefined") return;
  document.querySelectorAll("[data-daily-chart]").forEach(draw);

  function draw(wrap) {
    const id = wrap.dataset.dailyChart;
    const table = document.getElementById(id + "-table");
    const data = document.getElementById(id + "-data");
    if (!data) return;

    const rows = JSON.parse(data.textContent); // [{day: "2026-11-02", usd: "0.50"}, …], oldest first
    const css = window.getComputedStyle(document.documentElement);
    const color = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    const dollars = (value) => "$" + Number(value).toFixed(Math.abs(value) > 0 && Math.abs(value) < 0.01 ? 4 : 2);

    wrap.hidden = false;
    if (table) table.open = false; // the table stays one click away
    new window.Chart(wrap.querySelector("canvas"), {
      type: "bar",
      data: {
        labels: rows.map((row) => row.day.slice(5)), // MM-DD
        datasets: [
          {
            label: wrap.dataset.label,
            data: rows.map((row) => Number(row.usd)),
            backgroundColor: color("--accent", "#4f46e5"),
            hoverBackgroundColor: color("--accent-dark", "#4338ca"),
            borderRadius: 2,
          },
        ],
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              // The exact amount from the server, not the float the bar was drawn from.
              title: (items) => rows[items[0].dataIndex].day,
              label: (item) => "$" + rows[item.dataIndex].usd,
            },
          },
        },
        scales: {
          x: { grid: { display: false }, ticks: { color: color("--muted", "#5f6b7a"), maxRotation: 0, autoSkip: true } },
          y: {
            beginAtZero: true,
            grid: { color: color("--border", "#e1e4e8") },
            ticks: { color: color("--muted", "#5f6b7a"), callback: dollars, maxTicksLimit: 5 },
          },
        },
      },
    });
  }
})();
