// The neighbourhood graph: Cytoscape.js over the elements the server embedded in the page.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("graph-data").textContent);
  var cy = cytoscape({
    container: document.getElementById("cy"),
    elements: data.elements,
    wheelSensitivity: 0.3,
    style: [
      { selector: "node", style: { label: "data(label)", "background-color": "#2b6cb0", color: "#1a202c",
        "font-size": 11, "text-valign": "bottom", "text-margin-y": 4, width: 18, height: 18 } },
      { selector: "node[!entity]", style: { shape: "round-rectangle", "background-color": "#718096" } },
      { selector: "node#" + data.centre, style: { "background-color": "#c05621", width: 28, height: 28 } },
      { selector: "edge", style: { label: "data(label)", "font-size": 9, color: "#4a5568", width: 1.5,
        "curve-style": "bezier", "target-arrow-shape": "triangle", "line-color": "#a0aec0",
        "target-arrow-color": "#a0aec0", "text-rotation": "autorotate", "text-background-color": "#fff",
        "text-background-opacity": 0.8 } }
    ],
    layout: { name: "cose", animate: false, randomize: false, nodeRepulsion: 8000, idealEdgeLength: 90 }
  });
  cy.on("tap", "node", function (ev) {
    var entity = ev.target.data("entity");
    if (entity === null || entity === undefined) return;
    window.location.href = "/entity/" + encodeURIComponent(entity) + (data.as_of ? "?as_of=" + encodeURIComponent(data.as_of) : "");
  });
  window.keclGraph = cy; // for the end-to-end test and the console
})();
