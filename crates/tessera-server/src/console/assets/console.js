// Tessera console: draws the charts of a page with uPlot and sizes its bars.
// Data come from JSON blocks of the page itself; nothing is fetched.
(function () {
  "use strict";
  var palette = ["#2b6cb0", "#38a169", "#d69e2e", "#805ad5", "#c53030", "#319795", "#dd6b20", "#4a5568"];

  function sizeBars() {
    var bars = document.querySelectorAll("span.bar[data-share]");
    for (var i = 0; i < bars.length; i++) {
      var share = parseFloat(bars[i].getAttribute("data-share")) || 0;
      bars[i].style.width = Math.max(0, Math.min(1, share)) * 10 + "rem";
    }
  }

  function drawChart(el) {
    var source = document.getElementById(el.getAttribute("data-source"));
    if (!source || typeof uPlot === "undefined") { return; }
    var data = JSON.parse(source.textContent);
    if (!data.x || data.x.length === 0) {
      el.textContent = "No data yet.";
      el.classList.add("empty");
      return;
    }
    var points = el.getAttribute("data-kind") === "points";
    var series = [{}];
    var columns = [data.x];
    (data.series || []).forEach(function (s, i) {
      series.push({
        label: s.label,
        stroke: palette[i % palette.length],
        width: 2,
        points: { show: points || data.x.length < 3 }
      });
      columns.push(s.values);
    });
    var width = Math.max(300, el.clientWidth - 10);
    var chart = new uPlot({
      width: width,
      height: 240,
      scales: { x: { time: !!data.time } },
      series: series,
      axes: [{}, { size: 60 }]
    }, columns, el);
    el.setAttribute("data-points", String(data.x.length));
    el.uplot = chart;
  }

  function start() {
    sizeBars();
    var charts = document.querySelectorAll("div.chart[data-source]");
    for (var i = 0; i < charts.length; i++) { drawChart(charts[i]); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
