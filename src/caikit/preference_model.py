"""A trained preference model as a scorer: one reward per conversation, the logit of its one-logit
sequence-classification head at the last token, on the text in the PM's own chat template. What the
PM sees (`encode`: the last `max_length` tokens) is defined here for training and scoring alike. Used
by `eval pm`, `eval compare --pm`, `rlaif --reward PM_DIR`, `serve-reward --pm` and after `train-pm`."""

from __future__ import annotations

import json
from pathlib import Path

from caikit import models
from caikit.errors import FieldError
from caikit.records import batches
from caikit.stats import pair_metrics


def encode(tokenizer, conversations: list[list[dict]], max_length: int) -> list[list[int]]:
    """Token ids of each conversation in the chat template, its last `max_length` kept: the two
    responses of a pair differ at the end, so what a long conversation loses is its earliest turns."""
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    return [ids[-max_length:] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def trained_length(path: Path) -> int:
    """The --max-length a caikit PM was trained with (it scores what it was trained on: the last N
    tokens of a conversation), or 2048 for other PMs."""
    try:
        return int(json.loads((path / "caikit_train.json").read_text())["hyperparameters"]["max_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return 2048


class PreferenceModel:
    """Rewards from a trained preference model dir, computed on text with the PM's own chat template."""

    def __init__(self, path: str | Path, device: str = "auto", dtype: str = "auto", batch_size: int = 8, max_length: int | None = None):
        from transformers import AutoConfig, AutoModelForSequenceClassification

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FieldError("pm", path, "not a model dir (no config.json)")
        config = AutoConfig.from_pretrained(path)
        if not any(a.endswith("ForSequenceClassification") for a in (config.architectures or [])) or config.num_labels != 1:
            raise FieldError("pm", path, "not a one-logit sequence-classification model (train one with caikit train-pm)")
        self.device = models.pick_device(device)
        self.tokenizer = models.load_tokenizer(path)
        safe = models.require_safetensors(path, "preference model")
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=models.pick_dtype(dtype, self.device),
                                                                        use_safetensors=safe)
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length or trained_length(path)
        self.path = path
        self._lean = self._lean_engine()

    def _lean_engine(self):
        """caikit's lean engine on the PM's decoder, when it computes the model's own rewards (checked
        here on two rows, as the generation backends check it): rows sharing a beginning (a pair's
        two responses, several models' answers to one prompt) then have it computed once."""
        import torch

        from caikit.backends.decode import Engine

        if not isinstance(getattr(self.model, "score", None), torch.nn.Linear):
            return None
        engine = Engine(self.model)
        rows = [list(range(3, 20)), list(range(3, 12))]
        try:
            lean = self._lean_rewards(engine, rows)
        except Exception:  # noqa: BLE001 (any failure means: not this engine)
            return None
        plain = self._plain_rewards(rows)
        tolerance = 1e-3 if engine.dtype == torch.float32 else 0.05
        return engine if all(abs(a - b) <= tolerance for a, b in zip(lean, plain)) else None

    def rewards(self, conversations: list[list[dict]]) -> list[float]:
        """One scalar per full conversation (prompt + response)."""
        ids = encode(self.tokenizer, conversations, self.max_length)
        return self._lean_rewards(self._lean, ids) if self._lean is not None else self._plain_rewards(ids)

    def _lean_rewards(self, engine, ids: list[list[int]]) -> list[float]:
        """The score head at each row's last token that is not padding (where the model's own forward
        reads it), after the engine's prefill with shared beginnings computed once."""
        import torch

        pad = self.tokenizer.pad_token_id
        ends = [max((k for k, t in enumerate(row) if t != pad), default=0) for row in ids]
        with torch.inference_mode():
            states = engine.final_states([row[: end + 1] for row, end in zip(ids, ends)], self.batch_size)
            return self.model.score(states).squeeze(-1).float().tolist()

    def _plain_rewards(self, ids: list[list[int]]) -> list[float]:
        """The model's own forward over right-padded batches, longest first."""
        import torch

        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = [0.0] * len(ids)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer.pad({"input_ids": [ids[i] for i in idx]}, padding_side="right", return_tensors="pt").to(self.device)
            with torch.inference_mode():
                logits = self.model(**enc).logits.squeeze(-1).float().tolist()
            for i, value in zip(idx, logits):
                out[i] = value
        return out


def evaluate_pairs(pm: PreferenceModel, rows, chunk: int = 256) -> dict:
    """`pair_metrics` of the PM's rewards on `rows` (pairs with a label: a list, a Dataset or any
    iterable, read `chunk` pairs at a time)."""
    chosen, rejected, labels = [], [], []
    for part in batches(rows, chunk):
        both = pm.rewards([r["prompt"] + r[side] for r in part for side in ("chosen", "rejected")])  # (together: they share the prompt)
        chosen += both[0::2]
        rejected += both[1::2]
        labels += [r["label"] for r in part]
    return pair_metrics(chosen, rejected, labels)
