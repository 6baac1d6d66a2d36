"""Gradient checkpointing recomputes both towers' layers in the backward pass and changes neither
the loss nor any gradient: in one process, and under DDP on two gloo ranks."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from lcaffect_ml.losses import v2lc_loss
from lcaffect_ml.tokenizer import build_char_tokenizer, tokenize_comments
from lcaffect_ml.v2lc import V2LCConfig, V2LCModel

from conftest import spawn_gloo_ranks


pytestmark = pytest.mark.usefixtures("one_torch_thread")

COMMENTS = [["红火热", "燃爆了"], ["蓝天", "海洋好冷静", "哈哈"], ["绿草"], ["好看", "abc"]]
# deterministic: no dropout, so the recomputed forward is the first one exactly
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def _model(checkpointing: bool) -> V2LCModel:
    tokenizer = build_char_tokenizer([c for seg in COMMENTS for c in seg])
    torch.manual_seed(0)
    cfg = V2LCConfig(embed_dim=16, max_comments=3, text_max_length=12, gradient_checkpointing=checkpointing,
                     video_overrides=NO_DROPOUT, text_overrides=NO_DROPOUT)
    return V2LCModel.build(cfg, tokenizer=tokenizer).train()


def _batch(model: V2LCModel, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (len(COMMENTS), 4, 32, 32, 3), dtype=torch.uint8, generator=g)
    return (frames, *tokenize_comments(model.tokenizer, COMMENTS, model.config.max_comments, model.config.text_max_length))


def _loss(net: torch.nn.Module, batch) -> torch.Tensor:
    out = net(*batch)
    return v2lc_loss(out.video_embeds, out.comment_embeds, out.comment_segment, out.logit_scale).loss


def _count_layer_calls(model: V2LCModel) -> Counter:
    """Calls of the Linear modules inside each transformer layer, by (tower, layer): a checkpointed
    layer runs them again in the backward pass (all but those whose outputs the backward does not
    need: non-reentrant recomputation stops early)."""
    calls: Counter = Counter()
    for tower in ("video", "text"):
        for i, layer in enumerate(getattr(model, tower).encoder.layer):
            for module in layer.modules():
                if isinstance(module, torch.nn.Linear):
                    module.register_forward_hook(lambda *_, key=(tower, i): calls.update([key]))
    return calls


def _assert_same_gradients(plain: torch.nn.Module, ckpt: torch.nn.Module) -> None:
    for (name, p), (_, q) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        assert p.grad is not None and q.grad is not None, name
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_checkpointing_recomputes_both_towers_and_keeps_loss_and_gradients():
    plain, ckpt = _model(False), _model(True)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), ckpt.state_dict().values()))
    calls = {"plain": _count_layer_calls(plain), "ckpt": _count_layer_calls(ckpt)}
    batch = _batch(plain, seed=0)
    losses = {}
    for name, model in (("plain", plain), ("ckpt", ckpt)):
        losses[name] = _loss(model, batch)
        losses[name].backward()
    assert {tower for tower, _ in calls["plain"]} == {"video", "text"}
    assert calls["ckpt"].keys() == calls["plain"].keys()
    assert all(calls["ckpt"][key] > calls["plain"][key] for key in calls["plain"]), calls  # every layer recomputed
    torch.testing.assert_close(losses["ckpt"], losses["plain"])
    _assert_same_gradients(plain, ckpt)

    ckpt.set_gradient_checkpointing(False)  # what a resume with the option switched off does
    assert not ckpt.config.gradient_checkpointing
    calls["ckpt"].clear()
    _loss(ckpt, batch).backward()
    assert calls["ckpt"] == calls["plain"]


def _ddp_worker(rank: int, world: int) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    nets = {name: DistributedDataParallel(_model(on)) for name, on in (("plain", False), ("ckpt", True))}
    batch = _batch(nets["plain"].module, seed=rank)  # each rank its own data
    losses = {}
    for name, net in nets.items():
        losses[name] = _loss(net, batch)  # the global loss (embeddings gathered across ranks)
        losses[name].backward()  # DDP all-reduces the gradients here
    torch.testing.assert_close(losses["ckpt"], losses["plain"])
    _assert_same_gradients(nets["plain"].module, nets["ckpt"].module)
    # after the all-reduce both ranks hold the same gradients
    grad = torch.cat([p.grad.flatten() for p in nets["ckpt"].parameters()])
    every = [torch.empty_like(grad) for _ in range(world)]
    dist.all_gather(every, grad)
    torch.testing.assert_close(every[0], every[1])


@pytest.mark.slow
def test_checkpointing_under_ddp_keeps_loss_and_all_reduced_gradients():
    spawn_gloo_ranks(_ddp_worker)
