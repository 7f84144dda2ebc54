"""The literature's CAV classifier: captum's DefaultClassifier (scikit-learn SGD), seeded per fit.

Kept as the reference the batched fitters of `cav` are compared with (tests, benchmarks/bench_tcav.py)
and selectable as `explanations.tcav.classifier: sgd`. It fits one problem at a time in feature space and
imports scikit-learn and captum's concept module, which the batched path never loads.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ticketlens.explanations.seeds import seed_array, seed_everything

CAV_SEED = (
    0  # the seed of a classifier made without one (the captum comparison in tests/explanations/test_tcav.py)
)


def make_classifier(seed: int = CAV_SEED) -> Any:
    """captum's DefaultClassifier (sklearn SGD, alpha 0.01, 33% held out), seeded and with a correct accuracy.

    DefaultClassifier shuffles with `random` and sklearn's SGD draws from numpy's global state; seeding
    both before each fit makes CAVs reproducible and identical between our path and a captum TCAV loop.
    Its reported accuracy is wrong for two-concept sets (captum issue #1122, unfixed in 0.9.0: the
    one-column score is argmax-ed, so it always predicts the first class); we score the held-out split
    with the sign of that column instead. The CAV weights are untouched.
    """
    from captum.concept._utils.classifier import DefaultClassifier, _train_test_split
    from torch.utils.data import DataLoader, TensorDataset

    class SeededClassifier(DefaultClassifier):
        def __init__(self) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its memory warning does not apply to sets of ~30 images
                super().__init__()
            self.seed = seed

        def train_and_eval(self, dataloader: Any, test_split_ratio: float = 0.33, **kwargs: Any) -> dict:
            seed_everything(self.seed)
            batches = list(dataloader)
            x = torch.cat([b[0] for b in batches])
            y = torch.cat([b[1] for b in batches])
            x_train, x_test, y_train, y_test = _train_test_split(x, y, test_split=test_split_ratio)
            self.lm.device = x.device
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # captum's "tensor from a list of ndarrays is slow"
                self.lm.fit(DataLoader(TensorDataset(x_train, y_train)))
            scores = self.lm(x_test)
            classes = self.lm.classes()
            # binary: one column, positive means the second class
            binary = scores.shape[1] == 1
            picked = (scores[:, 0] > 0).long().cpu() if binary else scores.argmax(dim=1).cpu()
            accuracy = (classes[picked].long() == y_test.long().cpu()).float().mean()
            return {"accs": accuracy}

    return SeededClassifier()


def train_cav(positive: torch.Tensor, negative: torch.Tensor, classifier: Any) -> tuple[torch.Tensor, float]:
    """CAV pointing from `negative` towards `positive` activations (N x F each), and held-out accuracy.

    Labels 0 (concept) and 1 (random) and the concatenation order match what captum's `train_cav`
    feeds the classifier for the experimental set [concept, random], so the fits are identical.
    """
    x = torch.cat([positive, negative]).float()
    y = torch.cat([torch.zeros(len(positive)), torch.ones(len(negative))]).long()
    stats = classifier.train_and_eval([(x, y)]) or {}
    classes = [int(c) for c in classifier.classes()]
    cav = classifier.weights()[classes.index(0)].float()
    accuracy = float(stats.get("accs", float("nan")))
    return cav, accuracy


def fit_sgd(
    positives: torch.Tensor,
    negatives: torch.Tensor,
    seeds: Sequence[int] | torch.Tensor,
    test_fraction: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """B CAVs (B x F, not normalised) and held-out accuracies, one seeded captum classifier per problem.

    The held-out split is captum's (pooled rows, shuffled by `random` seeded with the fit's seed).
    """
    seed_list = [int(s) for s in seed_array(seeds).tolist()]
    cavs, accuracy = [], []
    for positive, negative, seed in zip(positives.cpu(), negatives.cpu(), seed_list, strict=True):
        classifier = make_classifier(seed)
        classifier.train_and_eval = functools.partial(
            classifier.train_and_eval, test_split_ratio=test_fraction
        )
        cav, held_out = train_cav(positive, negative, classifier)
        cavs.append(cav)
        accuracy.append(held_out)
    stacked = torch.stack(cavs).to(positives.device)
    return stacked, torch.tensor(accuracy, dtype=torch.float32, device=positives.device)
