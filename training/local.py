"""Local adapter training inside one silo: LoRA (plain, FFA, FLoRA) or a soft prompt on the base model.

:class:`AdapterModel` holds the base model with one peft adapter and moves the tensors that
travel in and out as numpy arrays keyed by peft's state-dict names (without the adapter
name), e.g. ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``; a soft
prompt is the single array ``prompt_embeddings``. Only those arrays ever leave the silo.

Training minimises the cross-entropy of the reply tokens only (the prompt is context).
With record-level differential privacy, each step is DP-SGD by Opacus: examples are drawn by
Poisson sampling, each example's gradient is clipped and Gaussian noise is added, and
Opacus' RDP accountant reports the epsilon spent on the silo's examples.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from federation.errors import ConfigError, ValidationFailed
from training.examples import TrainingExample

logger = logging.getLogger(__name__)

Method = Literal["lora", "ffa-lora", "flora", "prompt"]
LORA_METHODS: tuple[Method, ...] = ("lora", "ffa-lora", "flora")
PROMPT_ARRAY = "prompt_embeddings"
_IGNORE = -100


@dataclass(frozen=True)
class AdapterSpec:
    """The adapter every party trains (the server sends it with each round).

    Attributes:
        method: ``lora`` (A and B trained and sent), ``ffa-lora`` (A frozen at a shared
            seeded initialisation, only B trained and sent), ``flora`` (a fresh LoRA per
            round on top of the merged global stack), ``prompt`` (soft prompt tuning).
        rank: LoRA rank.
        alpha: LoRA alpha (scaling alpha / rank).
        target_modules: the linear layers that get an adapter.
        virtual_tokens: soft prompt length.
        seed: seeds every initialisation, so that all parties start from the same one.
    """

    method: Method = "ffa-lora"
    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    virtual_tokens: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in (*LORA_METHODS, "prompt"):
            raise ConfigError(f"unknown adapter method {self.method!r}; use lora, ffa-lora, flora or prompt")
        if not 1 <= self.rank <= 256 or self.alpha <= 0 or not 1 <= self.virtual_tokens <= 512:
            raise ConfigError("rank must be 1..256, alpha > 0 and virtual_tokens 1..512")

    @property
    def scaling(self) -> float:
        """LoRA's scaling of B·A."""
        return self.alpha / self.rank


@dataclass(frozen=True)
class RecordDP:
    """Record-level DP-SGD inside a silo.

    Attributes:
        noise_multiplier: Gaussian noise std over the clipping norm.
        max_grad_norm: each example's gradient is clipped to this L2 norm.
        delta: the delta epsilon is reported at.
    """

    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if self.noise_multiplier < 0 or self.max_grad_norm <= 0 or not 0 < self.delta < 1:
            raise ConfigError("record-level DP needs noise_multiplier >= 0, max_grad_norm > 0 and 0 < delta < 1")


@dataclass(frozen=True)
class Optimisation:
    """Local training per round.

    Attributes:
        learning_rate: AdamW learning rate.
        epochs: passes over the silo's examples per round (expected passes under Poisson sampling).
        batch_size: examples per step (expected, under DP).
        max_steps: cap on steps per round (0: no cap).
        max_length: longest example in tokens; longer ones are skipped.
        citation_weight: weight of the reply tokens that are the cited source's number (the
            other reply tokens weigh 1): they are 3 of ~60 tokens, and they decide the citation.
    """

    learning_rate: float = 2e-3
    epochs: float = 1.0
    batch_size: int = 4
    max_steps: int = 0
    max_length: int = 768
    citation_weight: float = 5.0


@dataclass(frozen=True)
class TrainResult:
    """What one round of local training did.

    Attributes:
        examples: examples trained on.
        steps: optimiser steps.
        loss: mean training loss over the steps.
        epsilon: record-level epsilon spent so far on these examples (None without DP).
    """

    examples: int
    steps: int
    loss: float
    epsilon: float | None


@dataclass(frozen=True)
class _Encoded:
    input_ids: list[int]
    labels: list[int]
    weights: list[float] | None = None  # per token, 1 everywhere when None


class AdapterModel:
    """The base model with one trainable adapter.

    Args:
        model_dir: a transformers model directory (:func:`training.base_model.hf_model_dir`).
        spec: the adapter to train.
        threads: torch CPU threads (None: torch's default).
    """

    def __init__(self, model_dir: Path, spec: AdapterSpec, *, threads: int | None = None) -> None:
        import peft
        import torch
        import transformers

        if threads:
            torch.set_num_threads(threads)
        self.spec = spec
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        base = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        torch.manual_seed(spec.seed)
        if spec.method == "prompt":
            config: Any = peft.PromptTuningConfig(
                task_type=peft.TaskType.CAUSAL_LM,
                num_virtual_tokens=spec.virtual_tokens,
                prompt_tuning_init=peft.PromptTuningInit.TEXT,
                prompt_tuning_init_text="Answer from the numbered sources and cite the source you use.",
                tokenizer_name_or_path=str(model_dir),
            )
        else:
            config = peft.LoraConfig(
                r=spec.rank,
                lora_alpha=spec.alpha,  # type: ignore[arg-type]  # peft accepts any positive number
                target_modules=list(spec.target_modules),
                lora_dropout=0.0,
                bias="none",
                task_type=peft.TaskType.CAUSAL_LM,
            )
        self.model = peft.get_peft_model(base, config)
        self._end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if spec.method == "ffa-lora":
            self._freeze_shared_a()
        self.model.eval()

    # the arrays that travel ---------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        from peft.utils import get_peft_model_state_dict

        return dict(get_peft_model_state_dict(self.model))

    def array_names(self) -> list[str]:
        """The names of the arrays this method sends (FFA-LoRA: B only)."""
        names = sorted(self._state())
        if self.spec.method == "ffa-lora":
            names = [n for n in names if ".lora_B." in n]
        return names

    def arrays(self) -> dict[str, np.ndarray]:
        """The trainable tensors that leave the silo, as float32 arrays."""
        every = self.all_arrays()
        return {n: every[n] for n in self.array_names()}

    def all_arrays(self) -> dict[str, np.ndarray]:
        """Every adapter tensor (FFA-LoRA's frozen A included), as float32 arrays."""
        return {n: t.detach().cpu().numpy().astype(np.float32, copy=True) for n, t in self._state().items()}

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        """Set the adapter's tensors from the server's arrays (names and shapes must match).

        Raises:
            ValidationFailed: an unknown name or a wrong shape.
        """
        import torch
        from peft.utils import set_peft_model_state_dict

        state = self._state()
        for name, value in arrays.items():
            if name not in state:
                raise ValidationFailed(f"the server sent an unknown adapter tensor {name!r}", code="bad_arrays")
            if tuple(state[name].shape) != tuple(value.shape):
                raise ValidationFailed(
                    f"adapter tensor {name!r} has shape {tuple(value.shape)}, expected {tuple(state[name].shape)}",
                    code="bad_arrays",
                )
        if arrays:
            set_peft_model_state_dict(
                self.model, {n: torch.from_numpy(np.ascontiguousarray(v)) for n, v in arrays.items()}
            )

    def _lora_layers(self) -> dict[str, Any]:
        """The LoRA-wrapped linear layers by the module path used in array names."""
        from peft.tuners.lora import LoraLayer

        return {
            f"base_model.model.{name.removeprefix('base_model.model.')}": module
            for name, module in self.model.named_modules()
            if isinstance(module, LoraLayer)
        }

    def _freeze_shared_a(self) -> None:
        """FFA-LoRA: every party's A is the same seeded matrix, frozen; B starts at zero."""
        import torch

        from aggregation.adapters import ffa_lora_a

        for path, layer in self._lora_layers().items():
            weight = layer.lora_A["default"].weight
            rows, columns = weight.shape
            value = ffa_lora_a(path, (int(rows), int(columns)), self.spec.seed)
            with torch.no_grad():
                weight.copy_(torch.from_numpy(value))
            weight.requires_grad_(False)

    def merge_global_stack(self, arrays: dict[str, np.ndarray]) -> None:
        """FLoRA: add a global stacked update ``B·A`` (scaling folded into B) to the base weights.

        Arrays are named like LoRA tensors (``<module>.lora_A.weight`` R×in, ``<module>.lora_B.weight``
        out×R); modules without both are ignored. Called on a freshly loaded model once per round.
        """
        import torch

        layers = self._lora_layers()
        for path, layer in layers.items():
            a, b = arrays.get(f"{path}.lora_A.weight"), arrays.get(f"{path}.lora_B.weight")
            if a is None or b is None or a.shape[0] == 0:
                continue
            base = layer.get_base_layer().weight
            if b.shape[0] != base.shape[0] or a.shape[1] != base.shape[1] or a.shape[0] != b.shape[1]:
                raise ValidationFailed(f"global stack for {path} does not fit {tuple(base.shape)}", code="bad_arrays")
            with torch.no_grad():
                base.add_(torch.from_numpy(b.astype(np.float32) @ a.astype(np.float32)))

    def save(self, directory: Path) -> None:
        """Write the adapter as a peft directory (``adapter_config.json``, safetensors)."""
        self.model.save_pretrained(str(directory))

    # data ---------------------------------------------------------------------------
    def encode(
        self, examples: Sequence[TrainingExample], max_length: int, *, citation_weight: float = 1.0
    ) -> list[_Encoded]:
        """Token ids with labels on the reply only; examples longer than ``max_length`` are dropped.

        With ``citation_weight`` other than 1, the reply tokens that spell the gold source's
        number (in ``[n]``, ``Source [n]`` and ``citations``) get that weight in the loss.
        """
        encoded: list[_Encoded] = []
        for example in examples:
            prompt = self.tokenizer.apply_chat_template(example.messages, tokenize=False, add_generation_prompt=True)
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            reply_ids = [*self.tokenizer(example.target, add_special_tokens=False)["input_ids"], self._end]
            if len(prompt_ids) + len(reply_ids) > max_length:
                continue
            weights = None
            if citation_weight != 1.0:
                gold = str(example.gold)
                spelled = [str(self.tokenizer.decode([t])).strip() for t in reply_ids]
                weights = [0.0] * len(prompt_ids) + [citation_weight if t == gold else 1.0 for t in spelled]
            labels = [_IGNORE] * len(prompt_ids) + reply_ids
            encoded.append(_Encoded(input_ids=prompt_ids + reply_ids, labels=labels, weights=weights))
        if examples and not encoded:
            logger.warning("every example is longer than %d tokens", max_length)
        return encoded

    def _batch(self, items: Sequence[_Encoded]) -> tuple[Any, Any, Any]:
        import torch

        width = max(len(i.input_ids) for i in items)
        pad = int(self.tokenizer.pad_token_id)
        ids = torch.full((len(items), width), pad, dtype=torch.long)
        labels = torch.full((len(items), width), _IGNORE, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item.input_ids)
            ids[row, :n] = torch.tensor(item.input_ids)
            labels[row, :n] = torch.tensor(item.labels)
            mask[row, :n] = 1
        return ids, labels, mask

    def _per_example_loss(self, model: Any, items: Sequence[_Encoded]) -> Any:
        """Each example's mean reply-token cross-entropy (a vector, one per example).

        The vocabulary projection (a fifth of the model) runs only over the positions that
        predict reply tokens of some example in the batch.
        """
        import torch

        ids, labels, mask = self._batch(items)
        first = min(i.labels.index(next(t for t in i.labels if t != _IGNORE)) for i in items)
        last = max(len(i.input_ids) for i in items)
        offset = self.spec.virtual_tokens if self.spec.method == "prompt" else 0  # peft prepends them
        keep = torch.arange(first - 1 + offset, last - 1 + offset)
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
        target = labels[:, first:last]
        losses = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=_IGNORE, reduction="none"
        ).reshape(target.shape)
        weight = (target != _IGNORE).to(losses.dtype)
        if any(i.weights is not None for i in items):
            table = torch.zeros(labels.shape, dtype=losses.dtype)
            for row, item in enumerate(items):
                table[row, : len(item.input_ids)] = torch.tensor(item.weights or [1.0] * len(item.input_ids))
            weight = weight * table[:, first:last]
        return (losses * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1e-6)

    def loss(self, examples: Sequence[TrainingExample], *, max_length: int = 768, batch_size: int = 4) -> float:
        """Mean reply-token loss over ``examples`` (NaN when none fits)."""
        import torch

        encoded = self.encode(examples, max_length)
        if not encoded:
            return math.nan
        total = 0.0
        self.model.eval()
        with torch.no_grad():
            for start in range(0, len(encoded), batch_size):
                total += float(self._per_example_loss(self.model, encoded[start : start + batch_size]).sum())
        return total / len(encoded)

    # training -----------------------------------------------------------------------
    def trainable_parameters(self) -> list[Any]:
        """The parameters the optimiser updates."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def train(
        self,
        examples: Sequence[TrainingExample],
        optimisation: Optimisation,
        *,
        dp: RecordDP | None = None,
        dp_steps_before: int = 0,
        seed: int = 0,
    ) -> TrainResult:
        """One round of local training.

        Args:
            examples: the silo's training examples.
            optimisation: learning rate, epochs, batch size.
            dp: record-level DP-SGD (Opacus); None trains without it.
            dp_steps_before: DP steps this silo already took on the same examples in earlier
                rounds (epsilon composes over all of them).
            seed: seeds batching (and DP noise).

        Returns:
            The round's statistics.
        """
        import torch

        encoded = self.encode(examples, optimisation.max_length, citation_weight=optimisation.citation_weight)
        if not encoded:
            raise ValidationFailed("no training example fits the model's length limit", code="no_examples")
        generator = np.random.default_rng(seed)
        torch.manual_seed(seed)
        n = len(encoded)
        batch = min(optimisation.batch_size, n)
        steps = max(1, math.ceil(optimisation.epochs * n / batch))
        if optimisation.max_steps:
            steps = min(steps, optimisation.max_steps)
        params = self.trainable_parameters()
        optimizer: Any = torch.optim.AdamW(params, lr=optimisation.learning_rate, weight_decay=0.0)
        model: Any = self.model
        accountant: Any = None
        if dp is not None:
            from opacus import GradSampleModule
            from opacus.accountants import RDPAccountant
            from opacus.optimizers import DPOptimizer

            model = GradSampleModule(self.model, loss_reduction="mean")
            optimizer = DPOptimizer(
                optimizer,
                noise_multiplier=dp.noise_multiplier,
                max_grad_norm=dp.max_grad_norm,
                expected_batch_size=batch,
                loss_reduction="mean",
            )
            accountant = RDPAccountant()
            if dp_steps_before:
                accountant.history.append((dp.noise_multiplier, batch / n, dp_steps_before))
        self.model.train()
        losses: list[float] = []
        try:
            for _ in range(steps):
                if dp is not None:  # Poisson sampling: what the RDP accountant assumes
                    chosen = np.flatnonzero(generator.random(n) < batch / n)
                else:
                    chosen = generator.choice(n, size=batch, replace=False)
                optimizer.zero_grad(set_to_none=True)
                if len(chosen) == 0:  # an empty Poisson batch still takes a (pure-noise) DP step
                    if dp is not None:
                        for p in params:
                            p.grad_sample = torch.zeros((0, *p.shape))
                        optimizer.step()
                        accountant.step(noise_multiplier=dp.noise_multiplier, sample_rate=batch / n)
                    continue
                per_example = self._per_example_loss(model, [encoded[i] for i in chosen])
                per_example.mean().backward()
                optimizer.step()
                if dp is not None:
                    accountant.step(noise_multiplier=dp.noise_multiplier, sample_rate=batch / n)
                losses.append(float(per_example.mean().detach()))
        finally:
            self.model.eval()
            if dp is not None:
                model._close()
        epsilon = float(accountant.get_epsilon(delta=dp.delta)) if dp is not None else None
        return TrainResult(
            examples=n, steps=steps, loss=float(np.mean(losses)) if losses else math.nan, epsilon=epsilon
        )


__all__ = [
    "LORA_METHODS",
    "PROMPT_ARRAY",
    "AdapterModel",
    "AdapterSpec",
    "Method",
    "Optimisation",
    "RecordDP",
    "TrainResult",
]
