"""Explanations: pixel level (`explain`, `saliency`, `compare`, `faithfulness`) and concept level (`tcav`)."""

from __future__ import annotations
