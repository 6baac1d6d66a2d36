"""The rating page: one HTML file with its CSS, script and items inline (no network, no external
file but the clips, referenced relatively), so it works from ``file://`` and from any static server.

A rater types a name, picks for each clip the set (A, B or C) that fits it best, rates every set
1-5, and presses "Export ratings": the browser downloads ``ratings-{rater}-{kit_id}.json``::

    {"kit_id": "...", "rater": "...", "exported_at": "ISO time",
     "ratings": [{"item": 1, "best": "B", "scores": {"A": 2, "B": 5, "C": 1}}, ...]}

Items left unrated are exported without a choice or score (the report counts them as missing).
The page holds no key: the letters are all a rater sees.
"""

from __future__ import annotations

import html
import json
from typing import Any, Sequence

SCORES = (1, 2, 3, 4, 5)  # the rating scale, also what the report accepts

_STYLE = """
body { font-family: system-ui, "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", sans-serif; margin: 1.5em auto; max-width: 70em; padding: 0 1em; color: #222; }
.item { border-top: 2px solid #ccc; padding: 1em 0; }
video { width: 28em; max-width: 100%; max-height: 22em; background: #000; }
.sets { display: grid; grid-template-columns: repeat(3, 1fr); gap: 1em; margin-top: 0.8em; }
.set { border: 1px solid #bbb; border-radius: 6px; padding: 0.6em; }
.set ul { padding-left: 1.2em; min-height: 6em; }
.set label { margin-right: 0.4em; white-space: nowrap; }
#bar { position: sticky; top: 0; background: #fff; padding: 0.6em 0; border-bottom: 1px solid #ddd; }
#status { margin-left: 1em; }
"""

_SCRIPT = r"""
const kit = JSON.parse(document.getElementById("kit-data").textContent);
const LETTERS = ["A", "B", "C"];
const root = document.getElementById("items");
function radio(name, value, text) {
  const label = document.createElement("label");
  const input = document.createElement("input");
  input.type = "radio"; input.name = name; input.value = value;
  input.addEventListener("change", progress);
  label.append(input, " " + text);
  return label;
}
kit.items.forEach((item) => {
  const box = document.createElement("section");
  box.className = "item"; box.id = "item-" + item.item;
  const title = document.createElement("h2");
  title.textContent = "Clip " + item.item + " of " + kit.items.length;
  const video = document.createElement("video");
  video.controls = true; video.preload = "metadata"; video.src = item.clip;
  const sets = document.createElement("div");
  sets.className = "sets";
  LETTERS.forEach((letter) => {
    const set = document.createElement("div");
    set.className = "set";
    const head = document.createElement("h3");
    head.textContent = "Set " + letter;
    const list = document.createElement("ul");
    item.sets[letter].forEach((c) => { const li = document.createElement("li"); li.textContent = c; list.append(li); });
    const best = document.createElement("p");
    best.append(radio("best-" + item.item, letter, "fits this clip best"));
    const score = document.createElement("p");
    score.append("How well does it fit? ");
    kit.scale.forEach((s) => score.append(radio("score-" + item.item + "-" + letter, String(s), String(s))));
    set.append(head, list, best, score);
    sets.append(set);
  });
  box.append(title, video, sets);
  root.append(box);
});
function picked(name) {
  const el = document.querySelector('input[name="' + name + '"]:checked');
  return el ? el.value : null;
}
function collect() {
  return kit.items.map((item) => {
    const scores = {};
    LETTERS.forEach((l) => { const v = picked("score-" + item.item + "-" + l); if (v !== null) scores[l] = Number(v); });
    return { item: item.item, best: picked("best-" + item.item), scores: scores };
  });
}
function done(r) { return r.best !== null && Object.keys(r.scores).length === LETTERS.length; }
function progress() {
  const n = collect().filter(done).length;
  document.getElementById("status").textContent = n + " of " + kit.items.length + " clips rated";
}
document.getElementById("export").addEventListener("click", () => {
  const rater = document.getElementById("rater").value.trim();
  if (!rater) { document.getElementById("status").textContent = "Type your name first."; return; }
  const ratings = collect();
  const doc = { kit_id: kit.kit_id, rater: rater, exported_at: new Date().toISOString(), ratings: ratings };
  const blob = new Blob([JSON.stringify(doc, null, 1)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "ratings-" + rater.replace(/[^A-Za-z0-9_-]+/g, "_") + "-" + kit.kit_id + ".json";
  document.body.append(a); a.click(); a.remove();
  const left = ratings.filter((r) => !done(r)).length;
  document.getElementById("status").textContent = "Exported" + (left ? " (" + left + " clips not fully rated)" : "") + ".";
});
progress();
"""


def render(kit_id: str, items: Sequence[dict[str, Any]]) -> str:
    """The page for ``items`` (``{"item", "clip", "sets": {letter: [comment, ...]}}``)."""
    # "</" inside the JSON would end the script element; "<\/" is the same JSON string
    data = json.dumps({"kit_id": kit_id, "scale": list(SCORES), "items": list(items)}, ensure_ascii=False).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Live-comment rating, kit {html.escape(kit_id)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>Which comments fit the clip?</h1>
<p>Each clip comes with three sets of live comments (viewers' messages written while watching).
Watch the clip, mark the set that fits it best, and rate how well each set fits it, from 1 (not at
all) to 5 (as if written by its viewers). When you are done, export your ratings and send the file
back.</p>
<div id="bar"><label>Your name: <input id="rater" autocomplete="name"></label>
<button id="export" type="button">Export ratings</button><span id="status"></span></div>
<div id="items"></div>
<script type="application/json" id="kit-data">{data}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
