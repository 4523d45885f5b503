// The admin dashboard: fetches its data (admin/dashboard/data/) at once, then again every few seconds, and draws it.
(function () {
  "use strict";
  const root = document.getElementById("dashboard");
  const COLORS = { SUCCESS: "#2e7d32", FAILED: "#c62828", CANCELLED: "#9e9e9e" };
  const charts = {};

  function minuteLabel(iso) {
    const date = new Date(iso);
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function seconds(value) {
    if (value < 1) return (value * 1000).toFixed(0) + " ms";
    if (value < 60) return value.toFixed(1) + " s";
    return (value / 60).toFixed(1) + " min";
  }

  function percent(value) {
    return value === null ? "no jobs finished" : (value * 100).toFixed(1) + " %";
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    if (text instanceof Node) td.appendChild(text); else td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
  }

  function throughput(canvasId, part, stacked) {
    const datasets = Object.keys(part.series).map(function (status) {
      return {
        label: status, data: part.series[status], backgroundColor: COLORS[status], borderColor: COLORS[status],
        pointRadius: 0, borderWidth: stacked ? 0 : 1.5, fill: false,
      };
    });
    const data = { labels: part.minutes.map(minuteLabel), datasets: datasets };
    if (charts[canvasId]) {
      charts[canvasId].data = data;
      charts[canvasId].update("none");
      return;
    }
    charts[canvasId] = new Chart(document.getElementById(canvasId), {
      type: stacked ? "bar" : "line",
      data: data,
      options: {
        animation: false, maintainAspectRatio: false, interaction: { mode: "index", intersect: false },
        scales: { x: { stacked: stacked, ticks: { maxTicksLimit: 12 } }, y: { stacked: stacked, beginAtZero: true } },
      },
    });
  }

  function queues(broker) {
    const data = {
      labels: broker.queues.map(function (q) { return q.name; }),
      datasets: [
        { label: "messages ready", data: broker.queues.map(function (q) { return q.messages; }), backgroundColor: "#1565c0" },
        { label: "consumers", data: broker.queues.map(function (q) { return q.consumers; }), backgroundColor: "#ffa000" },
      ],
    };
    if (charts.queues) {
      charts.queues.data = data;
      charts.queues.update("none");
      return;
    }
    charts.queues = new Chart(document.getElementById("chart-queues"), {
      type: "bar", data: data,
      options: { animation: false, maintainAspectRatio: false, scales: { y: { beginAtZero: true } } },
    });
  }

  function render(data) {
    document.getElementById("dashboard-updated").textContent = new Date(data.generated_at).toLocaleString();
    const broker = document.getElementById("card-broker");
    broker.textContent = data.broker.up ? "reachable" : "unreachable";
    broker.className = data.broker.up ? "" : "dashboard-bad";
    document.getElementById("card-workers").textContent =
      data.workers.reached ? String(data.workers.names.length) : "unknown (no ping)";
    document.getElementById("card-failures").textContent =
      "hour " + percent(data.failure_rate.hour) + " · day " + percent(data.failure_rate.day);
    const totals = data.projects.reduce(function (sum, p) {
      return { running: sum.running + p.running, waiting: sum.waiting + p.waiting };
    }, { running: 0, waiting: 0 });
    document.getElementById("card-now").textContent =
      totals.running + " running · " + totals.waiting + " waiting (busiest projects)";

    throughput("chart-hour", data.throughput.hour, true);
    throughput("chart-day", data.throughput.day, false);
    queues(data.broker);

    const timings = document.querySelector("#table-timings tbody");
    timings.replaceChildren();
    data.timings.forEach(function (t) {
      const row = document.createElement("tr");
      cell(row, t.job_type);
      cell(row, String(t.count), "number");
      [t.wait_p50, t.wait_p95, t.run_p50, t.run_p95].forEach(function (v) { cell(row, seconds(v), "number"); });
      timings.appendChild(row);
    });

    const projects = document.querySelector("#table-projects tbody");
    projects.replaceChildren();
    data.projects.forEach(function (p) {
      const row = document.createElement("tr");
      const link = document.createElement("a");
      link.href = root.dataset.jobsUrl + "?project__id__exact=" + encodeURIComponent(p.project_id);
      link.textContent = p.project;
      cell(row, link);
      [p.running, p.waiting, p.retrying, p.failed].forEach(function (v) { cell(row, String(v), "number"); });
      projects.appendChild(row);
    });

    const workers = document.getElementById("list-workers");
    workers.replaceChildren();
    data.workers.names.forEach(function (name) {
      const item = document.createElement("li");
      item.textContent = name;
      workers.appendChild(item);
    });
  }

  function refresh() {
    fetch(root.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { if (!response.ok) throw new Error(response.status); return response.json(); })
      .then(render)
      .catch(function () { document.getElementById("dashboard-updated").textContent += " (refresh failed)"; });
  }

  refresh();
  setInterval(refresh, 1000 * Number(root.dataset.refreshSeconds || 10));
})();
