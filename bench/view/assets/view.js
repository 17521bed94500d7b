// bench view: the item browser. Every text from the run (prompts, answers, references, judge replies, names) is
// put into the page with textContent, never parsed as HTML. Items are rendered from the embedded JSON in chunks:
// the first ones at once, the rest in later tasks, so a large run is usable before it is all in the page.
(function () {
  "use strict";
  var FIRST = 30, CHUNK = 60;
  var data = JSON.parse(document.getElementById("bench-data").textContent);
  var cols = data.columns, items = data.items, tasks = {}, colIndex = {};
  data.tasks.forEach(function (t) { tasks[t.name] = t; });
  cols.forEach(function (c, i) { colIndex[c.key] = i; });
  var compared = cols.filter(function (c) { return c.baseline; });
  var severalRuns = cols.some(function (c) { return c.run !== cols[0].run; });
  // A page shows every item when the run has at most ALL_CELLS answers (items x variants); else PER_PAGE items
  // (laying out 805 x 8 answers at once takes seconds). "?per-page=all" (or a number) in the URL overrides it.
  var ALL_CELLS = 3000, PER_PAGE = 50;
  var asked = new URLSearchParams(location.search).get("per-page");
  var state = { task: "", category: "", disagree: false, failed: false, dirty: "", query: "", sort: "file",
                sortCol: compared.length ? compared[0].key : "", hidden: {}, page: 0,
                perPage: asked === "all" ? 0 : asked && Number(asked) > 0 ? Math.floor(Number(asked))
                  : items.length * Math.max(cols.length, 1) <= ALL_CELLS ? 0 : PER_PAGE };
  var cache = new Map(), haystacks = new Map(), anchors = new Map(), current = [], token = 0, firstPainted = false,
    allMarked = false;

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function fmt(v) { return v === null || v === undefined ? "\u2014" : Number(v).toFixed(2); }
  function fmtDiff(v) { return v === null || v === undefined ? "\u2014" : (v >= 0 ? "+" : "") + v.toFixed(2); }
  function colLabel(c) { return severalRuns ? c.run + " \u00b7 " + c.label : c.label; }
  function anchorOf(it) { return "item=" + encodeURIComponent(it.task) + "/" + encodeURIComponent(it.id); }
  items.forEach(function (it, i) { anchors.set(anchorOf(it), i); });

  function box(label, text, cls) {
    var b = el("div", "box " + cls);
    b.appendChild(el("div", "label", label));
    b.appendChild(el("pre", null, text));
    return b;
  }

  function verdictEl(v, key) {
    var d = el("div", "verdict" + (v.failed ? " failed" : ""));
    d.dataset.of = key;
    d.dataset.turn = String(v.turn + 1);
    d.dataset.repeat = String(v.repeat);
    if (v.score !== undefined && v.score !== null) d.dataset.score = String(v.score);
    var head = (v.judge ? "judge " + v.judge + " \u00b7 " : "") + "repeat " + (v.repeat + 1) + " \u00b7 score " +
      fmt(v.score) + (v.form ? " \u00b7 " + v.form : "") +
      (v.swapped === undefined ? "" : " \u00b7 answer order " + (v.swapped ? "swapped" : "as asked")) +
      (v.failed ? " \u00b7 FAILED" + (v.failure ? " (" + v.failure + ")" : "") : "");
    d.appendChild(el("div", "vhead", head));
    var text = v.text !== undefined && v.text !== null ? v.text : (v.error || "(no reply)");
    var pre = el("pre", "verdict-text", text);
    d.appendChild(pre);
    if (v.failed && v.error && v.text) d.appendChild(el("pre", "verdict-error", v.error));
    return d;
  }

  // One grid per item: a column per shown variant, four rows per turn (prompt and reference across the row, then
  // each variant's head, answer and verdicts). Each variant's answers of every turn sit in one element carrying
  // data-variant (display: contents, so they still take their places in the grid): one element per variant per
  // item, whose text is exactly its answer (its answers, one per turn, for multi-turn items).
  function place(e, row, col) {
    e.style.gridRow = String(row);
    e.style.gridColumn = col === 0 ? "1 / -1" : String(col);
    return e;
  }

  function renderItem(idx) {
    var it = items[idx], task = tasks[it.task] || {}, unit = task.unit || "";
    var shown = cols.filter(function (c) { return !state.hidden[c.key]; });
    var art = el("article", "item");
    art.dataset.task = it.task;
    art.dataset.item = it.id;
    art.id = anchorOf(it);
    if (it.category !== undefined && it.category !== null) art.dataset.category = it.category;
    var head = el("header", "item-head");
    var a = el("a", "anchor", it.task + " / " + it.id);
    a.href = "#" + anchorOf(it);
    a.title = "link to this item";
    head.appendChild(a);
    if (it.category !== undefined && it.category !== null) head.appendChild(el("span", "badge cat", it.category));
    if (it.failed) head.appendChild(el("span", "badge fail", "judge failed"));
    if (it.dirty === true) head.appendChild(el("span", "badge dirty", "dirty: in the training data"));
    if (it.disagree) head.appendChild(el("span", "badge dis", "variants disagree"));
    if ((task.n_turns || 1) > 1) {  // the item's value: the mean over its turns, as the tables average them
      cols.forEach(function (c) {
        var cell = it.cells[c.key];
        if (!cell || cell.score === undefined || cell.score === null) return;
        var sc = el("span", "score", colLabel(c) + ": " + fmt(cell.score) + unit);
        sc.dataset.scoreOf = c.key;
        head.appendChild(sc);
      });
    }
    compared.forEach(function (c) {
      var d = it.diff[c.key];
      if (d === undefined) return;
      var sp = el("span", "diff " + (d > 0 ? "pos" : d < 0 ? "neg" : ""),
                  colLabel(c) + " \u2212 " + colLabel(cols[colIndex[c.baseline]]) + ": " + fmtDiff(d) + unit);
      sp.dataset.diffOf = c.key;
      sp.dataset.diff = String(d);
      head.appendChild(sp);
    });
    art.appendChild(head);
    if (it.system) art.appendChild(box("System prompt", it.system, "system"));
    var nTurns = it.turns.length;
    cols.forEach(function (c) {
      var cell = it.cells[c.key];
      if (cell) nTurns = Math.max(nTurns, cell.answers.length);
    });
    nTurns = Math.max(nTurns, 1);
    var grid = el("div", "sheet");
    grid.style.gridTemplateColumns = "repeat(" + Math.max(shown.length, 1) + ", minmax(280px, 1fr))";
    for (var t = 0; t < nTurns; t++) {
      var turn = it.turns[t] || {}, row = 1 + 4 * t;
      var top = place(el("div", "turn-top"), row, 0);
      top.dataset.turn = String(t + 1);
      top.appendChild(box(nTurns > 1 ? "Prompt, turn " + (t + 1) : "Prompt",
                          turn.prompt !== undefined && turn.prompt !== null ? turn.prompt
                            : "(the prompt is not recorded in this run's generations)", "prompt"));
      if (t === 0 && it.choices) {
        var ol = el("ol", "choices");
        ol.start = 0;
        it.choices.forEach(function (ch, k) {
          var right = k === it.answer;
          ol.appendChild(el("li", right ? "correct" : null, ch + (right ? "   \u2190 correct" : "")));
        });
        var cb = el("div", "box choices-box");
        cb.appendChild(el("div", "label", "Options (0-based)"));
        cb.appendChild(ol);
        top.appendChild(cb);
      }
      if (turn.reference !== undefined && turn.reference !== null) {
        top.appendChild(box("Reference answer", turn.reference, "reference"));
      }
      grid.appendChild(top);
    }
    shown.forEach(function (c, k) {
      var cell = it.cells[c.key], col = k + 1;
      var group = el("div", "answers-of");
      group.dataset.variant = c.key;
      for (var t = 0; t < nTurns; t++) {
        var row = 1 + 4 * t;
        var h = place(el("div", "col-head"), row + 1, col);
        h.dataset.headOf = c.key;
        h.dataset.turn = String(t + 1);
        h.appendChild(el("span", "col-name", colLabel(c)));
        if (cell) {
          var v = cell.values[t];
          var name = nTurns > 1 ? "turn " + (t + 1) : (task.metric || "value");
          var val = el("span", "value", name + " " + fmt(v) + (v === null || v === undefined ? "" : unit));
          if (v !== null && v !== undefined) val.dataset.value = String(v);
          val.dataset.valueOf = c.key;
          h.appendChild(val);
        }
        grid.appendChild(h);
        var text = cell ? cell.answers[t] : undefined;
        var ans = place(el("pre", "answer", text === undefined || text === null ? "" : text), row + 2, col);
        ans.dataset.turn = String(t + 1);
        if (text === undefined || text === null) ans.dataset.missing = cell ? "turn" : "variant";
        if (cell && cell.pred !== undefined && cell.pred !== null) ans.dataset.pred = String(cell.pred);
        group.appendChild(ans);
        var foot = place(el("div", "col-foot"), row + 3, col);
        foot.dataset.of = c.key;
        foot.dataset.turn = String(t + 1);
        if (cell && t === 0 && cell.logliks) {
          foot.appendChild(el("div", "loglik", "log-likelihoods: " + cell.logliks.map(function (x, i) {
            return i + ": " + Number(x).toFixed(3);
          }).join(", ")));
        }
        ((cell && cell.verdicts) || []).forEach(function (vd) {
          if (vd.turn === t) foot.appendChild(verdictEl(vd, c.key));
        });
        grid.appendChild(foot);
      }
      grid.appendChild(group);
    });
    var wrap = el("div", "sheet-wrap");
    wrap.appendChild(grid);
    art.appendChild(wrap);
    return art;
  }

  function haystack(idx) {
    var h = haystacks.get(idx);
    if (h !== undefined) return h;
    var it = items[idx], parts = [it.task, it.id, it.category || "", it.system || ""];
    it.turns.forEach(function (t) { parts.push(t.prompt || "", t.reference || ""); });
    (it.choices || []).forEach(function (c) { parts.push(c); });
    Object.keys(it.cells).forEach(function (k) {
      var cell = it.cells[k];
      cell.answers.forEach(function (a) { parts.push(a || ""); });
      (cell.verdicts || []).forEach(function (v) { parts.push(v.text || "", v.error || ""); });
    });
    h = parts.join("\n").toLowerCase();
    haystacks.set(idx, h);
    return h;
  }

  function matches(idx, words) {
    var it = items[idx];
    if (state.task && it.task !== state.task) return false;
    if (state.category && it.category !== state.category) return false;
    if (state.disagree && !it.disagree) return false;
    if (state.failed && !it.failed) return false;
    if (state.dirty === "dirty" && it.dirty !== true) return false;
    if (state.dirty === "clean" && it.dirty !== false) return false;
    if (words.length) {
      var h = haystack(idx);
      for (var w = 0; w < words.length; w++) if (h.indexOf(words[w]) < 0) return false;
    }
    return true;
  }

  function sortList(list) {
    if (state.sort === "file" || !state.sortCol) return list;
    var key = function (i) { var d = items[i].diff[state.sortCol]; return d === undefined ? null : d; };
    var sign = state.sort === "diff-asc" ? 1 : -1;
    return list.map(function (i) { return [i, key(i)]; }).sort(function (a, b) {
      if (a[1] === null || b[1] === null) return a[1] === null ? (b[1] === null ? a[0] - b[0] : 1) : -1;
      var x = state.sort === "absdiff" ? Math.abs(b[1]) - Math.abs(a[1]) : sign * (a[1] - b[1]);
      return x !== 0 ? x : a[0] - b[0];
    }).map(function (p) { return p[0]; });
  }

  function elementOf(idx) {
    var e = cache.get(idx);
    if (!e) { e = renderItem(idx); cache.set(idx, e); }
    return e;
  }

  function setRendered(pos, b) {  // data-rendered="all": every item of the current page is in the page
    var done = pos >= b.end;
    document.documentElement.dataset.rendered = done ? "all" : "partial";
    $("count").dataset.rendered = String(pos - b.start);
    if (done && !allMarked) { allMarked = true; performance.mark("bench-view-page-items"); }
  }

  function markFirst() {
    if (firstPainted) return;
    firstPainted = true;
    requestAnimationFrame(function () { performance.mark("bench-view-first-items"); });
  }

  function pageBounds() {
    var n = current.length, per = state.perPage || Math.max(n, 1);
    var pages = Math.max(1, Math.ceil(n / per));
    state.page = Math.min(Math.max(state.page, 0), pages - 1);
    return { start: state.page * per, end: Math.min(n, (state.page + 1) * per), pages: pages };
  }

  // Filter and sort every item (from the data), then render the current page: its first items at once, the rest
  // in later tasks. keepPage: stay on state.page (paging, links) instead of going back to the first page.
  function refresh(keepPage) {
    var words = state.query.toLowerCase().split(/\s+/).filter(Boolean);
    var list = [];
    for (var i = 0; i < items.length; i++) if (matches(i, words)) list.push(i);
    current = sortList(list);
    if (!keepPage) state.page = 0;
    var b = pageBounds(), count = $("count");
    count.textContent = current.length + " of " + items.length + " items" +
      (b.pages > 1 ? "; showing " + (b.start + 1) + "\u2013" + b.end : "");
    count.dataset.count = String(current.length);
    count.dataset.total = String(items.length);
    count.dataset.shown = String(b.end - b.start);
    $("f-page").textContent = "page " + (state.page + 1) + " of " + b.pages;
    $("f-prev").disabled = state.page === 0;
    $("f-next").disabled = state.page >= b.pages - 1;
    var box = $("item-list"), mine = ++token, pos = b.start;
    box.replaceChildren();
    function chunk(n) {
      var frag = document.createDocumentFragment(), stop = Math.min(b.end, pos + n);
      for (; pos < stop; pos++) frag.appendChild(elementOf(current[pos]));
      box.appendChild(frag);
      setRendered(pos, b);
    }
    chunk(FIRST);
    markFirst();
    function more() {
      if (mine !== token || pos >= b.end) return;
      chunk(CHUNK);
      setTimeout(more, 0);
    }
    if (pos < b.end) setTimeout(more, 0);
    ensure = function (idx) {  // render synchronously up to item idx (links into the page)
      var at = current.indexOf(idx);
      if (mine === token && at >= pos && at < b.end) chunk(at - pos + 1);
    };
  }

  function fillSelect(sel, options, value) {
    sel.replaceChildren();
    options.forEach(function (o) {
      var opt = el("option", null, o[1]);
      opt.value = o[0];
      sel.appendChild(opt);
    });
    sel.value = value;
  }

  function fillCategories() {
    var cats = {};
    data.tasks.forEach(function (t) {
      if (!state.task || t.name === state.task) t.categories.forEach(function (c) { cats[c] = true; });
    });
    var names = Object.keys(cats).sort();
    if (names.indexOf(state.category) < 0) state.category = "";
    fillSelect($("f-category"), [["", "all categories"]].concat(names.map(function (c) { return [c, c]; })),
               state.category);
    $("f-category").disabled = names.length === 0;
    var info = $("task-info");
    var t = tasks[state.task];
    info.textContent = t ? t.name + ": " + t.n_items + " items, " + t.kind + ", per-item value: " + t.metric +
      (t.unit ? " (" + t.unit + ")" : "") + (t.judges.length ? ", judged by " + t.judges.join(", ") : ", no judge")
      : data.tasks.length + " tasks, " + cols.length + " variants";
  }

  var ensure = function () {};
  function update() { refresh(false); }

  function goToHash() {
    var h = decodeURIComponent(location.hash.slice(1));
    var raw = location.hash.slice(1);
    var idx = anchors.has(raw) ? anchors.get(raw) : anchors.get(h);
    if (idx === undefined) return;
    var it = items[idx];
    if (current.indexOf(idx) < 0) {  // the linked item is filtered out: show its task, unfiltered
      Object.assign(state, { task: it.task, category: "", disagree: false, failed: false, dirty: "", query: "" });
      syncControls();
      refresh(false);
    }
    if (state.perPage) {
      var page = Math.floor(current.indexOf(idx) / state.perPage);
      if (page !== state.page) { state.page = page; refresh(true); }
    }
    ensure(idx);
    var e = elementOf(idx);
    document.querySelectorAll("article.item.target").forEach(function (x) { x.classList.remove("target"); });
    e.classList.add("target");
    e.scrollIntoView({ block: "start" });
  }

  function syncControls() {
    $("f-task").value = state.task;
    fillCategories();
    $("f-disagree").checked = state.disagree;
    $("f-failed").checked = state.failed;
    $("f-dirty").value = state.dirty;
    $("f-search").value = state.query;
    $("f-sort").value = state.sort;
  }

  function setup() {
    fillSelect($("f-task"), [["", "all tasks (" + items.length + ")"]].concat(data.tasks.map(function (t) {
      return [t.name, t.name + " (" + t.n_items + ")"];
    })), "");
    fillCategories();
    fillSelect($("f-sortcol"), compared.map(function (c) {
      return [c.key, colLabel(c) + " \u2212 " + colLabel(cols[colIndex[c.baseline]])];
    }), state.sortCol);
    $("f-sortcol").disabled = compared.length === 0;
    $("f-sort").disabled = compared.length === 0;
    if (data.contamination) $("f-dirty-wrap").hidden = false;
    var fs = $("f-columns");
    cols.forEach(function (c) {
      var lab = el("label"), box = el("input");
      box.type = "checkbox";
      box.checked = true;
      box.dataset.col = c.key;
      box.addEventListener("change", function () {  // items are drawn again with the columns shown
        state.hidden[c.key] = !box.checked;
        cache.clear();
        refresh(true);
      });
      lab.appendChild(box);
      lab.appendChild(document.createTextNode(" " + colLabel(c)));
      fs.appendChild(lab);
    });
    $("f-task").addEventListener("change", function (e) { state.task = e.target.value; fillCategories(); update(); });
    $("f-category").addEventListener("change", function (e) { state.category = e.target.value; update(); });
    $("f-disagree").addEventListener("change", function (e) { state.disagree = e.target.checked; update(); });
    $("f-failed").addEventListener("change", function (e) { state.failed = e.target.checked; update(); });
    $("f-dirty").addEventListener("change", function (e) { state.dirty = e.target.value; update(); });
    $("f-sort").addEventListener("change", function (e) { state.sort = e.target.value; update(); });
    $("f-sortcol").addEventListener("change", function (e) { state.sortCol = e.target.value; update(); });
    var timer = null;
    $("f-search").addEventListener("input", function (e) {
      clearTimeout(timer);
      timer = setTimeout(function () { state.query = e.target.value; update(); }, 150);
    });
    $("f-reset").addEventListener("click", function () {
      Object.assign(state, { task: "", category: "", disagree: false, failed: false, dirty: "", query: "",
                             sort: "file" });
      syncControls();
      update();
    });
    var sizes = [[0, "all"], [25, "25"], [50, "50"], [100, "100"], [200, "200"]];
    fillSelect($("f-per-page"), sizes.map(function (x) { return [String(x[0]), x[1]]; }), String(state.perPage));
    $("f-per-page").addEventListener("change", function (e) { state.perPage = Number(e.target.value); update(); });
    function turn(by) {
      state.page += by;
      refresh(true);
      $("items").scrollIntoView();
    }
    $("f-prev").addEventListener("click", function () { turn(-1); });
    $("f-next").addEventListener("click", function () { turn(1); });
    window.addEventListener("hashchange", goToHash);
    update();
    if (location.hash) goToHash();
  }

  setup();
})();
