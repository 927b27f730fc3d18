"""Reciprocal rank fusion: hand-computed scores, weights and the documented tie-break rules; weighted score
fusion, per-page dedup and the early-fusion vector combination."""
from __future__ import annotations

import numpy as np
import pytest

from mmrag_core.query.fusion import (
    Fused,
    by_unit,
    combine_vectors,
    dedupe_by,
    reciprocal_rank_fusion,
    weighted_score_fusion,
)


def test_single_list_keeps_order_and_scores() -> None:
    fused = reciprocal_rank_fusion({"text": [(7, 0.9), (3, 0.8), (5, 0.1)]})
    assert [f.id for f in fused] == [7, 3, 5]
    assert [f.score for f in fused] == pytest.approx([1 / 61, 1 / 62, 1 / 63])
    assert fused[0].ranks == {"text": 1}
    assert fused[2].similarities == {"text": 0.1}


def test_two_lists_with_overlap_hand_computed() -> None:
    ranked = {
        "text": [(1, 0.9), (2, 0.8), (3, 0.7)],
        "image": [(3, 0.5), (4, 0.4), (1, 0.3)],
    }
    fused = reciprocal_rank_fusion(ranked, k=60)
    expected = {
        1: 1 / 61 + 1 / 63,
        3: 1 / 63 + 1 / 61,
        2: 1 / 62,
        4: 1 / 62,
    }
    assert {f.id: f.score for f in fused} == pytest.approx(expected)
    # 1 and 3 tie on score and on best rank (1); 1's best rank is in "text", given first.
    # 2 and 4 tie on score and best rank (2); 2's is in "text", 4's in "image".
    assert [f.id for f in fused] == [1, 3, 2, 4]
    by_id = {f.id: f for f in fused}
    assert by_id[1].ranks == {"text": 1, "image": 3}
    assert by_id[1].similarities == {"text": 0.9, "image": 0.3}
    assert by_id[3].ranks == {"text": 3, "image": 1}
    assert by_id[4].ranks == {"image": 2}


def test_three_lists_hand_computed() -> None:
    ranked = {
        "text": [(10, 0.9), (20, 0.8), (30, 0.7)],
        "image:text": [(20, 0.3), (40, 0.2)],
        "image:image": [(40, 0.99), (20, 0.5), (10, 0.4)],
    }
    fused = reciprocal_rank_fusion(ranked, k=60)
    scores = {f.id: f.score for f in fused}
    assert scores[20] == pytest.approx(1 / 62 + 1 / 61 + 1 / 62)
    assert scores[40] == pytest.approx(1 / 62 + 1 / 61)
    assert scores[10] == pytest.approx(1 / 61 + 1 / 63)
    assert scores[30] == pytest.approx(1 / 63)
    # 40 (1/61+1/62) beats 10 (1/61+1/63); 20 is in all three.
    assert [f.id for f in fused] == [20, 40, 10, 30]
    assert fused[0].ranks == {"text": 2, "image:text": 1, "image:image": 2}


def test_k_constant_changes_scores() -> None:
    fused = reciprocal_rank_fusion({"a": [(1, 1.0), (2, 0.5)]}, k=1)
    assert [f.score for f in fused] == pytest.approx([1 / 2, 1 / 3])


def test_weights_scale_contributions_and_reorder() -> None:
    ranked = {"text": [(1, 0.9), (2, 0.8)], "image": [(2, 0.7), (1, 0.6)]}
    # Unweighted: both items score 1/61 + 1/62; tie broken by the space of the best rank: 1 wins.
    assert [f.id for f in reciprocal_rank_fusion(ranked)] == [1, 2]
    fused = reciprocal_rank_fusion(ranked, weights={"image": 2.0})
    scores = {f.id: f.score for f in fused}
    assert scores[1] == pytest.approx(1 / 61 + 2 / 62)
    assert scores[2] == pytest.approx(1 / 62 + 2 / 61)
    assert [f.id for f in fused] == [2, 1]


def test_missing_weight_defaults_to_one_and_zero_weight_ignores_space() -> None:
    ranked = {"text": [(1, 0.9)], "image": [(2, 0.9)]}
    fused = reciprocal_rank_fusion(ranked, weights={"text": 0.0})
    scores = {f.id: f.score for f in fused}
    assert scores[1] == 0.0
    assert scores[2] == pytest.approx(1 / 61)
    assert [f.id for f in fused] == [2, 1]
    # a zero-weighted space still reports where the item ranked there
    assert fused[1].ranks == {"text": 1}


def test_tie_break_by_best_rank() -> None:
    # k=0 keeps the arithmetic exact: 9 -> 1/1, 2 -> 1/1, 1 -> 1/2 + 1/2; all score 1.0.
    ranked = {"a": [(9, 0.0), (1, 0.0)], "b": [(2, 0.0), (1, 0.0)]}
    fused = reciprocal_rank_fusion(ranked, k=0)
    assert {f.id: f.score for f in fused} == {9: 1.0, 2: 1.0, 1: 1.0}
    # 9 and 2 have best rank 1 and come before 1 (best rank 2); 9's rank 1 is in "a", given first.
    assert [f.id for f in fused] == [9, 2, 1]


def test_tie_break_by_space_order_not_id() -> None:
    # Equal score and best rank: the space given first wins, whatever the ids or space names.
    assert [f.id for f in reciprocal_rank_fusion({"second": [(1, 0.5)], "first": [(2, 0.5)]})] == [1, 2]
    assert [f.id for f in reciprocal_rank_fusion({"first": [(2, 0.5)], "second": [(1, 0.5)]})] == [2, 1]
    ranked = {"a": [(50, 0.5)], "b": [(40, 0.5)], "c": [(30, 0.5)]}
    assert [f.id for f in reciprocal_rank_fusion(ranked)] == [50, 40, 30]
    # mirrored lists: equal scores, both best rank 1; 8 is rank 1 in "a" (given first)
    ranked = {"a": [(8, 0.1), (9, 0.1)], "b": [(9, 0.1), (8, 0.1)]}
    assert [f.id for f in reciprocal_rank_fusion(ranked)] == [8, 9]
    ranked = {"b": [(9, 0.1), (8, 0.1)], "a": [(8, 0.1), (9, 0.1)]}
    assert [f.id for f in reciprocal_rank_fusion(ranked)] == [9, 8]


def test_deterministic_across_calls() -> None:
    ranked = {"a": [(i, 1.0 - i / 100) for i in range(20)], "b": [(i, 0.5) for i in reversed(range(20))]}
    first = [(f.id, f.score) for f in reciprocal_rank_fusion(ranked)]
    for _ in range(3):
        assert [(f.id, f.score) for f in reciprocal_rank_fusion(ranked)] == first
    # every id appears once and the scores are non-increasing
    assert sorted(i for i, _ in first) == list(range(20))
    assert all(a[1] >= b[1] for a, b in zip(first, first[1:]))


def test_empty_inputs() -> None:
    assert reciprocal_rank_fusion({}) == []
    assert reciprocal_rank_fusion({"text": [], "image": []}) == []


def test_result_type() -> None:
    (f,) = reciprocal_rank_fusion({"text": [(42, 0.25)]})
    assert isinstance(f, Fused)
    assert (f.id, f.ranks, f.similarities) == (42, {"text": 1}, {"text": 0.25})


def test_weighted_score_fusion_hand_computed() -> None:
    ranked = {"text": [(1, 0.9), (2, 0.7), (3, 0.5)], "image": [(3, 0.30), (4, 0.20), (1, 0.10)]}
    fused = weighted_score_fusion(ranked)
    # min-max within each list: text 1 -> 1, 2 -> 0.5, 3 -> 0; image 3 -> 1, 4 -> 0.5, 1 -> 0
    assert {f.id: f.score for f in fused} == pytest.approx({1: 1.0, 2: 0.5, 3: 1.0, 4: 0.5})
    assert [f.id for f in fused] == [1, 3, 2, 4]  # ties broken as in RRF: best rank, then list order
    weighted = weighted_score_fusion(ranked, weights={"image": 3.0})
    assert {f.id: f.score for f in weighted} == pytest.approx({1: 1.0, 2: 0.5, 3: 3.0, 4: 1.5})
    assert [f.id for f in weighted] == [3, 4, 1, 2]


def test_weighted_score_fusion_keeps_gaps_that_ranks_lose() -> None:
    # one clear winner in "a", a near tie in "b": RRF calls 1 and 2 equal, weighted scores do not
    ranked = {"a": [(1, 0.95), (2, 0.20), (3, 0.10)], "b": [(2, 0.51), (1, 0.50), (3, 0.10)]}
    assert reciprocal_rank_fusion(ranked)[0].score == pytest.approx(reciprocal_rank_fusion(ranked)[1].score)
    fused = weighted_score_fusion(ranked)
    assert fused[0].id == 1 and fused[0].score > fused[1].score + 0.5


def test_weighted_score_fusion_flat_list_and_empty() -> None:
    fused = weighted_score_fusion({"a": [(5, 0.3), (6, 0.3)], "b": []})
    assert [(f.id, f.score) for f in fused] == [(5, 1.0), (6, 1.0)]
    assert weighted_score_fusion({}) == []


def test_dedupe_by_keeps_the_best_item_per_unit_and_carries_ranks() -> None:
    fused = reciprocal_rank_fusion({"text": [(1, 0.9), (2, 0.8), (3, 0.7)], "image": [(4, 0.6), (2, 0.5)]})
    page = {1: "p1", 2: "p2", 3: "p1", 4: "p1"}
    out = dedupe_by(fused, page.__getitem__)
    assert [f.id for f in out] == [2, 1]  # 2 (text 2 + image 2) outranks 1 (text 1); 3 and 4 fold into 1
    by_id = {f.id: f for f in out}
    assert by_id[1].score == pytest.approx(1 / 61)  # the kept item's own score
    assert by_id[1].ranks == {"text": 1, "image": 1}  # image rank carried from item 4, its own text rank kept
    assert by_id[1].similarities == {"text": 0.9, "image": 0.6}
    assert by_id[2].ranks == {"text": 2, "image": 2}
    assert dedupe_by([], page.__getitem__) == []


def test_by_unit_lets_lists_vote_for_a_page_through_different_items() -> None:
    """Items 1, 2 on page A; 3 on page B; 4 on page C. Dense finds A through item 1, BM25 through item 2."""
    page = {1: "A", 2: "A", 3: "B", 4: "C"}.__getitem__
    ranked = {"text": [(3, 0.9), (1, 0.8), (2, 0.7)], "lexical": [(2, 12.0), (4, 9.0), (3, 3.0)]}
    assert by_unit(ranked, page) == {"text": [(3, 0.9), (1, 0.8)], "lexical": [(1, 12.0), (4, 9.0), (3, 3.0)]}
    # item by item, then one per page: A's best item has text rank 3 + lexical rank 1, no better than B
    itemwise = dedupe_by(reciprocal_rank_fusion(ranked, k=60), page)
    assert [page(f.id) for f in itemwise] == ["B", "A", "C"]
    # page by page: A has both lists' votes (text rank 2, lexical rank 1) and comes first
    pagewise = reciprocal_rank_fusion(by_unit(ranked, page), k=60)
    assert [(f.id, f.ranks) for f in pagewise] == [(1, {"text": 2, "lexical": 1}), (3, {"text": 1, "lexical": 3}),
                                                   (4, {"lexical": 2})]
    assert pagewise[0].score == pytest.approx(1 / 62 + 1 / 61)


def test_combine_vectors() -> None:
    t, i = np.array([[3.0, 0.0]]), np.array([[0.0, 0.5]])
    both = combine_vectors([t, i], [0.5, 0.5])
    assert both == pytest.approx(np.array([[1, 1]]) / np.sqrt(2))  # inputs normalised first: equal shares
    assert combine_vectors([t, i], [1.0, 0.0]) == pytest.approx(np.array([[1.0, 0.0]]))
    assert np.linalg.norm(combine_vectors([t, i], [0.2, 0.8])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="cancel out"):
        combine_vectors([t, -t], [0.5, 0.5])
    with pytest.raises(ValueError):
        combine_vectors([t], [0.5, 0.5])
