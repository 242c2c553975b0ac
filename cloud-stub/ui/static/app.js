// The dashboard's own script: sends the session's CSRF token with every htmx request and draws the
// device page's charts with uPlot from the JSON the server put in the page. Everything else is server-side.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  document.addEventListener("htmx:configRequest", function (event) {
    if (meta) { event.detail.headers["X-CSRF-Token"] = meta.content; }
  });

  var COLOURS = ["#0a58ca", "#b3261e", "#116329", "#8250df", "#9a6700", "#1b7c83"];

  function draw(figure) {
    var holder = figure.querySelector(".plot");
    var source = figure.querySelector("script.chart-data");
    if (!holder || !source || holder.dataset.drawn) { return; }
    var chart = JSON.parse(source.textContent);
    var data = [chart.x];
    var series = [{}];
    chart.series.forEach(function (s, i) {
      data.push(s.values);
      series.push({ label: s.label, stroke: COLOURS[i % COLOURS.length], width: 2, spanGaps: true,
                    points: { show: true, size: 4 } });
    });
    var width = Math.max(300, holder.clientWidth || 400);
    new uPlot({ width: width, height: 200, series: series, axes: [{}, { label: chart.unit }] }, data, holder);
    holder.dataset.drawn = "1";
  }

  function drawAll() {
    if (typeof uPlot === "undefined") { return; }
    document.querySelectorAll("figure.chart").forEach(draw);
  }

  document.addEventListener("DOMContentLoaded", drawAll);
  document.addEventListener("htmx:afterSettle", drawAll);
})();
