/* markers.html: inlined by markers_page.py. Reads the JSON in #marker-data and builds two tables:
   marker/condition pairs ("groups") and findings. Every value from the records goes in as text
   (textContent), never as HTML. No request is made: there is nothing to fetch. */
(function () {
  "use strict";

  // Rows drawn at once: drawing ten thousand table rows takes seconds, filtering them milliseconds.
  const PAGE_ROWS = 300;
  const data = JSON.parse(document.getElementById("marker-data").textContent);
  const papers = data.papers;
  const groupOfFinding = new Map();
  const findingById = new Map();
  data.findings.forEach((finding) => findingById.set(finding.finding_id, finding));
  data.groups.forEach((group) => group.finding_ids.forEach((id) => groupOfFinding.set(id, group)));

  const state = {
    view: "groups",
    text: "",
    direction: "",
    conflictsOnly: false,
    scope: null, // {marker_key, condition_key}: findings of one group
    sort: { groups: null, findings: null }, // {column, descending}
    open: { groups: new Set(), findings: new Set() },
    shown: PAGE_ROWS, // rows drawn; filtering and sorting always cover every row
  };

  // --- small builders ------------------------------------------------------------------------------

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const notReported = () => el("span", { className: "na", title: "not reported" }, "—");
  const DIRECTION_LABELS = {
    hypermethylated: "▲ hyper",
    hypomethylated: "▼ hypo",
    mixed: "◆ mixed",
    unknown: "unknown",
    conflict: "⚠ conflict",
    varied: "◇ varied",
  };
  const badge = (direction) =>
    el("span", { className: "badge dir-" + direction, title: direction }, DIRECTION_LABELS[direction] || direction);

  function percent(value) {
    const scaled = Math.round(value * 1000) / 10;
    return (Number.isInteger(scaled) ? scaled.toFixed(0) : scaled.toFixed(1)) + "%";
  }
  const decimal = (value) => String(Math.round(value * 1000) / 1000);
  const count = (value) => Number(value).toLocaleString("en-US");

  function metric(value, format) {
    return value === null || value === undefined ? notReported() : format(value);
  }

  function range(measured, format) {
    if (!measured.findings) return notReported();
    const low = format(measured.low);
    const high = format(measured.high);
    return el(
      "span",
      { title: measured.findings + " finding(s) reported a value" },
      low === high ? low : low + "–" + high,
      measured.findings > 1 ? el("span", { className: "n" }, "(" + measured.findings + ")") : null
    );
  }

  function tags(values, limit) {
    if (!values || values.length === 0) return notReported();
    const shown = limit ? values.slice(0, limit) : values;
    const box = el("span", { className: "tags" }, shown.map((value) => el("span", { className: "tag", title: value }, value)));
    if (shown.length < values.length) {
      box.append(el("span", { className: "tag", title: values.slice(shown.length).join(", ") }, "+" + (values.length - shown.length)));
    }
    return box;
  }

  function paperLabel(paperId) {
    const paper = papers[paperId] || {};
    return paper.title || (paper.source_paths && paper.source_paths[0]) || paperId;
  }

  function identifierLinks(paper) {
    const links = [];
    if (paper.doi) links.push(el("a", { href: "https://doi.org/" + encodeURI(paper.doi), target: "_blank", rel: "noopener noreferrer" }, "DOI " + paper.doi));
    if (paper.pmid) links.push(el("a", { href: "https://pubmed.ncbi.nlm.nih.gov/" + encodeURIComponent(paper.pmid) + "/", target: "_blank", rel: "noopener noreferrer" }, "PMID " + paper.pmid));
    if (paper.pmcid) links.push(el("span", {}, paper.pmcid));
    return links;
  }

  function paperCell(paperId) {
    const paper = papers[paperId] || {};
    const links = identifierLinks(paper);
    const ids = el("span", { className: "ids" });
    links.forEach((link, index) => { if (index) ids.append(" · "); ids.append(link); });
    if (!links.length) ids.append(el("span", { className: "mono" }, paperId));
    return [el("span", { className: "paper-title", title: paperLabel(paperId) }, paperLabel(paperId)), ids];
  }

  // --- columns -------------------------------------------------------------------------------------

  const GROUP_COLUMNS = [
    {
      id: "marker", label: "Marker", sort: (g) => g.marker_key,
      render: (g) => {
        const others = g.names_reported.filter((name) => name !== g.marker_key);
        return [el("span", { className: "marker-name" }, g.marker_key || "(unnamed)"),
          others.length ? el("span", { className: "aka", title: "as the papers name it" }, others.join(" · ")) : null];
      },
    },
    { id: "condition", label: "Condition", sort: (g) => g.condition_key, render: (g) => g.condition ? g.condition : notReported() },
    { id: "papers", label: "Papers", numeric: true, sort: (g) => g.papers, render: (g) => count(g.papers) },
    { id: "findings", label: "Findings", numeric: true, sort: (g) => g.findings, render: (g) => count(g.findings) },
    { id: "direction", label: "Direction", sort: (g) => g.direction, render: (g) => badge(g.direction) },
    { id: "sensitivity", label: "Sensitivity", numeric: true, sort: (g) => g.sensitivity.high, render: (g) => range(g.sensitivity, percent) },
    { id: "specificity", label: "Specificity", numeric: true, sort: (g) => g.specificity.high, render: (g) => range(g.specificity, percent) },
    { id: "auc", label: "AUC", numeric: true, sort: (g) => g.auc.high, render: (g) => range(g.auc, decimal) },
    { id: "cohort", label: "Cohort", numeric: true, sort: (g) => g.cohort_size.high, render: (g) => range(g.cohort_size, count) },
    { id: "samples", label: "Sample types", sort: (g) => g.sample_types.join(" "), render: (g) => tags(g.sample_types, 3) },
    { id: "assays", label: "Assays", sort: (g) => g.assays.join(" "), render: (g) => tags(g.assays, 3) },
    { id: "open", label: "", render: (g) => toggleButton("groups", groupId(g), g.papers === 1 ? "1 paper" : g.papers + " papers") },
  ];

  const FINDING_COLUMNS = [
    {
      id: "marker", label: "Marker", sort: (f) => f.marker_key,
      render: (f) => [el("span", { className: "marker-name" }, f.marker),
        f.marker_key && f.marker_key !== f.marker ? el("span", { className: "aka", title: "grouped as" }, "→ " + f.marker_key) : null],
    },
    { id: "direction", label: "Direction", sort: (f) => f.direction, render: (f) => badge(f.direction) },
    { id: "condition", label: "Condition", sort: (f) => f.condition_key, render: (f) => f.condition ? f.condition : notReported() },
    { id: "samples", label: "Sample types", sort: (f) => f.sample_types.join(" "), render: (f) => tags(f.sample_types, 3) },
    { id: "assays", label: "Assays", sort: (f) => f.assays.join(" "), render: (f) => tags(f.assays, 2) },
    { id: "uses", label: "Clinical use", sort: (f) => f.clinical_uses.join(" "), render: (f) => tags(f.clinical_uses.map((use) => use.replace(/_/g, " ")), 2) },
    { id: "sensitivity", label: "Sens.", numeric: true, sort: (f) => f.sensitivity, render: (f) => metric(f.sensitivity, percent) },
    { id: "specificity", label: "Spec.", numeric: true, sort: (f) => f.specificity, render: (f) => metric(f.specificity, percent) },
    { id: "auc", label: "AUC", numeric: true, sort: (f) => f.auc, render: (f) => metric(f.auc, decimal) },
    { id: "cohort", label: "n", numeric: true, sort: (f) => f.cohort_size, render: (f) => metric(f.cohort_size, count) },
    { id: "paper", label: "Paper", sort: (f) => paperLabel(f.paper_id), render: (f) => paperCell(f.paper_id) },
    {
      id: "evidence", label: "Evidence",
      render: (f) => toggleButton("findings", f.finding_id, f.evidence.length === 1 ? "1 quote" : f.evidence.length + " quotes", f.evidence.length === 0),
    },
  ];
  const COLUMNS = { groups: GROUP_COLUMNS, findings: FINDING_COLUMNS };

  const groupId = (g) => g.marker_key + "\u0000" + g.condition_key;

  function toggleButton(view, id, label, disabled) {
    const open = state.open[view].has(id);
    return el("button", {
      type: "button", className: "evidence-toggle", "aria-expanded": open ? "true" : "false",
      "data-id": id, disabled: disabled ? true : null,
      title: disabled ? "the record holds no quote for this finding" : "show the evidence",
      onclick: () => { if (open) state.open[view].delete(id); else state.open[view].add(id); render(); },
    }, label, open ? " ▴" : " ▾");
  }

  // --- filtering -----------------------------------------------------------------------------------

  function searchText(values) {
    return values.flat().filter((value) => value !== null && value !== undefined).join(" \u0001 ").toLowerCase();
  }

  function paperSearchText(paperId) {
    const paper = papers[paperId] || {};
    return [paperId, paper.title, paper.doi, paper.pmid, paper.pmcid, paper.source_paths || []];
  }

  data.findings.forEach((f) => {
    f._search = searchText([f.marker, f.marker_key, f.gene, f.cpg_sites, f.region, f.direction, f.condition, f.sample_types,
      f.assays, f.clinical_uses, f.clinical_uses.map((use) => use.replace(/_/g, " ")), paperSearchText(f.paper_id)]);
  });
  data.groups.forEach((g) => {
    g._search = searchText([g.marker_key, g.names_reported, g.direction, g.condition, g.sample_types, g.assays, g.clinical_uses,
      g.clinical_uses.map((use) => use.replace(/_/g, " ")), g.finding_ids.map((id) => findingById.get(id)._search)]);
  });

  function matchesText(row) {
    const words = state.text.toLowerCase().split(/\s+/).filter(Boolean);
    return words.every((word) => row._search.includes(word));
  }

  function visibleRows(view) {
    if (view === "groups") {
      return data.groups.filter((g) =>
        matchesText(g) &&
        (!state.direction || g.direction === state.direction) &&
        (!state.conflictsOnly || g.conflict));
    }
    return data.findings.filter((f) => {
      const group = groupOfFinding.get(f.finding_id);
      if (state.scope && (f.marker_key !== state.scope.marker_key || f.condition_key !== state.scope.condition_key)) return false;
      if (state.conflictsOnly && !(group && group.conflict)) return false;
      if (state.direction === "conflict") return Boolean(group && group.conflict) && matchesText(f);
      if (state.direction === "varied") return Boolean(group && group.direction === "varied") && matchesText(f);
      return (!state.direction || f.direction === state.direction) && matchesText(f);
    });
  }

  function sortRows(rows, view) {
    const order = state.sort[view];
    if (!order) return rows;
    const column = COLUMNS[view].find((c) => c.id === order.column);
    const keyed = rows.map((row, index) => ({ row, index, key: column.sort(row) }));
    keyed.sort((a, b) => {
      const aMissing = a.key === null || a.key === undefined || a.key === "";
      const bMissing = b.key === null || b.key === undefined || b.key === "";
      if (aMissing || bMissing) return aMissing === bMissing ? a.index - b.index : aMissing ? 1 : -1; // blanks last
      let difference = column.numeric ? a.key - b.key : String(a.key).localeCompare(String(b.key), "en", { numeric: true, sensitivity: "base" });
      if (order.descending) difference = -difference;
      return difference || a.index - b.index;
    });
    return keyed.map((item) => item.row);
  }

  // --- details -------------------------------------------------------------------------------------

  function facts(pairs) {
    const list = el("dl", { className: "facts" });
    for (const [label, value] of pairs) {
      const empty = value === null || value === undefined || value === "" || (Array.isArray(value) && !value.length);
      list.append(el("dt", {}, label), el("dd", {}, empty ? notReported() : Array.isArray(value) ? value.join(", ") : value));
    }
    return list;
  }

  function quotes(finding, withSource) {
    if (!finding.evidence.length) return [el("p", { className: "na" }, "The record holds no evidence quote for this finding.")];
    return finding.evidence.map((quote) => el("blockquote", { className: "quote" }, "“" + quote + "”",
      withSource ? el("cite", {}, paperLabel(finding.paper_id) + " · " + finding.marker + " · " + finding.direction) : null));
  }

  function findingDetail(f) {
    const paper = papers[f.paper_id] || {};
    const group = groupOfFinding.get(f.finding_id);
    const left = el("div", {}, el("h4", {}, "Evidence (verbatim)"), quotes(f, false));
    const right = el("div", {},
      el("h4", {}, "Finding"),
      facts([["CpG sites", f.cpg_sites], ["Region", f.region], ["Gene", f.gene], ["Related", f.related],
        ["Other figures", f.performance_notes], ["Clinical use", f.clinical_uses.map((use) => use.replace(/_/g, " "))]]),
      el("h4", {}, "Paper"),
      facts([["Title", paper.title], ["DOI", paper.doi], ["PMID", paper.pmid], ["PMCID", paper.pmcid],
        ["Files", paper.source_paths], ["Finding id", f.finding_id]]),
      group && group.papers > 1
        ? el("p", {}, el("button", { type: "button", className: "link-button", onclick: () => showGroup(group) },
          "All " + group.findings + " findings of " + (group.marker_key || "this marker") + " in " + (group.condition || "this condition") + " →"))
        : null);
    return el("div", { className: "detail-grid" }, left, right);
  }

  function groupDetail(g) {
    const sides = el("div", { className: "sides" });
    for (const [direction, ids] of [["hypermethylated", g.hypermethylated_papers], ["hypomethylated", g.hypomethylated_papers],
      ["mixed", g.mixed_papers], ["unknown", g.unknown_papers]]) {
      if (!ids.length) continue;
      sides.append(el("div", { className: "side" }, badge(direction), " ", ids.length === 1 ? "1 paper" : ids.length + " papers",
        el("ul", {}, ids.map((id) => el("li", {}, paperLabel(id))))));
    }
    const evidence = g.finding_ids.map((id) => findingById.get(id)).flatMap((f) => quotes(f, true).slice(0, 1));
    return el("div", {},
      el("h4", {}, g.conflict ? "Papers disagree on the direction" : "Direction by paper"), sides,
      el("h4", {}, "Evidence (first quote of each finding)"), evidence,
      el("p", {}, el("button", { type: "button", className: "link-button", onclick: () => showGroup(g) },
        "Show the " + (g.findings === 1 ? "finding" : g.findings + " findings") + " with every quote →")));
  }

  function showGroup(group) {
    state.scope = { marker_key: group.marker_key, condition_key: group.condition_key, label: (group.marker_key || "(unnamed)") + " · " + (group.condition || "condition not stated") };
    state.view = "findings";
    state.text = "";
    state.direction = "";
    state.conflictsOnly = false;
    state.shown = PAGE_ROWS;
    document.getElementById("filter").value = "";
    document.getElementById("direction").value = "";
    document.getElementById("conflicts-only").checked = false;
    render();
  }

  // --- rendering -----------------------------------------------------------------------------------

  function renderTable(view, rows) {
    const table = document.getElementById(view + "-table");
    const columns = COLUMNS[view];
    const order = state.sort[view];
    const headRow = el("tr", {}, columns.map((column) => {
      const sorted = order && order.column === column.id;
      const th = el("th", {
        scope: "col", className: column.numeric ? "num" : null, "data-column": column.id,
        "aria-sort": column.sort ? (sorted ? (order.descending ? "descending" : "ascending") : "none") : null,
      });
      if (column.sort) {
        th.append(el("button", { type: "button", className: "sort", onclick: () => {
          const current = state.sort[view];
          const first = column.numeric; // numbers: largest first on the first click
          state.sort[view] = { column: column.id, descending: current && current.column === column.id ? !current.descending : first };
          render();
        } }, column.label));
      } else {
        th.append(el("span", { className: "visually-hidden" }, column.label || "details"), column.label);
      }
      return th;
    }));
    const body = el("tbody");
    const fragment = document.createDocumentFragment();
    for (const row of rows.slice(0, state.shown)) {
      const id = view === "groups" ? groupId(row) : row.finding_id;
      const open = state.open[view].has(id);
      fragment.append(el("tr", { className: "row" + (open ? " open" : ""), "data-id": id },
        columns.map((column) => el("td", { className: column.numeric ? "num" : null, "data-column": column.id }, column.render(row)))));
      if (open) {
        fragment.append(el("tr", { className: "detail", "data-detail-for": id },
          el("td", { colspan: columns.length }, view === "groups" ? groupDetail(row) : findingDetail(row))));
      }
    }
    body.append(fragment);
    table.replaceChildren(el("thead", {}, headRow), body);
  }

  function render() {
    for (const view of ["groups", "findings"]) {
      const tab = document.getElementById("tab-" + view);
      tab.setAttribute("aria-selected", state.view === view ? "true" : "false");
      document.getElementById(view + "-table").hidden = state.view !== view;
    }
    const rows = sortRows(visibleRows(state.view), state.view);
    renderTable(state.view, rows);
    const total = state.view === "groups" ? data.groups.length : data.findings.length;
    const noun = state.view === "groups" ? "marker/condition pairs" : "findings";
    document.getElementById("row-count").textContent = "Showing " + count(rows.length) + " of " + count(total) + " " + noun;
    document.getElementById("empty").hidden = rows.length > 0;
    const more = document.getElementById("more");
    more.hidden = rows.length <= state.shown;
    if (!more.hidden) {
      more.replaceChildren(el("button", { type: "button", className: "link-button", onclick: () => { state.shown += PAGE_ROWS; render(); } },
        "Show " + count(Math.min(PAGE_ROWS, rows.length - state.shown)) + " more"),
      " · " + count(state.shown) + " of " + count(rows.length) + " drawn; filter or sort to find the rest");
    }
    const scope = document.getElementById("scope");
    scope.hidden = !(state.scope && state.view === "findings");
    if (!scope.hidden) {
      scope.replaceChildren(state.scope.label, el("button", { type: "button", title: "show every finding", "aria-label": "clear",
        onclick: () => { state.scope = null; render(); } }, "✕"));
    }
  }

  // --- static parts --------------------------------------------------------------------------------

  function renderHeader() {
    const s = data.summary;
    const stats = [["Papers", s.papers], ["Findings", s.findings], ["Markers", s.markers], ["Marker × condition", s.groups], ["Conflicts", s.conflicts]];
    document.getElementById("stats").replaceChildren(...stats.map(([label, value]) =>
      el("div", { className: "stat" + (label === "Conflicts" && value > 0 ? " alert" : "") }, el("dt", {}, label), el("dd", {}, count(value)))));
    document.getElementById("tab-groups").replaceChildren("Markers by condition", el("span", { className: "count" }, count(data.groups.length)));
    document.getElementById("tab-findings").replaceChildren("Findings", el("span", { className: "count" }, count(data.findings.length)));
    const notices = document.getElementById("notices");
    if (s.papers_without_markers.length) {
      notices.append(el("details", { className: "notice", id: "papers-without-markers" },
        el("summary", {}, s.papers_without_markers.length + " of " + s.papers + " papers report no marker"),
        el("ul", {}, s.papers_without_markers.map((paper) => el("li", {}, paper.title || paper.paper_id, " ",
          el("code", {}, (paper.source_paths || []).join(", ")))))));
    }
    if (s.skipped_lines.length) {
      notices.append(el("details", { className: "notice", id: "skipped-lines" },
        el("summary", {}, s.skipped_lines.length + " records line" + (s.skipped_lines.length === 1 ? " was" : "s were") + " malformed and skipped"),
        el("ul", {}, s.skipped_lines.map((line) => el("li", {}, el("code", {}, line))))));
    }
    document.getElementById("source-list").replaceChildren(
      ...s.records_files.map((path) => el("li", {}, el("code", {}, path))),
      el("li", {}, s.superseded_records + " older record(s) of the same papers superseded; " + s.findings_with_metrics + " of " + s.findings + " findings report sensitivity, specificity or AUC"));
  }

  document.querySelectorAll(".tabs button").forEach((button) => button.addEventListener("click", () => {
    state.view = button.dataset.view;
    state.shown = PAGE_ROWS;
    render();
  }));
  document.getElementById("filter").addEventListener("input", (event) => { state.text = event.target.value; state.shown = PAGE_ROWS; render(); });
  document.getElementById("direction").addEventListener("change", (event) => { state.direction = event.target.value; state.shown = PAGE_ROWS; render(); });
  document.getElementById("conflicts-only").addEventListener("change", (event) => { state.conflictsOnly = event.target.checked; state.shown = PAGE_ROWS; render(); });

  renderHeader();
  render();
})();
