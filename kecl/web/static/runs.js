// Metrics over update cycles, drawn with uPlot: P@1 series on the left axis, held-out loss on the right.
(function () {
  "use strict";
  var el = document.getElementById("plot");
  if (!el) return;
  var d = JSON.parse(document.getElementById("plot-data").textContent);
  var colours = ["#2b6cb0", "#805ad5", "#2f855a", "#b7791f", "#c53030", "#1a202c"];
  var series = [{ label: "run" }];
  d.labels.forEach(function (label, i) {
    var loss = label.indexOf("loss") >= 0;
    series.push({ label: label, stroke: colours[i % colours.length], width: 2, scale: loss ? "loss" : "p",
      dash: loss ? [6, 4] : undefined, points: { show: true }, spanGaps: true });
  });
  var width = Math.min(el.parentElement.clientWidth || 900, 1100);
  var plot = new uPlot({
    width: width, height: 320,
    scales: { x: { time: false }, p: { range: [0, 1] }, loss: {} },
    axes: [{ label: "update run", incrs: [1, 2, 5, 10, 20, 50, 100, 200] }, { scale: "p", label: "P@1" }, { scale: "loss", side: 1, label: "held-out loss", grid: { show: false } }],
    series: series
  }, [d.x].concat(d.ys), el);
  el.setAttribute("data-drawn", String(d.x.length));
  window.addEventListener("resize", function () {
    plot.setSize({ width: Math.min(el.parentElement.clientWidth || 900, 1100), height: 320 });
  });
})();
