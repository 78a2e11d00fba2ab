// The overview chart (uPlot) redrawn from the JSON that each live refresh (htmx) brings; select-all boxes.
(function () {
  "use strict";
  var chart = null;
  var COLORS = { applied: "#1f8a4c", skipped: "#b7791f", dead_lettered: "#c0392b" };

  function readData() {
    var node = document.getElementById("chart-data");
    if (!node) { return null; }
    var d = JSON.parse(node.textContent);
    return [d.t, d.applied, d.skipped, d.dead_lettered];
  }

  function draw() {
    var box = document.getElementById("chart");
    var data = readData();
    if (!box || !data || typeof uPlot === "undefined") { return; }
    if (chart) { chart.setData(data); return; }
    var series = [{}];
    ["applied", "skipped", "dead_lettered"].forEach(function (name) {
      series.push({ label: name.replace("_", "-") + "/min", stroke: COLORS[name], width: 2, points: { show: false } });
    });
    chart = new uPlot({
      width: Math.max(320, box.clientWidth), height: 240, series: series,
      scales: { x: { time: true } }, axes: [{}, { label: "per minute" }],
    }, data, box);
    window.addEventListener("resize", function () { chart.setSize({ width: Math.max(320, box.clientWidth), height: 240 }); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    draw();
    var all = document.getElementById("select-all");
    if (all) {
      all.addEventListener("change", function () {
        document.querySelectorAll("#selection input[name=id]").forEach(function (box) { box.checked = all.checked; });
      });
    }
  });
  document.addEventListener("htmx:afterSettle", draw);
})();
