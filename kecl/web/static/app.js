// Keyboard navigation of result lists: ↑/↓ or j/k move between results, Enter follows the link.
(function () {
  "use strict";
  document.addEventListener("keydown", function (ev) {
    var tag = (ev.target && ev.target.tagName) || "";
    var typing = tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT";
    var links = Array.prototype.slice.call(document.querySelectorAll("a.result"));
    if (!links.length) return;
    var down = ev.key === "ArrowDown" || (!typing && ev.key === "j");
    var up = ev.key === "ArrowUp" || (!typing && ev.key === "k");
    if (!down && !up) return;
    if (typing && tag !== "INPUT") return;
    var i = links.indexOf(document.activeElement);
    var next = down ? Math.min(i + 1, links.length - 1) : Math.max(i - 1, 0);
    links[next].focus();
    ev.preventDefault();
  });
})();
