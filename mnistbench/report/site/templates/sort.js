// Every table sorts by a column when its header is clicked (or Enter/Space on it); again: the other way.
// Numbers compare as numbers ("2,300" and "98.91 ± 0.05" by their first number); empty and n/a cells go last.
(function () {
  function key(cell) {
    var text = cell.textContent.trim();
    var m = text.replace(/,/g, "").match(/^[-+\u2212]?\d*\.?\d+(e[-+]?\d+)?/i);
    return m ? {num: parseFloat(m[0].replace("\u2212", "-")), text: text} : {num: null, text: text};
  }
  function compare(a, b) {
    if (a.num !== null && b.num !== null) return a.num - b.num;
    if (a.num !== null) return -1;
    if (b.num !== null) return 1;
    var blank = function (t) { return t === "" || t === "n/a" || t === "\u2014"; };
    if (blank(a.text) !== blank(b.text)) return blank(a.text) ? 1 : -1;
    return a.text.localeCompare(b.text);
  }
  function sortBy(table, th, index) {
    var body = table.tBodies[0];
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var c = compare(key(r1.cells[index]), key(r2.cells[index]));
      return ascending ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  document.querySelectorAll("table").forEach(function (table) {
    if (!table.tHead || !table.tBodies.length || table.tBodies[0].rows.length < 2) return;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.setAttribute("data-sortable", "");
      th.setAttribute("tabindex", "0");
      th.setAttribute("title", "sort by this column");
      th.addEventListener("click", function () { sortBy(table, th, index); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th, index); }
      });
    });
  });
})();
