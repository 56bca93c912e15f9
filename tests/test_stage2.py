"""Stage-2 scoring: a candidate's scores are bit-identical whatever its position, its company,
the precision it was read in (fp16 as stored, or fp32) and the levels asked for, which is what
lets the search engine (storage order, fp16) agree exactly with evaluation (stage-1 order, fp32)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from eercf.model.config import get_model_config
from eercf.model import EERCF, VideoFeatures
from eercf.model.similarity import LEVELS

torch.set_num_threads(1)


EVERY_LEVEL = {level: 1.0 for level in LEVELS}


def test_candidate_scores_ignore_order_company_precision_and_levels() -> None:
    torch.manual_seed(0)
    model = EERCF(get_model_config("tiny")).eval()
    with torch.no_grad():  # learnt-looking W_g and W_f, so both are really exercised
        model.global_weight.add_(0.05 * torch.randn_like(model.global_weight))
        model.frame_weight.add_(0.1 * torch.randn_like(model.frame_weight))
    g = torch.Generator().manual_seed(1)
    n, frames, patches, dim, k = 40, 12, 16, 128, 25
    unit = lambda *shape: F.normalize(torch.randn(*shape, generator=g), dim=-1)  # noqa: E731
    mask = torch.ones(n, frames, dtype=torch.bool)
    for v in range(0, n, 3):
        mask[v, 2 + v % 9:] = False
    valid = mask[..., None].float()
    videos = VideoFeatures(unit(n, dim), unit(n, frames, dim) * valid, unit(n, frames, dim) * valid,
                           unit(n, frames, patches, dim) * valid[..., None], mask).as_stored()
    stored = VideoFeatures(videos.video, videos.frames.half(), videos.temporal.half(),
                           videos.patches.half(), mask)
    text = unit(2, dim)
    picks = torch.randperm(n, generator=g)[:k]
    with torch.inference_mode():
        reference = model.rerank(text[:1], videos.index(picks), k, EVERY_LEVEL)[1]
        for trial in range(3):
            order = torch.randperm(k, generator=g)
            source = stored if trial % 2 else videos
            got = model.rerank(text[:1], source.index(picks[order]), k, EVERY_LEVEL)[1]
            for key, value in reference.items():
                assert torch.equal(got[key][0], value[0][order]), key
        others = torch.randperm(n, generator=g)[:k]
        batch = model.rerank(text, videos.index(torch.cat([picks, others])), k, EVERY_LEVEL)[1]
        fused_only = model.rerank(text[:1], stored.index(picks), k, {
            "video": 1, "frame_weak": 1, "patch_weak": 1, "frame_strong": 0, "patch_strong": 0})[1]
    for key, value in reference.items():
        assert torch.equal(batch[key][:1], value), key
    assert set(fused_only) == {"video", "frame_weak", "patch_weak", "frame_weights",
                               "patch_weights", "frame_similarity"}
    for key, value in fused_only.items():
        assert torch.equal(value, reference[key]), key
    assert set(reference) == set(LEVELS) | {"frame_weights", "patch_weights", "frame_similarity"}
    # padded frames carry no gate weight, at the frame or the patch level
    assert float(reference["frame_weights"][0][~mask[picks]].abs().sum()) == 0.0
    patch_mask = mask[picks].repeat_interleave(patches, dim=1)
    assert float(reference["patch_weights"][0][~patch_mask].abs().sum()) == 0.0
