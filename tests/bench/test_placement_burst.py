"""bench.placement's burst part: how it counts where a burst went, on models whose answer is known."""

from __future__ import annotations

from bench.placement import BURST, Arrival, HamiModel, Model, Snapshot, burst


class OneCard(Model):
    """Puts every quarter share on node-a's card 1 (and the warm-up's pods nowhere)."""

    def __init__(self) -> None:
        self.cards = {"node-a": [0.0, 0.0], "node-b": [0.0, 0.0]}

    def place(self, arrival: Arrival, now: float) -> bool:
        if arrival.index >= 10_000:
            self.cards["node-a"][1] += 0.25
        return True

    def remove(self, arrival: Arrival, now: float) -> None:
        pass

    def snapshot(self) -> Snapshot:
        return Snapshot({node: list(cards) for node, cards in self.cards.items()})


def test_a_burst_on_one_card_counts_one_node_one_card_and_every_pod_there() -> None:
    assert burst(OneCard(), 1, None) == (1, 1, BURST, BURST)


def test_hami_scores_with_fresh_usage_give_every_pod_of_a_burst_its_own_card() -> None:
    import random

    nodes, cards, most_on_node, most_on_card = burst(HamiModel("spread", "spread", random.Random(1)), 1, None)
    assert cards == BURST and most_on_card == 1
    assert nodes > 1 and most_on_node < BURST
