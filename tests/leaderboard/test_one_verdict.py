"""One comparison, one verdict: the run summary, the page and the CSVs agree; the omnibus test follows the verdicts'
seed rule and says when its F is undefined; the CD diagram says why it can disagree with a verdict."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import pandas as pd
import pytest
from conftest import TASKS, make_store, run_build

from leaderboard.stats import F_UNDEFINED

# An mni152-like smoke run: two transfers into t1-CSF (one with negative transfer), one into t1-GM, shared subjects.
MNI_TASKS = {
    "t1-CSF": ("mni152", ("t1-WM", "t1-GM"), "cross-task", "CSF", 0.60, "sub-"),
    "t1-GM": ("mni152", "t1-WM", "cross-task", "GM", 0.75, "sub-"),
}
MNI_METHODS = {
    "scratch": ("scratch", {}, {"t1-CSF": 0.0, "t1-GM": 0.0}),
    "finetune": ("finetune", {}, {"t1-WM->t1-CSF": -0.08, "t1-GM->t1-CSF": -0.03, "t1-GM": 0.01}),
    "trm": ("trm", {"alpha": 2}, {"t1-WM->t1-CSF": -0.05, "t1-GM->t1-CSF": -0.02, "t1-GM": 0.012}),
}
# "+0.073 vs finetune [95% CI +0.058, +0.089; better]" (the interval only from 3 seeds); where scratch is best, also
# each transferred method's row against it: "finetune -0.080 vs scratch [95% CI -0.095, -0.065; negative]"
PART = re.compile(
    r"(?:^|; )(?:([^;]+?) )?([+-]\d\.\d{3}) vs (\w+)(?: \[95% CI ([+-]\d\.\d{3}), ([+-]\d\.\d{3}); ([^\]]+)\])?"
)
TABLES = {"finetune": ("comparisons.csv", "comparisons"), "scratch": ("negative_transfer.csv", "negative-transfer")}


def mni_store(root: Path, seeds: int) -> Path:
    """The smoke run's cells next to another setting (fets, not smoke) with more methods: another Holm family."""
    make_store(root, tasks={"02-t1-TC": TASKS["02-t1-TC"]}, seeds=seeds)
    subjects = [f"sub-{i:02d}" for i in range(8)]
    common = {"seed_sd": 0.01, "interaction_sd": 0.01, "subject_sd": 0.05, "noise_sd": 0.02, "scores": False}
    return make_store(
        root, tasks=MNI_TASKS, methods=MNI_METHODS, seeds=seeds, subjects=8, subject_ids=subjects, **common,
        columns={"smoke": True},
    )  # fmt: skip


def summary_comparisons(text: str) -> list[dict]:
    """Every comparison the run summary prints: transfer, best method, control, difference, interval, verdict."""
    out, transfer = [], None
    for line in text.splitlines():
        if head := re.match(r"^(\S+) -> (\S+)  \(", line):
            transfer = f"{head[1]}->{head[2]}"
        elif best := re.match(r"^  best: (.+?) \(Dice [\d.]+\): (.*)$", line):
            for method, diff, control, low, high, verdict in PART.findall(best[2]):
                verdict = "equivalent" if verdict.startswith("equivalent") else verdict
                out.append(
                    {"transfer": transfer, "method": method or best[1], "control": control, "diff": diff}
                    | ({"ci": f"[{low}, {high}]", "verdict": verdict} if low else {})
                )
    return out


def page_rows(html: str, table_id: str) -> list[list[str]]:
    """The body cells (text) of every row of the page's tables whose id starts with ``table_id-``."""
    rows = []
    for table in re.findall(rf'<table id="{table_id}-\d+">(.*?)</table>', html, flags=re.S):
        body = table.split("<tbody>")[1]
        for row in re.findall(r"<tr>(.*?)</tr>", body, flags=re.S):
            cells = re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
            rows.append([unescape(re.sub(r"<[^>]+>", "", c)) for c in cells])
    return rows


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mni_store(tmp_path_factory.mktemp("mni3") / "results", seeds=3)


def test_every_comparison_the_summary_prints_is_the_pages_and_the_csvs(three_seeds: Path, summarise) -> None:
    text = summarise(three_seeds, smoke=True)
    command = text.split("Next, tables with paired tests and figures: ")[1].split()
    assert "--include-smoke" in command
    assert run_build(three_seeds, three_seeds.parent / "site", *command[command.index("--out") + 2 :]) == 0
    site = three_seeds.parent / "site"
    html = (site / "index.html").read_text()
    printed = summary_comparisons(text)
    assert len(printed) >= 5 and all("ci" in p for p in printed)  # 3 seeds: every comparison has its interval
    assert {p["control"] for p in printed} == {"finetune", "scratch"}
    assert {"better", "negative"} & {p["verdict"] for p in printed}  # not all inconclusive: a real check
    # Scratch is best on t1-WM -> t1-CSF: the summary prints each transferred method's row against it.
    against = {p["method"] for p in printed if p["transfer"] == "t1-WM->t1-CSF" and p["control"] == "scratch"}
    assert against == {"finetune", "trm(alpha=2)"}
    for p in printed:
        name, table_id = TABLES[p["control"]]
        csv = pd.read_csv(site / name, keep_default_na=False, na_values=[""])
        hit = csv[(csv["scope"] == p["transfer"]) & (csv["method"] == p["method"]) & (csv["control"] == p["control"])]
        assert len(hit) == 1 and hit["level"].iloc[0] == "transfer", p
        r = hit.iloc[0]
        assert p["diff"] == f"{r.mean_diff:+.3f}" and p["ci"] == f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]", p
        assert p["verdict"] == r.verdict, p
        scope = p["transfer"].replace("->", " → ")
        (row,) = [c for c in page_rows(html, table_id) if c[0] == p["method"] and c[1] == scope]
        assert row[5] == f"{p['diff']} {p['ci']}" and p["verdict"] in row, row


def test_pooled_rows_are_their_own_family_and_never_repeat_a_transfer(three_seeds: Path) -> None:
    site = three_seeds.parent / "site"
    csv = pd.read_csv(site / "comparisons.csv")
    mni = csv[csv["setting"].str.startswith("mni152")]
    levels = mni.groupby("scope")["level"].first().to_dict()
    assert levels == {
        "t1-WM->t1-CSF": "transfer",
        "t1-GM->t1-CSF": "transfer",
        "t1-WM->t1-GM": "transfer",
        "t1-CSF": "target",  # two transfers pooled
        "all": "all",
    }  # no t1-GM row: its one transfer's row is that target task's row
    html = (site / "index.html").read_text()
    assert any(c[1] == "t1-CSF, pooled" for c in page_rows(html, "comparisons"))
    footer = re.search(r'<footer class="note" id="holm-family">(.*?)</footer>', html)[1]
    assert "per-transfer rows of one setting and one control are one family" in unescape(footer)
    # The negative transfer of t1-WM -> t1-CSF is shown in its own row, however the pooled t1-CSF row reads.
    row = mni[(mni["scope"] == "t1-WM->t1-CSF") & (mni["method"] == "scratch")].iloc[0]
    assert row["verdict"] == "better"


@pytest.mark.parametrize("seeds", [1, 2])
def test_no_omnibus_p_value_below_three_seeds(tmp_path: Path, summarise, seeds: int) -> None:
    store = mni_store(tmp_path / "results", seeds=seeds)
    assert run_build(store, tmp_path / "site", "--include-smoke") == 0
    for omnibus in json.loads((tmp_path / "site" / "omnibus.json").read_text())["settings"].values():
        assert omnibus["friedman_p"] is None and omnibus["iman_davenport_p"] is None and not omnibus["draw_cd"]
        assert omnibus["mean_ranks"] and f"no omnibus test: {seeds} seed(s)" in omnibus["note"]
    html = (tmp_path / "site" / "index.html").read_text()
    for sentence in re.findall(r'<p class="note" id="omnibus-\d+">(.*?)</p>', html):
        assert "p =" not in sentence and "χ²" not in sentence
    # Below 3 seeds the summary prints the leaderboard's difference, no interval and no verdict.
    printed = summary_comparisons(summarise(store, smoke=True))
    csv = pd.read_csv(tmp_path / "site" / "comparisons.csv")
    assert printed and all("ci" not in p for p in printed)
    for p in (p for p in printed if p["control"] == "finetune"):
        r = csv[(csv["scope"] == p["transfer"]) & (csv["method"] == p["method"])].iloc[0]
        assert p["diff"] == f"{r.mean_diff:+.3f}" and r.verdict == "inconclusive" and pd.isna(r.p_holm)


def test_degenerate_iman_davenport_is_named_not_infinite(tmp_path: Path) -> None:
    # Every test subject ranks the three methods the same way: chi2 = N(k-1), F's denominator is 0.
    methods = {
        "scratch": ("scratch", {}, {"t1-GM": 0.0}),
        "finetune": ("finetune", {}, {"t1-GM": 0.2}),
        "trm": ("trm", {"alpha": 2}, {"t1-GM": 0.4}),
    }
    tasks = {"t1-GM": ("iseg", "t2-GM", "cross-modality", "GM", 0.3, "iSeg-")}
    store = make_store(tmp_path / "r", methods=methods, tasks=tasks, seeds=3, subjects=6, noise_sd=0.005)
    assert run_build(store, tmp_path / "site") == 0
    (omnibus,) = json.loads((tmp_path / "site" / "omnibus.json").read_text())["settings"].values()
    assert omnibus["iman_davenport_F"] is None and omnibus["iman_davenport_p"] is None
    assert omnibus["friedman_chi2"] == pytest.approx(6 * 2) and F_UNDEFINED in omnibus["note"]
    assert omnibus["draw_cd"]  # Friedman's p gates the diagram instead (12 on 2 df: p = 0.0025)
    html = unescape((tmp_path / "site" / "index.html").read_text())
    sentence = re.search(r'<p class="note" id="omnibus-1">(.*?)</p>', html)[1]
    assert "F undefined: every unit ranks the methods the same way" in sentence
    assert "inf" not in sentence and "p = 0," not in sentence and "Iman–Davenport F(" not in sentence


def test_cd_diagram_says_why_it_can_disagree_with_a_verdict(three_seeds: Path) -> None:
    site = three_seeds.parent / "site"
    (omnibus,) = [o for s, o in json.loads((site / "omnibus.json").read_text())["settings"].items() if "mni" in s]
    ranks = omnibus["mean_ranks"]
    assert omnibus["draw_cd"] and abs(ranks["scratch"] - ranks["finetune"]) >= omnibus["nemenyi_cd"]
    csv = pd.read_csv(site / "comparisons.csv")
    pooled = csv[csv["setting"].str.startswith("mni152") & (csv["scope"] == "all") & (csv["method"] == "scratch")]
    assert pooled["verdict"].tolist() == ["inconclusive"]  # the diagram separates them; the verdict cannot
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", unescape((site / "index.html").read_text()))
    caption = next(c for c in captions if "scratch vs finetune (inconclusive)" in c)
    assert "It can disagree with the verdicts below (here: " in caption
    assert "treating these trained models as fixed" in caption and "seed-to-seed spread" in caption
