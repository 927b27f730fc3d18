"""scripts/figure_caption_queries.py: the figure-caption evaluation set is the captions without their label, each
judged on its own page, over copies of the PDFs they come from, in the formats mmrag eval reads."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mmrag_core.eval.data import load_qrels, load_queries, qrels_level

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "figure_caption_queries.py"


def test_caption_set_is_written_for_mmrag_eval(test_data: Path, tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "--data", str(test_data), str(tmp_path)], check=True,
                   capture_output=True, text=True)
    captions = json.loads((test_data / "figure_captions" / "figure_captions.json").read_text())
    queries = load_queries(tmp_path / "queries.jsonl")
    qrels = load_qrels(tmp_path / "qrels.tsv")
    assert set(queries) == set(qrels) == {c["id"] for c in captions}
    assert qrels_level(qrels) == "page"
    for c in captions:
        text = queries[c["id"]]
        assert not text.lower().startswith(("figure", "fig.")) and text and text in c["caption"]
        assert qrels[c["id"]] == {f"{Path(c['pdf']).stem}#p{c['page']}": 1.0}
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == sorted({c["pdf"] for c in captions})
