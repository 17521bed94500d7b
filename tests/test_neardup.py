"""Near-duplicates (sftmix.neardup) and the held-out split built on them (sftmix.splits)."""
import random

import pytest

from sftmix import neardup, splits

SENTENCE = "The patient was referred to the specialist because he had a rare skin condition."


def test_normalise_and_ratio():
    assert neardup.normalise("  The\u00a0PATIENT\n was  ") == "the patient was"
    assert neardup.ratio("abc", "abc") == 1.0 and neardup.ratio("ab", "cd") == 0.0
    swap = SENTENCE.replace(" he ", " she ")
    assert neardup.ratio(neardup.normalise(SENTENCE), neardup.normalise(swap)) == pytest.approx(1 - 1 / 161)
    # punctuation is content: brackets that differ are not normalised away
    assert neardup.normalise("( [ ] )") != neardup.normalise("( ( ) )")


def test_groups_are_transitive_and_order_free():
    a = SENTENCE + " She was seen again a week later, and the rash had gone."  # 136 characters
    b = a.replace(" he ", " it ")  # two characters replaced: 4 unmatched of 274, ratio 0.985
    c = b.replace("rare", "pure")  # two more: c is 0.985 from b but 0.971 from a
    other = "A completely different item about boolean expressions and their truth values, with no overlap."
    texts = [a, other, c, b, a.upper()]
    g = neardup.groups(texts)
    assert g == [0, 1, 0, 0, 0]  # a ~ b ~ c (b links a and c) and the upper-cased copy; `other` alone
    assert neardup.near_duplicate_pairs([a, c]) == []  # a and c differ by more than 2 % on their own
    assert [round(r, 3) for _, _, r in neardup.near_duplicate_pairs([a, b, c])] == [0.985, 0.985]


def test_the_candidate_join_equals_all_pairs():
    rng = random.Random(0)
    words = [f"w{rng.randrange(40)}" for _ in range(4000)]
    texts = [" ".join(words[i * 20:(i + 1) * 20]) for i in range(200)]
    for i in range(0, 200, 7):  # planted near-duplicates: one character changed, or a word dropped
        texts.append(texts[i][:-1] + "x" if i % 2 else texts[i].replace(" ", "  ", 3))
    texts += ["(" * 30 + ")" * 30, "(" * 30 + ")" * 29 + "]"]  # short, repetitive: few distinct 5-grams
    full = neardup.near_duplicate_pairs(texts, method="all")
    assert len(full) >= 29 and neardup.near_duplicate_pairs(texts, method="prefix") == full
    for t in (0.9, 0.95):
        assert neardup.near_duplicate_pairs(texts, t, "prefix") == neardup.near_duplicate_pairs(texts, t, "all")


def test_matches_name_each_querys_closest_row():
    corpus = [SENTENCE, SENTENCE.replace(" he ", " she "), "unrelated text entirely, nothing like the others"]
    assert neardup.matches([SENTENCE.replace(" he ", " they "), "nope, nothing alike at all here"], corpus) == {
        0: (0, pytest.approx(neardup.ratio(neardup.normalise(SENTENCE.replace(" he ", " they ")),
                                           neardup.normalise(SENTENCE))))}


def test_assign_keeps_groups_together_and_follows_the_fractions():
    texts = [f"item {i:05d}: {'x' * (i % 7)} a question about {i * 7919 % 10007}" for i in range(3000)]
    buckets = splits.assign(texts)
    share = {b: buckets.count(b) / len(texts) for b in splits.SPLITS}
    assert abs(share["train"] - 0.6) < 0.05 and abs(share["validation"] - 0.1) < 0.04
    dup = texts + [texts[5], texts[5].upper()]
    got = splits.assign(dup)
    assert got[-1] == got[-2] == got[5]  # identical (after normalisation) inputs share a bucket
    assert splits.assign(list(reversed(dup))) == list(reversed(got))  # order-free
    assert set(splits.assign(texts[:50], (0, 0, 1))) == {"eval"}
    with pytest.raises(Exception, match="summing to 1"):
        splits.assign(texts, (0.5, 0.2, 0.2))
