"""Vigil's drift windows through Alibi Detect and Evidently: same embeddings, same reference.

Reads the folder `vigil drift simulate --export DIR` writes (reference.f32, windows.f32,
windows.json: see crates/cli/src/drift_export.rs) and, per window, runs against the same
reference sample Vigil's MMD signal uses:

  alibi      (venv-alibi)     KSDrift(ref, p_val=0.05, correction='bonferroni') and
                              MMDDrift(ref, backend='pytorch', p_val=0.05, n_permutations=100),
                              each built ("fit") once on the reference, then predict() per window.
  evidently  (venv-evidently) Report([DataDriftPreset()]).run(window_df, reference_df) on the
                              embedding columns e0..e{dim-1} with Evidently's defaults (it picks
                              the per-column test; dataset drift = share of drifted columns >= 0.5,
                              the preset's drift_share), and its embeddings drift method
                              (legacy EmbeddingsDriftMetric, default method: a domain classifier,
                              drift when its ROC AUC > 0.55).
  table      (any python3)    merges the tools' JSON with Vigil's own verdicts from windows.json
                              (the whole family; its embedding.mmd signal alone; and, read as
                              the peers read theirs, its MMD permutation p-value < 0.05, which
                              Vigil reports but does not alarm on), prints markdown tables (per
                              tool, then per tool and kind) and writes the JSON summary.

usage:
  drift_peers.py alibi DIR --out alibi.json
  drift_peers.py evidently DIR --out evidently.json [--max-per-kind N]
  drift_peers.py table DIR alibi.json evidently.json --out peers.json

Times are wall clock (time.perf_counter) of predict()/run() only; "fit" is the detector's
construction on the reference (Alibi) or building the reference DataFrame (Evidently, which has
no fit). Vigil's time is its evaluate() call on the window: every signal of the family (image
statistics, confidence, classes, embedding MMD with 100 permutations), not the MMD alone.
"""
import argparse
import json
import os
import statistics
import sys
import time

IN_DIST = "in_distribution"


def load_index(d):
    with open(os.path.join(d, "windows.json")) as f:
        return json.load(f)


def load(d):
    import numpy as np

    idx = load_index(d)
    dim = idx["dim"]
    ref = np.fromfile(os.path.join(d, "reference.f32"), dtype="<f4").reshape(-1, dim)
    rows = np.fromfile(os.path.join(d, "windows.f32"), dtype="<f4").reshape(-1, dim)
    assert ref.shape[0] == idx["reference_rows"], (ref.shape, idx["reference_rows"])
    wins = [rows[w["offset_rows"]:w["offset_rows"] + w["rows"]] for w in idx["windows"]]
    assert all(x.shape[0] == w["rows"] for x, w in zip(wins, idx["windows"]))
    return idx, ref, wins


def pick(idx, max_per_kind):
    """Indices of the windows to run: all, or the first max_per_kind of each kind."""
    seen, out = {}, []
    for i, w in enumerate(idx["windows"]):
        k = w["kind"]
        if max_per_kind and seen.get(k, 0) >= max_per_kind:
            continue
        seen[k] = seen.get(k, 0) + 1
        out.append(i)
    return out


def run_tool(name, fit_s, idx, wins, chosen, predict, extra):
    """predict(i) -> (drift: bool, details: dict) on window i, timed per window."""
    recs = []
    for n, i in enumerate(chosen):
        t = time.perf_counter()
        drift, details = predict(i)
        s = time.perf_counter() - t
        recs.append({"window": i, "kind": idx["windows"][i]["kind"], "drift": bool(drift),
                     "seconds": s, **details})
        if n % 25 == 0:
            print(f"{name}: {n + 1}/{len(chosen)} ({s:.3f} s)", file=sys.stderr, flush=True)
    return {"tool": name, "fit_s": fit_s, **extra, "windows": recs}


def cmd_alibi(a):
    import alibi_detect
    import torch
    from alibi_detect.cd import KSDrift, MMDDrift

    idx, ref, wins = load(a.dir)
    chosen = pick(idx, a.max_per_kind)
    env = {"alibi_detect": alibi_detect.__version__, "torch": torch.__version__,
           "torch_threads": torch.get_num_threads()}
    out = {"versions": env, "tools": []}

    t = time.perf_counter()
    ks = KSDrift(ref, p_val=0.05, correction="bonferroni")
    fit = time.perf_counter() - t

    def ks_predict(i):
        d = ks.predict(wins[i])["data"]
        return d["is_drift"], {"features_below": int((d["p_val"] < 0.05 / ref.shape[1]).sum()),
                               "min_p": float(d["p_val"].min())}

    out["tools"].append(run_tool("Alibi KSDrift (Bonferroni, 0.05)", fit, idx, wins, chosen,
                                 ks_predict, {}))

    t = time.perf_counter()
    mmd = MMDDrift(ref, backend="pytorch", p_val=0.05, n_permutations=100)
    fit = time.perf_counter() - t

    def mmd_predict(i):
        d = mmd.predict(wins[i])["data"]
        return d["is_drift"], {"p_val": float(d["p_val"]), "mmd2": float(d["distance"]),
                               "threshold": float(d["distance_threshold"])}

    out["tools"].append(run_tool("Alibi MMDDrift (pytorch, 100 perm., 0.05)", fit, idx, wins,
                                 chosen, mmd_predict, {}))
    write(a.out, out)


def cmd_evidently(a):
    import evidently
    import pandas as pd
    from evidently import Report
    from evidently.legacy.metrics import EmbeddingsDriftMetric
    from evidently.legacy.pipeline.column_mapping import ColumnMapping
    from evidently.legacy.report import Report as LegacyReport
    from evidently.presets import DataDriftPreset

    idx, ref, wins = load(a.dir)
    chosen = pick(idx, a.max_per_kind)
    cols = [f"e{i}" for i in range(ref.shape[1])]
    t = time.perf_counter()
    ref_df = pd.DataFrame(ref, columns=cols)
    fit = time.perf_counter() - t
    frames = {i: pd.DataFrame(wins[i], columns=cols) for i in chosen}
    out = {"versions": {"evidently": evidently.__version__, "pandas": pd.__version__},
           "max_per_kind": a.max_per_kind, "tools": []}

    def preset_predict(i):
        snap = Report([DataDriftPreset()]).run(frames[i], ref_df)
        count = share = None
        methods = set()
        for m in snap.dict().get("metrics", []):
            name = str(m.get("metric_name", ""))
            if name.startswith("DriftedColumnsCount"):
                count, share = m["value"].get("count"), m["value"].get("share")
            elif name.startswith("ValueDrift") and "method=" in name:
                methods.add(name.split("method=")[1].split(",threshold")[0])
        return share is not None and share >= 0.5, {
            "drifted_columns": count, "drifted_share": share, "methods": sorted(methods)}

    out["tools"].append(run_tool("Evidently DataDriftPreset (defaults; dataset drift)", fit,
                                 idx, wins, chosen, preset_predict, {}))

    mapping = ColumnMapping(embeddings={"emb": cols}, numerical_features=[],
                            categorical_features=[])

    def emb_predict(i):
        r = LegacyReport(metrics=[EmbeddingsDriftMetric("emb")])
        r.run(reference_data=ref_df, current_data=frames[i], column_mapping=mapping)
        res = r.as_dict()["metrics"][0]["result"]
        return res["drift_detected"], {"drift_score": float(res["drift_score"]),
                                       "method": res["method_name"]}

    out["tools"].append(run_tool("Evidently embeddings drift (default: classifier, AUC > 0.55)",
                                 fit, idx, wins, chosen, emb_predict, {}))
    write(a.out, out)


def write(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
    print(f"wrote {path}", file=sys.stderr)


def summarise(tool, recs, fit_s, kinds):
    rows = []
    for k in kinds:
        r = [x for x in recs if x["kind"] == k]
        if not r:
            continue
        secs = [x["seconds"] for x in r if x["seconds"] is not None]
        rows.append({"tool": tool, "kind": k, "windows": len(r),
                     "flagged": sum(x["drift"] for x in r),
                     "share": sum(x["drift"] for x in r) / len(r),
                     "median_s": statistics.median(secs) if secs else None,
                     "total_s": sum(secs) if secs else None, "fit_s": fit_s})
    return rows


def short(kind):
    return "in-distribution" if kind == IN_DIST else kind.split(" (")[0]


def cmd_table(a):
    idx = load_index(a.dir)
    kinds = list(dict.fromkeys(w["kind"] for w in idx["windows"]))
    vig = [{"window": i, "kind": w["kind"], "drift": w["vigil"]["drift"],
            "seconds": w["vigil"]["evaluate_seconds"]} for i, w in enumerate(idx["windows"])]
    vmmd = [{"window": i, "kind": w["kind"], "drift": bool(w["vigil"]["mmd_drift"]),
             "seconds": None} for i, w in enumerate(idx["windows"])]
    # Vigil's own permutation p-value of the MMD (100 permutations), read as the peers read
    # theirs: reported by Vigil, not what it alarms on.
    vp = [{"window": i, "kind": w["kind"], "seconds": None,
           "drift": w["vigil"]["mmd_p_value"] is not None and w["vigil"]["mmd_p_value"] < 0.05}
          for i, w in enumerate(idx["windows"])]
    fam, mmd, pv = ("Vigil, whole family (evaluate)", "Vigil, embedding.mmd alone (same call)",
                    "Vigil, embedding.mmd p < 0.05 (reported, not alarmed on)")
    rows = summarise(fam, vig, None, kinds)
    rows += summarise(mmd, vmmd, None, kinds)
    rows += summarise(pv, vp, None, kinds)
    # every window's seconds per tool, for the median over all its windows
    seconds = {fam: [x["seconds"] for x in vig], mmd: [], pv: []}
    versions = {}
    for p in a.results:
        with open(p) as f:
            res = json.load(f)
        versions.update(res.get("versions", {}))
        for t in res["tools"]:
            rows += summarise(t["tool"], t["windows"], t["fit_s"], kinds)
            seconds[t["tool"]] = [x["seconds"] for x in t["windows"]]

    def f(v, fmt):
        return "–" if v is None else format(v, fmt)

    tools = list(dict.fromkeys(r["tool"] for r in rows))
    head = "| tool | " + " | ".join(f"{short(k)} flagged" for k in kinds) + \
        " | median s / window | total s | fit s |"
    lines = [head, "|---|" + "---:|" * (len(kinds) + 3)]
    for t in tools:
        rs = {r["kind"]: r for r in rows if r["tool"] == t}
        cells = [f"{rs[k]['flagged']}/{rs[k]['windows']} ({rs[k]['share']:.0%})" if k in rs
                 else "–" for k in kinds]
        secs = seconds[t]
        n = sum(r["windows"] for r in rs.values())
        lines.append(f"| {t} | " + " | ".join(cells) +
                     f" | {f(statistics.median(secs) if secs else None, '.4f')}"
                     f" | {f(sum(secs) if secs else None, '.1f')} ({n} windows)"
                     f" | {f(next(iter(rs.values()))['fit_s'], '.3f')} |")
    table = "\n".join(lines)
    print(table)
    detail = ["", "| tool | kind | windows | flagged | median s | total s |",
              "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        detail.append(f"| {r['tool']} | {short(r['kind'])} | {r['windows']} | "
                      f"{r['flagged']} ({r['share']:.0%}) | {f(r['median_s'], '.4f')} | "
                      f"{f(r['total_s'], '.2f')} |")
    print("\n".join(detail))
    write(a.out, {"bundle": idx["bundle"], "dim": idx["dim"], "window": idx["window"],
                  "reference_rows": idx["reference_rows"], "kinds": kinds,
                  "versions": versions, "rows": rows, "table_markdown": table})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("alibi", "evidently"):
        p = sub.add_parser(name)
        p.add_argument("dir")
        p.add_argument("--out", required=True)
        p.add_argument("--max-per-kind", type=int, default=0,
                       help="only the first N windows of each kind (0: all)")
    p = sub.add_parser("table")
    p.add_argument("dir")
    p.add_argument("results", nargs="*")
    p.add_argument("--out", required=True)
    a = ap.parse_args()
    {"alibi": cmd_alibi, "evidently": cmd_evidently, "table": cmd_table}[a.cmd](a)


if __name__ == "__main__":
    main()
